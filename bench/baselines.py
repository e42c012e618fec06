"""Eager baselines the benchmarks time beside the reference: other ways popular repositories
write the same op. They are not the semantics (that is `wmkernels.reference`); the tests check
that they agree with it (tests/ops/test_vq.py, tests/ops/test_maskgit.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wmkernels.reference.attention import causal_mask
from wmkernels.reference.maskgit import clean_logits, gumbel
from wmkernels.reference.vq import vq_distances


def vq_lookup_onehot(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2"):
    """The vector-quantize-pytorch style path: fp32 distance matrix, argmax, an N x K one-hot,
    and the quantized vectors gathered by a one-hot GEMM. Returns (indices, quantized)."""
    dist = -vq_distances(z, codebook, metric)
    indices = dist.argmax(-1)
    onehot = F.one_hot(indices, codebook.shape[0]).type(dist.dtype)
    return indices, onehot @ codebook.to(dist.dtype)


def maskgit_sample_gumbel(logits: torch.Tensor, temperature: float = 1.0,
                          top_k: int | None = None, generator: torch.Generator | None = None):
    """The same sampler written as google-research MaskGIT does (jax.random.categorical):
    argmax of logits / temperature + Gumbel noise over the whole (rows, V) tensor, then a
    softmax and a gather for the confidence. A second eager baseline for the benchmarks
    (its rows without a finite logit are not special-cased)."""
    x = clean_logits(logits)
    if temperature == 0:
        tokens = x.argmax(-1)
    else:
        t = x
        if top_k is not None and top_k < x.shape[-1]:
            kth = torch.topk(t, top_k, dim=-1).values[..., -1:]
            t = t.masked_fill(t < kth, float("-inf"))
        g = gumbel(t.shape, t.device, generator).to(t.dtype)
        tokens = (t / temperature + g).argmax(-1)
    conf = torch.softmax(x, dim=-1).gather(-1, tokens[..., None]).squeeze(-1).float()
    return tokens, conf


def temporal_attention_rearrange(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 causal: bool = True) -> torch.Tensor:
    """Temporal attention as ST-transformer repos write it: rearrange to (b s) h t d, one SDPA
    with the bottom-right causal mask, rearrange back. The reference adds a finiteness check
    (hidden NaN frames must not leak) that these repos do not pay, and under torch.compile it
    takes its per-frame path; the benches time this instead (same answer on finite inputs:
    tests/ops/test_attention.py::test_bench_baseline_matches_reference)."""
    B, Tq, S, H, D = q.shape
    Tk = k.shape[1]

    def frames_last(x):
        return x.permute(0, 2, 3, 1, 4).reshape(B * S, H, x.shape[1], D)

    mask = causal_mask(Tq, Tk, q.device) if causal and Tq > 1 else None
    out = F.scaled_dot_product_attention(frames_last(q), frames_last(k), frames_last(v),
                                         attn_mask=mask)
    return out.reshape(B, S, H, Tq, D).permute(0, 3, 1, 2, 4).contiguous()
