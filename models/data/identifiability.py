"""How well the true actions of the embedded world can be read off its frames.

A latent action model only sees frames, so an action whose next frame is identical to
another action's (left against a wall, up at the top of a jump) cannot be told apart by
any model. `action_identifiability` measures this directly with the simulator: it is the
ceiling for the agreement (normalized mutual information) between latent and true actions.
"""

from __future__ import annotations

import numpy as np
import torch
from wmkernels.models.data.clips import make_clips
from wmkernels.models.data.world import NUM_ACTIONS, World, WorldConfig, render, step_state


def normalized_mutual_info(a, b) -> float:
    """NMI of two integer labelings (1D, same length): I(a; b) / mean(H(a), H(b)), in [0, 1]
    (arithmetic-mean normalization); 1.0 when both are constant.

    Raises:
        ValueError: different lengths, not 1D, empty or negative labels.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"normalized_mutual_info: expected two non-empty 1D label arrays of "
                         f"one length, got shapes {a.shape} and {b.shape}")
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)) or (
            a.min() < 0 or b.min() < 0):
        raise ValueError("normalized_mutual_info: labels must be non-negative integers")

    def entropy(x: np.ndarray) -> float:
        p = np.bincount(x) / x.size
        p = p[p > 0]
        return float(-(p * np.log(p)).sum())

    ha, hb = entropy(a), entropy(b)
    if ha == 0 and hb == 0:
        return 1.0
    joint = entropy(a.astype(np.int64) * (int(b.max()) + 1) + b)
    return max(0.0, (ha + hb - joint) / ((ha + hb) / 2))


def action_identifiability(n: int = 256, frames: int = 16, seed: int = 0,
                           config: WorldConfig | None = None) -> dict:
    """Replay clips 0..n-1 of `make_clips(n, frames, seed=seed)` and, at every step, try
    every action from the same state: the true action is *ambiguous* when another action
    renders the identical next frame.

    Returns:
        {"ambiguous_fraction": float, "oracle_nmi": NMI between the true actions and the
        best possible frame-based labels (the smallest action giving the same frame),
        "ambiguous_by_action": list of NUM_ACTIONS fractions, "steps": int}.

    Raises:
        ValueError: from make_clips for bad arguments; n and frames must give >= 1 step.
    """
    clips = make_clips(n, frames, (config or WorldConfig()).size, seed, config)
    if n < 1 or frames < 2:
        raise ValueError(f"action_identifiability: needs n >= 1 and frames >= 2, got n={n}, "
                         f"frames={frames}")
    world = World(config)
    world.reset(seed, batch_size=n)
    actions = clips["actions"].numpy()
    true, label = [], []
    for t in range(frames - 1):
        nxt = []
        for a in range(NUM_ACTIONS):
            trial = world.get_state()
            step_state(world.config, trial, np.full(n, a))
            nxt.append(render(world.config, trial)[:, 0].reshape(n, -1))
        nxt = torch.stack(nxt, 1)                                  # (n, A, pixels)
        chosen = nxt[torch.arange(n), torch.from_numpy(actions[:, t])]
        same = (nxt == chosen[:, None]).all(-1)                    # (n, A)
        label.append(same.float().argmax(1).numpy())               # smallest equivalent
        true.append(actions[:, t])
        world.step(actions[:, t])
    true, label = np.concatenate(true), np.concatenate(label)
    ambiguous = label != true
    return {
        "ambiguous_fraction": float(ambiguous.mean()),
        "oracle_nmi": normalized_mutual_info(true, label),
        "ambiguous_by_action": [float(ambiguous[true == a].mean()) if (true == a).any()
                                else 0.0 for a in range(NUM_ACTIONS)],
        "steps": int(true.size),
    }
