"""Fixed sine-cosine positional embeddings (1D / 2D / 3D) and diffusion timestep embeddings.

The 1D embedding of position p at frequency w_i = 10000^(-2i/d) is [sin(p w_i), cos(p w_i)]
(Transformer, Vaswani et al. 2017). 2D (ViT/MAE) concatenates one 1D embedding per axis;
3D gives a quarter of the channels to time and the rest to the 2D spatial grid, so spatial
neighbours stay close within a frame (the split used by video ViTs such as Latte/V-JEPA
differs in the fraction only). Everything is computed in float64 and returned as float32.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_dim(dim, multiple: int, who: str) -> None:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < multiple or dim % multiple:
        raise ValueError(f"{who}: dim must be a positive multiple of {multiple}, got {dim!r}")


def _positions(n, who: str) -> torch.Tensor:
    if isinstance(n, torch.Tensor):
        if n.dim() != 1:
            raise ValueError(f"{who}: positions must be 1D, got shape {tuple(n.shape)}")
        return n.to(torch.float64)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{who}: expected a length >= 0 or a 1D positions tensor, got {n!r}")
    return torch.arange(n, dtype=torch.float64)


def sincos_1d(positions: int | torch.Tensor, dim: int) -> torch.Tensor:
    """(N, dim) float32 embedding of positions 0..N-1 (an int N) or of a 1D tensor of
    (possibly fractional) positions. dim must be even."""
    _check_dim(dim, 2, "sincos_1d")
    pos = _positions(positions, "sincos_1d")
    omega = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = pos[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(height: int, width: int, dim: int) -> torch.Tensor:
    """(height*width, dim) float32 embedding of a row-major grid; the first half of the
    channels encodes the row, the second the column. dim must be a multiple of 4."""
    _check_dim(dim, 4, "sincos_2d")
    rows = sincos_1d(height, dim // 2)
    cols = sincos_1d(width, dim // 2)
    return torch.cat([rows[:, None].expand(-1, width, -1),
                      cols[None, :].expand(height, -1, -1)], dim=-1).reshape(height * width, dim)


def sincos_3d(frames: int, height: int, width: int, dim: int) -> torch.Tensor:
    """(frames, height*width, dim) float32 embedding matching (B, T, S, C) tokens.

    Channels: dim/4 (rounded down to even) encode the frame index, the rest (rounded down
    to a multiple of 4) the spatial grid; a remainder of 2 channels is zero. dim must be
    even and >= 8.
    """
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 8 or dim % 2:
        raise ValueError(f"sincos_3d: dim must be an even int >= 8, got {dim!r}")
    dim_t = 2 * (dim // 8)
    dim_s = 4 * ((dim - dim_t) // 4)
    t = sincos_1d(frames, dim_t)[:, None].expand(-1, height * width, -1)
    s = sincos_2d(height, width, dim_s)[None].expand(frames, -1, -1)
    pad = torch.zeros(frames, height * width, dim - dim_t - dim_s)
    return torch.cat([t, s, pad], dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) timesteps (float or int, fractional allowed) -> (B, dim) float32 [cos, sin]
    features at frequencies max_period^(-i/(dim/2)), as in DDPM/DiT. dim must be even."""
    _check_dim(dim, 2, "timestep_embedding")
    if not isinstance(t, torch.Tensor) or t.dim() != 1:
        raise ValueError(f"timestep_embedding: t must be a 1D tensor, got "
                         f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t)}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                           device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class TimestepEmbedder(nn.Module):
    """Timesteps (B,) -> (B, dim): sinusoidal features followed by an MLP (DiT).

    Args:
        dim: output width. frequency_dim: width of the sinusoidal features (even).
        scale: multiplies t first, e.g. 1000 for rectified-flow times in [0, 1] so the
            frequencies see the same range as integer diffusion steps.
    """

    def __init__(self, dim: int, frequency_dim: int = 256, scale: float = 1.0) -> None:
        super().__init__()
        _check_dim(frequency_dim, 2, "TimestepEmbedder")
        self.frequency_dim, self.scale = frequency_dim, scale
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = timestep_embedding(t * self.scale, self.frequency_dim)
        return self.mlp(features.to(self.mlp[0].weight.dtype))
