"""A diffusers attention processor for factorized (spatial / temporal) video transformers.

Latte-style models (`LatteTransformer3DModel`) run spatial blocks on (B*T, S, C) tokens and
temporal blocks on (B*S, T, C) tokens. The processor feeds the projected q/k/v to
`spatial_attention` (the sequence is the S positions of a frame: a (B*T, 1, S, H, D) view)
or `temporal_attention` (non-causal over the T frames at a position: a (B*S, T, 1, H, D)
view), without the head transposes and the output transpose-copy of the stock processor;
with fused projections (`attn.fuse_projections()`) q/k/v are zero-copy views of the packed
projection, where torch's SDPA would need them copied.

Falls back to diffusers' `AttnProcessor2_0` (`FusedAttnProcessor2_0` for fused projections)
for what it does not cover: cross-attention
(`encoder_hidden_states`), `attention_mask`, `group_norm`, `spatial_norm`, 4-D inputs.
"""

from __future__ import annotations

import torch

from wmkernels.integrations._versions import check_version
from wmkernels.ops.attention import spatial_attention, temporal_attention

TESTED_VERSIONS = ("0.42.1",)
KINDS = ("spatial", "temporal")


class WMKFactorizedAttnProcessor:
    """diffusers attention processor (the `AttnProcessor` call convention) running self-
    attention through `wmkernels.spatial_attention` or `temporal_attention`.

    Args:
        kind: "spatial" (the sequence holds the positions of one frame) or "temporal" (the
            frames at one position; non-causal, as Latte). The math is the same softmax
            attention either way; the kind picks the op, its routing and its kernels.
        backend: passed to the ops (None = automatic).

    Raises:
        ValueError: kind not one of KINDS. ImportError: diffusers is not installed.
    """

    def __init__(self, kind: str = "spatial", backend: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        check_version("diffusers", TESTED_VERSIONS)
        from diffusers.models.attention_processor import AttnProcessor2_0, FusedAttnProcessor2_0

        self.kind, self.backend = kind, backend
        self._fallback, self._fused_fallback = AttnProcessor2_0(), FusedAttnProcessor2_0()

    def __call__(self, attn, hidden_states: torch.Tensor,
                 encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        fused = getattr(attn, "fused_projections", False)
        if (encoder_hidden_states is not None or attention_mask is not None
                or attn.group_norm is not None or attn.spatial_norm is not None
                or hidden_states.ndim != 3):
            fallback = self._fused_fallback if fused else self._fallback
            return fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                            *args, **kwargs)
        residual = hidden_states
        batch, length, _ = hidden_states.shape
        heads = attn.heads
        if fused:  # (B, L, 3 * H * D) as FusedAttnProcessor2_0 splits it: q, k, v blocks
            qkv = attn.to_qkv(hidden_states)
            q, k, v = qkv.view(batch, length, 3, heads, -1).unbind(2)
        else:
            q, k, v = (p(hidden_states).view(batch, length, heads, -1)
                       for p in (attn.to_q, attn.to_k, attn.to_v))
        if attn.norm_q is not None:  # per-head norms act on the last (head) dim
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        # the stock processor ignores attn.scale too (SDPA's default D ** -0.5)
        if self.kind == "spatial":
            out = spatial_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                    backend=self.backend)
        else:
            out = temporal_attention(q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2),
                                     causal=False, backend=self.backend)
        hidden_states = out.view(batch, length, -1).to(q.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def apply_to_latte(model, backend: str | None = None):
    """Set `WMKFactorizedAttnProcessor` on the self-attention of a diffusers
    `LatteTransformer3DModel`: "spatial" on `transformer_blocks[i].attn1`, "temporal" on
    `temporal_transformer_blocks[i].attn1`; cross-attention keeps its processor. Returns
    the model. `attn.set_processor(AttnProcessor2_0())` on its `Attention` modules reverts
    it.

    Raises:
        TypeError: the model has no Latte-style `transformer_blocks` /
            `temporal_transformer_blocks`.
    """
    if not (hasattr(model, "transformer_blocks")
            and hasattr(model, "temporal_transformer_blocks")):
        raise TypeError(f"model must be a Latte-style transformer with transformer_blocks and "
                        f"temporal_transformer_blocks, got {type(model).__name__}")
    spatial = WMKFactorizedAttnProcessor("spatial", backend)
    temporal = WMKFactorizedAttnProcessor("temporal", backend)
    for block in model.transformer_blocks:
        block.attn1.set_processor(spatial)
    for block in model.temporal_transformer_blocks:
        block.attn1.set_processor(temporal)
    return model
