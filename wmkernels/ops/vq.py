"""VQ ops: nearest-codebook lookup, quantization with straight-through gradient and the
VQ-VAE losses, and the in-place EMA codebook update.

C++ kernels are `torch.ops.wmk.vq_lookup` / `torch.ops.wmk.vq_ema_update_` (CPU, and CUDA
when built); the Triton kernel is `torch.ops.wmk.vq_lookup_triton`. Fake implementations
are registered here so every path traces under torch.compile(fullgraph=True).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from wmkernels import _checks, _extension, routing
from wmkernels.reference import vq as reference

METRICS = ("l2", "cosine")
routing.register("vq_lookup", ("reference", "cpu", "triton", "cuda"))
routing.register("vq_ema_update_", ("reference", "cpu", "cuda"))

if _extension.has_cpu():

    @torch.library.register_fake("wmk::vq_lookup")
    def _vq_lookup_fake(z, codebook, metric):
        return z.new_empty(z.shape[0], dtype=torch.long)

    @torch.library.register_fake("wmk::vq_ema_update_")
    def _vq_ema_update_fake(codebook, cluster_size, embed_sum, z, indices, decay, eps):
        return None


if routing.HAS_TRITON:
    from wmkernels.triton import vq as _triton_vq

    @torch.library.custom_op("wmk::vq_lookup_triton", mutates_args=())
    def _vq_lookup_triton(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
        return _triton_vq.vq_lookup(z, codebook, metric)

    @_vq_lookup_triton.register_fake
    def _(z, codebook, metric):
        return z.new_empty(z.shape[0], dtype=torch.long)


def _check_lookup(z, codebook, metric, backend_dtypes=_checks.FLOAT_DTYPES):
    _checks.tensor("z", z, min_ndim=1)
    _checks.tensor("codebook", codebook, ndim=2)
    _checks.same_dtype(z=z, codebook=codebook)
    _checks.same_device(z=z, codebook=codebook)
    _checks.choice("metric", metric, METRICS)
    if z.shape[-1] != codebook.shape[1]:
        raise ValueError(f"z's last dim ({z.shape[-1]}) must equal codebook's dim "
                         f"(codebook.shape[1] = {codebook.shape[1]})")
    if codebook.shape[0] == 0:
        raise ValueError("codebook must hold at least one code, got codebook.shape[0] = 0")
    if codebook.shape[1] == 0:
        raise ValueError(f"z and codebook need a vector size D >= 1, got z {tuple(z.shape)} "
                         f"and codebook {tuple(codebook.shape)}")


def _nonfinite_rows(flat: torch.Tensor, codebook: torch.Tensor,
                    idx: torch.Tensor) -> torch.Tensor:
    """The codes of the rows of z holding NaN or +-inf (policy: wmkernels.reference.vq), for
    kernels that resolve only finite rows: NaN -> 0, else inf -> the first NaN code (0 if
    none)."""
    first_nan_code = codebook.isnan().any(1).int().argmax()
    # one pass over z: a row's largest |value| is NaN if it holds NaN, else inf if it holds inf
    peak = torch.linalg.vector_norm(flat, ord=math.inf, dim=1)
    idx = torch.where(peak == math.inf, first_nan_code, idx)
    return idx.masked_fill(peak.isnan(), 0)


def vq_lookup(z: torch.Tensor, codebook: torch.Tensor, *, metric: str = "l2",
              backend: str | None = None) -> torch.Tensor:
    """Index of the nearest code for every vector of `z`, without an N x K matrix.

    Args:
        z: (..., D) float16/bfloat16/float32/float64 (any strides).
        codebook: (K, D), same dtype and device as `z`, K >= 1.
        metric: "l2" (argmin of squared Euclidean distance) or "cosine" (argmax of cosine
            similarity; both sides L2-normalized).
        backend: "reference" | "cpu" | "triton" | "cuda"; default: WMK_BACKEND or the best
            for the device.

    Returns:
        int64 tensor of shape z.shape[:-1]. Ties go to the smallest index. Non-finite
        values: a NaN distance counts as the smallest (torch.argmin semantics), a distance
        involving +-inf is +inf, so a row of `z` holding NaN gets 0 and a code holding inf
        is never chosen while a finite code exists (the whole policy:
        `wmkernels.reference.vq`).

    Raises:
        TypeError: non-float or mismatched dtypes, bfloat16 on the triton backend with CPU
        tensors (the interpreter cannot run it). ValueError: shapes (K = 0, D = 0), devices,
        metric.
        RuntimeError: the requested backend cannot run here (the message says why).
    """
    _check_lookup(z, codebook, metric)
    name = routing.select("vq_lookup", z.device, backend, routing.call(
        z, N=z.numel() // z.shape[-1], K=codebook.shape[0], D=z.shape[-1]))
    if name == "triton" and z.dtype == torch.float64:
        raise TypeError("the triton vq_lookup runs float16/bfloat16/float32; got float64 z")
    _checks.kernel_dtype(name, "vq_lookup", "z", z)
    flat = z.reshape(-1, z.shape[-1])
    if name == "reference":
        idx = reference.vq_lookup(flat, codebook, metric)
    elif name == "triton":
        idx = _nonfinite_rows(flat, codebook, torch.ops.wmk.vq_lookup_triton(flat, codebook,
                                                                              metric))
    elif name in ("cuda", "cuda-sim"):
        ops = _extension.kernel_ops(name)
        idx = _nonfinite_rows(flat, codebook, ops.vq_lookup(flat, codebook, metric))
    else:
        idx = torch.ops.wmk.vq_lookup(flat, codebook, metric)
    return idx.view(z.shape[:-1])


def vq_quantize(z: torch.Tensor, codebook: torch.Tensor, *, metric: str = "l2",
                commitment_weight: float = 0.25, backend: str | None = None):
    """Quantize `z` to its nearest codes, with the straight-through gradient and VQ-VAE loss.

    Returns `(z_q, indices, loss)`:
        z_q: like `z`; forward value `codebook[indices]` (cosine: the normalized code);
            gradient passes straight through to `z` (cosine: to normalized `z`).
        indices: int64 `z.shape[:-1]`.
        loss: scalar `mean||sg[z] - e||^2 + commitment_weight * mean||z - sg[e]||^2`; the
            codebook is trained by the first term, the encoder by the second. 0 if z is empty.

    Raises: as `vq_lookup`; ValueError for a commitment_weight that is not finite and >= 0.
    """
    _checks.number("commitment_weight", commitment_weight, low=0.0)
    indices = vq_lookup(z, codebook, metric=metric, backend=backend)
    codes = codebook
    if metric == "cosine":
        z = F.normalize(z, dim=-1)
        codes = F.normalize(codebook, dim=-1)
    e = F.embedding(indices, codes)
    if z.numel() == 0:
        loss = (e.sum() + z.sum()) * 0.0
    else:
        loss = F.mse_loss(e, z.detach()) + commitment_weight * F.mse_loss(z, e.detach())
    z_q = z + (e - z).detach()
    return z_q, indices, loss


def vq_ema_update_(codebook: torch.Tensor, cluster_size: torch.Tensor, embed_sum: torch.Tensor,
                   z: torch.Tensor, indices: torch.Tensor, *, decay: float = 0.99,
                   eps: float = 1e-5, backend: str | None = None) -> None:
    """In-place EMA k-means codebook update with Laplace smoothing, fused (no one-hot).

    Args:
        codebook: (K, D) float, contiguous; overwritten with embed_sum / smoothed counts.
        cluster_size: (K,) EMA of code counts; embed_sum: (K, D) EMA of summed vectors; both
            contiguous, same dtype as codebook.
        z: (..., D) vectors; indices: int64 z.shape[:-1], their codes (from vq_lookup), each
            in [0, K).
        decay: EMA decay in [0, 1]. eps: Laplace smoothing constant > 0 (both finite).

    Semantics (VQ-VAE-2 / Sonnet VectorQuantizerEMA, no zero-debiasing): see
    `wmkernels.reference.vq.vq_ema_update_`; a row of z holding NaN/inf makes only its own
    code non-finite (`nn.VectorQuantizer` skips such batches).

    Raises:
        TypeError: dtypes, non-number decay/eps. ValueError: shapes (K, D >= 1), devices,
        non-contiguous state, decay/eps out of range or not finite, an index outside [0, K)
        (checked on CPU tensors and by the C++ kernels; the cuda one reads the range back,
        a host sync).
    """
    _checks.tensor("codebook", codebook, ndim=2)
    _checks.tensor("cluster_size", cluster_size, ndim=1)
    _checks.tensor("embed_sum", embed_sum, ndim=2)
    _checks.tensor("z", z, min_ndim=1)
    _checks.tensor("indices", indices, dtypes=(torch.int64,))
    _checks.same_dtype(codebook=codebook, cluster_size=cluster_size, embed_sum=embed_sum)
    _checks.same_device(codebook=codebook, cluster_size=cluster_size, embed_sum=embed_sum,
                        z=z, indices=indices)
    K, D = codebook.shape
    if cluster_size.shape != (K,) or embed_sum.shape != (K, D):
        raise ValueError(f"cluster_size must be ({K},) and embed_sum ({K}, {D}) to match "
                         f"codebook; got {tuple(cluster_size.shape)} and "
                         f"{tuple(embed_sum.shape)}")
    if z.shape[-1] != D or indices.shape != z.shape[:-1]:
        raise ValueError(f"z must be (..., {D}) and indices z.shape[:-1]; got z "
                         f"{tuple(z.shape)} and indices {tuple(indices.shape)}")
    if K == 0 or D == 0:
        raise ValueError(f"codebook must be (K, D) with K, D >= 1, got {tuple(codebook.shape)}")
    for name, t in (("codebook", codebook), ("cluster_size", cluster_size),
                    ("embed_sum", embed_sum)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (it is updated in place)")
    decay = _checks.number("decay", decay, low=0.0, high=1.0)
    eps = _checks.number("eps", eps, low=0.0, low_open=True)
    if indices.numel() and indices.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, hi = torch.aminmax(indices)
        if lo < 0 or hi >= K:
            raise ValueError(f"indices must be in [0, K) = [0, {K}), got values in "
                             f"[{int(lo)}, {int(hi)}]")
    flat_z, flat_i = z.reshape(-1, D), indices.reshape(-1)
    name = routing.select("vq_ema_update_", codebook.device, backend)
    if name == "reference":
        reference.vq_ema_update_(codebook, cluster_size, embed_sum, flat_z, flat_i, decay, eps)
    else:
        _extension.kernel_ops(name).vq_ema_update_(codebook, cluster_size, embed_sum, flat_z,
                                                   flat_i, decay, eps)
