"""The target encoder: an exponential moving average of the context encoder's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


def momentum_at(step: int, total_steps: int, start: float, end: float = 1.0) -> float:
    """Linear momentum schedule (I-JEPA: 0.996 -> 1.0; V-JEPA: 0.998 -> 1.0).

    Returns start + (end - start) * min(step / total_steps, 1).
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps!r}")
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"momentum must satisfy 0 <= start <= end <= 1, got start={start!r}, "
                         f"end={end!r}")
    return start + (end - start) * min(max(step, 0) / total_steps, 1.0)


def make_target(online: nn.Module) -> nn.Module:
    """A frozen copy of `online` (no gradients, eval mode) to be tracked by `ema_update_`."""
    target = copy.deepcopy(online)
    target.requires_grad_(False)
    return target.eval()


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter.

    Buffers are copied (the encoders hold only fixed positional buffers).
    Raises ValueError if the modules' parameters do not match.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params) or any(a.shape != b.shape
                                             for a, b in zip(t_params, o_params, strict=True)):
        raise ValueError("target and online must have the same parameter shapes")
    # lerp_(end, w) = self + w * (end - self): weight (1 - momentum) toward the online weights.
    torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - momentum)
    for tb, ob in zip(target.buffers(), online.buffers(), strict=True):
        tb.copy_(ob)
