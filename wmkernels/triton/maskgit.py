"""MaskGIT sampling and re-masking in Triton.

Sampler: each program owns BLOCK_R rows and holds them whole in registers
([BLOCK_R, BLOCK_V], BLOCK_V = next power of two >= V), so the logits are read from memory
exactly once: max and first argmax, sum of exp for the untempered log-sum-exp (confidence),
the top-k threshold by a 32-step binary search on the order-preserving integer image of
the fp32 values (count of values >= candidate), and Gumbel-max sampling: argmax of
(x - max) / T + g with g = -log(-log u), u from Philox (`tl.rand`, keyed by the per-call
seed, one counter per logit), all on registers. Known positions of a step are masked out of
the load, so their logits are never read.

Re-mask: one program per batch row holds the N scores in registers, finds the k-th smallest
by the same binary search on integer keys, keeps the values below it plus the first
(k - #below) equal ones in position order (a cumsum), and writes tokens and mask. In the
random order the scores are noise alone, so the re-mask runs first and the sampler then
reads only the rows of the positions this step reveals.

Roofline at maskgit-large (B16 N4096 V8192 bf16): 1.07 GB of logits against ~10 flops per
logit, so memory-bound: ~0.32 ms at 3.35 TB/s (H100 SXM); the re-mask reads/writes ~1 MB.
At maskgit-genie (B8 N1024 V1024) the logits are 16-32 MB: a few microseconds of bandwidth,
so launch overhead matters and the decode loop should run in a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from wmkernels.routing import INTERPRET
from wmkernels.triton.launch import Launch, run

# A row must fit the registers of one program. Past these sizes the compiled kernels spill
# kilobytes of stack per thread and take minutes to compile (V = 2^17: 9 KB of stack,
# N = 2^16: 4 KB; bench/results/static), so the API refuses them instead.
MAX_V = 1 << 15
MAX_N = 1 << 14

# A global a kernel reads must be a tl.constexpr object: the compiler rejects a plain (or
# merely annotated) global with "Cannot access global variable" (the interpreter does not).
_INT32_MIN = tl.constexpr(-(1 << 31))
_INT32_MAX = tl.constexpr((1 << 31) - 1)


@triton.jit
def _sortable(x):
    """fp32 -> int64 with the same order (for -inf <= x <= max float, no NaN); -0.0 takes
    +0.0's key, as they compare equal (torch.topk's threshold, torch.sort's ties)."""
    bits = tl.where(x == 0.0, 0.0, x).to(tl.int32, bitcast=True)
    return (bits ^ ((bits >> 31) & 0x7FFFFFFF)).to(tl.int64)


@triton.jit
def _gumbel(seed, offsets):
    # tl.rand can round to exactly 0 or 1 in float32; 1 would give g = +inf, a sure win for
    # that logit, so u is kept inside [2^-24, 1 - 2^-24] (float32 noise throughout)
    u = tl.minimum(tl.maximum(tl.rand(seed, offsets), 5.9604644775390625e-08),
                   0.99999994039535522)
    return -tl.log(-tl.log(u))


