"""Training of the JEPA variants on the embedded world, on the shared `Trainer`
(models/common: atomic safetensors checkpoints, exact resume, DDP-ready).

- I-JEPA on single frames, V-JEPA on clips: AdamW with linear warmup and cosine decay, an
  EMA update of the target encoder after every optimizer step (momentum scheduled toward
  1), the std of the target features logged as the collapse monitor.
- The action-conditioned predictor (`ac`) on the frozen target encoder of a JEPA checkpoint:
  the clips' per-frame features are computed once, then the predictor trains on them with
  the world's true actions.

Batches are a function of the step (clip indices and masks drawn from a generator seeded by
(seed, step)), so a resumed run sees the same data as an uninterrupted one. Data come from a
pool of world clips generated once (`make_clips`, uint8 to keep it small).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wmkernels.models.common import (
    DistInfo,
    TrainConfig,
    Trainer,
    config_from_dict,
    load_checkpoint,
    seed_everything,
    wrap_ddp,
)
from wmkernels.models.common.optim import adamw, warmup_cosine
from wmkernels.models.data import World, make_clips
from wmkernels.models.data.world import WorldConfig, sample_actions
from wmkernels.models.jepa.ac import ACWorldModel
from wmkernels.models.jepa.config import (
    ACConfig,
    EncoderConfig,
    IJEPAConfig,
    VJEPAConfig,
    world_of,
)
from wmkernels.models.jepa.ema import momentum_at
from wmkernels.models.jepa.ijepa import IJEPA
from wmkernels.models.jepa.vjepa import VJEPA

MODELS = {"ijepa": (IJEPA, IJEPAConfig), "vjepa": (VJEPA, VJEPAConfig),
          "ac": (ACWorldModel, ACConfig)}
CHECKPOINT = "checkpoint.safetensors"


def to_input(video_u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 centred inputs in [-1, 1]."""
    return video_u8.float().div(127.5).sub(1.0)


