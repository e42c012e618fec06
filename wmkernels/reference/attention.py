"""Factorized spatial/temporal attention written the way ST-transformer repos write it today:
rearrange the (B, T, S, H, D) tokens so the attended axis is the sequence axis, call
`scaled_dot_product_attention`, rearrange back. Every rearrange is a transposing copy.

These define the semantics the kernels must match:
- spatial: for each (b, t, head), softmax attention over the S positions of frame t.
- temporal: for each (b, s, head), softmax attention over frames. q has Tq frames, k/v have
  Tk >= Tq; with `causal`, query frame i sees key frames j <= Tk - Tq + i (the causal mask
  aligned to the bottom-right corner, which is what a KV cache of past frames needs).
- scale defaults to D ** -0.5. Low-precision inputs go through SDPA in their own dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def causal_mask(tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """Bool (tq, tk), True where query frame i may see key frame j: j <= tk - tq + i."""
    i = torch.arange(tq, device=device)[:, None]
    j = torch.arange(tk, device=device)[None, :]
    return j <= (tk - tq) + i


def spatial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      scale: float | None = None) -> torch.Tensor:
    """q, k, v (B, T, S, H, D) -> (B, T, S, H, D): `rearrange('b t s h d -> (b t) h s d')`,
    SDPA over s, and the inverse rearrange."""
    B, T, S, H, D = q.shape

    def heads_first(x):  # (b t) h s d, a copy
        return x.reshape(B * T, S, H, D).transpose(1, 2).contiguous()

    out = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v),
                                         scale=scale)
    return out.transpose(1, 2).reshape(B, T, S, H, D).contiguous()


def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                       scale: float | None = None) -> torch.Tensor:
    """q (B, Tq, S, H, D), k/v (B, Tk, S, H, D) -> (B, Tq, S, H, D):
    `rearrange('b t s h d -> (b s) h t d')`, SDPA over t, and the inverse rearrange."""
    B, Tq, S, H, D = q.shape
    Tk = k.shape[1]

    def frames_last(x):  # (b s) h t d, a copy
        t = x.shape[1]
        return x.permute(0, 2, 3, 1, 4).reshape(B * S, H, t, D).contiguous()

    mask = causal_mask(Tq, Tk, q.device) if causal else None
    out = F.scaled_dot_product_attention(frames_last(q), frames_last(k), frames_last(v),
                                         attn_mask=mask, scale=scale)
    return out.reshape(B, S, H, Tq, D).permute(0, 3, 1, 2, 4).contiguous()
