"""Measurements of the JEPA pipelines on the embedded world.

- `probe_report`: linear and attentive probes on the world's attributes from the frozen
  target encoder of a JEPA checkpoint, from the same architecture randomly initialized, and
  from raw pixels.
- `planning_report`: goal-reaching success of the CEM planner in the real simulator, against
  random actions drawn from the same behaviour policy that produced the goals.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from wmkernels.models.data import World, make_clips
from wmkernels.models.data.world import WorldConfig, sample_actions
from wmkernels.models.jepa.ac import ACWorldModel, FrameEncoder
from wmkernels.models.jepa.config import world_of
from wmkernels.models.jepa.planner import CEMConfig, CEMPlanner
from wmkernels.models.jepa.probe import PROBES, extract_features, pixel_tokens, train_probe
from wmkernels.models.jepa.vit import VisionTransformer

# Attributes visible in a single frame; the others need motion (video encoders only).
FRAME_ATTRIBUTES = ("agent_colour", "agent_x_bin", "ball_colour")
# Probe training lengths. The linear probe on flattened tokens (4096 inputs for the tiny
# encoders) is still underfitting its training split after 40 epochs (train accuracy of
# agent_colour 0.67 for the random encoder) and gains up to 0.1 test accuracy by 100; the
# attentive probe fits its training split by 40 and only overfits beyond (test accuracy
# 0.02 lower at 100). Measured on all three feature kinds alike.
PROBE_EPOCHS = {"linear": 100, "attentive": 40}
# Probe clips: training and held-out. The flat linear probe reads 64 tokens x 64 channels
# (4096 inputs for the tiny encoders, 12288 for pixel patches): from 1000 training clips it
# is fitted mostly by its regularisation (one checkpoint's linear mean moved by 0.03
# between 100 and 120 epochs). From 4000 every feature kind scores higher, and one
# checkpoint's linear mean moves by at most 0.02 over three draws of the probe clips
# (models/jepa/RESULTS.md); 1000 held-out clips put the sampling error of one accuracy
# near 0.015. The clips render in seconds; `wmk jepa probe` of the I-JEPA tiny preset
# takes under 2 minutes.
PROBE_CLIPS = {"train": 4000, "test": 1000}


def _to_input(video_u8: torch.Tensor) -> torch.Tensor:
    return video_u8.float().div(127.5).sub(1.0)


def _encoder_features(encoder: VisionTransformer, video_u8: torch.Tensor) -> torch.Tensor:
    encoder = encoder.eval()
    clip = video_u8[:, :encoder.frames]
    return extract_features(lambda v: encoder(_to_input(v)), clip)


def _pixel_features(video_u8: torch.Tensor, frames: int, patch: int) -> torch.Tensor:
    # Patches of every frame the encoder sees, frames concatenated along the channels, so
    # the pixel probe reads the same (S, .) token grid as the encoders.
    clip = video_u8[:, :frames].float() / 255.0
    tokens = [pixel_tokens(clip[:, t], patch) for t in range(frames)]
    return torch.cat(tokens, dim=-1)


def probe_report(encoder: VisionTransformer, *, n_train: int = PROBE_CLIPS["train"],
                 n_test: int = PROBE_CLIPS["test"],
                 seed: int = 1234, probes: tuple[str, ...] = ("linear", "attentive"),
                 epochs: int | dict[str, int] | None = None,
                 attributes: tuple[str, ...] | None = None,
                 world: WorldConfig | None = None,
                 log: Callable[[str], None] | None = print) -> dict:
    """Probe scores (test accuracy per attribute) for a trained encoder, a random-init
    encoder of the same architecture, and raw pixels, on fresh clips of the world the
    encoder was trained in (`world`, default WorldConfig(); see `config.world_of`).

    epochs: passes over the probe's training set, one number for every probe or a dict
    probe -> number; default PROBE_EPOCHS.

    Returns {"attributes": [...], "constant_attributes": [...] (left out: one value in
    every clip), "chance": {attr: majority-class rate of the held-out clips, "mean": ...},
    "<feature>/<probe>": {attr: acc, "mean": mean acc}}.
    """
    bad = [k for k in probes if k not in PROBES]
    if bad:
        raise ValueError(f"probes must be drawn from {PROBES}, got {probes!r}")
    if epochs is None or isinstance(epochs, dict):
        epochs = {**PROBE_EPOCHS, **(epochs or {})}
    else:
        epochs = dict.fromkeys(probes, epochs)
    frames = encoder.frames
    data = make_clips(n_train + n_test, frames=max(frames, 2), size=encoder.image_size,
                      seed=seed, config=world, dtype=torch.uint8)
    names = attributes or (FRAME_ATTRIBUTES if frames == 1 else
                           tuple(data["attributes"]))
    # An attribute with one value in this world (e.g. agent_motion when no clip moves the
    # agent by half its width) scores 1.0 for any features: leave it out, and say so.
    constant = [k for k in names if data["attributes"][k].unique().numel() < 2]
    names = tuple(k for k in names if k not in constant)
    if log and constant:
        log(f"left out (one value in every clip): {', '.join(constant)}")
    attrs = {k: data["attributes"][k] for k in names}
    torch.manual_seed(seed)
    random_encoder = VisionTransformer(
        image_size=encoder.image_size, patch=encoder.patch, frames=encoder.frames,
        tubelet=encoder.tubelet, channels=encoder.channels, dim=encoder.dim,
        depth=len(encoder.blocks), heads=encoder.blocks[0].attns[0].heads,
        attention=_layout(encoder))
    feats = {"jepa": _encoder_features(encoder, data["video"]),
             "random": _encoder_features(random_encoder, data["video"]),
             "pixels": _pixel_features(data["video"], frames, encoder.patch)}
    report: dict = {"attributes": list(names), "constant_attributes": constant,
                    "n_train": n_train, "n_test": n_test}
    # What always answering the commonest held-out value scores: the floor every probe
    # score is read against (agent_jumped sits at 0.75 with no information at all).
    chance = {k: float(torch.bincount(v[n_train:]).max()) / n_test for k, v in attrs.items()}
    report["chance"] = {**chance, "mean": float(np.mean(list(chance.values())))}
    if log:
        log(f"{'chance':>16s}: " + " ".join(f"{k}={v:.3f}" for k, v in report["chance"].items()))
    for fname, z in feats.items():
        for kind in probes:
            scores = train_probe(kind, z[:n_train], {k: v[:n_train] for k, v in attrs.items()},
                                 z[n_train:], {k: v[n_train:] for k, v in attrs.items()},
                                 epochs=epochs[kind], seed=seed)
            scores["mean"] = float(np.mean(list(scores.values())))
            report[f"{fname}/{kind}"] = scores
            if log:
                log(f"{fname:>6s} {kind:>9s}: " +
                    " ".join(f"{k}={v:.3f}" for k, v in scores.items()))
    return report


def _layout(encoder: VisionTransformer) -> str:
    axes = [a.axis for a in encoder.blocks[0].attns]
    return {("spatial",): "spatial", ("spatial", "temporal"): "factorized",
            ("joint",): "joint"}[tuple(axes)]


def planning_report(model: ACWorldModel, *, episodes: int = 50, horizon: int = 4,
                    seed: int = 4321, cem: CEMConfig | None = None,
                    tolerance: float | None = None, world: WorldConfig | None = None,
                    log: Callable[[str], None] | None = print) -> dict:
    """Goal reaching in the simulator.

    For each episode a world is reset, the world's behaviour policy acts for `horizon` steps
    (each action held for the model's `action_repeat` world steps) to produce a reachable
    goal frame, the world is restored to the start, and:
      - the CEM planner, seeing only the start frame and the goal frame, picks `horizon`
        actions, which are executed in the simulator (with the same repeat);
      - a random baseline executes `horizon` actions drawn from the same policy.
    Success: the agent's final centre lies within `tolerance` (default: half the agent's
    size) of its position in the goal frame. `world` defaults to the world the predictor was
    trained in (`config.world_of(model.cfg)`).

    Returns {"cem_success", "random_success", "cem_distance", "random_distance", ...}.
    """
    cem = cem or CEMConfig(horizon=horizon)
    if cem.horizon != horizon:
        raise ValueError(f"cem.horizon ({cem.horizon}) must equal horizon ({horizon})")
    wcfg = world or world_of(model.cfg)
    sim = World(wcfg, size=model.cfg.encoder.image_size)
    tol = tolerance if tolerance is not None else wcfg.agent_size / 2
    rng = np.random.default_rng(seed)
    frames0 = sim.reset(seed=seed, batch_size=episodes)
    start = sim.get_state()
    repeat = model.cfg.action_repeat
    goal_actions = np.stack([sample_actions(wcfg, rng, horizon) for _ in range(episodes)])
    goal_pos = _execute(sim, start, goal_actions, repeat)
    goal_frames = sim.render()
    encode: FrameEncoder = model.frame_encoder
    z0 = encode(frames0[:, None] * 2 - 1)[:, 0]          # (E, S, C)
    zg = encode(goal_frames[:, None] * 2 - 1)[:, 0]
    planner = CEMPlanner(model.predictor.eval(), cem)
    gen = torch.Generator().manual_seed(seed)
    plans = torch.stack([planner.plan(z0[e], zg[e], gen)[0] for e in range(episodes)])
    cem_pos = _execute(sim, start, plans.numpy(), repeat)
    random_actions = np.stack([sample_actions(wcfg, rng, horizon) for _ in range(episodes)])
    rand_pos = _execute(sim, start, random_actions, repeat)
    cem_d = np.linalg.norm(cem_pos - goal_pos, axis=-1)
    rand_d = np.linalg.norm(rand_pos - goal_pos, axis=-1)
    report = {"episodes": episodes, "horizon": horizon, "tolerance": tol,
              "cem_success": float((cem_d < tol).mean()),
              "random_success": float((rand_d < tol).mean()),
              "cem_distance": float(cem_d.mean()), "random_distance": float(rand_d.mean()),
              "plan_matches_goal_actions": float((plans.numpy() == goal_actions).all(1).mean())}
    if log:
        log(f"planning over {episodes} episodes, horizon {horizon}, tolerance {tol:.3f}: "
            f"CEM success {report['cem_success']:.2f} (mean distance {report['cem_distance']:.3f})"
            f" vs random {report['random_success']:.2f} ({report['random_distance']:.3f})")
    return report


def _execute(sim: World, start, actions: np.ndarray, repeat: int) -> np.ndarray:
    sim.set_state(start)
    for t in range(actions.shape[1]):
        for _ in range(repeat):
            sim.step(actions[:, t].astype(np.int64))
    return sim.agent_position()


def encoder_from_checkpoint(model) -> VisionTransformer:
    """The frozen encoder a probe or planner reads: a JEPA model's target encoder, or an
    AC world model's frame encoder."""
    if isinstance(model, ACWorldModel):
        return model.frame_encoder.encoder
    return model.target_encoder



