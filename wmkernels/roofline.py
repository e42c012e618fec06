"""The roofline that the routing rule (wmkernels.routing) decides CUDA calls by, until GPU
measurements replace it.

For one call of an op: the useful FLOP, the bytes each implementation must move between
DRAM and the chip, and the unit that does its arithmetic (tensor cores, or scalar FP32 FMA).
An implementation's estimated time is max(FLOP / its unit's peak, bytes / DRAM bandwidth).
So a call whose arithmetic intensity (FLOP per byte) is above the scalar ridge point
(fp32 peak / bandwidth, ~20 FLOP/B on an H100) runs faster on tensor cores, and a call below
it is decided by the bytes each implementation moves.

What each implementation is (read from the generated code, tests/gates and issue 20's audit):
  triton     tensor-core dots (HGMMA/HMMA in the SASS), fused forward and backward;
             fp32 inputs use tf32x3 (three tf32 products), so a third of the tf32 rate
  cuda       scalar FP32 FMA (FFMA, no tensor-core instruction in the SASS), reads each
             input once; the attention backward is unfused (materializes probabilities)
  sdpa       torch's scaled_dot_product_attention (FlashAttention / memory-efficient:
             tensor cores for fp16/bf16) on zero-copy views, or on copies where none exists
  reference  eager PyTorch: rearrange copies + SDPA, cdist-style distance matrix + argmin
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class Peaks:
    """Dense datasheet peaks of one GPU (no sparsity), in FLOP/s and B/s."""
    name: str
    tensor16: float  # fp16/bf16 tensor cores, fp32 accumulation
    tf32: float  # tf32 tensor cores
    fp32: float  # scalar FFMA
    bandwidth: float  # DRAM


# By compute capability (NVIDIA datasheets). An H200 is an H100 with 4.8 TB/s.
PEAKS = {
    (9, 0): Peaks("H100 SXM", 989e12, 495e12, 67e12, 3.35e12),
    (8, 9): Peaks("L4", 121e12, 60e12, 30.3e12, 0.30e12),
    (8, 6): Peaks("A10", 125e12, 62.5e12, 31.2e12, 0.60e12),
    (8, 0): Peaks("A100 SXM", 312e12, 156e12, 19.5e12, 2.04e12),
    (7, 5): Peaks("T4", 65e12, 0.0, 8.1e12, 0.32e12),
}


def peaks(capability: tuple[int, int] | None) -> Peaks:
    """The peaks of `capability`, else of the newest listed one not newer than it (sm_90
    for unknown or newer devices, T4 for older ones)."""
    if capability is None:
        return PEAKS[(9, 0)]
    older = [c for c in PEAKS if c <= tuple(capability)]
    return PEAKS[max(older)] if older else PEAKS[(7, 5)]


@dataclasses.dataclass(frozen=True)
class Cost:
    """One implementation's work for one call."""
    flops: float
    bytes: float
    unit: str  # "tensor" or "fp32"

    def seconds(self, p: Peaks, dtype: torch.dtype) -> float:
        if self.unit == "fp32":
            rate = p.fp32
        elif dtype in (torch.float16, torch.bfloat16):
            rate = p.tensor16
        else:
            rate = p.tf32 / 3 or p.fp32  # tf32x3; no tf32 before sm_80
        return max(self.flops / rate, self.bytes / p.bandwidth)


def _esize(dtype: torch.dtype) -> int:
    return torch.finfo(dtype).bits // 8


def _attention(op: str, impl: str, dtype, sizes: dict, view: bool, grad: bool) -> Cost | None:
    B, Tq, Tk, S, H, D = (sizes[k] for k in ("B", "Tq", "Tk", "S", "H", "D"))
    es = _esize(dtype)
    n_q, n_k = B * Tq * S * H * D, B * Tk * S * H * D
    if op == "spatial_attention":
        rows, pairs = B * Tq * H, S * S
    else:
        # causal, bottom-right aligned: query frame i sees Tk - Tq + i + 1 key frames
        pairs = Tq * (Tk - Tq) + Tq * (Tq + 1) // 2 if sizes["causal"] else Tq * Tk
        rows = B * S * H
    flops = 4 * rows * pairs * D
    moved = (2 * n_q + 2 * n_k) * es  # q, k, v read, out written
    if grad:
        flops = flops * 7 // 2
        moved += (3 * n_q + 2 * n_k) * es  # dO, out read; dq, dk, dv written
    copies = 2 * (n_q + 2 * n_k) * es + 2 * n_q * es  # q, k, v in, out back: read + write
    sixteen = dtype in (torch.float16, torch.bfloat16)
    if impl == "triton":
        if dtype == torch.float64 or D > 256:
            return None
        return Cost(flops, moved, "tensor")
    if impl == "cuda":
        if dtype == torch.float64 or D > 256:
            return None
        if grad:  # unfused backward: fp32 scores/probabilities written and read back
            moved += 3 * rows * pairs * 4
        return Cost(flops, moved, "fp32")
    if impl == "sdpa":
        return Cost(flops, moved + (0 if view else copies), "tensor" if sixteen else "fp32")
    if impl == "reference":
        return Cost(flops, moved + copies, "tensor" if sixteen else "fp32")
    return None


def _vq_lookup(impl: str, dtype, sizes: dict) -> Cost | None:
    N, K, D = sizes["N"], sizes["K"], sizes["D"]
    es = _esize(dtype)
    flops = 2 * N * K * D
    moved = (N * D + K * D) * es + N * 8  # z, codebook read; int64 indices written
    if impl == "triton":
        return None if dtype == torch.float64 else Cost(flops, moved, "tensor")
    if impl == "cuda":
        return None if dtype == torch.float64 else Cost(flops, moved, "fp32")
    if impl == "reference":  # the N x K distance matrix is written, then read by argmin
        unit = "tensor" if dtype in (torch.float16, torch.bfloat16) else "fp32"
        return Cost(flops, moved + 2 * N * K * es, unit)
    return None


def cost(op: str, impl: str, dtype: torch.dtype, sizes: dict, *, view: bool = False,
         grad: bool = False) -> Cost | None:
    """The work of `impl` for one call of `op`, None where it cannot serve the call or the
    op has no model here (its implementations are then ordered by routing.PREFERENCE)."""
    if not sizes:
        return None
    if op in ("spatial_attention", "temporal_attention"):
        return _attention(op, impl, dtype, sizes, view, grad)
    if op == "vq_lookup":
        return _vq_lookup(impl, dtype, sizes)
    return None
