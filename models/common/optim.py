"""The pipelines' optimisation pieces: AdamW with the usual decay split, and the
warmup-then-cosine learning-rate curve (Genie, Sora and JEPA share both)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def warmup_cosine(step: int, *, warmup: int, total: int, floor: float = 0.0,
                  peak: float = 1.0) -> float:
    """Linear warmup from peak / warmup to `peak` over `warmup` steps, then cosine decay
    to `floor * peak` at step `total` (flat after it).

    peak=1.0 gives the multiplier a `LambdaLR` wants; JEPA passes its learning rate. The
    multiplications keep the order each pipeline had before they shared this function
    (`peak * (step + 1) / warmup`), so their learning rates are bit-identical to it.

    Raises:
        ValueError: warmup < 0, total < 0, or floor outside [0, 1].
    """
    if warmup < 0 or total < 0:
        raise ValueError(f"warmup_cosine: warmup and total must be >= 0, got warmup={warmup!r}, "
                         f"total={total!r}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"warmup_cosine: floor must be in [0, 1], got {floor!r}")
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def warmup_cosine_lambda(optimizer: torch.optim.Optimizer, *, warmup: int, total: int,
                         floor: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` that scales every group's lr by `warmup_cosine(step, ...)`."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup=warmup, total=total, floor=floor))


def adamw(params: Iterable[nn.Parameter], *, lr: float, weight_decay: float,
          betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad, decaying only matrices (dim >= 2):
    biases, norm gains and other vectors take no weight decay (the usual split). With
    weight_decay 0 there is nothing to split and every parameter sits in one group."""
    params = [p for p in params if p.requires_grad]
    if not weight_decay:
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=0.0)
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas)
