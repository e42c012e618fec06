"""Factorized spatial/temporal attention written the way ST-transformer repos write it today:
rearrange the (B, T, S, H, D) tokens so the attended axis is the sequence axis, call
`scaled_dot_product_attention`, rearrange back. Every rearrange is a transposing copy.

These define the semantics the kernels must match:
- spatial: for each (b, t, head), softmax attention over the S positions of frame t.
- temporal: for each (b, s, head), softmax attention over frames. q has Tq frames, k/v have
  Tk >= Tq; with `causal`, query frame i sees key frames j <= Tk - Tq + i (the causal mask
  aligned to the bottom-right corner, which is what a KV cache of past frames needs).
- scale defaults to D ** -0.5. Low-precision inputs go through SDPA in their own dtype.
- A key frame hidden by the causal mask never influences that query frame, not even through
  NaN or inf, forward or backward, as in the kernels, whose sums never take masked keys. SDPA
  with a mask lets them in: it adds the mask's -inf to a NaN score (still NaN) and multiplies
  the hidden probabilities, exact zeros, by v (0 * NaN is NaN). So a call whose hidden frames
  hold NaN or inf runs one SDPA per query frame over the key frames it sees.
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

    qf, kf, vf = frames_last(q), frames_last(k), frames_last(v)
    if not causal or Tq == 1:  # every key frame is visible (Tq = 1: the KV-cache decode step)
        out = F.scaled_dot_product_attention(qf, kf, vf, scale=scale)
    elif _finite(kf[:, :, Tk - Tq + 1:], vf[:, :, Tk - Tq + 1:]):
        # the frames some query frame must not see are finite: the mask's zeros are exact
        out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=causal_mask(Tq, Tk, q.device),
                                             scale=scale)
    else:  # one call per query frame over the key frames it sees
        out = torch.cat([F.scaled_dot_product_attention(
            qf[:, :, i:i + 1], kf[:, :, :Tk - Tq + i + 1], vf[:, :, :Tk - Tq + i + 1],
            scale=scale) for i in range(Tq)], dim=2)
    return out.reshape(B, S, H, Tq, D).permute(0, 3, 1, 2, 4).contiguous()


def _finite(*xs: torch.Tensor) -> bool:
    """False if some element is NaN or inf (their sum is then NaN or inf; a finite sum that
    overflows says False too, which costs only the slower exact path). A sum reads the data
    once, where isfinite().all() writes a mask first. Always False under torch.compile,
    which cannot branch on tensor values (the per-frame calls give the same answer)."""
    if torch.compiler.is_compiling():
        return False
    return bool(sum(x.sum(dtype=torch.promote_types(x.dtype, torch.float32)) for x in xs)
                .isfinite())
