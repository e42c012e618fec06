"""Factorized video attention in Triton: spatial and temporal, forward and backward, on
(B, T, S, H, D) tensors read through their strides (packed-QKV views, KV-cache prefixes).

Spatial (softmax over S per (b, t, h)) is FlashAttention-2: a program owns BLOCK_M query
rows of one (b, t, h) and streams BLOCK_N key/value rows past them with an online softmax,
accumulating in fp32; it saves the log-sum-exp per row. The backward recomputes the
probabilities from it: one kernel per key block accumulates dK, dV over all query blocks,
one per query block accumulates dQ, so nothing is atomic. Grid axis 0 is B*T*H (limit
2^31 - 1), axis 1 the row blocks: no 65535 limit is ever reached.

Temporal (softmax over frames per (b, s, h)) has tiny sequences and a huge batch. A program
packs BLOCK_P positions (b, s, h) x BLOCK_I query frames into the rows of one tile and the
same positions x BLOCK_J key frames into its columns; one tensor-core dot gives the scores
of all of them, and a block-diagonal mask (same position, and j <= Tk - Tq + i when causal)
keeps each position's own. For T <= 64 a whole sequence is one tile (BLOCK_P = rows / T),
so the key loop runs once; longer T falls back to BLOCK_P = 1 and flash-style key chunks.
The backward uses the same packing: dK/dV programs loop over query chunks, dQ programs
over key chunks, no atomics.

Roofline (H100 SXM: 3.35 TB/s, ~990 TFLOP/s dense bf16), with the bench's FLOP formula
4 * (B*T*H or B*S*H) * (query, key) pairs * D: attn-spatial-genie (B8 T16 S1024 H16 D64)
is 0.55 TFLOP against 1.07 GB (q, k, v read, out written): 512 FLOP/B, compute-bound,
>= 0.55 ms at the tensor-core peak. attn-temporal-genie (same sizes, causal: 136 pairs
of 256) is 4.6 GFLOP useful against the same 1.07 GB: memory-bound, >= 0.32 ms; the
block-diagonal tiles score each position's 16 query frames against all 64 columns of
the tile (1024 pairs for 136 useful), so the tensor cores do ~7.5x the useful work (~34
GFLOP), still far below the compute bound. fp32 inputs use `tf32x3` dots (fp32-level accuracy).

Launch parameters (tiles, warps, stages) are chosen per (kernel, head dim, dtype, shared
memory of the device) by `spatial_config` / `temporal_config`, so that a call fits the
device's shared memory and does not spill registers; tests/gates compile them for sm_80,
sm_86 and sm_90.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from wmkernels.triton.launch import Launch, run, smem_limit

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
LOG2E = 1.4426950408889634


def _precision(x: torch.Tensor) -> str:
    return "tf32x3" if x.dtype == torch.float32 else "tf32"


def _strides(x: torch.Tensor):
    return x.stride(0), x.stride(1), x.stride(2), x.stride(3)


# --------------------------------------------------------------------------------------
# Spatial


@triton.jit
def _spatial_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, T, S, H, D, qk_scale,
    sqb, sqt, sqs, sqh, skb, skt, sks, skh, svb, svt, svs, svh,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    bth = tl.program_id(0).to(tl.int64)
    b, t, h = bth // (T * H), (bth // H) % T, bth % H
    # row and frame indices are int64: index x stride can pass 2^31 (packed QKV, long videos)
    rows = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    ds = tl.arange(0, BLOCK_D)
    row_ok, d_ok = rows < S, ds < D
    q = tl.load(q_ptr + b * sqb + t * sqt + h * sqh + rows[:, None] * sqs + ds[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = k_ptr + b * skb + t * skt + h * skh
    v_base = v_ptr + b * svb + t * svt + h * svh
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for n0 in range(0, S, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        col_ok = cols < S
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * sks + ds[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * svs + ds[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # log2 units
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    acc = acc / l_i[:, None]
    o_off = ((b * T + t) * S + rows[:, None]) * (H * D) + h * D + ds[None, :]
    tl.store(o_ptr + o_off, acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + bth * S + rows, (m_i + tl.log2(l_i)) / 1.4426950408889634, mask=row_ok)


@triton.jit
def _spatial_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr, T, S, H, D, scale,
    sqb, sqt, sqs, sqh, skb, skt, sks, skh, svb, svt, svs, svh, sgb, sgt, sgs, sgh,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    bth = tl.program_id(0).to(tl.int64)
    b, t, h = bth // (T * H), (bth // H) % T, bth % H
    cols = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    ds = tl.arange(0, BLOCK_D)
    col_ok, d_ok = cols < S, ds < D
    kv_mask = col_ok[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + b * skb + t * skt + h * skh + cols[:, None] * sks + ds[None, :],
                mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + b * svb + t * svt + h * svh + cols[:, None] * svs + ds[None, :],
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    q_base = q_ptr + b * sqb + t * sqt + h * sqh
    g_base = g_ptr + b * sgb + t * sgt + h * sgh
    for m0 in range(0, S, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M).to(tl.int64)
        row_ok = rows < S
        mask = row_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + rows[:, None] * sqs + ds[None, :], mask=mask, other=0.0)
        g = tl.load(g_base + rows[:, None] * sgs + ds[None, :], mask=mask, other=0.0)
        lse = tl.load(lse_ptr + bth * S + rows, mask=row_ok, other=0.0)
        delta = tl.load(delta_ptr + ((b * T + t) * S + rows) * H + h, mask=row_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        p = tl.exp(s - lse[:, None])
        p = tl.where(row_ok[:, None] & col_ok[None, :], p, 0.0)
        dv += tl.dot(tl.trans(p.to(g.dtype)), g, input_precision=PRECISION)
        dp = tl.dot(g, tl.trans(v), input_precision=PRECISION)
        dsc = p * (dp - delta[:, None]) * scale
        dk += tl.dot(tl.trans(dsc.to(q.dtype)), q, input_precision=PRECISION)
    off = ((b * T + t) * S + cols[:, None]) * (H * D) + h * D + ds[None, :]
    tl.store(dk_ptr + off, dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + off, dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _spatial_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, delta_ptr, dq_ptr, T, S, H, D, scale,
    sqb, sqt, sqs, sqh, skb, skt, sks, skh, svb, svt, svs, svh, sgb, sgt, sgs, sgh,
    PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    bth = tl.program_id(0).to(tl.int64)
    b, t, h = bth // (T * H), (bth // H) % T, bth % H
    rows = tl.program_id(1).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    ds = tl.arange(0, BLOCK_D)
    row_ok, d_ok = rows < S, ds < D
    mask = row_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + b * sqb + t * sqt + h * sqh + rows[:, None] * sqs + ds[None, :],
                mask=mask, other=0.0)
    g = tl.load(g_ptr + b * sgb + t * sgt + h * sgh + rows[:, None] * sgs + ds[None, :],
                mask=mask, other=0.0)
    lse = tl.load(lse_ptr + bth * S + rows, mask=row_ok, other=0.0)
    delta = tl.load(delta_ptr + ((b * T + t) * S + rows) * H + h, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    k_base = k_ptr + b * skb + t * skt + h * skh
    v_base = v_ptr + b * svb + t * svt + h * svh
    for n0 in range(0, S, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N).to(tl.int64)
        col_ok = cols < S
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_base + cols[:, None] * sks + ds[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * svs + ds[None, :], mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        p = tl.exp(s - lse[:, None])
        p = tl.where(row_ok[:, None] & col_ok[None, :], p, 0.0)
        dp = tl.dot(g, tl.trans(v), input_precision=PRECISION)
        dsc = p * (dp - delta[:, None]) * scale
        dq += tl.dot(dsc.to(k.dtype), k, input_precision=PRECISION)
    off = ((b * T + t) * S + rows[:, None]) * (H * D) + h * D + ds[None, :]
    tl.store(dq_ptr + off, dq.to(dq_ptr.dtype.element_ty), mask=mask)


def _block_d(D: int) -> int:
    return max(16, triton.next_power_of_2(D))


def _pick(candidates, smem: int, estimate):
    """The first candidate whose estimated shared memory fits `smem`, else the last (the
    smallest). The estimates are upper bounds of what Triton allocates (checked for sm_80,
    sm_86 and sm_90 by tests/gates/test_triton_compile.py)."""
    for cand in candidates:
        if estimate(*cand) <= smem:
            return cand
    return candidates[-1]


# (BLOCK_M, BLOCK_N, num_warps, num_stages), fastest first. fp32 runs three tf32 dots per
# product (tf32x3), which needs about twice the registers: its tiles are smaller and spread
# over 8 warps so that nothing spills.
_SPATIAL_CANDIDATES = {
    (2, 64): [(64, 64, 4, 3), (64, 32, 4, 2), (32, 32, 4, 2)],
    (2, 128): [(64, 64, 8, 2), (64, 32, 8, 2), (32, 32, 4, 2)],
    (2, 256): [(64, 64, 8, 3), (64, 64, 8, 2), (64, 32, 8, 2), (32, 32, 4, 2), (32, 32, 4, 1)],
    (4, 64): [(32, 32, 8, 2), (16, 16, 4, 1)],
    (4, 128): [(32, 32, 8, 2), (32, 32, 8, 1), (16, 16, 4, 1)],
}


def _smem_estimate(kind: str, bm: int, bn: int, bd: int, es: int, stages: int) -> int:
    """Upper bound of the shared memory of a spatial kernel (bytes): the streamed operand
    tiles times the pipeline stages, the resident ones once, and the score tiles."""
    if kind == "fwd":  # streams k, v; holds q
        return stages * 2 * bn * bd * es + bm * bd * es + bm * bn * 4
    if kind == "dkdv":  # streams q, dO; holds k, v
        return stages * 2 * bm * bd * es + 2 * bn * bd * es + 2 * bm * bn * 4
    return stages * 2 * bn * bd * es + 2 * bm * bd * es + 2 * bm * bn * 4  # dq


def spatial_config(kind: str, D: int, dtype: torch.dtype, smem: int) -> dict:
    """Launch parameters of a spatial kernel (`kind` "fwd", "dkdv" or "dq") at head dim D
    on a device with `smem` bytes of shared memory per block."""
    bd = _block_d(D)
    if _INTERPRET:  # the interpreter's cost is per tile element, not per program
        return dict(BLOCK_M=16, BLOCK_N=16, BLOCK_D=bd, num_warps=4, num_stages=1)
    es = dtype.itemsize
    cands = _SPATIAL_CANDIDATES[(min(es, 4), max(64, bd))]
    if kind != "fwd" and bd >= 128:  # [*, D] fp32 accumulators and tiles: 32-key blocks
        cands = [c for c in cands if c[1] <= 32]
    bm, bn, warps, stages = _pick(
        cands, smem, lambda m, n, w, s: _smem_estimate(kind, m, n, bd, es, s))
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd, num_warps=warps, num_stages=stages)


def spatial_fwd_launches(q, k, v, out, lse, scale: float, smem: int) -> list[Launch]:
    """The launches of `spatial_fwd` (see triton/launch.py)."""
    B, T, S, H, D = q.shape
    meta = spatial_config("fwd", D, q.dtype, smem)
    return [Launch(_spatial_fwd_kernel, (B * T * H, triton.cdiv(S, meta["BLOCK_M"])),
                   (q, k, v, out, lse, T, S, H, D, scale * LOG2E,
                    *_strides(q), *_strides(k), *_strides(v)),
                   dict(PRECISION=_precision(q), **meta))]


def spatial_fwd(q, k, v, scale: float):
    """q, k, v (B, T, S, H, D) strided, fp16/bf16/fp32 -> out contiguous, lse (B, T, H, S)."""
    B, T, S, H, D = q.shape
    out = torch.empty((B, T, S, H, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, T, H, S), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    run(spatial_fwd_launches(q, k, v, out, lse, scale, smem_limit(q)), q)
    return out, lse


def _delta(grad, out):
    """rowsum(dO * O) per query row, (B, T, S, H) fp32 (indexed like the rows)."""
    return (grad.float() * out.float()).sum(-1)


def spatial_bwd_launches(grad, q, k, v, lse, delta, dq, dk, dv, scale: float,
                         smem: int) -> list[Launch]:
    """The launches of `spatial_bwd`: dK/dV per key block, then dQ per query block."""
    B, T, S, H, D = q.shape
    args = (T, S, H, D, scale, *_strides(q), *_strides(k), *_strides(v), *_strides(grad))
    launches = []
    for kind, kernel, outs in (("dkdv", _spatial_bwd_dkdv_kernel, (dk, dv)),
                               ("dq", _spatial_bwd_dq_kernel, (dq,))):
        meta = spatial_config(kind, D, q.dtype, smem)
        rows = meta["BLOCK_N"] if kind == "dkdv" else meta["BLOCK_M"]
        launches.append(Launch(kernel, (B * T * H, triton.cdiv(S, rows)),
                               (q, k, v, grad, lse, delta, *outs, *args),
                               dict(PRECISION=_precision(q), **meta)))
    return launches


def spatial_bwd(grad, q, k, v, out, lse, scale: float):
    """Gradients (dq, dk, dv), contiguous (B, T, S, H, D), from the saved out and lse."""
    B, T, S, H, D = q.shape
    dq, dk, dv = (torch.empty((B, T, S, H, D), dtype=q.dtype, device=q.device)
                  for _ in range(3))
    if dq.numel() == 0:
        return dq, dk, dv
    if grad.stride(-1) != 1:
        grad = grad.contiguous()
    delta = _delta(grad, out)
    run(spatial_bwd_launches(grad, q, k, v, lse.contiguous(), delta, dq, dk, dv, scale,
                             smem_limit(q)), q)
    return dq, dk, dv


# --------------------------------------------------------------------------------------
# Temporal. A tile row r is (position p = r // BLOCK_I, query frame i0 + r % BLOCK_I); a
# tile column c is (position c // BLOCK_J, key frame j0 + c % BLOCK_J). Positions are
# flattened (b, s, h), h fastest, so neighbouring rows of a tile are neighbours in memory.


@triton.jit
def _position(pos, S, H):
    return pos // (S * H), (pos // H) % S, pos % H


@triton.jit
def _dot_isolated(w, x, ok, acc, PRECISION: tl.constexpr):
    """acc + w @ x for a packed tile whose weights w are zero outside `ok` (other
    positions). A non-finite x would give 0 * inf = NaN in every row of the tile, so the
    non-finite entries stay out of the tensor-core dot and are added back, as +-inf or NaN,
    only to the rows that see them (the rare branch: one extra fp32 dot of counts)."""
    finite = tl.abs(x.to(tl.float32)) < float("inf")  # False for +-inf and NaN
    acc = tl.dot(w, tl.where(finite, x, 0.0).to(x.dtype), acc, input_precision=PRECISION)
    if tl.min(finite.to(tl.int32)) == 0:
        # count, per output entry, the +inf (1), -inf (128) and NaN (16384) entries it sees:
        # small integers, exact in fp16 operands and the fp32 sum (at most 64 columns)
        code = tl.where(x != x, 16384.0, tl.where(x > 0, 1.0, 128.0))
        code = tl.where(finite, 0.0, code).to(tl.float16)
        cnt = tl.dot(ok.to(tl.float16), code, out_dtype=tl.float32)
        n_neg = tl.floor(cnt * (1.0 / 128.0))
        n_pos = cnt - n_neg * 128.0
        fix = tl.where(n_neg > 0, float("-inf"), 0.0)
        fix = tl.where(n_pos > 0, tl.where(n_neg > 0, float("nan"), float("inf")), fix)
        acc = acc + tl.where(cnt >= 16384.0, float("nan"), fix)
    return acc


@triton.jit
def _temporal_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, NPOS, TQ, TK, S, H, D, qk_scale,
    sqb, sqt, sqs, sqh, skb, skt, sks, skh, svb, svt, svs, svh,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = tl.arange(0, BLOCK_P * BLOCK_I)
    c = tl.arange(0, BLOCK_P * BLOCK_J)
    pos_r = tl.program_id(0).to(tl.int64) * BLOCK_P + r // BLOCK_I
    pos_c = tl.program_id(0).to(tl.int64) * BLOCK_P + c // BLOCK_J
    i0 = tl.program_id(1) * BLOCK_I
    i = (i0 + r % BLOCK_I).to(tl.int64)  # i * stride can pass 2^31
    ds = tl.arange(0, BLOCK_D)
    d_ok = ds < D
    row_ok = (pos_r < NPOS) & (i < TQ)
    b, s, h = _position(pos_r, S, H)
    q = tl.load(q_ptr + (b * sqb + i * sqt + s * sqs + h * sqh)[:, None] + ds[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    bc, sc, hc = _position(pos_c, S, H)
    k_rows = k_ptr + (bc * skb + sc * sks + hc * skh)[:, None] + ds[None, :]
    v_rows = v_ptr + (bc * svb + sc * svs + hc * svh)[:, None] + ds[None, :]
    m_i = tl.full([BLOCK_P * BLOCK_I], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_P * BLOCK_I], tl.float32)
    acc = tl.zeros([BLOCK_P * BLOCK_I, BLOCK_D], tl.float32)
    last = TK - TQ + i  # last key frame row i may see when causal
    j_end = TK
    if CAUSAL:  # later key frames are masked for every row of this tile
        j_end = tl.minimum(TK, TK - TQ + i0 + BLOCK_I)
    for j0 in range(0, j_end, BLOCK_J):
        j = (j0 + c % BLOCK_J).to(tl.int64)
        col_ok = (pos_c < NPOS) & (j < TK)
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_rows + (j * skt)[:, None], mask=kv_mask, other=0.0)
        v = tl.load(v_rows + (j * svt)[:, None], mask=kv_mask, other=0.0)
        sco = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        ok = (pos_r[:, None] == pos_c[None, :]) & col_ok[None, :]
        if CAUSAL:
            ok = ok & (j[None, :] <= last[:, None])
        sco = tl.where(ok, sco, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(sco, 1))
        # rows whose every column is masked so far keep m = -inf: shift by 0 instead
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(sco - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = _dot_isolated(p.to(v.dtype), v, ok, acc * alpha[:, None], PRECISION)
        m_i = m_new
    l_safe = tl.where(row_ok, l_i, 1.0)
    acc = acc / l_safe[:, None]
    o_off = ((b * TQ + i) * S + s) * (H * D) + h * D
    tl.store(o_ptr + o_off[:, None] + ds[None, :], acc.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + pos_r * TQ + i, (m_i + tl.log2(l_safe)) / 1.4426950408889634,
             mask=row_ok)


@triton.jit
def _temporal_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    NPOS, TQ, TK, S, H, D, scale,
    sqb, sqt, sqs, sqh, skb, skt, sks, skh, svb, svt, svs, svh, sgb, sgt, sgs, sgh,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = tl.arange(0, BLOCK_P * BLOCK_I)
    c = tl.arange(0, BLOCK_P * BLOCK_J)
    pos_r = tl.program_id(0).to(tl.int64) * BLOCK_P + r // BLOCK_I
    pos_c = tl.program_id(0).to(tl.int64) * BLOCK_P + c // BLOCK_J
    j0 = tl.program_id(1) * BLOCK_J
    j = (j0 + c % BLOCK_J).to(tl.int64)  # j * stride can pass 2^31
    ds = tl.arange(0, BLOCK_D)
    d_ok = ds < D
    col_ok = (pos_c < NPOS) & (j < TK)
    kv_mask = col_ok[:, None] & d_ok[None, :]
    bc, sc, hc = _position(pos_c, S, H)
    k = tl.load(k_ptr + (bc * skb + j * skt + sc * sks + hc * skh)[:, None] + ds[None, :],
                mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + (bc * svb + j * svt + sc * svs + hc * svh)[:, None] + ds[None, :],
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_P * BLOCK_J, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_P * BLOCK_J, BLOCK_D], tl.float32)
    b, s, h = _position(pos_r, S, H)
    q_rows = q_ptr + (b * sqb + s * sqs + h * sqh)[:, None] + ds[None, :]
    g_rows = g_ptr + (b * sgb + s * sgs + h * sgh)[:, None] + ds[None, :]
    # a key frame j is seen by query rows i >= j - (TK - TQ) only, when causal
    i_start = 0
    if CAUSAL:
        i_start = tl.maximum(0, j0 - (TK - TQ)) // BLOCK_I * BLOCK_I
    for i0 in range(i_start, TQ, BLOCK_I):
        i = (i0 + r % BLOCK_I).to(tl.int64)
        row_ok = (pos_r < NPOS) & (i < TQ)
        mask = row_ok[:, None] & d_ok[None, :]
        q = tl.load(q_rows + (i * sqt)[:, None], mask=mask, other=0.0)
        g = tl.load(g_rows + (i * sgt)[:, None], mask=mask, other=0.0)
        lse = tl.load(lse_ptr + pos_r * TQ + i, mask=row_ok, other=0.0)
        delta = tl.load(delta_ptr + ((b * TQ + i) * S + s) * H + h, mask=row_ok, other=0.0)
        sco = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        ok = (pos_r[:, None] == pos_c[None, :]) & row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            ok = ok & (j[None, :] <= (TK - TQ + i)[:, None])
        p = tl.where(ok, tl.exp(sco - lse[:, None]), 0.0)
        dv = _dot_isolated(tl.trans(p.to(g.dtype)), g, tl.trans(ok), dv, PRECISION)
        dp = tl.dot(g, tl.trans(v), input_precision=PRECISION)
        dsc = tl.where(ok, p * (dp - delta[:, None]) * scale, 0.0)  # no 0 * inf from dp
        dk = _dot_isolated(tl.trans(dsc.to(q.dtype)), q, tl.trans(ok), dk, PRECISION)
    off = (((bc * TK + j) * S + sc) * (H * D) + hc * D)[:, None] + ds[None, :]
    tl.store(dk_ptr + off, dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + off, dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _temporal_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, g_ptr, lse_ptr, delta_ptr, dq_ptr,
    NPOS, TQ, TK, S, H, D, scale,
    sqb, sqt, sqs, sqh, skb, skt, sks, skh, svb, svt, svs, svh, sgb, sgt, sgs, sgh,
    CAUSAL: tl.constexpr, PRECISION: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
):
    r = tl.arange(0, BLOCK_P * BLOCK_I)
    c = tl.arange(0, BLOCK_P * BLOCK_J)
    pos_r = tl.program_id(0).to(tl.int64) * BLOCK_P + r // BLOCK_I
    pos_c = tl.program_id(0).to(tl.int64) * BLOCK_P + c // BLOCK_J
    i0 = tl.program_id(1) * BLOCK_I
    i = (i0 + r % BLOCK_I).to(tl.int64)  # i * stride can pass 2^31
    ds = tl.arange(0, BLOCK_D)
    d_ok = ds < D
    row_ok = (pos_r < NPOS) & (i < TQ)
    mask = row_ok[:, None] & d_ok[None, :]
    b, s, h = _position(pos_r, S, H)
    q = tl.load(q_ptr + (b * sqb + i * sqt + s * sqs + h * sqh)[:, None] + ds[None, :],
                mask=mask, other=0.0)
    g = tl.load(g_ptr + (b * sgb + i * sgt + s * sgs + h * sgh)[:, None] + ds[None, :],
                mask=mask, other=0.0)
    lse = tl.load(lse_ptr + pos_r * TQ + i, mask=row_ok, other=0.0)
    delta = tl.load(delta_ptr + ((b * TQ + i) * S + s) * H + h, mask=row_ok, other=0.0)
    bc, sc, hc = _position(pos_c, S, H)
    k_rows = k_ptr + (bc * skb + sc * sks + hc * skh)[:, None] + ds[None, :]
    v_rows = v_ptr + (bc * svb + sc * svs + hc * svh)[:, None] + ds[None, :]
    dq = tl.zeros([BLOCK_P * BLOCK_I, BLOCK_D], tl.float32)
    j_end = TK
    if CAUSAL:  # later key frames are masked for every row of this tile
        j_end = tl.minimum(TK, TK - TQ + i0 + BLOCK_I)
    for j0 in range(0, j_end, BLOCK_J):
        j = (j0 + c % BLOCK_J).to(tl.int64)
        col_ok = (pos_c < NPOS) & (j < TK)
        kv_mask = col_ok[:, None] & d_ok[None, :]
        k = tl.load(k_rows + (j * skt)[:, None], mask=kv_mask, other=0.0)
        v = tl.load(v_rows + (j * svt)[:, None], mask=kv_mask, other=0.0)
        sco = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale
        ok = (pos_r[:, None] == pos_c[None, :]) & row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            ok = ok & (j[None, :] <= (TK - TQ + i)[:, None])
        p = tl.where(ok, tl.exp(sco - lse[:, None]), 0.0)
        dp = tl.dot(g, tl.trans(v), input_precision=PRECISION)
        dsc = tl.where(ok, p * (dp - delta[:, None]) * scale, 0.0)  # no 0 * inf from dp
        dq = _dot_isolated(dsc.to(k.dtype), k, ok, dq, PRECISION)
    off = ((b * TQ + i) * S + s) * (H * D) + h * D
    tl.store(dq_ptr + off[:, None] + ds[None, :], dq.to(dq_ptr.dtype.element_ty), mask=mask)


# (tile rows, num_warps, num_stages), fastest first. 32-row tiles: with 64 the dK/dV and
# dQ kernels spill on sm_80/sm_86 (the non-finite branch of _dot_isolated holds a second
# [rows, D] accumulator); the kernels are memory-bound, so the smaller tensor-core tiles
# (mma.sync rather than sm_90's 64-row wgmma) cost little. Wider heads take 8 warps, fp32
# (tf32x3) 16 rows, for the same reason.
_TEMPORAL_CANDIDATES = {
    (2, 64): [(32, 4, 2)],
    (2, 128): [(32, 8, 2), (32, 4, 1)],
    (2, 256): [(32, 8, 2), (32, 4, 1), (16, 4, 1)],
    (4, 64): [(16, 8, 1)],
    (4, 128): [(16, 4, 2), (16, 4, 1)],
}


def _temporal_tiles(tq: int, tk: int, rows: int):
    """(BLOCK_P, BLOCK_I, BLOCK_J): a whole (padded) sequence per tile when it fits."""
    bi = min(rows, max(1, triton.next_power_of_2(tq)))
    bj = min(rows, max(1, triton.next_power_of_2(tk)))
    bp = max(1, rows // max(bi, bj))
    # tl.dot needs >= 16 rows and columns
    bi, bj = max(bi, 16 // bp), max(bj, 16 // bp)
    return bp, bi, bj


def temporal_config(kind: str, tq: int, tk: int, D: int, dtype: torch.dtype,
                    smem: int) -> dict:
    """Launch parameters of a temporal kernel (`kind` "fwd", "dkdv" or "dq")."""
    bd = _block_d(D)
    if _INTERPRET:
        bp, bi, bj = _temporal_tiles(tq, tk, 32)
        return dict(BLOCK_P=bp, BLOCK_I=bi, BLOCK_J=bj, BLOCK_D=bd, num_warps=4,
                    num_stages=1)
    es = dtype.itemsize

    def estimate(rows, warps, stages):
        bp, bi, bj = _temporal_tiles(tq, tk, rows)
        m, n = bp * bi, bp * bj
        # the main tiles as in the spatial kernels, plus the fp32 operands of the rare
        # non-finite branch of _dot_isolated
        return _smem_estimate(kind, m, n, bd, es, stages) + (m * n + n * bd) * 4

    rows, warps, stages = _pick(_TEMPORAL_CANDIDATES[(min(es, 4), max(64, bd))], smem,
                                estimate)
    bp, bi, bj = _temporal_tiles(tq, tk, rows)
    return dict(BLOCK_P=bp, BLOCK_I=bi, BLOCK_J=bj, BLOCK_D=bd, num_warps=warps,
                num_stages=stages)


def temporal_fwd_launches(q, k, v, out, lse, causal: bool, scale: float,
                          smem: int) -> list[Launch]:
    """The launches of `temporal_fwd`."""
    B, tq, S, H, D = q.shape
    tk = k.shape[1]
    meta = temporal_config("fwd", tq, tk, D, q.dtype, smem)
    npos = B * S * H
    grid = (triton.cdiv(npos, meta["BLOCK_P"]), triton.cdiv(tq, meta["BLOCK_I"]))
    return [Launch(_temporal_fwd_kernel, grid,
                   (q, k, v, out, lse, npos, tq, tk, S, H, D, scale * LOG2E,
                    *_strides(q), *_strides(k), *_strides(v)),
                   dict(CAUSAL=causal, PRECISION=_precision(q), **meta))]


def temporal_fwd(q, k, v, causal: bool, scale: float):
    """q (B, Tq, S, H, D), k/v (B, Tk, S, H, D) strided -> out contiguous, lse (B, S, H, Tq)."""
    B, tq, S, H, D = q.shape
    out = torch.empty((B, tq, S, H, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, S, H, tq), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    run(temporal_fwd_launches(q, k, v, out, lse, causal, scale, smem_limit(q)), q)
    return out, lse


def temporal_bwd_launches(grad, q, k, v, lse, delta, dq, dk, dv, causal: bool, scale: float,
                          smem: int) -> list[Launch]:
    """The launches of `temporal_bwd`: dK/dV per key chunk, then dQ per query chunk."""
    B, tq, S, H, D = q.shape
    tk = k.shape[1]
    npos = B * S * H
    args = (npos, tq, tk, S, H, D, scale,
            *_strides(q), *_strides(k), *_strides(v), *_strides(grad))
    kv = temporal_config("dkdv", tq, tk, D, q.dtype, smem)
    qm = temporal_config("dq", tq, tk, D, q.dtype, smem)
    return [
        Launch(_temporal_bwd_dkdv_kernel,
               (triton.cdiv(npos, kv["BLOCK_P"]), triton.cdiv(tk, kv["BLOCK_J"])),
               (q, k, v, grad, lse, delta, dk, dv, *args),
               dict(CAUSAL=causal, PRECISION=_precision(q), **kv)),
        Launch(_temporal_bwd_dq_kernel,
               (triton.cdiv(npos, qm["BLOCK_P"]), triton.cdiv(tq, qm["BLOCK_I"])),
               (q, k, v, grad, lse, delta, dq, *args),
               dict(CAUSAL=causal, PRECISION=_precision(q), **qm)),
    ]


def temporal_bwd(grad, q, k, v, out, lse, causal: bool, scale: float):
    """Gradients (dq, dk, dv), contiguous, from the saved out and lse."""
    B, tq, S, H, D = q.shape
    tk = k.shape[1]
    dq = torch.empty((B, tq, S, H, D), dtype=q.dtype, device=q.device)
    dk, dv = (torch.empty((B, tk, S, H, D), dtype=q.dtype, device=q.device) for _ in range(2))
    if dk.numel() == 0:
        return dq, dk, dv
    if dq.numel() == 0:
        return dq, dk.zero_(), dv.zero_()
    if grad.stride(-1) != 1:
        grad = grad.contiguous()
    delta = _delta(grad, out)
    run(temporal_bwd_launches(grad, q, k, v, lse.contiguous(), delta, dq, dk, dv, causal,
                              scale, smem_limit(q)), q)
    return dq, dk, dv
