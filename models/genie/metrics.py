"""Genie's evaluation metrics: PSNR, the controllability metric ΔtPSNR, and a detector of the
agent on the world's rendered colours (how many blobs it falls into, where its centre is).
(The normalized mutual information between latent and true actions is the world's
`wmkernels.models.data.normalized_mutual_info`, re-exported here.)"""

from __future__ import annotations

import numpy as np
import torch

from wmkernels.models.data import normalized_mutual_info
from wmkernels.models.data.world import BACKGROUND, PALETTE, SOLID

__all__ = ["agent_mask", "agent_metrics", "blob_labels", "centroid", "count_blobs", "delta_psnr",
           "normalized_mutual_info", "psnr"]


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


# The world renders with a fixed set of colours, so a pixel's object is the nearest of them:
# the palette (agent and balls), the background and the solid walls, floor and platforms.
_COLOURS = torch.tensor(np.concatenate([PALETTE, BACKGROUND[None], SOLID[None]]),
                        dtype=torch.float64) / 255


def agent_mask(frames: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """Pixels a viewer would read as the agent: those whose nearest world colour (palette,
    background, solid) is the agent's. frames (B, T, 3, H, W) in [0, 1], colour (B,) palette
    ids -> (B, T, H, W) bool."""
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    if colour.shape != frames.shape[:1]:
        raise ValueError(f"colour must be (B,) = ({frames.shape[0]},) palette ids, got "
                         f"{tuple(colour.shape)}")
    pixels = frames.detach().double().movedim(2, -1).cpu()             # (B, T, H, W, 3)
    nearest = torch.cdist(pixels.reshape(-1, 3), _COLOURS).argmin(-1).view(pixels.shape[:-1])
    return (nearest == colour.cpu().view(-1, 1, 1, 1)).to(frames.device)


def blob_labels(mask: torch.Tensor) -> torch.Tensor:
    """Connected components (8-connected: pixels touching at a corner are one blob) of every
    (H, W) image of `mask` (..., H, W) bool -> (..., H, W) int64 labels, 0 outside the mask.

    Each pixel starts with its own label (1 + its index) and repeatedly takes the largest
    label of its 3x3 neighbourhood within the mask; at the fixed point every blob carries
    the label of its largest pixel, which only that pixel started with."""
    lead, (H, W) = mask.shape[:-2], mask.shape[-2:]
    m = mask.reshape(-1, 1, H, W).to(torch.float64)
    own = torch.arange(1, H * W + 1, dtype=torch.float64, device=mask.device).view(1, 1, H, W)
    labels = m * own
    while True:
        grown = torch.nn.functional.max_pool2d(labels, 3, stride=1, padding=1) * m
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.to(torch.int64).view(*lead, H, W)


def count_blobs(mask: torch.Tensor) -> torch.Tensor:
    """The number of connected components (8-connected) of every (H, W) image of `mask`
    (..., H, W) bool -> (...) int64: the pixels that kept their own label in blob_labels."""
    H, W = mask.shape[-2:]
    own = torch.arange(1, H * W + 1, device=mask.device).view(H, W)
    return ((blob_labels(mask) == own) & mask).sum((-2, -1))


def centroid(mask: torch.Tensor) -> torch.Tensor:
    """Centre of mass (x, y) in pixels of each (H, W) image of `mask` (..., H, W) bool ->
    (..., 2) float64; NaN where the mask is empty."""
    H, W = mask.shape[-2:]
    m = mask.to(torch.float64)
    n = m.sum((-2, -1))
    x = (m.sum(-2) * torch.arange(W, dtype=torch.float64, device=m.device)).sum(-1) / n
    y = (m.sum(-1) * torch.arange(H, dtype=torch.float64, device=m.device)).sum(-1) / n
    return torch.stack([x, y], -1)   # 0/0 = NaN for an empty mask


def agent_metrics(frames: torch.Tensor, real: torch.Tensor,
                  colour: torch.Tensor) -> dict[str, torch.Tensor]:
    """Where the agent is in `frames` against the `real` clip, both (B, T, 3, H, W) in
    [0, 1], colour (B,) the agent's palette id. Returns (B, T) tensors: "blobs" (connected
    agent-coloured blobs), "one_blob" (bool, exactly one) and "centroid_error" (pixels
    between the agent-coloured centroids of both, inf where either frame shows no agent)."""
    if frames.shape != real.shape:
        raise ValueError(f"frames and real must have the same shape, got "
                         f"{tuple(frames.shape)} and {tuple(real.shape)}")
    mask = agent_mask(frames, colour)
    err = (centroid(mask) - centroid(agent_mask(real, colour))).norm(dim=-1)
    blobs = count_blobs(mask)
    return {"blobs": blobs, "one_blob": blobs == 1,
            "centroid_error": torch.nan_to_num(err, nan=float("inf"))}
