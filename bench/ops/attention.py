"""Bench cases of factorized spatial/temporal attention (shapes `attn-*` of BENCHMARKS.md).

Rows per shape, forward (`spatial_attention`, `temporal_attention`) and forward+backward
(`..._fwdbwd`): eager (rearrange + SDPA + rearrange back, as repos write it), compile
(torch.compile of eager), sdpa (SDPA on zero-copy strided views of the packed QKV),
flex (FlexAttention, compiled, on the same views; GPU only), and the wmk backends that can
run: "wmk" is the default path (no backend=: what the routing rule picks; the `ran` column
of the results names it), "wmk-<backend>" one backend forced. `st_block_fwdbwd` times a
Genie ST block built on the eager ops against the same block on the wmk kernels. On CPU the
shapes are scaled (`<name>/cpu`, real sizes in params).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import wmkernels
from wmkernels import routing
from wmkernels.bench import baselines
from wmkernels.bench.harness import Case, Skip
from wmkernels.nn import STBlock
from wmkernels.reference import attention as reference

# name -> (kind, B, Tq, Tk, S, H, D)
GPU_SHAPES = {
    "attn-spatial-genie": ("spatial", 8, 16, 16, 1024, 16, 64),
    "attn-spatial-dit": ("spatial", 2, 16, 16, 4096, 16, 128),
    "attn-temporal-genie": ("temporal", 8, 16, 16, 1024, 16, 64),
    "attn-temporal-long": ("temporal", 2, 64, 64, 1024, 16, 64),
    "attn-temporal-decode": ("temporal", 8, 1, 16, 1024, 16, 64),
}
CPU_SHAPES = {
    "attn-spatial-genie/cpu": ("spatial", 1, 4, 4, 256, 4, 64),
    "attn-temporal-genie/cpu": ("temporal", 1, 16, 16, 256, 4, 64),
    "attn-temporal-decode/cpu": ("temporal", 1, 1, 16, 256, 4, 64),
}
QUICK_SHAPES = {
    "attn-spatial/quick": ("spatial", 1, 2, 2, 16, 2, 32),
    "attn-temporal/quick": ("temporal", 1, 3, 3, 8, 2, 32),
}
WMK = {"cpu": "wmk-cpu", "triton": "wmk-triton", "cuda": "wmk-cuda"}


def _pairs(kind, tq, tk, S):
    """Attended (query, key) pairs per (batch, frame/position, head)."""
    if kind == "spatial":
        return S * S
    return sum(tk - tq + i + 1 for i in range(tq))  # causal, bottom-right aligned


def _packed(B, tk, S, H, D, dtype, device, grad):
    """A packed (B, Tk, S, 3, H, D) projection, as one linear layer makes it."""
    return torch.randn(B, tk, S, 3, H, D, dtype=dtype, device=device, requires_grad=grad)


def _views(qkv, tq):
    """q, k, v as strided views; q from the last tq frames (decode: the newest frame)."""
    q, k, v = qkv.unbind(3)
    return q[:, q.shape[1] - tq:], k, v


def _sdpa_views(kind, q, k, v, causal_mask):
    """The "SDPA on views" peer, the best a user writes with torch alone: spatial
    (B*T, H, S, D) via a free reshape; temporal (B, S, H, T, D) via a permute. No 4-D
    zero-copy view of a packed projection exists for temporal attention, so there SDPA gets
    5-D inputs (its math path on CUDA)."""
    if kind == "spatial":
        B, T, S, H, D = q.shape
        t = lambda x: x.reshape(B * T, S, H, D).transpose(1, 2)
        return F.scaled_dot_product_attention(t(q), t(k), t(v)).transpose(1, 2).unflatten(
            0, (B, T))
    t = lambda x: x.permute(0, 2, 3, 1, 4)
    out = F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=causal_mask)
    return out.permute(0, 3, 1, 2, 4)


def _flex(kind, tq, tk):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    if kind == "spatial":
        def run(q, k, v):
            B, T, S, H, D = q.shape
            t = lambda x: x.reshape(B * T, S, H, D).transpose(1, 2)
            return flex(t(q), t(k), t(v)).transpose(1, 2).unflatten(0, (B, T))
        return run

    def causal(b, h, i, j):
        return j <= i + (tk - tq)

    def run(q, k, v):
        t = lambda x: x.permute(0, 2, 3, 1, 4).flatten(0, 1)  # (B*S, H, T, D)
        mask = create_block_mask(causal, None, None, tq, tk, device=q.device)
        out = flex(t(q), t(k), t(v), block_mask=mask)
        B, _, S, H, D = q.shape
        return out.view(B, S, H, tq, D).permute(0, 3, 1, 2, 4)
    return run


def _attention_cases(name, spec, device, dtype, quick):
    kind, B, tq, tk, S, H, D = spec
    op = f"{kind}_attention"
    esize = torch.finfo(dtype).bits // 8
    n_q = B * tq * S * H * D
    n_k = B * tk * S * H * D if kind == "temporal" else n_q
    per = B * (S if kind == "temporal" else tq) * H
    flops = 4 * per * _pairs(kind, tq, tk, S) * D
    fwd_bytes = (2 * n_q + 2 * n_k) * esize
    bwd_bytes = fwd_bytes + (3 * n_q + 2 * n_k) * esize  # + out, dO, dq, dk, dv
    params = dict(B=B, Tq=tq, Tk=tk, S=S, H=H, D=D, causal=kind == "temporal")
    mask = reference.causal_mask(tq, tk, torch.device(device)) if kind == "temporal" else None
    fn = wmkernels.spatial_attention if kind == "spatial" else wmkernels.temporal_attention
    eager = (lambda q, k, v: reference.spatial_attention(q, k, v)) if kind == "spatial" else (
        lambda q, k, v: baselines.temporal_attention_rearrange(q, k, v, True))

    skips = []
    impls = {"eager": eager}
    if quick:
        skips.append(Skip(op, name, "compile", "not compiled in quick mode"))
    else:
        impls["compile"] = torch.compile(eager, dynamic=False)
    impls["sdpa"] = lambda q, k, v: _sdpa_views(kind, q, k, v, mask)
    if device == "cuda":
        impls["flex"] = _flex(kind, tq, tk)
    else:
        skips.append(Skip(op, name, "flex", "FlexAttention runs on CUDA only here"))
    for be, label in WMK.items():
        reason = routing.unavailable_reason(be, device)
        if be == "triton" and device == "cpu":
            reason = reason or "triton runs on CPU only in the interpreter (not timed)"
        if reason:
            skips.append(Skip(op, name, label, reason))
        else:
            impls[label] = (lambda b: lambda q, k, v: fn(q, k, v, backend=b))(be)
    impls["wmk"] = fn  # the default path: the routing rule decides

    cases = list(skips)
    for label, impl in impls.items():
        qkv = _packed(B, tk, S, H, D, dtype, device, grad=False)
        cases.append(Case(op, name, label, str(dtype).replace("torch.", ""),
                          (lambda f, x: lambda: f(*_views(x, tq)))(impl, qkv),
                          bytes=fwd_bytes, flops=flops, params=params))
        if label == "wmk-cuda" or tq < tk:
            continue  # decode is inference; the CUDA C++ backward is an unfused fallback
        leaf = _packed(B, tk, S, H, D, dtype, device, grad=True)
        g = torch.randn(B, tq, S, H, D, dtype=dtype, device=device)

        def step(f=impl, x=leaf, g=g):
            x.grad = None
            f(*_views(x, tq)).backward(g)

        cases.append(Case(f"{op}_fwdbwd", name, label, str(dtype).replace("torch.", ""),
                          step, bytes=bwd_bytes, flops=flops * 7 // 2, params=params))
    return cases


def _block_cases(name, B, T, S, dim, heads, device, dtype):
    """A Genie ST block, forward + backward: the same weights on eager ops and on wmk."""
    x = torch.randn(B, T, S, dim, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn_like(x)
    params = dict(B=B, T=T, S=S, dim=dim, heads=heads)
    base = STBlock(dim, heads, backend="reference").to(device=device, dtype=dtype)
    fast = "cpu" if device == "cpu" else "triton"
    cases = []
    for label, backend in (("eager", "reference"), (WMK[fast], fast), ("wmk", None)):
        reason = backend and routing.unavailable_reason(backend, device)
        if reason:
            cases.append(Skip("st_block_fwdbwd", name, label, reason))
            continue
        blk = STBlock(dim, heads, backend=backend).to(device=device, dtype=dtype)
        blk.load_state_dict(base.state_dict())

        def step(m=blk):
            x.grad = None
            m(x).backward(g)

        cases.append(Case("st_block_fwdbwd", name, label, str(dtype).replace("torch.", ""),
                          step, params=params))
    return cases


def cases(device: str, quick: bool) -> list:
    """Bench cases for `device` ("cpu" or "cuda"); tiny shapes when `quick`."""
    if quick:
        shapes, dtype, block = QUICK_SHAPES, torch.float32, ("st-block/quick", 1, 2, 8, 32, 2)
    elif device == "cuda":
        shapes, dtype, block = GPU_SHAPES, torch.bfloat16, ("attn-spatial-genie", 8, 16, 1024,
                                                           1024, 16)
    else:
        shapes, dtype, block = CPU_SHAPES, torch.float32, ("st-block-genie/cpu", 1, 4, 256,
                                                          256, 4)
    out = []
    for name, spec in shapes.items():
        out += _attention_cases(name, spec, device, dtype, quick)
    out += _block_cases(*block, device, dtype)
    if device == "cpu" and not quick:
        for name in GPU_SHAPES:
            out.append(Skip("attention", name, "all", "canonical shapes run on a CUDA GPU"))
    return out