@triton.jit
def _sample_kernel(
    logits_ptr, mask_ptr, kept_ptr, tok_ptr, out_ptr, seed_ptr,
    R, N, V, stride_b, stride_n, noise_base, temperature, top_k, choice_temperature,
    STEP: tl.constexpr, SAMPLE: tl.constexpr, TOP_K: tl.constexpr, RANDOM: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_V: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_V)
    row_ok = rows < R
    if STEP:  # only unknown positions are sampled: known rows are never read
        row_ok = row_ok & (tl.load(mask_ptr + rows, mask=row_ok, other=0) != 0)
        if RANDOM:  # the selection ran first: positions that stay masked are not sampled
            row_ok = row_ok & (tl.load(kept_ptr + rows, mask=row_ok, other=1) == 0)
    ok = row_ok[:, None] & (cols < V)[None, :]
    base = (rows // N) * stride_b + (rows % N) * stride_n
    x = tl.load(logits_ptr + base[:, None] + cols[None, :], mask=ok, other=float("-inf"))
    x = x.to(tl.float32)
    x = tl.where(x != x, float("-inf"), x)  # NaN counts as -inf
    x = tl.minimum(x, 3.4028234663852886e38)  # +inf counts as the largest float
    m = tl.max(x, 1)
    valid = m > float("-inf")
    m0 = tl.where(valid, m, 0.0)
    big = BLOCK_V
    argmax = tl.min(tl.where(x == m[:, None], cols[None, :], big), 1)
    # >= 1 on valid rows (the max contributes exp(0)); the clamp keeps invalid rows finite
    log_sum = tl.log(tl.maximum(tl.sum(tl.exp(x - m0[:, None]), 1), 1.0))
    seed = tl.load(seed_ptr)
    if SAMPLE:
        keep = ok
        if TOP_K:
            key = _sortable(x)
            lo = tl.full([BLOCK_R], _INT32_MIN, tl.int64)
            hi = tl.full([BLOCK_R], _INT32_MAX, tl.int64)
            for _ in range(32):  # largest t with #(key >= t) >= top_k: the k-th largest
                mid = (lo + hi + 1) >> 1
                cnt = tl.sum((ok & (key >= mid[:, None])).to(tl.int32), 1)
                lo = tl.where(cnt >= top_k, mid, lo)
                hi = tl.where(cnt >= top_k, hi, mid - 1)
            keep = keep & (key >= lo[:, None])
        g = _gumbel(seed, rows[:, None] * V + cols[None, :])
        y = tl.where(keep, (x - m0[:, None]) / temperature + g, float("-inf"))
        best = tl.max(y, 1)
        tok = tl.min(tl.where((y == best[:, None]) & keep, cols[None, :], big), 1)
        tok = tl.where(tok < V, tok, argmax)  # every draw -inf: fall back to the mode
    else:
        tok = argmax
    x_tok = tl.sum(tl.where(cols[None, :] == tok[:, None], x, 0.0), 1)
    # (x - max) - log(sum), never max + log(sum): that rounds away at +-FLT_MAX
    logp = tl.where(valid, (x_tok - m0) - log_sum, float("-inf"))
    tok = tl.where(valid, tok, -1).to(tl.int64)
    tl.store(tok_ptr + rows, tok, mask=row_ok)
    if STEP:
        if not RANDOM:
            g_choice = _gumbel(seed, noise_base + rows)  # past every per-logit counter
            tl.store(out_ptr + rows, logp + choice_temperature * g_choice, mask=row_ok)
    else:
        tl.store(out_ptr + rows, tl.exp(logp), mask=row_ok)


@triton.jit
def _remask_kernel(
    score_ptr, sampled_ptr, tokens_ptr, mask_ptr, num_masked_ptr, out_tok_ptr, out_mask_ptr,
    seed_ptr, noise_base, N, RANDOM: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    ok = cols < N
    off = b * N + cols
    unknown = ok & (tl.load(mask_ptr + off, mask=ok, other=0) != 0)
    if RANDOM:  # the score is the noise alone: no sample needed to choose
        score = tl.where(unknown, _gumbel(tl.load(seed_ptr), noise_base + off), float("inf"))
    else:
        score = tl.load(score_ptr + off, mask=unknown, other=float("inf"))
    key = _sortable(score)
    n_unknown = tl.sum(unknown.to(tl.int32), 0)
    k = tl.minimum(tl.maximum(tl.load(num_masked_ptr + b), 0), n_unknown)
    lo = tl.full([], _INT32_MIN, tl.int64)
    hi = tl.full([], _INT32_MAX, tl.int64)
    for _ in range(32):  # smallest t with #(key <= t) >= k: the k-th smallest score
        mid = (lo + hi) >> 1
        cnt = tl.sum((unknown & (key <= mid)).to(tl.int32), 0)
        hi = tl.where(cnt >= k, mid, hi)
        lo = tl.where(cnt >= k, lo, mid + 1)
    below = unknown & (key < lo)
    equal = unknown & (key == lo)
    rank = tl.cumsum(equal.to(tl.int32), 0)  # ties go to the lower index
    n_below = tl.sum(below.to(tl.int32), 0)
    keep = (below | (equal & (rank <= k - n_below))) & (k > 0)
    tokens = tl.load(tokens_ptr + off, mask=ok, other=0)
    if RANDOM:  # revealed positions are written by the sampler, which runs next
        tl.store(out_tok_ptr + off, tokens, mask=ok)
    else:
        sampled = tl.load(sampled_ptr + off, mask=unknown, other=0)
        tl.store(out_tok_ptr + off, tl.where(unknown & ~keep, sampled, tokens), mask=ok)
    tl.store(out_mask_ptr + off, keep.to(tl.int8), mask=ok)


def _launch_settings(V: int) -> tuple[int, int, int]:
    block_v = triton.next_power_of_2(V)
    if INTERPRET:  # few, wide programs: the interpreter's cost is per program
        return block_v, max(1, min(64, 4096 // block_v)), 4
    block_r = max(1, min(16, 2048 // block_v))
    n = block_r * block_v  # ~16 logits per thread keeps the row's tiles in registers
    warps = 4 if n <= 2048 else 8 if n <= 4096 else 16
    return block_v, block_r, warps


def _sample_launch(logits, mask, kept, tok, out, seed, R, N, stride_b, stride_n, temperature,
                   top_k, choice_temperature, step, random_order) -> Launch:
    V = logits.shape[-1]
    if V > MAX_V:
        raise ValueError(f"the triton maskgit sampler holds a row in registers: V must be "
                         f"<= {MAX_V}, got {V}")
    block_v, block_r, warps = _launch_settings(V)
    return Launch(_sample_kernel, (triton.cdiv(R, block_r),),
                  (logits, mask, kept, tok, out, seed, R, N, V, stride_b, stride_n, R * V,
                   max(temperature, 1e-30), top_k, choice_temperature),
                  dict(STEP=step, SAMPLE=temperature > 0 and V > 1, TOP_K=0 < top_k < V,
                       RANDOM=random_order, BLOCK_R=block_r, BLOCK_V=block_v,
                       num_warps=warps))


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def maskgit_sample(logits: torch.Tensor, temperature: float, top_k: int, seed: torch.Tensor):
    """logits (R, V) fp16/bf16/fp32, any row stride -> (tokens int64 (R,), conf fp32 (R,))."""
    R = logits.shape[0]
    tokens = torch.empty(R, dtype=torch.long, device=logits.device)
    conf = torch.empty(R, dtype=torch.float32, device=logits.device)
    if R == 0:
        return tokens, conf
    run(sample_launches(_last_dim_contiguous(logits), temperature, top_k, seed, tokens, conf),
        logits)
    return tokens, conf


def sample_launches(x, temperature, top_k, seed, tokens, conf) -> list[Launch]:
    """The launches of `maskgit_sample` on logits `x` (unit last stride)."""
    return [_sample_launch(x, tokens, tokens, tokens, conf, seed, x.shape[0], 1, x.stride(0), 0,
                           temperature, top_k, 0.0, False, False)]


def maskgit_step(logits, tokens, mask, num_masked, temperature, top_k, choice_temperature,
                 random_order, seed):
    """One step: logits (B, N, V), tokens (B, N) int64, mask (B, N) bool, num_masked (B,)."""
    B, N, _ = logits.shape
    # the kernels index (b, n) as b * N + n: outputs are row-major whatever the inputs' strides
    out_tokens = torch.empty((B, N), dtype=tokens.dtype, device=tokens.device)
    out_mask = torch.empty((B, N), dtype=mask.dtype, device=mask.device)
    if B * N == 0:
        return out_tokens, out_mask
    if N > MAX_N:
        raise ValueError(f"the triton maskgit re-mask holds a row in registers: N must be "
                         f"<= {MAX_N}, got {N}")
    x = _last_dim_contiguous(logits)
    tokens, mask, num_masked = tokens.contiguous(), mask.contiguous(), num_masked.contiguous()
    scratch = None
    if not random_order:  # sampled tokens and scores, read by the re-mask
        scratch = (torch.empty(B * N, dtype=torch.long, device=logits.device),
                   torch.empty(B * N, dtype=torch.float32, device=logits.device))
    run(step_launches(x, tokens, mask, num_masked, temperature, top_k, choice_temperature,
                      random_order, seed, out_tokens, out_mask, scratch), logits)
    return out_tokens, out_mask


def step_launches(x, tokens, mask, num_masked, temperature, top_k, choice_temperature,
                  random_order, seed, out_tokens, out_mask, scratch) -> list[Launch]:
    """The launches of `maskgit_step` (contiguous tokens/mask/num_masked, logits `x` with
    a unit last stride, row-major outputs; `scratch` = (sampled, score) unless random)."""
    B, N, V = x.shape
    block_n = triton.next_power_of_2(N)
    warps = 4 if block_n <= 2048 else 8 if block_n <= 8192 else 16
    sample = lambda kept, tok, score: _sample_launch(
        x, mask, kept, tok, score, seed, B * N, N, x.stride(0), x.stride(1), temperature, top_k,
        choice_temperature, True, random_order)
    remask = lambda score, sampled: Launch(
        _remask_kernel, (B,),
        (score, sampled, tokens, mask, num_masked, out_tokens, out_mask.view(torch.int8), seed,
         B * N * V, N), dict(RANDOM=random_order, BLOCK_N=block_n, num_warps=warps))
    if random_order:
        # the scores are noise only: choose first, then sample just the revealed positions
        # straight into out_tokens
        return [remask(out_tokens, out_tokens), sample(out_mask, out_tokens, out_tokens)]
    sampled, score = scratch
    return [sample(mask, sampled, score), remask(score, sampled)]
