"""The transformer shared by Genie's three components: the models/common ST-transformer
(a stack of `wmkernels.nn.STBlock`) with learned spatial and temporal position embeddings,
which also serves frames one at a time from a KV cache."""

from __future__ import annotations

import torch
from torch import nn

from wmkernels.models.common import STTransformer


class PositionedSTTransformer(nn.Module):
    """Learned space/time positions added to (B, T, S, dim) tokens, then `layers` causal
    Genie ST blocks with QK-norm (and rotary positions too with `rope`) and a final
    LayerNorm.

    forward(x, start=0, cache=None): `start` is the time index of x's first frame (for the
    position embedding when frames arrive one at a time); `cache` a
    `wmkernels.nn.TemporalKVCache` holding the K/V of earlier frames (see `make_cache`).
    """

    def __init__(self, dim: int, heads: int, layers: int, max_frames: int, spatial: int, *,
                 rope: bool = False):
        super().__init__()
        self.max_frames = max_frames
        self.pos_space = nn.Parameter(torch.randn(spatial, dim) * 0.02)
        self.pos_time = nn.Parameter(torch.randn(max_frames, dim) * 0.02)
        self.st = STTransformer(dim, layers, heads, causal_time=True, qk_norm=True, rope=rope)

    def make_cache(self, batch: int):
        """An empty KV cache for `batch` clips of up to max_frames frames."""
        return self.st.make_cache(batch, self.max_frames, self.pos_space.shape[0])

    def forward(self, x: torch.Tensor, *, start: int = 0, cache=None) -> torch.Tensor:
        T = x.shape[1]
        if start + T > self.max_frames:
            raise ValueError(f"frames {start}..{start + T - 1} exceed the model's max_frames "
                             f"({self.max_frames})")
        x = x + self.pos_space + self.pos_time[start:start + T, None]
        return self.st(x, cache=cache)
