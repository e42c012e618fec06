"""Factorized spatial/temporal attention layers on (B, T, S, C) video tokens, the Genie
ST-transformer block, and a temporal KV cache for frame-by-frame generation.

Every layer projects q, k, v with one linear into a packed (B, T, S, 3, H, D) tensor and
hands strided views of it to the attention op: there is no rearrange anywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from wmkernels.ops.attention import spatial_attention, temporal_attention


def rotary(x: torch.Tensor, positions: torch.Tensor, axis: int,
           base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (RoFormer, half-split pairing) of x (..., D) whose `axis`
    holds the integer `positions` (P,). D must be even. Computed in fp32, returned in
    x.dtype (a new tensor)."""
    D = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (P, D/2)
    shape = [1] * x.dim()
    shape[axis], shape[-1] = positions.shape[0], D // 2
    cos, sin = angles.cos().view(shape), angles.sin().view(shape)
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class TemporalKVCache:
    """Preallocated per-layer key/value buffers (B, max_frames, S, H, D) of causal temporal
    attention, so that generating frame t attends over frames 0..t without recomputing them.

    Args:
        batch, max_frames, tokens_per_frame (S), heads (H), head_dim (D), num_layers: sizes.
        dtype, device: of the buffers (must match the activations that use the cache).

    Each layer has its own length: a layer's `append` writes the new frames' K/V after that
    layer's stored frames and returns views of the filled prefix. `frames` is the number of
    frames stored in every layer (the frame counter); `reset()` empties the cache.
    """

    def __init__(self, batch: int, max_frames: int, tokens_per_frame: int, heads: int,
                 head_dim: int, num_layers: int, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None):
        sizes = dict(batch=batch, max_frames=max_frames, tokens_per_frame=tokens_per_frame,
                     heads=heads, head_dim=head_dim, num_layers=num_layers)
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        shape = (batch, max_frames, tokens_per_frame, heads, head_dim)
        self.shape, self.num_layers = shape, num_layers
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.lengths = [0] * num_layers

    @property
    def max_frames(self) -> int:
        return self.shape[1]

    @property
    def frames(self) -> int:
        """Frames whose keys and values are stored in every layer."""
        return min(self.lengths)

    def reset(self) -> None:
        """Forget every stored frame (buffers are kept, not zeroed)."""
        self.lengths = [0] * self.num_layers

    def truncate(self, frames: int) -> None:
        """Keep only the first `frames` frames of every layer (buffers are kept). This is
        how a caller undoes appends it made only to look ahead, e.g. MaskGIT passes over a
        partly decoded frame whose K/V are recomputed once the frame is final.

        Raises ValueError unless 0 <= frames <= the frames stored in every layer."""
        if isinstance(frames, bool) or not isinstance(frames, int) or not (
                0 <= frames <= self.frames):
            raise ValueError(f"frames must be an int in [0, {self.frames}] (the frames stored "
                             f"in every layer), got {frames!r}")
        self.lengths = [frames] * self.num_layers

    def _check_layer(self, layer) -> None:
        if isinstance(layer, bool) or not isinstance(layer, int) or not (
                0 <= layer < self.num_layers):
            raise ValueError(f"layer must be an int in [0, {self.num_layers}), got {layer!r}")

    def keys(self, layer: int) -> torch.Tensor:
        """The stored keys of `layer`: a (B, length, S, H, D) view."""
        self._check_layer(layer)
        return self.k[layer][:, : self.lengths[layer]]

    def values(self, layer: int) -> torch.Tensor:
        """The stored values of `layer`: a (B, length, S, H, D) view."""
        self._check_layer(layer)
        return self.v[layer][:, : self.lengths[layer]]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, Tn, S, H, D) as the next Tn frames of `layer`.

        Returns (keys, values): views (B, length, S, H, D) of everything stored for the
        layer, the new frames last. Raises ValueError when shapes, dtype or device do not
        match the cache or when it would hold more than max_frames frames.
        """
        self._check_layer(layer)
        B, _, S, H, D = self.shape
        buf = self.k[layer]
        for name, x in (("k", k), ("v", v)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != 5 or (x.shape[0], x.shape[2], x.shape[3], x.shape[4]) != (B, S, H, D):
                raise ValueError(f"{name} must be (B, Tn, S, H, D) = ({B}, Tn, {S}, {H}, {D}) "
                                 f"to match the cache, got {tuple(x.shape)}")
            if x.dtype != buf.dtype or x.device != buf.device:
                raise ValueError(f"{name} is {x.dtype} on {x.device} but the cache holds "
                                 f"{buf.dtype} on {buf.device}")
        if k.shape[1] != v.shape[1]:
            raise ValueError(f"k and v must hold the same frames, got {k.shape[1]} and "
                             f"{v.shape[1]}")
        t0, tn = self.lengths[layer], k.shape[1]
        if t0 + tn > self.max_frames:
            raise ValueError(f"the cache holds {t0} frames of at most {self.max_frames}; "
                             f"cannot append {tn} more (reset() it or allocate more frames)")
        self.k[layer][:, t0:t0 + tn].copy_(k)
        self.v[layer][:, t0:t0 + tn].copy_(v)
        self.lengths[layer] = t0 + tn
        return self.keys(layer), self.values(layer)

    def __repr__(self) -> str:
        B, T, S, H, D = self.shape
        return (f"TemporalKVCache(batch={B}, max_frames={T}, tokens_per_frame={S}, heads={H}, "
                f"head_dim={D}, num_layers={self.num_layers}, frames={self.frames})")


class _FactorizedAttention(nn.Module):
    """Shared parts: packed QKV linear, per-head RMS QK-norm, rotary, output projection."""

    def __init__(self, dim: int, heads: int, qk_norm: bool, rope: bool, backend: str | None):
        super().__init__()
        if heads < 1 or dim < 1 or dim % heads:
            raise ValueError(f"dim must be a positive multiple of heads, got dim={dim}, "
                             f"heads={heads}")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        if rope and self.head_dim % 2:
            raise ValueError(f"rope needs an even head dim, got dim/heads = {self.head_dim}")
        self.rope, self.backend = rope, backend
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be (B, T, S, {self.dim}), got shape {tuple(x.shape)}")
        B, T, S, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, S, 3, self.heads, self.head_dim).unbind(3)
        return self.q_norm(q), self.k_norm(k), v

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, rope={self.rope}, backend={self.backend!r}"


class SpatialAttention(_FactorizedAttention):
    """Self-attention among the S tokens of each frame of x (B, T, S, dim) -> (B, T, S, dim).

    Args:
        dim: channels C = heads * head_dim. heads: H.
        qk_norm: RMS-normalize q and k per head (learned scale) before attention.
        rope: rotary embedding of q, k at positions 0..S-1 (row-major patches).
        backend: passed to `wmkernels.spatial_attention`.
    """

    def __init__(self, dim: int, heads: int, *, qk_norm: bool = True, rope: bool = False,
                 backend: str | None = None):
        super().__init__(dim, heads, qk_norm, rope, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        B, T, S, C = x.shape
        if self.rope:
            pos = torch.arange(S, device=x.device)
            q, k = rotary(q, pos, 2), rotary(k, pos, 2)
        out = spatial_attention(q, k, v, backend=self.backend)
        return self.proj(out.view(B, T, S, C))


class TemporalAttention(_FactorizedAttention):
    """Self-attention across the T frames at each spatial position of x (B, T, S, dim).

    Args:
        dim, heads, qk_norm, backend: as `SpatialAttention`.
        causal: frame t attends to frames <= t only.
        rope: rotary embedding of q, k at their frame index (absolute, so that it stays
            right with a KV cache).

    forward(x, cache=None, layer=0): with a `TemporalKVCache` (causal only), the keys and
    values of x's frames are appended to `cache`'s buffers of `layer` and x's frames attend
    over every stored frame: x holds only the new frames.
    """

    def __init__(self, dim: int, heads: int, *, causal: bool = True, qk_norm: bool = True,
                 rope: bool = False, backend: str | None = None):
        super().__init__(dim, heads, qk_norm, rope, backend)
        self.causal = causal

    def forward(self, x: torch.Tensor, cache: TemporalKVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        q, k, v = self._qkv(x)
        B, T, S, C = x.shape
        t0 = 0
        if cache is not None:
            if not isinstance(cache, TemporalKVCache):
                raise TypeError(f"cache must be a TemporalKVCache, got {type(cache).__name__}")
            if not self.causal:
                raise ValueError("a KV cache needs causal temporal attention (causal=True): "
                                 "with bidirectional attention past frames would change")
            cache._check_layer(layer)
            t0 = cache.lengths[layer]
        if self.rope:
            pos = torch.arange(t0, t0 + T, device=x.device)
            q, k = rotary(q, pos, 1), rotary(k, pos, 1)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        try:
            out = temporal_attention(q, k, v, causal=self.causal, backend=self.backend)
        except Exception:
            if cache is not None:  # a failed call must not leave its frames in the cache
                cache.lengths[layer] = t0
            raise
        return self.proj(out.view(B, T, S, C))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", causal={self.causal}"


class STBlock(nn.Module):
    """The ST-transformer block of Genie: spatial attention -> temporal attention -> MLP,
    each with a pre-LayerNorm and a residual, on x (B, T, S, dim).

    Args:
        dim, heads: channels and heads. causal_time: causal temporal attention.
        mlp_ratio: MLP hidden size / dim (GELU). qk_norm: QK RMS-norm in both attentions.
        backend: passed to the attention ops. rope: rotary embeddings in both attentions.

    forward(x, cache=None, layer=0): with a `TemporalKVCache`, x holds the newest frame(s)
    only; their temporal keys/values go to `cache` under index `layer` and they attend over
    every stored frame, so generating frame t costs one frame of spatial and MLP work. A
    stack of blocks passes `layer=i` for block i.
    """

    def __init__(self, dim: int, heads: int, *, causal_time: bool = True,
                 mlp_ratio: float = 4.0, qk_norm: bool = True, backend: str | None = None,
                 rope: bool = False):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        if hidden < 1:
            raise ValueError(f"mlp_ratio must give a hidden size >= 1, got {mlp_ratio}")
        self.norm1 = nn.LayerNorm(dim)
        self.spatial = SpatialAttention(dim, heads, qk_norm=qk_norm, rope=rope, backend=backend)
        self.norm2 = nn.LayerNorm(dim)
        self.temporal = TemporalAttention(dim, heads, causal=causal_time, qk_norm=qk_norm,
                                          rope=rope, backend=backend)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cache: TemporalKVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        x = x + self.spatial(self.norm1(x))
        x = x + self.temporal(self.norm2(x), cache=cache, layer=layer)
        return x + self.mlp(self.norm3(x))
