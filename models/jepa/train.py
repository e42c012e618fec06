"""Training of the JEPA variants on the embedded world.

- I-JEPA on single frames, V-JEPA on clips: AdamW with linear warmup and cosine decay, EMA
  target update after every optimizer step (momentum scheduled toward 1), the std of the
  target features logged as the collapse monitor.
- The action-conditioned predictor (`ac`) on the frozen target encoder of a JEPA checkpoint:
  the clips' per-frame features are computed once, then the predictor trains on them with
  the world's true actions.

Data are drawn from a pool of clips generated once (`make_clips`, uint8 to keep it small).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from wmkernels.models.data import make_clips
from wmkernels.models.jepa.ac import ACWorldModel
from wmkernels.models.jepa.checkpoint import read_checkpoint, save_checkpoint
from wmkernels.models.jepa.config import ACConfig, IJEPAConfig, VJEPAConfig
from wmkernels.models.jepa.ema import momentum_at
from wmkernels.models.jepa.ijepa import IJEPA
from wmkernels.models.jepa.vjepa import VJEPA


def to_input(video_u8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float32 centred inputs in [-1, 1]."""
    return video_u8.float().div(127.5).sub(1.0)


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak` over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_model(variant: str, cfg) -> nn.Module:
    """The model of a variant: IJEPA, VJEPA or ACWorldModel."""
    builders = {"ijepa": IJEPA, "vjepa": VJEPA, "ac": ACWorldModel}
    if variant not in builders:
        raise ValueError(f"variant must be one of {tuple(builders)}, got {variant!r}")
    return builders[variant](cfg)


def load_model(path) -> tuple[nn.Module, dict]:
    """Rebuild the model saved at `path` (any variant) and load its weights."""
    state, meta = read_checkpoint(path)
    model = build_model(meta["variant"], meta["config"])
    model.load_state_dict(state)
    return model, meta


def _optimizer(params: list[nn.Parameter], lr: float, weight_decay: float):
    # No weight decay on biases and norm gains (1-D parameters), as in the JEPA recipes.
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def run_steps(loss_fn: Callable[[int], tuple[torch.Tensor, dict]], params: list[nn.Parameter],
              *, steps: int, lr: float, weight_decay: float, warmup: int,
              after_step: Callable[[int], None] | None = None, log_every: int = 50,
              log: Callable[[str], None] | None = print) -> list[dict]:
    """The plain loop: loss_fn(step) -> (loss, stats); backward; clip grad norm 1; AdamW step
    under the lr schedule; after_step(step). Returns every step's stats (+ "step", "lr")."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    opt = _optimizer(params, lr, weight_decay)
    history, t0 = [], time.perf_counter()
    for step in range(steps):
        cur = lr_at(step, steps, min(warmup, max(1, steps // 10)), lr)
        for group in opt.param_groups:
            group["lr"] = cur
        loss, stats = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if after_step is not None:
            after_step(step)
        history.append({"step": step, "lr": cur, **stats})
        if log and (step % log_every == 0 or step == steps - 1):
            shown = " ".join(f"{k}={v:.4f}" for k, v in stats.items())
            log(f"step {step:5d}/{steps} {shown} ({time.perf_counter() - t0:.0f}s)")
    return history


def clip_pool(n: int, frames: int, size: int, seed: int, start: int = 0) -> dict:
    """`n` clips of the embedded world as uint8 video (n, frames, 3, size, size) + actions
    (n, frames - 1) + attributes, generated once."""
    return make_clips(n, frames=frames, size=size, seed=seed, start=start, dtype=torch.uint8)


def train_jepa(variant: str, cfg: IJEPAConfig | VJEPAConfig, *, steps: int | None = None,
               seed: int = 0, clips: int | None = None, pool: dict | None = None,
               out: str | Path | None = None,
               log: Callable[[str], None] | None = print) -> tuple[nn.Module, list[dict]]:
    """Train I-JEPA ("ijepa", on random single frames) or V-JEPA ("vjepa", on clips).

    Args:
        cfg: the variant's config (sizes, masks, optimizer, batch size, steps).
        steps: overrides cfg.steps. seed: model init, masks and batch sampling.
        clips: size of the pool of 8-frame world clips batches are drawn from (default 2000).
        pool: a ready pool (`clip_pool`) instead.
        out: checkpoint path written at the end (safetensors).

    Returns:
        (model, history) with history the per-step stats (loss, target_std, ...).
    """
    if variant not in ("ijepa", "vjepa"):
        raise ValueError(f"variant must be 'ijepa' or 'vjepa', got {variant!r}")
    torch.manual_seed(seed)
    model = build_model(variant, cfg)
    enc = cfg.encoder
    if pool is None:
        pool = clip_pool(clips or 2000, max(8, enc.frames), enc.image_size, seed)
    video = pool["video"]
    if video.shape[1] < enc.frames or video.shape[-1] != enc.image_size:
        raise ValueError(f"pool video {tuple(video.shape)} must have >= {enc.frames} frames "
                         f"of {enc.image_size} px")
    gen = torch.Generator().manual_seed(seed)
    steps = steps or cfg.steps
    b = cfg.batch_size

    def batch() -> torch.Tensor:
        idx = torch.randint(video.shape[0], (b,), generator=gen)
        t0 = torch.randint(video.shape[1] - enc.frames + 1, (b,), generator=gen)
        frames = torch.stack([video[i, t:t + enc.frames] for i, t in zip(idx.tolist(),
                                                                          t0.tolist(),
                                                                          strict=True)])
        return to_input(frames)

    def loss_fn(step: int):
        return model(batch(), model.mask_collator(b, gen))

    params = [p for p in model.parameters() if p.requires_grad]
    history = run_steps(loss_fn, params, steps=steps, lr=cfg.lr,
                        weight_decay=cfg.weight_decay, warmup=cfg.warmup,
                        after_step=lambda s: model.update_target(
                            momentum_at(s + 1, steps, *cfg.ema)), log=log)
    if out is not None:
        save_checkpoint(out, model, variant, cfg, steps,
                        extra={"final_loss": history[-1]["loss"],
                               "target_std": history[-1]["target_std"]})
    return model, history


def encoder_of(jepa: nn.Module) -> nn.Module:
    """The encoder used downstream (probes, planning): the EMA target encoder."""
    return jepa.target_encoder


def train_ac(jepa_checkpoint: str | Path, cfg: ACConfig, *, steps: int | None = None,
             seed: int = 0, clips: int | None = None, pool: dict | None = None,
             out: str | Path | None = None,
             log: Callable[[str], None] | None = print) -> tuple[ACWorldModel, list[dict]]:
    """Train the action-conditioned predictor on the frozen target encoder of a JEPA
    checkpoint, with the world's true actions (teacher forcing + rollout L1).

    clips: number of world clips of cfg.frames frames to train on (default 800); pool: a
    ready pool instead. Returns (model, history).
    """
    jepa, meta = load_model(jepa_checkpoint)
    if meta["variant"] not in ("ijepa", "vjepa"):
        raise ValueError(f"jepa_checkpoint must hold an ijepa or vjepa model, got "
                         f"{meta['variant']!r}")
    cfg.encoder, cfg.source = meta["config"].encoder, meta["variant"]
    torch.manual_seed(seed)
    model = ACWorldModel(cfg)
    model.frame_encoder.encoder.load_state_dict(encoder_of(jepa).state_dict())
    size = cfg.encoder.image_size
    if pool is None:
        pool = clip_pool(clips or 800, cfg.frames, size, seed + 1)
    if pool["video"].shape[1] < cfg.frames:
        raise ValueError(f"pool clips must have >= {cfg.frames} frames, got "
                         f"{pool['video'].shape[1]}")
    video = pool["video"][:, :cfg.frames]
    actions = pool["actions"][:, :cfg.frames - 1]
    feats = torch.cat([model.frame_encoder(to_input(video[i:i + 32]))
                       for i in range(0, video.shape[0], 32)])
    gen = torch.Generator().manual_seed(seed)
    steps = steps or cfg.steps

    def loss_fn(step: int):
        idx = torch.randint(feats.shape[0], (cfg.batch_size,), generator=gen)
        return model.predictor.loss(feats[idx], actions[idx], cfg.rollout)

    history = run_steps(loss_fn, list(model.predictor.parameters()), steps=steps, lr=cfg.lr,
                        weight_decay=cfg.weight_decay, warmup=cfg.warmup, log=log)
    if out is not None:
        save_checkpoint(out, model, "ac", cfg, steps,
                        extra={"final_loss": history[-1]["loss"]})
    return model, history
