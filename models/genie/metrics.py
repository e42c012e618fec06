"""Genie's evaluation metrics: PSNR and the controllability metric ΔtPSNR. (The normalized
mutual information between latent and true actions is the world's
`wmkernels.models.data.normalized_mutual_info`, re-exported here.)"""

from __future__ import annotations

import torch

from wmkernels.models.data import normalized_mutual_info

__all__ = ["delta_psnr", "normalized_mutual_info", "psnr"]


def psnr(x: torch.Tensor, y: torch.Tensor, *, max_value: float = 1.0,
         dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, 10·log10(max² / MSE).

    Args:
        x, y: same-shape float tensors with values in [0, max_value].
        dims: dimensions the MSE averages over; None = all (a scalar result). E.g. for
            (B, T, C, H, W) clips, dims=(-3, -2, -1) gives one PSNR per frame.

    The MSE is clamped at 1e-10 so identical inputs give a large finite value (100 dB).
    Raises ValueError on a shape mismatch.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    err = (x.double() - y.double()).pow(2)
    mse = err.mean() if dims is None else err.mean(dim=dims)
    return 10.0 * torch.log10(max_value ** 2 / mse.clamp_min(1e-10))


def delta_psnr(target: torch.Tensor, from_inferred: torch.Tensor,
               from_random: torch.Tensor, *, max_value: float = 1.0) -> float:
    """ΔtPSNR = PSNR(x_t, x̂_t) − PSNR(x_t, x̂'_t) (Genie §3): x̂_t is generated with latent
    actions inferred from the real clip, x̂'_t with random latent actions. Positive means the
    inferred actions steer generation towards the real future. Inputs: the frame at step t,
    (B, C, H, W) or any equal shapes; the PSNRs are averaged over the batch first."""
    dims = tuple(range(1, target.dim()))
    real = psnr(target, from_inferred, max_value=max_value, dims=dims).mean()
    rand = psnr(target, from_random, max_value=max_value, dims=dims).mean()
    return float(real - rand)
