"""Eager baselines the benchmarks time beside the reference: other ways popular repositories
write the same op. They are not the semantics (that is `wmkernels.reference`); the tests check
that they agree with it (tests/ops/test_vq.py, tests/ops/test_maskgit.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
