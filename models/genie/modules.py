"""Pieces shared by Genie's three components: patching and a stack of ST-transformer blocks
(`wmkernels.nn.STBlock`) with learned space/time positions and an optional KV cache."""

from __future__ import annotations

import torch
from torch import nn

import wmkernels


def patchify(video: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, C, H, W) -> (B, T, S, patch*patch*C), S = (H/patch)*(W/patch) row-major."""
    B, T, C, H, W = video.shape
    x = video.reshape(B, T, C, H // patch, patch, W // patch, patch)
    return x.permute(0, 1, 3, 5, 4, 6, 2).reshape(B, T, (H // patch) * (W // patch), -1)


def unpatchify(x: torch.Tensor, patch: int, size: int, channels: int = 3) -> torch.Tensor:
    """Inverse of patchify for square size x size frames: (B, T, S, p*p*C) -> (B, T, C, H, W)."""
    B, T = x.shape[:2]
    n = size // patch
    x = x.reshape(B, T, n, n, patch, patch, channels)
    return x.permute(0, 1, 6, 2, 4, 3, 5).reshape(B, T, channels, size, size)


class STTransformer(nn.Module):
    """`layers` Genie ST blocks (spatial attention, causal temporal attention, MLP) over
    (B, T, S, dim) tokens, with learned spatial and temporal position embeddings added at the
    input and a final LayerNorm.

    forward(x, start=0, cache=None): `start` is the time index of x's first frame (for the
    position embedding when frames arrive one at a time); `cache` a
    `wmkernels.nn.TemporalKVCache` holding the K/V of earlier frames.
    """

    def __init__(self, dim: int, heads: int, layers: int, max_frames: int, spatial: int,
                 *, causal: bool = True):
        super().__init__()
        self.max_frames = max_frames
        self.pos_space = nn.Parameter(torch.randn(spatial, dim) * 0.02)
        self.pos_time = nn.Parameter(torch.randn(max_frames, dim) * 0.02)
        self.blocks = nn.ModuleList(
            wmkernels.nn.STBlock(dim, heads, causal_time=causal, qk_norm=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, *, start: int = 0, cache=None) -> torch.Tensor:
        T = x.shape[1]
        if start + T > self.max_frames:
            raise ValueError(f"frames {start}..{start + T - 1} exceed the model's max_frames "
                             f"({self.max_frames})")
        x = x + self.pos_space + self.pos_time[start:start + T, None]
        for i, block in enumerate(self.blocks):
            x = block(x, cache=cache, layer=i)
        return self.norm(x)
