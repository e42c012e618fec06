"""Fused VQ distance + argmin in Triton.

Each program owns BLOCK_N rows of z and streams the codebook past them in BLOCK_K tiles:
the tile's dot products are one tensor-core `tl.dot` (fp32 accumulation), turned into
distances (||c||^2 - 2 z.c for l2; -z.c on the normalized codebook for cosine) and folded
into a running (min, index) per row kept in registers. Neither the N x K distances nor a
one-hot ever exist; extra memory is O(K) for the precomputed code norms.

fp32 inputs use `tf32x3` dots (three tf32 products: fp32-level accuracy on tensor cores);
fp16/bf16 use the native tensor-core path. Ties go to the smallest index (tl.argmin breaks
ties left and tiles are visited in order with a strict `<`); a NaN distance is mapped to
-inf so it counts as the smallest, as in torch.argmin.

Roofline at vq-large (N=131072, K=8192, D=256, bf16): 550 GFLOP against 69 MB of input, so
compute-bound: the bound is the bf16 tensor-core peak. At vq-actions (K=8) it reads 16 MB
and is bound by memory bandwidth.
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

if _INTERPRET:  # one config under the interpreter: it is for correctness, not speed
    _CONFIGS = [triton.Config({"BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4)]
else:
    _CONFIGS = [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bn, bk, w, s in [(64, 64, 4, 3), (128, 64, 4, 3), (128, 128, 8, 3),
                             (64, 128, 4, 4), (128, 32, 4, 4), (256, 64, 8, 3)]
    ]


@triton.autotune(configs=_CONFIGS, key=["K", "D", "SCALE"])
@triton.jit
def _vq_lookup_kernel(
    z_ptr, cb_ptr, bias_ptr, out_ptr, N, K, D,
    stride_zn, stride_zd, stride_ck, stride_cd,
    SCALE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_N], tl.int64)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        col_ok = cols < K
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            d_ok = ds < D
            zt = tl.load(z_ptr + rows[:, None] * stride_zn + ds[None, :] * stride_zd,
                         mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            ct = tl.load(cb_ptr + cols[None, :] * stride_ck + ds[:, None] * stride_cd,
                         mask=col_ok[None, :] & d_ok[:, None], other=0.0)
            acc = tl.dot(zt, ct, acc, input_precision=PRECISION)
        bias = tl.load(bias_ptr + cols, mask=col_ok, other=0.0)
        dist = bias[None, :] - SCALE * acc
        dist = tl.where(dist != dist, float("-inf"), dist)
        dist = tl.where(col_ok[None, :], dist, float("inf"))
        tile_min = tl.min(dist, 1)
        tile_arg = tl.argmin(dist, 1).to(tl.int64) + k0
        better = tile_min < best
        best = tl.where(better, tile_min, best)
        best_idx = tl.where(better, tile_arg, best_idx)
    tl.store(out_ptr + rows, best_idx, mask=row_ok)


def vq_lookup(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
    """z (N, D) any strides, codebook (K, D), same float dtype (fp16/bf16/fp32) -> int64 (N,)."""
    N, D = z.shape
    K = codebook.shape[0]
    out = torch.empty(N, dtype=torch.long, device=z.device)
    if N == 0:
        return out
    # a non-finite code becomes a zero vector whose bias carries its distance (NaN, or +inf),
    # so inf - inf never happens (the policy: wmkernels/reference/vq.py; rows of z holding
    # NaN/inf are resolved by the caller)
    bad, has_nan = ~codebook.isfinite().all(1), codebook.isnan().any(1)
    codebook = codebook.masked_fill(bad[:, None], 0)
    if metric == "cosine":
        codes = torch.nn.functional.normalize(codebook.float(), dim=-1).to(z.dtype)
        bias = torch.zeros(K, dtype=torch.float32, device=z.device)
        scale = 1.0
    else:
        codes = codebook
        bias = codebook.float().pow(2).sum(1)
        scale = 2.0
    bias = bias.masked_fill(bad, float("inf")).masked_fill(has_nan, float("nan"))
    block_d = max(16, min(64, triton.next_power_of_2(D)))
    precision = "tf32x3" if z.dtype == torch.float32 else "tf32"
    grid = lambda meta: (triton.cdiv(N, meta["BLOCK_N"]),)
    # launch on the tensors' device, whatever the current device is
    ctx = torch.cuda.device(z.device) if z.device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        _vq_lookup_kernel[grid](
            z, codes, bias, out, N, K, D,
            z.stride(0), z.stride(1), codes.stride(0), codes.stride(1),
            SCALE=scale, PRECISION=precision, BLOCK_D=block_d,
        )
    return out

