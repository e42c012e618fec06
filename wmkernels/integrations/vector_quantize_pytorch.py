"""vector-quantize-pytorch's codebooks on wmkernels' VQ ops.

`Codebook.forward` of vector-quantize-pytorch builds an N x K distance matrix (`-cdist`),
takes its argmax, builds an N x K one-hot, and multiplies by the one-hot twice: for the
quantized vectors and for the EMA statistics. The patched forward computes the same
indices with `vq_lookup` (no N x K matrix), the quantized vectors with a gather, and the EMA
statistics and codebook refresh with the fused `vq_ema_update_`; initialisation (k-means)
and dead-code replacement stay the library's own code.

Covered (Euclidean and cosine codebooks): one or several heads, shared or separate
codebooks, `kmeans_init`, EMA (`decay`, `eps`), `threshold_ema_dead_code`, `mask`/`lens`,
learnable codebooks, the rotation trick / straight-through input gradient, `freeze_codebook`.

Falls back to the library's own code, whole forward:
  `indices=` (cross-entropy loss), `commitment_use_cross_entropy_loss`,
  `codebook_diversity_loss_weight > 0` (both need the distance matrix), `topk=`,
  `codebook_transform_fn=`, `in_place_codebook_optimizer`, `directional_reparam`,
  `affine_param`, `vq_bridge`, a custom `gumbel_sample`, and stochastic or straight-through
  Gumbel sampling while training (`stochastic_sample_codes`, `straight_through`).
Keeps the one-hot EMA statistics (the lookup is still ours):
  distributed codebook sync, `ema_update_weight`, `accum_ema_update`,
  `manual_ema_update`, `ema_update=False` with dead-code replacement, pending
  accumulated EMA gradients.
"""

from __future__ import annotations

import contextvars
import functools
import inspect

import torch
import torch.nn.functional as F

from wmkernels.integrations._versions import check_version
from wmkernels.ops.vq import vq_ema_update_, vq_lookup

TESTED_VERSIONS = ("1.32.0",)

_ORIGINAL: dict = {}  # the replaced forwards and VectorQuantize.forward's signature, while applied
# Set by the patched VectorQuantize.forward for the codebook call it makes when the
# VectorQuantize options are covered: a Codebook used on its own keeps its code.
_COVERED = contextvars.ContextVar("wmkernels_vq_covered", default=False)


def _library():
    from vector_quantize_pytorch import vector_quantize_pytorch as lib

    return lib


