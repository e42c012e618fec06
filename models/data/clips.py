"""Clips of the embedded world: bulk generation, captions, attributes, Dataset, collate."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from wmkernels.models.data.world import (
    COLOUR_NAMES,
    DIRECTION_NAMES,
    WorldConfig,
    _check_seed,
    clip_rng,
    render,
    sample_actions,
    sample_initial_state,
    step_state,
)

AGENT_MOTIONS: tuple[str, ...] = ("stays", "left", "right")
"""Agent net horizontal motion over a clip; the index is attribute `agent_motion`."""
X_BINS = 4  # attribute `agent_x_bin`: the agent's initial x in 4 equal screen columns

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "agent_colour", "agent_x_bin", "agent_motion", "agent_jumped",
    "ball_colour", "ball_direction", "ball_fast",
)


def make_clips(
    n: int,
    frames: int = 16,
    size: int | None = None,
    seed: int = 0,
    config: WorldConfig | None = None,
    start: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict:
    """Generate clips `start .. start+n-1` of the embedded world under `seed`, batched.

    Clip i depends only on (seed, i, config): any batch containing it renders it the same.

    Args:
        n: number of clips (>= 0).
        frames: frames per clip T (>= 1).
        size: frame side in pixels; None takes config.size (64 by default).
        seed: non-negative int.
        config: world parameters; `WorldConfig()` when None.
        start: index of the first clip (>= 0), so disjoint index ranges give disjoint data.
        dtype: torch.float32 (values in [0, 1]) or torch.uint8 (values in [0, 255]).

    Returns:
        dict with "video" (n, T, 3, S, S) `dtype` (S the size); "actions" (n, T-1) int64, action
        t moves frame t to frame t+1; "has_actions" (n,) bool, all True; "caption" list of
        n str; "attributes" dict name -> (n,) int64 (see ATTRIBUTE_NAMES).

    Raises:
        ValueError / TypeError: naming the bad argument.
    """
    for name, value, low in (("n", n, 0), ("frames", frames, 1), ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"make_clips: {name} must be an int >= {low}, got {value!r}")
    _check_seed(seed)
    if dtype not in (torch.float32, torch.uint8):
        raise TypeError(f"make_clips: dtype must be torch.float32 or torch.uint8, got {dtype}")
    if config is not None and not isinstance(config, WorldConfig):
        raise TypeError(f"make_clips: config must be a WorldConfig or None, got {type(config)}")
    cfg = config or WorldConfig()
    cfg = cfg if size is None else cfg.replace(size=size)

    rngs = [clip_rng(seed, start + i) for i in range(n)]
    st = sample_initial_state(cfg, rngs)
    actions = np.stack([sample_actions(cfg, rng, frames - 1) for rng in rngs]) if n else (
        np.zeros((0, frames - 1), np.int64))
    k = cfg.num_balls
    agent_xy = np.empty((n, frames, 2))
    ball_pos = np.empty((n, frames, k, 2))
    crouching = np.zeros((n, frames), bool)
    jumped = np.zeros(n, bool)
    bounced = np.zeros((n, k), bool)
    agent_xy[:, 0] = np.stack([st.agent_x, st.agent_y], -1)
    ball_pos[:, 0] = st.ball_pos
    for t in range(frames - 1):
        events = step_state(cfg, st, actions[:, t])
        jumped |= events["jumped"]
        bounced |= events["bounced"]
        agent_xy[:, t + 1] = np.stack([st.agent_x, st.agent_y], -1)
        ball_pos[:, t + 1] = st.ball_pos
        crouching[:, t + 1] = st.crouching

    video = render(cfg, st, agent_xy, ball_pos, crouching)
    if dtype == torch.float32:
        video = video.float().div_(255)
    motion = _agent_motion(cfg, agent_xy)
    # The ball attributes describe the leftmost ball of the first frame. The balls look
    # alike but for their colours, so "ball 0" of the state is not identifiable from the
    # frames (a probe could do no better than guess which of two balls is meant); "the
    # leftmost ball" is.
    first = ball_pos[:, 0, :, 0].argmin(axis=1) if k else None
    rows = np.arange(n)
    attributes = {
        "agent_colour": st.agent_colour,
        "agent_x_bin": np.clip((agent_xy[:, 0, 0] * X_BINS).astype(np.int64), 0, X_BINS - 1),
        "agent_motion": motion,
        "agent_jumped": jumped.astype(np.int64),
        # A world without balls reports -1 for the ball attributes.
        "ball_colour": st.ball_colour[rows, first] if k else np.full(n, -1),
        "ball_direction": st.ball_direction[rows, first] if k else np.full(n, -1),
        "ball_fast": (st.ball_speed[rows, first] > np.mean(cfg.ball_speed)).astype(np.int64)
        if k else np.full(n, -1),
    }
    captions = [
        _caption(st.agent_colour[i], motion[i], jumped[i],
                 st.ball_colour[i], st.ball_direction[i], bounced[i])
        for i in range(n)
    ]
    return {
        "video": video,
        "actions": torch.from_numpy(actions.astype(np.int64)),
        "has_actions": torch.ones(n, dtype=torch.bool),
        "caption": captions,
        "attributes": {name: torch.from_numpy(np.asarray(v, np.int64))
                       for name, v in attributes.items()},
    }


def _agent_motion(cfg: WorldConfig, agent_xy: np.ndarray) -> np.ndarray:
    """(n,) int64 AGENT_MOTIONS id from the net horizontal displacement over the clip.

    A move shorter than half the agent's width is not called a move: it reads as standing
    still in the frames (e.g. left then right, or pushing against a wall).
    """
    dx = agent_xy[:, -1, 0] - agent_xy[:, 0, 0]
    threshold = cfg.agent_size / 2
    return np.where(dx < -threshold, 1, np.where(dx > threshold, 2, 0)).astype(np.int64)


def _caption(agent_colour, motion, jumped, ball_colours, ball_directions, bounced) -> str:
    """E.g. "red ball moves up-left and bounces, blue agent moves right and jumps"."""
    parts = []
    for colour, direction, bounce in zip(ball_colours, ball_directions, bounced, strict=True):
        phrase = f"{COLOUR_NAMES[colour]} ball moves {DIRECTION_NAMES[direction]}"
        parts.append(phrase + (" and bounces" if bounce else ""))
    verbs = [f"moves {AGENT_MOTIONS[motion]}"] if motion else []
    verbs += ["jumps"] if jumped else []
    agent = " and ".join(verbs) if verbs else "stays in place"
    parts.append(f"{COLOUR_NAMES[agent_colour]} agent {agent}")
    return ", ".join(parts)


class SyntheticVideoDataset(Dataset):
    """`num_clips` clips of the embedded world; item i is clip i of `make_clips(seed=seed)`.

    Items are rendered on demand (nothing is stored), so the dataset is cheap to create and
    any index range of any size is available. Each item is a dict: "video" (T, 3, H, W)
    float32 in [0, 1], "actions" (T-1,) int64, "has_actions" bool True, "caption" str,
    "attributes" dict of int64 scalar tensors. `__getitems__` renders a whole DataLoader
    batch at once (much faster than item by item).

    Raises:
        ValueError: bad num_clips, frames, size or seed (naming the argument).
    """

    def __init__(self, num_clips: int, frames: int = 16, size: int | None = None, seed: int = 0,
                 config: WorldConfig | None = None) -> None:
        if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 0:
            raise ValueError(f"SyntheticVideoDataset: num_clips must be an int >= 0, "
                             f"got {num_clips!r}")
        make_clips(0, frames, size, seed, config)  # validates the remaining arguments
        self.num_clips, self.frames, self.size, self.seed = num_clips, frames, size, seed
        self.config = config

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        indices = [self._check_index(i) for i in indices]
        if not indices:
            return []
        # Contiguous index runs (the usual sequential/batched case) render in one call.
        out, run = [], [indices[0]]
        for i in indices[1:] + [None]:
            if i is not None and i == run[-1] + 1:
                run.append(i)
                continue
            clips = make_clips(len(run), self.frames, self.size, self.seed, self.config,
                               start=run[0])
            out.extend(split_batch(clips))
            run = [i]
        return out

    def _check_index(self, index) -> int:
        if isinstance(index, torch.Tensor):
            index = int(index)
        n = self.num_clips
        if not isinstance(index, (int, np.integer)) or not -n <= index < n:
            raise IndexError(f"SyntheticVideoDataset: index {index!r} out of range "
                             f"for {self.num_clips} clips")
        return int(index) % self.num_clips


def split_batch(batch: dict) -> list[dict]:
    """Inverse of `collate_clips`: a batched dict -> list of per-clip item dicts."""
    n = len(batch["caption"])
    return [
        {
            "video": batch["video"][i],
            "actions": batch["actions"][i],
            "has_actions": bool(batch["has_actions"][i]),
            "caption": batch["caption"][i],
            "attributes": {k: v[i] for k, v in batch["attributes"].items()},
        }
        for i in range(n)
    ]


def collate_clips(items: list[dict]) -> dict:
    """Stack dataset items (synthetic or real) into a batch, for `DataLoader(collate_fn=...)`.

    Returns:
        dict with "video" (B, T, 3, H, W), "actions" (B, T-1) int64 (-1 where unknown),
        "has_actions" (B,) bool, "caption" list of B str, "attributes" dict name -> (B,)
        int64.

    Raises:
        ValueError: empty list, or items whose video shapes or attribute names differ.
    """
    if not items:
        raise ValueError("collate_clips: items must be a non-empty list of clip dicts")
    shapes = {tuple(it["video"].shape) for it in items}
    if len(shapes) != 1:
        raise ValueError(f"collate_clips: all videos must have one shape, got {sorted(shapes)}")
    keys = {tuple(sorted(it["attributes"])) for it in items}
    if len(keys) != 1:
        raise ValueError(f"collate_clips: all items must have the same attribute names, "
                         f"got {sorted(keys)}")
    return {
        "video": torch.stack([it["video"] for it in items]),
        "actions": torch.stack([it["actions"] for it in items]),
        "has_actions": torch.tensor([bool(it["has_actions"]) for it in items]),
        "caption": [it["caption"] for it in items],
        "attributes": {k: torch.stack([torch.as_tensor(it["attributes"][k], dtype=torch.int64)
                                       for it in items])
                       for k in keys.pop()},
    }
