"""The ST-transformer of Genie: a stack of `wmkernels.nn.STBlock` (spatial attention within
each frame, then causal temporal attention across frames, then an MLP) with a final norm.

Cost is linear in the number of frames T (attention is over S tokens or T frames, never
T*S). With a `TemporalKVCache`, frames can be fed one (or a few) at a time: each block
appends the new frames' temporal keys/values to the cache and attends over everything
stored, so generating frame t never recomputes frames < t.
"""

from __future__ import annotations

import torch
from torch import nn

from wmkernels.nn import STBlock, TemporalKVCache


class STTransformer(nn.Module):
    """(B, T, S, dim) tokens -> (B, T, S, dim), S spatial tokens per frame.

    Args:
        dim, depth, heads: width, number of STBlocks, attention heads (dim % heads == 0).
        causal_time: causal temporal attention (frame t sees frames <= t). Required for a
            KV cache. Genie's tokenizer, LAM decoder and dynamics are causal.
        mlp_ratio, qk_norm, rope, backend: passed to every `STBlock` (rope gives rotary
            positions over S within a frame and over the absolute frame index in time,
            which stays right when frames arrive through a cache).
        cond_dim: when set, `forward` takes `cond` (B, T, cond_dim), one vector per frame
            (e.g. Genie's latent-action embedding), projected to dim and added to every
            token of its frame before the first block.

    forward(x, cond=None, cache=None): with `cache` (from `make_cache`), x holds only the
    new frames; block i uses cache layer i. Raises ValueError on shape mismatches.
    """

    def __init__(self, dim: int, depth: int, heads: int, *, causal_time: bool = True,
                 mlp_ratio: float = 4.0, qk_norm: bool = True, rope: bool = False,
                 backend: str | None = None, cond_dim: int | None = None) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("depth", depth), ("heads", heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"STTransformer: {name} must be a positive int, got {value!r}")
        if cond_dim is not None and (isinstance(cond_dim, bool) or not isinstance(cond_dim, int)
                                     or cond_dim < 1):
            raise ValueError(f"STTransformer: cond_dim must be None or a positive int, "
                             f"got {cond_dim!r}")
        self.dim, self.depth, self.heads, self.cond_dim = dim, depth, heads, cond_dim
        self.causal_time = causal_time
        self.blocks = nn.ModuleList(
            STBlock(dim, heads, causal_time=causal_time, mlp_ratio=mlp_ratio, qk_norm=qk_norm,
                    backend=backend, rope=rope)
            for _ in range(depth)
        )
        self.cond_proj = nn.Linear(cond_dim, dim) if cond_dim is not None else None
        self.norm = nn.LayerNorm(dim)

    def make_cache(self, batch: int, max_frames: int, tokens_per_frame: int, *,
                   dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> TemporalKVCache:
        """An empty `TemporalKVCache` sized for this stack (one layer per block); dtype and
        device default to the parameters'."""
        if not self.causal_time:
            raise ValueError("STTransformer.make_cache: a KV cache needs causal_time=True")
        p = self.norm.weight
        return TemporalKVCache(batch, max_frames, tokens_per_frame, self.heads,
                               self.dim // self.heads, self.depth,
                               dtype=dtype or p.dtype, device=device or p.device)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                cache: TemporalKVCache | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"STTransformer: x must be (B, T, S, {self.dim}), got {shape}")
        if (cond is None) != (self.cond_proj is None):
            raise ValueError("STTransformer: pass cond exactly when the model was built with "
                             f"cond_dim (cond_dim={self.cond_dim}, cond given: {cond is not None})")
        if cond is not None:
            if cond.shape != (*x.shape[:2], self.cond_dim):
                raise ValueError(f"STTransformer: cond must be (B, T, {self.cond_dim}) = "
                                 f"{(*x.shape[:2], self.cond_dim)}, got {tuple(cond.shape)}")
            x = x + self.cond_proj(cond)[:, :, None, :]
        if cache is not None and cache.num_layers < self.depth:
            raise ValueError(f"STTransformer: cache has {cache.num_layers} layers, the model "
                             f"{self.depth} blocks")
        for i, block in enumerate(self.blocks):
            x = block(x, cache=cache, layer=i)
        return self.norm(x)
