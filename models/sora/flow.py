"""Rectified flow (Liu et al. 2022; SD3, Esser et al. 2024; Open-Sora 1.2): training target,
timestep sampling, and the Euler sampler with classifier-free guidance.

Convention (SD3's): x_t = (1 - t) * x_0 + t * noise, t in [0, 1], t = 0 is data and t = 1
is pure noise. The model predicts the velocity v = dx_t/dt = noise - x_0, trained with MSE.
Training timesteps are logit-normal, t = sigmoid(m + s * n), n ~ N(0, 1) (SD3 found m = 0,
s = 1 best), which spends more steps at mid noise than a uniform t. Sampling integrates
dx/dt = v from t = 1 to t = 0 with Euler steps on a uniform grid.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from wmkernels.models.common.distributed import DistInfo, rank_rows

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def logit_normal_timesteps(n: int, *, mean: float = 0.0, std: float = 1.0,
                           generator: torch.Generator | None = None,
                           device: torch.device | str = "cpu") -> torch.Tensor:
    """n timesteps in (0, 1), float32: sigmoid(mean + std * N(0, 1))."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    z = torch.randn(n, generator=generator, device=device)
    return torch.sigmoid(mean + std * z)


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) * x0 + t * noise, with t (B,) broadcast over x0's other dims."""
    tb = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - tb) * x0 + tb * noise


def flow_loss(velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor,
              *, generator: torch.Generator | None = None, mean: float = 0.0,
              std: float = 1.0, dist: DistInfo | None = None) -> torch.Tensor:
    """Rectified-flow loss: MSE between `velocity(x_t, t)` and `noise - x0`.

    Args:
        velocity: callable (x_t (B, ...), t (B,) float32) -> prediction shaped like x_t.
        x0: clean latents (B, ...).
        generator: drives both the timesteps and the noise (reproducible training).
        dist: under DDP, x0 is this rank's equal share of the global batch: its
            timesteps and noise are its rows of the global batch's (`rank_rows`).
    Returns: scalar loss.
    """
    if x0.dim() < 2 or x0.shape[0] == 0:
        raise ValueError(f"x0 must be a non-empty (B, ...) batch, got shape {tuple(x0.shape)}")
    rows = x0.shape[0]
    t = rank_rows(lambda n: logit_normal_timesteps(n, mean=mean, std=std, generator=generator,
                                                   device=x0.device), rows, dist)
    noise = rank_rows(lambda n: torch.randn((n, *x0.shape[1:]), generator=generator,
                                            device=x0.device, dtype=x0.dtype), rows, dist)
    pred = velocity(interpolate(x0, noise, t), t)
    return F.mse_loss(pred, noise - x0)


def guided(cond: VelocityFn, uncond: VelocityFn | None, scale: float) -> VelocityFn:
    """Classifier-free guidance: v = v_u + scale * (v_c - v_u).

    scale == 1 returns `cond` itself (no unconditional pass, bit-identical to the
    conditional prediction); scale == 0 is the unconditional model. `uncond` may be None
    only when scale == 1.
    """
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if scale == 1.0:
        return cond
    if uncond is None:
        raise ValueError(f"guidance scale {scale} != 1 needs an unconditional velocity")

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        vu = uncond(x, t)
        return vu + scale * (cond(x, t) - vu)

    return v


@torch.no_grad()
def euler_sample(velocity: VelocityFn, noise: torch.Tensor, steps: int = 30) -> torch.Tensor:
    """Integrate dx/dt = velocity(x, t) from t = 1 (x = `noise`) to t = 0 with `steps` Euler
    steps on a uniform grid; returns the sample x_0 (same shape as `noise`).

    Deterministic given `noise` (draw it from a seeded generator for per-seed determinism).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    grid = torch.linspace(1.0, 0.0, steps + 1, device=noise.device)
    x = noise
    for i in range(steps):
        t = grid[i].expand(x.shape[0])
        x = x + (grid[i + 1] - grid[i]) * velocity(x, t)
    return x