class Schedule:
    """Per-step schedule the `Trainer` advances after every optimizer step (its scheduler
    hook): sets the learning rate (`warmup_cosine` down to 0, warmup at most a tenth of
    the run) and calls `on_step(step)` (the EMA update of the target encoder).
    `state_dict` makes it resumable."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, steps: int, warmup: int,
                 lr: float, on_step: Callable[[int], None] | None = None):
        self.optimizer, self.steps, self.lr, self.on_step = optimizer, steps, lr, on_step
        self.warmup = min(warmup, max(1, steps // 10))
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = warmup_cosine(self.last_step, warmup=self.warmup, total=self.steps,
                                        peak=self.lr)

    def step(self) -> None:
        self.last_step += 1
        if self.on_step is not None:
            self.on_step(self.last_step)
        self._apply()

    def state_dict(self) -> dict:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self._apply()


def build_model(variant: str, cfg) -> nn.Module:
    """The model of a variant: IJEPA, VJEPA or ACWorldModel."""
    if variant not in MODELS:
        raise ValueError(f"variant must be one of {tuple(MODELS)}, got {variant!r}")
    return MODELS[variant][0](cfg)


def checkpoint_file(path: str | Path) -> Path:
    """A run directory's checkpoint file, or `path` itself when it is a file."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild the model saved by a training run (a run directory or its checkpoint file).

    Returns (model in eval mode, {"variant", "config", "step", "extra"}).
    Raises ValueError for a missing file or one that is not a JEPA checkpoint.
    """
    path = checkpoint_file(path)
    info = load_checkpoint(path, restore_rng=False)
    variant = info["configs"].get("jepa", {}).get("variant")
    if variant not in MODELS:
        raise ValueError(f"{str(path)!r} is not a JEPA checkpoint (no jepa variant in its "
                         "configs)")
    cfg = config_from_dict(MODELS[variant][1], info["configs"]["model"])
    if isinstance(getattr(cfg, "encoder", None), dict):      # ACConfig.encoder defaults to None
        cfg.encoder = config_from_dict(EncoderConfig, cfg.encoder)
    model = build_model(variant, cfg)
    load_checkpoint(path, model, restore_rng=False)
    return model.eval(), {"variant": variant, "config": cfg, "step": info["step"],
                          "extra": info["extra"]}


def clip_pool(n: int, frames: int, size: int, seed: int,
              world: WorldConfig | None = None) -> dict:
    """`n` clips of the embedded world (`world`, default WorldConfig()) as uint8 video
    (n, frames, 3, size, size) + actions (n, frames - 1) + attributes, generated once."""
    return make_clips(n, frames=frames, size=size, seed=seed, config=world, dtype=torch.uint8)


def action_clips(n: int, frames: int, size: int, seed: int, repeat: int,
                 world: WorldConfig | None = None) -> dict:
    """`n` clips of the world simulator with action repeat: each of the frames - 1 actions
    (drawn from the world's sticky behaviour policy) is held for `repeat` world steps and
    one frame is kept per block. `world`: the world's parameters (default WorldConfig()).
    Returns {"video" uint8 (n, frames, 3, size, size),
    "actions" int64 (n, frames - 1)}.
    Clip i starts like world i of `World().reset(seed, batch_size=n)`."""
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat!r}")
    wcfg = world or WorldConfig()
    sim = World(wcfg, size=size)
    first = sim.reset(seed=seed, batch_size=n)
    rngs = [np.random.default_rng([seed, i, 1]) for i in range(n)]
    actions = np.stack([sample_actions(wcfg, r, frames - 1) for r in rngs]) if n else (
        np.zeros((0, frames - 1), np.int64))
    video = [first]
    for t in range(frames - 1):
        for _ in range(repeat):
            frame = sim.step(actions[:, t])
        video.append(frame)
    video = torch.stack(video, dim=1).mul(255).round().to(torch.uint8)
    return {"video": video, "actions": torch.from_numpy(actions.astype(np.int64))}


def _step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    # Rank 0 keeps the single-process stream, so a one-process run is unchanged; every other
    # rank seeds its own generator (its own clips and masks) from the same (seed, step).
    return torch.Generator().manual_seed(seed * 1_000_003 + step + rank * 1_000_000_007)


def _masks_to(masks, device: torch.device):
    """A batch's masks (an IJEPAMasks or a list of VideoMasks) with tensors on `device`."""
    if isinstance(masks, list):
        return [_masks_to(m, device) for m in masks]
    return dataclasses.replace(masks, **{f.name: getattr(masks, f.name).to(device)
                                         for f in dataclasses.fields(masks)
                                         if isinstance(getattr(masks, f.name), torch.Tensor)})


def _trainer(model, params, cfg, loss_fn, batch_fn, *, steps, seed, out, on_step, variant,
             clips, log_every, progress) -> Trainer:
    opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = Schedule(opt, steps=steps, warmup=cfg.warmup, lr=cfg.lr, on_step=on_step)
    tcfg = TrainConfig(steps=steps, log_every=log_every, out_dir=None if out is None
                       else str(out), seed=seed, grad_clip=1.0, progress=progress)
    return Trainer(model, opt, loss_fn, batch_fn, tcfg, scheduler=schedule,
                   configs={"model": cfg, "jepa": {"variant": variant, "clips": clips}})


def train_jepa(variant: str, cfg: IJEPAConfig | VJEPAConfig, *, steps: int | None = None,
               seed: int = 0, clips: int | None = None, pool: dict | None = None,
               out: str | Path | None = None, log_every: int = 50,
               progress: bool = False,
               dist: DistInfo | None = None) -> tuple[nn.Module, Trainer]:
    """Train I-JEPA ("ijepa", on random single frames) or V-JEPA ("vjepa", on clips).

    Args:
        cfg: the variant's config (sizes, masks, optimizer, batch size, steps).
        steps: overrides cfg.steps. seed: model init, masks and batch sampling.
        clips: size of the pool of 8-frame world clips batches are drawn from (default
            2000); pool: a ready pool (`clip_pool`) instead.
        out: run directory (checkpoint.safetensors + config.json; an existing checkpoint
            there is resumed).
        dist: the process group from `init_distributed()` (models/common) when running
            under torchrun: the model is DDP-wrapped on dist.device, cfg.batch_size is the
            global batch, split evenly over the ranks, each rank drawing its own clips and
            masks; rank 0 writes the checkpoint. None (or one process): plain training.

    Returns:
        (model, trainer); the model is the unwrapped module. `trainer.history` holds the
        logged means over ranks (loss, target_std, ...) and `trainer.losses` every step's
        loss on this rank.
    """
    if variant not in ("ijepa", "vjepa"):
        raise ValueError(f"variant must be 'ijepa' or 'vjepa', got {variant!r}")
    dist = dist or DistInfo()
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"batch_size ({cfg.batch_size}) must be divisible by the number of "
                         f"processes ({dist.world_size})")
    seed_everything(seed)
    model = build_model(variant, cfg).to(dist.device)
    enc = cfg.encoder
    if pool is None:
        pool = clip_pool(clips or 2000, max(8, enc.frames), enc.image_size, seed,
                         world_of(cfg))
    video = pool["video"]
    if video.shape[1] < enc.frames or video.shape[-1] != enc.image_size:
        raise ValueError(f"pool video {tuple(video.shape)} must have >= {enc.frames} frames "
                         f"of {enc.image_size} px")
    steps = steps or cfg.steps
    b = cfg.batch_size // dist.world_size

    def batch_fn(step: int):
        gen = _step_generator(seed, step, dist.rank)
        idx = torch.randint(video.shape[0], (b,), generator=gen)
        t0 = torch.randint(video.shape[1] - enc.frames + 1, (b,), generator=gen)
        frames = torch.stack([video[i, t:t + enc.frames]
                              for i, t in zip(idx.tolist(), t0.tolist(), strict=True)])
        return (to_input(frames).to(dist.device),
                _masks_to(model.mask_collator(b, gen), dist.device))

    def loss_fn(m, batch):
        loss, stats = m(*batch)
        return {**stats, "loss": loss}

    # Every rank applies the same EMA update to identical weights (DDP keeps the context
    # encoders equal), so the target encoders stay in sync without communication.
    params = [p for p in model.parameters() if p.requires_grad]
    trainer = _trainer(wrap_ddp(model, dist), params, cfg,
                       loss_fn, batch_fn, steps=steps, seed=seed, out=out,
                       on_step=lambda s: model.update_target(momentum_at(s, steps, *cfg.ema)),
                       variant=variant, clips=video.shape[0], log_every=log_every,
                       progress=progress)
    trainer.fit()
    return model, trainer


