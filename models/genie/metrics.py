"""Genie's evaluation metrics: PSNR, the controllability metric ΔtPSNR, and normalized mutual
information (NMI) between latent and true actions."""

from __future__ import annotations

import numpy as np
import torch


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


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(a, b) -> float:
    """NMI(a, b) = I(a; b) / ((H(a) + H(b)) / 2) for two equal-length label sequences
    (the arithmetic-mean normalization, scikit-learn's default). 1 = each labelling
    determines the other, 0 = independent. Both constant gives 1; one constant gives 0.

    Raises ValueError on different lengths or empty input.
    """
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.size} and {b.size}")
    if a.size == 0:
        raise ValueError("normalized_mutual_info needs at least one label, got none")
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    joint = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(joint, (ai, bi), 1.0)
    ha, hb = _entropy(joint.sum(1)), _entropy(joint.sum(0))
    if ha == 0.0 and hb == 0.0:
        return 1.0
    if ha == 0.0 or hb == 0.0:
        return 0.0
    mi = ha + hb - _entropy(joint.reshape(-1))
    return float(max(mi, 0.0) / ((ha + hb) / 2))
