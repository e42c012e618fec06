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

import os

import torch
import triton
import triton.language as tl

from wmkernels.triton.launch import Launch, run, smem_limit

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

# (BLOCK_N, BLOCK_K, num_warps, num_stages) per element size. The first that fits is the
# fixed choice where autotuning cannot run (inside CUDA-graph capture, see
# `lookup_launches`). fp32 runs three tf32 dots per tile: 64- or 128-wide codebook tiles,
# and 128 rows, spill registers on sm_80/sm_86 (bench/results/static), so its tiles are
# at most 64 x 32.
if _INTERPRET:  # one config under the interpreter: it is for correctness, not speed
    _CHOICES = {2: [(32, 32, 4, 1)], 4: [(32, 32, 4, 1)]}
else:
    _CHOICES = {
        2: [(128, 64, 4, 3), (64, 64, 4, 3), (128, 128, 8, 3), (64, 128, 4, 4),
            (128, 32, 4, 4), (256, 64, 8, 3)],
        4: [(64, 32, 4, 4), (64, 32, 4, 3), (32, 32, 4, 3)],
    }


def _smem_estimate(block_n: int, block_k: int, block_d: int, es: int, stages: int) -> int:
    """Upper bound of the kernel's shared memory (bytes): the z and codebook tiles per
    pipeline stage (checked against the compiler by tests/gates/test_triton_compile.py)."""
    return stages * (block_n + block_k) * block_d * es


def configs_for(block_d: int, es: int, smem: int) -> list[tuple[int, int, int, int]]:
    """The choices for `es`-byte elements whose tiles fit `smem` bytes per block."""
    return [c for c in _CHOICES[es] if _smem_estimate(c[0], c[1], block_d, es, c[3]) <= smem]


def _prune(configs, named_args, **kwargs):
    """Autotune only the configs that fit the device (a config over its shared memory
    would fail to launch)."""
    z = named_args["z_ptr"]
    fits = configs_for(kwargs["BLOCK_D"], z.element_size(), smem_limit(z))
    keep = [c for c in configs if (c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
                                   c.num_stages) in fits]
    return keep or configs[-1:]


_CONFIGS = [triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
            for bn, bk, w, s in dict.fromkeys(_CHOICES[2] + _CHOICES[4])]


@triton.jit
def _vq_lookup_kernel(
    z_ptr, cb_ptr, bias_ptr, out_ptr, N, K, D,
    stride_zn, stride_zd, stride_ck, stride_cd,
    SCALE: tl.constexpr, PRECISION: tl.constexpr, DTYPE: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_N], tl.int64)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K).to(tl.int64)  # x stride: can pass 2^31
        col_ok = cols < K
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D).to(tl.int64)
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


# The tuned choice depends on the element type (DTYPE, unused by the kernel, is in the key
# so that fp32 and bf16 calls never share one), the codebook size and the dim.
_vq_lookup_tuned = triton.autotune(configs=_CONFIGS, key=["K", "D", "SCALE", "DTYPE"],
                                   prune_configs_by={"early_config_prune": _prune})(
    _vq_lookup_kernel)


def vq_lookup(z: torch.Tensor, codebook: torch.Tensor, metric: str) -> torch.Tensor:
    """z (N, D) any strides, codebook (K, D), same float dtype (fp16/bf16/fp32) -> int64 (N,)."""
    N = z.shape[0]
    out = torch.empty(N, dtype=torch.long, device=z.device)
    if N == 0:
        return out
    capturing = z.is_cuda and torch.cuda.is_current_stream_capturing()
    codes, bias, scale = _codes(codebook, metric, z.dtype)
    run(lookup_launches(z, codes, bias, out, scale, smem_limit(z), tune=not capturing), z)
    return out


def _codes(codebook, metric, dtype):
    """(codes, bias, scale): the distance to code k is bias[k] - scale * z.codes[k]."""
    K = codebook.shape[0]
    # a non-finite code becomes a zero vector whose bias carries its distance (NaN, or +inf),
    # so inf - inf never happens (the policy: wmkernels/reference/vq.py; rows of z holding
    # NaN/inf are resolved by the caller)
    bad, has_nan = ~codebook.isfinite().all(1), codebook.isnan().any(1)
    codebook = codebook.masked_fill(bad[:, None], 0)
    if metric == "cosine":
        codes = torch.nn.functional.normalize(codebook.float(), dim=-1).to(dtype)
        bias = torch.zeros(K, dtype=torch.float32, device=codebook.device)
        scale = 1.0
    else:
        codes = codebook
        bias = codebook.float().pow(2).sum(1)
        scale = 2.0
    bias = bias.masked_fill(bad, float("inf")).masked_fill(has_nan, float("nan"))
    return codes, bias, scale


def lookup_launches(z, codes, bias, out, scale: float, smem: int, tune: bool = True,
                    choice: tuple[int, int, int, int] | None = None) -> list[Launch]:
    """The launch of `vq_lookup`: autotuned over the choices that fit `smem` when `tune`;
    else `choice`, by default the first choice that fits. Inside CUDA-graph capture the
    autotuner cannot run (it times candidates, which capture forbids), so the capture path
    takes that fixed choice, which tests/gates compiles for every architecture."""
    N, D = z.shape
    block_d = max(16, min(64, triton.next_power_of_2(D)))
    args = (z, codes, bias, out, N, codes.shape[0], D,
            z.stride(0), z.stride(1), codes.stride(0), codes.stride(1))
    meta = dict(SCALE=scale, PRECISION="tf32x3" if z.dtype == torch.float32 else "tf32",
                DTYPE=str(z.dtype).removeprefix("torch."), BLOCK_D=block_d)
    if tune and choice is None:
        grid = lambda m: (triton.cdiv(N, m["BLOCK_N"]),)
        return [Launch(_vq_lookup_tuned, grid, args, meta)]
    if choice is None:
        fits = configs_for(block_d, z.element_size(), smem)
        choice = fits[0] if fits else _CHOICES[z.element_size()][-1]
    bn, bk, warps, stages = choice
    return [Launch(_vq_lookup_kernel, (triton.cdiv(N, bn),), args,
                   dict(meta, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages))]