@torch.no_grad()
def oracle_report(model: ACWorldModel, *, episodes: int = 12, horizon: int = 4,
                  seed: int = 4321, tolerance: float | None = None,
                  world: WorldConfig | None = None) -> dict:
    """Does the representation itself support planning? The same goal-reaching episodes as
    `planning_report`, but every one of the num_actions ** horizon action sequences is
    executed in the real simulator, its final frame encoded, and the sequence whose frame
    lies nearest the goal frame (L1, the planner's energy) is chosen. The success rate is
    an upper bound for a planner with a perfect predictor; `energy_distance_corr` is the
    mean correlation, over episodes, between that energy and the agent's distance to the
    goal position.
    """
    wcfg = world or world_of(model.cfg)
    sim = World(wcfg, size=model.cfg.encoder.image_size)
    tol = tolerance if tolerance is not None else wcfg.agent_size / 2
    repeat = model.cfg.action_repeat
    rng = np.random.default_rng(seed)
    sim.reset(seed=seed, batch_size=episodes)
    start = sim.get_state()
    goal_actions = np.stack([sample_actions(wcfg, rng, horizon) for _ in range(episodes)])
    goal_pos = _execute(sim, start, goal_actions, repeat)
    z_goal = model.frame_encoder(sim.render()[:, None] * 2 - 1)[:, 0]
    a = model.cfg.num_actions
    seqs = np.stack(np.meshgrid(*[np.arange(a)] * horizon, indexing="ij"), -1).reshape(-1,
                                                                                       horizon)
    success, corr = [], []
    for e in range(episodes):
        pos = _execute(sim, start.index([e] * len(seqs)), seqs, repeat)
        frames = sim.render()[:, None] * 2 - 1
        z = torch.cat([model.frame_encoder(frames[i:i + 128])[:, 0]
                       for i in range(0, len(seqs), 128)])
        energy = (z - z_goal[e]).abs().mean(dim=(-1, -2)).numpy()
        dist = np.linalg.norm(pos - goal_pos[e], axis=-1)
        success.append(dist[energy.argmin()] < tol)
        corr.append(np.corrcoef(energy, dist)[0, 1])
    return {"episodes": episodes, "horizon": horizon, "tolerance": tol,
            "oracle_success": float(np.mean(success)),
            "energy_distance_corr": float(np.nanmean(corr))}