def vector_quantize_fallback_reason(vq, indices=None, topk=None,
                                    codebook_transform_fn=None) -> str | None:
    """Why a `VectorQuantize` call runs the library's own code (None: it is routed)."""
    cb = vq._codebook
    checks = (
        (indices is not None, "indices= (cross-entropy loss on the distance matrix)"),
        (vq.commitment_use_cross_entropy_loss, "commitment_use_cross_entropy_loss"),
        (vq.has_codebook_diversity_loss, "codebook_diversity_loss_weight > 0"),
        (topk is not None, "topk="),
        (codebook_transform_fn is not None, "codebook_transform_fn="),
        (vq.in_place_codebook_optimizer is not None, "in_place_codebook_optimizer"),
        (vq.directional_reparam, "directional_reparam"),
        (cb.affine_param, "affine_param"),
        (cb.vq_bridge is not None, "vq_bridge"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    sample = cb.gumbel_sample
    lib = _library()
    if sample is lib.gumbel_sample:
        return None
    if not (isinstance(sample, functools.partial) and sample.func is lib.gumbel_sample):
        return "a custom gumbel_sample"
    if vq.training and (sample.keywords.get("stochastic") or sample.keywords.get(
            "straight_through")) and cb.sample_codebook_temp > 0:
        return "stochastic or straight-through Gumbel sampling while training"
    return None


def _fused_ema(cb, ema_update, ema_update_weight, accum_ema_update) -> bool:
    lib = _library()
    return (ema_update and not cb.manual_ema_update and not accum_ema_update
            and ema_update_weight is None and cb.all_reduce_fn is lib.noop
            and cb.cluster_size.grad is None and cb.embed_avg.grad is None)


def _repeat_mask(mask, heads, n_flat):
    # The library's `repeat(mask, 'b n -> c (b h n)')`: one mask row per codebook.
    b, n = mask.shape
    per = n_flat // (b * n)
    return mask[:, None, :].expand(b, per, n).reshape(1, -1).expand(heads, -1)


def _codebook_forward(self, x, sample_codebook_temp=None, mask=None, freeze_codebook=False,
                      codebook_transform_fn=None, ema_update_weight=None,
                      accum_ema_update=False, ema_update=None, topk=None, update_usage=True):
    if not _COVERED.get():
        return _ORIGINAL["Codebook.forward"](
            self, x, sample_codebook_temp=sample_codebook_temp, mask=mask,
            freeze_codebook=freeze_codebook, codebook_transform_fn=codebook_transform_fn,
            ema_update_weight=ema_update_weight, accum_ema_update=accum_ema_update,
            ema_update=ema_update, topk=topk, update_usage=update_usage)
    ema_update = self.ema_update if ema_update is None else ema_update
    x = x.float()
    squeeze = x.ndim < 4
    if squeeze:
        x = x.unsqueeze(0)
    heads, dim = x.shape[0], x.shape[-1]
    flatten = x.reshape(heads, -1, dim)
    if mask is not None:
        mask = _repeat_mask(mask, heads, flatten.shape[1])
    self.init_embed_(flatten, mask=mask)
    embed = (self.embed if self.learnable_codebook else self.embed.detach()).to(flatten.dtype)
    metric = "cosine" if self.use_cosine_sim else "l2"
    ind = torch.stack([vq_lookup(flatten[h].detach(), embed[h].detach(), metric=metric)
                       for h in range(heads)])
    # A gather equals the library's one-hot GEMM bit for bit (one nonzero term per sum).
    quantize = torch.stack([F.embedding(ind[h], embed[h]) for h in range(heads)])
    if self.training and update_usage and not freeze_codebook:
        if _fused_ema(self, ema_update, ema_update_weight, accum_ema_update):
            _ema_update(self, flatten.detach(), ind, mask)
        else:
            onehot = F.one_hot(ind, self.codebook_size).to(flatten.dtype)
            self.update_codebook(flatten, onehot, mask=mask, ema_update_weight=ema_update_weight,
                                 accum_ema_update=accum_ema_update, ema_update=ema_update)
    quantize, ind = quantize.view(*x.shape), ind.view(x.shape[:-1])
    if squeeze:
        quantize, ind = quantize[0], ind[0]
    return quantize, ind, None  # no distance matrix: the calls that need one fall back


def _ema_update(cb, flatten, ind, mask):
    for h in range(flatten.shape[0]):
        z, i = flatten[h], ind[h]
        if mask is not None:
            z, i = z[mask[h]], i[mask[h]]
        vq_ema_update_(cb.embed.data[h], cb.cluster_size.data[h], cb.embed_avg.data[h], z, i,
                       decay=cb.decay, eps=cb.eps)
    if cb.use_cosine_sim:  # the library keeps cosine codebooks unit-norm after each update
        cb.embed.data.copy_(_library().l2norm(cb.embed.data))
    cb.expire_codes_(flatten, seq_mask=mask)


def _vq_forward(self, *args, **kwargs):
    original = _ORIGINAL["VectorQuantize.forward"]
    bound = _ORIGINAL["VectorQuantize.signature"].bind(self, *args, **kwargs).arguments
    reason = vector_quantize_fallback_reason(
        self, bound.get("indices"), bound.get("topk"), bound.get("codebook_transform_fn"))
    token = _COVERED.set(reason is None)
    try:
        return original(self, *args, **kwargs)
    finally:
        _COVERED.reset(token)


def apply_to_vector_quantize_pytorch() -> None:
    """Route vector-quantize-pytorch's `VectorQuantize` (and what builds on it, e.g.
    `ResidualVQ`) through `vq_lookup` and `vq_ema_update_`: every instance, existing or new.

    Same indices as the library's (ties to the smallest index, as its argmax), quantized
    vectors and losses within float rounding, EMA buffers within float rounding of its
    `lerp_` updates; see the module docstring for the options that fall back to the
    library's code. Warns when the installed version is not one this was tested with
    (`TESTED_VERSIONS`). Idempotent; `unapply_from_vector_quantize_pytorch()` reverts it.

    Raises:
        ImportError: vector-quantize-pytorch is not installed.
    """
    check_version("vector-quantize-pytorch", TESTED_VERSIONS)
    lib = _library()
    if _ORIGINAL:
        return
    _ORIGINAL["VectorQuantize.forward"] = lib.VectorQuantize.forward
    _ORIGINAL["VectorQuantize.signature"] = inspect.signature(lib.VectorQuantize.forward)
    _ORIGINAL["Codebook.forward"] = lib.Codebook.forward
    lib.VectorQuantize.forward = _vq_forward
    lib.Codebook.forward = torch.amp.autocast("cuda", enabled=False)(_codebook_forward)


def unapply_from_vector_quantize_pytorch() -> None:
    """Restore vector-quantize-pytorch's own forwards (no-op when not applied)."""
    if not _ORIGINAL:
        return
    lib = _library()
    lib.VectorQuantize.forward = _ORIGINAL.pop("VectorQuantize.forward")
    lib.Codebook.forward = _ORIGINAL.pop("Codebook.forward")
    _ORIGINAL.clear()
