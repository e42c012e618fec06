"""The `sdpa` attention backend: torch's scaled_dot_product_attention on zero-copy views.

Spatial attention over (B, T, S, H, D) is SDPA over `q.view(B*T, S, H, D).transpose(1, 2)`,
which exists whenever the (B, T) strides merge (packed-QKV views included). Temporal
attention is SDPA over `q.view(B, T, S*H, D).transpose(1, 2)`, which exists when the (S, H)
strides merge (contiguous q, k, v), or else over `q.permute(0, 2, 3, 1, 4)` viewed as
(B*S, H, T, D), which exists when the (B, S) strides merge (B = 1 included, so views of a
packed (..., 3, H, D) projection of one clip or one KV cache). Where neither view exists
the same call runs on a reshaped copy: correct, but the copy is what the routing rule avoids
by sending such calls to our kernels. Autograd, float64 and
torch.compile are SDPA's own.

Unlike the other backends, causal temporal attention here (Tq > 1) lets NaN or inf in a key
or value frame that a query frame must not see reach that query frame's output and
gradients: SDPA adds the mask's -inf to the scores (NaN + -inf is NaN) and multiplies the
hidden probabilities, exact zeros, by v (0 * NaN is NaN). Finite inputs are unaffected.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wmkernels.reference.attention import causal_mask


def _merges(x: torch.Tensor, dim: int) -> bool:
    """True if dims `dim` and `dim + 1` of `x` can be viewed as one."""
    size, stride = x.shape, x.stride()
    return size[dim] == 1 or size[dim + 1] == 1 or stride[dim] == size[dim + 1] * stride[dim + 1]


def spatial_view_exists(*xs: torch.Tensor) -> bool:
    """Whether every (B, T, S, H, D) tensor has a zero-copy (B*T, H, S, D) view."""
    return all(_merges(x, 0) for x in xs)


def _batch_positions_merge(x: torch.Tensor) -> bool:
    """True if dims B (0) and S (2) of a (B, T, S, H, D) tensor can be viewed as one."""
    return x.shape[0] == 1 or x.shape[2] == 1 or x.stride(0) == x.shape[2] * x.stride(2)


def _temporal_layout(*xs: torch.Tensor) -> str | None:
    """The zero-copy SDPA layout every (B, T, S, H, D) tensor has: "heads" (B, S*H, T, D),
    else "positions" (B*S, H, T, D), else None."""
    if all(_merges(x, 2) for x in xs):
        return "heads"
    if all(_batch_positions_merge(x) for x in xs):
        return "positions"
    return None


def temporal_view_exists(*xs: torch.Tensor) -> bool:
    """Whether every (B, T, S, H, D) tensor has a zero-copy (B, S*H, T, D) view, or every one
    a zero-copy (B*S, H, T, D) view."""
    return _temporal_layout(*xs) is not None


def _back(out: torch.Tensor, shape) -> torch.Tensor:
    # SDPA on CPU writes (N, L, heads, D) memory, so this is a view there, a copy elsewhere.
    return out.transpose(1, 2).reshape(shape).contiguous()


def spatial_attention(q, k, v, scale: float) -> torch.Tensor:
    """Spatial attention of (B, T, S, H, D) q, k, v via SDPA over (B*T, H, S, D) views."""
    B, T, S, H, D = q.shape
    t = lambda x: x.reshape(B * T, S, H, D).transpose(1, 2)
    return _back(F.scaled_dot_product_attention(t(q), t(k), t(v), scale=scale), q.shape)


def temporal_attention(q, k, v, causal: bool, scale: float) -> torch.Tensor:
    """Temporal attention via SDPA over (B, S*H, T, D) views, or (B*S, H, T, D) views where
    only those exist; causal is bottom-right aligned (query frame i sees key frames
    j <= Tk - Tq + i)."""
    B, Tq, S, H, D = q.shape
    Tk = k.shape[1]
    by_position = _temporal_layout(q, k, v) == "positions"
    if by_position:
        t = lambda x: x.permute(0, 2, 3, 1, 4).reshape(B * S, H, x.shape[1], D)
    else:
        t = lambda x: x.reshape(B, x.shape[1], S * H, D).transpose(1, 2)
    # SDPA's is_causal is top-left aligned: equal to ours only when Tq == Tk. With one
    # query frame every key frame is visible, so no mask at all.
    mask, top_left = None, False
    if causal and Tq > 1:
        if Tq == Tk:
            top_left = True
        else:
            mask = causal_mask(Tq, Tk, q.device)
    out = F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=mask, is_causal=top_left,
                                         scale=scale)
    if by_position:
        return out.view(B, S, H, Tq, D).permute(0, 3, 1, 2, 4).contiguous()
    return _back(out, q.shape)