def train_ac(jepa_checkpoint: str | Path, cfg: ACConfig, *, steps: int | None = None,
             seed: int = 0, clips: int | None = None, pool: dict | None = None,
             out: str | Path | None = None, log_every: int = 50,
             progress: bool = False) -> tuple[ACWorldModel, Trainer]:
    """Train the action-conditioned predictor on the frozen target encoder of a JEPA
    checkpoint (run directory or file), with the world's true actions (teacher forcing +
    rollout L1).

    clips: number of simulator clips of cfg.frames frames (cfg.action_repeat world steps
    apart, see `action_clips`) to train on (default 800); pool: a ready pool instead.
    out: run directory. Returns (model, trainer).
    """
    jepa, meta = load_model(jepa_checkpoint)
    if meta["variant"] not in ("ijepa", "vjepa"):
        raise ValueError(f"jepa_checkpoint must hold an ijepa or vjepa model, got "
                         f"{meta['variant']!r}")
    cfg.encoder, cfg.source = meta["config"].encoder, meta["variant"]
    cfg.world = meta["config"].world
    seed_everything(seed)
    model = ACWorldModel(cfg)
    model.frame_encoder.encoder.load_state_dict(jepa.target_encoder.state_dict())
    if pool is None:
        pool = action_clips(clips or 800, cfg.frames, cfg.encoder.image_size, seed + 1,
                            cfg.action_repeat, world_of(cfg))
    if pool["video"].shape[1] < cfg.frames:
        raise ValueError(f"pool clips must have >= {cfg.frames} frames, got "
                         f"{pool['video'].shape[1]}")
    video = pool["video"][:, :cfg.frames]
    actions = pool["actions"][:, :cfg.frames - 1]
    feats = torch.cat([model.frame_encoder(to_input(video[i:i + 32]))
                       for i in range(0, video.shape[0], 32)])
    steps = steps or cfg.steps

    def batch_fn(step: int):
        idx = torch.randint(feats.shape[0], (cfg.batch_size,),
                            generator=_step_generator(seed, step))
        return feats[idx], actions[idx]

    def loss_fn(m, batch):
        loss, stats = m.predictor.loss(*batch, cfg.rollout, cfg.loss)
        return {**stats, "loss": loss}

    trainer = _trainer(model, list(model.predictor.parameters()), cfg, loss_fn, batch_fn,
                       steps=steps, seed=seed, out=out, on_step=None, variant="ac",
                       clips=video.shape[0], log_every=log_every, progress=progress)
    trainer.fit()
    return model, trainer
