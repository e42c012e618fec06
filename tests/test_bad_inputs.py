"""Every public op and nn module through a table of bad inputs, on every backend present.

Each case either gets the reference backend's answer (`REF`), or raises a TypeError /
ValueError / RuntimeError whose message names the argument (`err("name")`). Cases that once
crashed the process (out-of-range indices, a wrong log-sum-exp handed to the C++ backwards)
run in one child pytest process (the tests named test_child_*, skipped elsewhere), so a
regression fails a test instead of killing the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import wmkernels
from wmkernels import _extension, routing
from wmkernels.nn import (
    MaskGITSampler,
    SpatialAttention,
    STBlock,
    TemporalAttention,
    TemporalKVCache,
    VectorQuantizer,
)

REF = "ref"
ERRORS = (TypeError, ValueError, RuntimeError)
NAN, INF = float("nan"), float("inf")
ROOT = Path(__file__).resolve().parents[1]
CHILD = os.environ.get("WMK_BAD_INPUT_CHILD") == "1"


def gpu_kernels(name: str) -> dict:
    """The expectation `name` (an error) on the backends of the GPU kernels, which run
    neither float64 nor head dims above 256 (triton; cuda, and its CPU emulation)."""
    return {b: name for b in ("triton", "cuda", "cuda-sim")}


@dataclass
class Case:
    """`call(backend)` runs the op; `expect` is REF or the name the error message must hold;
    `on` overrides `expect` per backend; `backends` limits where the case runs (None: every
    backend of `op`; () for calls without a backend); `crash`: run in the child process."""

    id: str
    op: str
    call: Callable
    expect: str
    on: dict = field(default_factory=dict)
    backends: tuple | None = None
    crash: bool = False


def err(name: str) -> str:
    return name


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def rn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=gen(seed)).to(dtype)


def colmajor(x):
    return x.t().contiguous().t()


def with_value(x, index, value):
    x = x.clone()
    x[index] = value
    return x


# ---------------------------------------------------------------------------------------
# VQ

def lookup(z=None, cb=None, **kw):
    z = rn(33, 8) if z is None else z
    cb = rn(17, 8, seed=1) if cb is None else cb
    return lambda b: wmkernels.vq_lookup(z, cb, backend=b, **kw)


def quantize(z=None, cb=None, **kw):
    z = rn(33, 8) if z is None else z
    cb = rn(17, 8, seed=1) if cb is None else cb
    return lambda b: wmkernels.vq_quantize(z, cb, backend=b, **kw)


def ema(K=6, D=4, N=40, dtype=torch.float32, idx=None, z=None, state=None, **kw):
    """A fresh EMA state per call (the op works in place); returns the state after it."""
    def call(b):
        cb, cs, es = state() if state else (rn(K, D, dtype=dtype), rn(K, dtype=dtype).abs(),
                                            rn(K, D, dtype=dtype, seed=2))
        zz = rn(N, D, dtype=dtype, seed=3) if z is None else z
        ii = torch.randint(0, K, (N,), generator=gen(4)) if idx is None else idx
        wmkernels.vq_ema_update_(cb, cs, es, zz, ii, backend=b, **kw)
        return cb, cs, es
    return call


INF_CODES = torch.tensor([[0.0, 0.0], [1.0, 1.0], [INF, 0.0], [2.0, 2.0]])
INF_ROWS = torch.tensor([[1.0, 1.0], [2.0, 2.0], [0.0, 0.0], [INF, 1.0], [-INF, 0.0]])
NAN_CODES = with_value(INF_CODES, (3, 1), NAN)

VQ_CASES = [
    Case("z-int", "vq_lookup", lookup(z=torch.ones(3, 8, dtype=torch.long)), err("z")),
    Case("codebook-int", "vq_lookup", lookup(cb=torch.ones(4, 8, dtype=torch.long)),
         err("codebook")),
    Case("dtype-mismatch", "vq_lookup", lookup(cb=rn(4, 8).double()), err("codebook")),
    Case("z-not-tensor", "vq_lookup", lookup(z=[[1.0] * 8]), err("z")),
    Case("z-0d", "vq_lookup", lookup(z=torch.tensor(1.0)), err("z")),
    Case("codebook-1d", "vq_lookup", lookup(cb=rn(8)), err("codebook")),
    Case("codebook-3d", "vq_lookup", lookup(cb=rn(2, 4, 8)), err("codebook")),
    Case("dim-mismatch", "vq_lookup", lookup(cb=rn(4, 7)), err("codebook")),
    Case("K0", "vq_lookup", lookup(cb=rn(0, 8)), err("codebook")),
    Case("D0", "vq_lookup", lookup(z=rn(5, 0), cb=rn(4, 0)), err("codebook")),
    Case("metric-bad", "vq_lookup", lookup(metric="foo"), err("metric")),
    Case("metric-none", "vq_lookup", lookup(metric=None), err("metric")),
    Case("device-mismatch", "vq_lookup", lookup(cb=rn(4, 8).to("meta")), err("codebook")),
    Case("backend-bad", "vq_lookup", lookup(), err("backend"), backends=("nope",)),
    Case("z-empty", "vq_lookup", lookup(z=rn(0, 8)), REF),
    Case("z-empty-lead", "vq_lookup", lookup(z=rn(2, 0, 8)), REF),
    Case("z-packed-view", "vq_lookup", lookup(z=rn(5, 3, 24)[:, 1, 4:12]), REF),
    Case("z-colmajor", "vq_lookup", lookup(z=colmajor(rn(33, 8))), REF),
    Case("z-expanded", "vq_lookup", lookup(z=rn(1, 8).expand(9, 8)), REF),
    Case("codebook-colmajor", "vq_lookup", lookup(cb=colmajor(rn(17, 8, seed=1))), REF),
    Case("codebook-expanded", "vq_lookup", lookup(cb=rn(1, 8).expand(5, 8)), REF),
    Case("z-nan", "vq_lookup", lookup(z=with_value(rn(33, 8), (3, 2), NAN)), REF),
    Case("z-inf", "vq_lookup", lookup(z=INF_ROWS, cb=INF_CODES[[0, 1, 3]]), REF),
    Case("codebook-inf", "vq_lookup", lookup(z=INF_ROWS, cb=INF_CODES), REF),
    Case("codebook-nan-and-inf", "vq_lookup", lookup(z=INF_ROWS, cb=NAN_CODES), REF),
    Case("codebook-all-inf", "vq_lookup", lookup(cb=torch.full((3, 8), INF)), REF),
    Case("codebook-inf-cosine", "vq_lookup",
         lookup(z=INF_ROWS, cb=INF_CODES, metric="cosine"), REF),
    Case("codebook-inf-float64", "vq_lookup",
         lookup(z=INF_ROWS.double(), cb=NAN_CODES.double()), REF, on={"triton": err("z")}),
    Case("z-zero-cosine", "vq_lookup", lookup(z=torch.zeros(3, 8), metric="cosine"), REF),
    Case("bf16", "vq_lookup", lookup(z=rn(33, 8, dtype=torch.bfloat16),
                                     cb=rn(17, 8, dtype=torch.bfloat16, seed=1)),
         REF, on={"triton": err("z")}),
    Case("float64", "vq_lookup", lookup(z=rn(33, 8).double(), cb=rn(17, 8, seed=1).double()),
         REF, on={"triton": err("z")}),
    Case("commitment-nan", "vq_lookup", quantize(commitment_weight=NAN),
         err("commitment_weight")),
    Case("commitment-inf", "vq_lookup", quantize(commitment_weight=INF),
         err("commitment_weight")),
    Case("commitment-negative", "vq_lookup", quantize(commitment_weight=-1.0),
         err("commitment_weight")),
    Case("commitment-str", "vq_lookup", quantize(commitment_weight="0.25"),
         err("commitment_weight")),
    Case("quantize-nan-row", "vq_lookup", quantize(z=with_value(rn(33, 8), (0, 0), NAN)), REF),
    Case("quantize-empty", "vq_lookup", quantize(z=rn(0, 8)), REF),
    # vq_ema_update_: the first five crashed or corrupted memory on the cpu backend
    Case("ema-index-minus-1", "vq_ema_update_",
         ema(idx=with_value(torch.zeros(40, dtype=torch.long), 5, -1)), err("indices"),
         crash=True),
    Case("ema-index-1e9", "vq_ema_update_",
         ema(idx=with_value(torch.zeros(40, dtype=torch.long), 5, 10**9)), err("indices"),
         crash=True),
    Case("ema-index-K", "vq_ema_update_",
         ema(idx=with_value(torch.zeros(40, dtype=torch.long), 5, 6)), err("indices"),
         crash=True),
    Case("ema-index-2K-1", "vq_ema_update_",
         ema(idx=with_value(torch.zeros(40, dtype=torch.long), 5, 11)), err("indices"),
         crash=True),
    Case("ema-codebook-K0", "vq_ema_update_",
         ema(state=lambda: (rn(0, 4), rn(0), rn(0, 4)), idx=torch.zeros(40, dtype=torch.long)),
         err("codebook"), crash=True),
    Case("ema-codebook-D0", "vq_ema_update_",
         ema(D=0, state=lambda: (rn(6, 0), rn(6).abs(), rn(6, 0)), z=rn(40, 0)),
         err("codebook"), crash=True),
    Case("ema-eps-nan", "vq_ema_update_", ema(eps=NAN), err("eps")),
    Case("ema-eps-inf", "vq_ema_update_", ema(eps=INF), err("eps")),
    Case("ema-eps-0", "vq_ema_update_", ema(eps=0.0), err("eps")),
    Case("ema-decay-nan", "vq_ema_update_", ema(decay=NAN), err("decay")),
    Case("ema-decay-1.5", "vq_ema_update_", ema(decay=1.5), err("decay")),
    Case("ema-decay-negative", "vq_ema_update_", ema(decay=-0.1), err("decay")),
    Case("ema-decay-str", "vq_ema_update_", ema(decay="0.9"), err("decay")),
    Case("ema-indices-int32", "vq_ema_update_",
         ema(idx=torch.zeros(40, dtype=torch.int32)), err("indices")),
    Case("ema-indices-shape", "vq_ema_update_",
         ema(idx=torch.zeros(39, dtype=torch.long)), err("indices")),
    Case("ema-z-dim", "vq_ema_update_", ema(z=rn(40, 5)), err("z")),
    Case("ema-z-int", "vq_ema_update_", ema(z=torch.ones(40, 4, dtype=torch.long)), err("z")),
    Case("ema-cluster-size-shape", "vq_ema_update_",
         ema(state=lambda: (rn(6, 4), rn(5).abs(), rn(6, 4))), err("cluster_size")),
    Case("ema-embed-sum-dtype", "vq_ema_update_",
         ema(state=lambda: (rn(6, 4), rn(6).abs(), rn(6, 4).double())), err("embed_sum")),
    Case("ema-codebook-noncontiguous", "vq_ema_update_",
         ema(state=lambda: (colmajor(rn(6, 4)), rn(6).abs(), rn(6, 4))), err("codebook")),
    Case("ema-z-device", "vq_ema_update_", ema(z=rn(40, 4).to("meta")), err("z")),
    Case("ema-z-colmajor", "vq_ema_update_", ema(z=colmajor(rn(40, 4, seed=3))), REF),
    Case("ema-z-expanded", "vq_ema_update_", ema(z=rn(1, 4).expand(40, 4)), REF),
    Case("ema-z-nan-row", "vq_ema_update_", ema(z=with_value(rn(40, 4, seed=3), (7, 1), NAN)),
         REF),
    Case("ema-z-inf-row", "vq_ema_update_", ema(z=with_value(rn(40, 4, seed=3), (7, 1), INF)),
         REF),
    Case("ema-empty", "vq_ema_update_", ema(N=0), REF),
    Case("ema-float16", "vq_ema_update_", ema(dtype=torch.float16), REF),
    Case("ema-bfloat16", "vq_ema_update_", ema(dtype=torch.bfloat16), REF),
    Case("ema-float64-state-float32-z", "vq_ema_update_",
         ema(state=lambda: (rn(6, 4).double(), rn(6).abs().double(), rn(6, 4).double())), REF),
]


# ---------------------------------------------------------------------------------------
# Attention

def qkv(shape=(1, 3, 5, 2, 8), dtype=torch.float32):
    return [rn(*shape, dtype=dtype, seed=s) for s in range(3)]


def spatial(q=None, k=None, v=None, **kw):
    dq, dk, dv = qkv()
    q, k, v = (dq if q is None else q), (dk if k is None else k), (dv if v is None else v)
    return lambda b: wmkernels.spatial_attention(q, k, v, backend=b, **kw)


def temporal(q=None, k=None, v=None, **kw):
    dq, dk, dv = qkv()
    q, k, v = (dq if q is None else q), (dk if k is None else k), (dv if v is None else v)
    return lambda b: wmkernels.temporal_attention(q, k, v, backend=b, **kw)


def attention_cases(op: str, run: Callable) -> list[Case]:
    q, k, v = qkv()
    packed = rn(1, 3, 5, 3, 2, 8).unbind(3)
    strided = rn(1, 5, 3, 2, 8, seed=5).transpose(1, 2)  # (B, T, S, H, D), S outer in memory
    lowp = qkv(dtype=torch.bfloat16)
    cases = [
        ("q-int", run(q=q.long()), err("q")),
        ("q-4d", run(q=q[0]), err("q")),
        ("q-not-tensor", run(q=q.tolist()), err("q")),
        ("k-shape", run(k=k[:, :, :4], v=v[:, :, :4]), err("k")),
        ("v-dtype", run(v=v.double()), err("v")),
        ("v-shape", run(v=v[..., :4]), err("v")),
        ("q-head-stride", run(q=rn(1, 3, 5, 2, 16)[..., ::2]), err("q")),
        ("k-device", run(k=k.to("meta")), err("k")),
        ("scale-nan", run(scale=NAN), err("scale")),
        ("scale-inf", run(scale=INF), err("scale")),
        ("scale-0", run(scale=0.0), err("scale")),
        ("scale-str", run(scale="1"), err("scale")),
        ("empty-S", run(*qkv((1, 3, 0, 2, 8))), REF),
        ("empty-B", run(*qkv((0, 3, 5, 2, 8))), REF),
        ("packed-views", run(*packed), REF),
        ("transposed-views", run(strided, strided, strided), REF),
        ("expanded-k", run(k=rn(1, 1, 5, 2, 8).expand(1, 3, 5, 2, 8)), REF),
        # in frame 0, which every query frame sees: the sdpa backend multiplies masked-out
        # probabilities by v, so there a NaN in a later frame reaches earlier query frames
        # too (the other backends keep them finite: tests/ops/test_attention.py)
        ("v-nan", run(v=with_value(v, (0, 0, 2, 1, 3), NAN)), REF),
        ("q-inf", run(q=with_value(q, (0, 1, 2, 1, 3), INF)), REF),
        ("head-dim-1", run(*qkv((1, 3, 5, 2, 1))), REF),
        ("head-dim-300", run(*qkv((1, 2, 3, 1, 300))), REF, gpu_kernels(err("D"))),
        ("bf16", run(*lowp), REF, {"triton": err("q")}),
        ("float64", run(*[x.double() for x in (q, k, v)]), REF, gpu_kernels(err("q"))),
    ]
    return [Case(f"{op}-{i}", op, call, expect, on[0] if on else {})
            for i, call, expect, *on in cases]


ATTENTION_CASES = attention_cases("spatial_attention", spatial) + attention_cases(
    "temporal_attention", temporal) + [
    Case("temporal-Tq-gt-Tk", "temporal_attention", temporal(k=qkv()[1][:, :2],
                                                             v=qkv()[2][:, :2]), err("Tq")),
    Case("temporal-causal-str", "temporal_attention", temporal(causal="yes"), err("causal")),
    Case("temporal-kv-cache-shape", "temporal_attention",
         temporal(q=qkv()[0][:, :1]), REF),
    Case("temporal-k-batch", "temporal_attention",
         temporal(k=rn(2, 3, 5, 2, 8), v=rn(2, 3, 5, 2, 8)), err("k")),
]


# ---------------------------------------------------------------------------------------
# MaskGIT

def sample(logits=None, **kw):
    logits = rn(7, 11) if logits is None else logits
    return lambda b: wmkernels.maskgit_sample(logits, backend=b, **kw)


def step(logits=None, tokens=None, mask=None, num_masked=2, **kw):
    kw.setdefault("temperature", 0.0)
    B, N, V = 2, 6, 9
    logits = rn(B, N, V) if logits is None else logits
    tokens = torch.arange(B * N).view(B, N) % V if tokens is None else tokens
    mask = (torch.arange(B * N).view(B, N) % 3 != 0) if mask is None else mask
    return lambda b: wmkernels.maskgit_step(logits, tokens, mask, num_masked, backend=b, **kw)


def schedule(*args, **kw):
    return lambda b: wmkernels.maskgit_schedule(*args, **kw)


def decode(logits_fn=None, tokens=None, mask=None, **kw):
    kw.setdefault("temperature", 0.0)
    kw.setdefault("choice_temperature", 0.0)
    table = rn(2, 6, 9)
    logits_fn = (lambda t, m: table) if logits_fn is None else logits_fn
    tokens = torch.zeros(2, 6, dtype=torch.long) if tokens is None else tokens
    mask = torch.ones(2, 6, dtype=torch.bool) if mask is None else mask
    return lambda b: wmkernels.maskgit_decode(logits_fn, tokens, mask, backend=b, **kw)


ALL_NEG_INF = with_value(rn(7, 11), 3, -INF)
MASKGIT_CASES = [
    Case("sample-int", "maskgit_sample", sample(torch.ones(3, 4, dtype=torch.long)),
         err("logits")),
    Case("sample-0d", "maskgit_sample", sample(torch.tensor(1.0)), err("logits")),
    Case("sample-V0", "maskgit_sample", sample(rn(3, 0)), err("logits")),
    Case("sample-temperature-nan", "maskgit_sample", sample(temperature=NAN),
         err("temperature")),
    Case("sample-temperature-inf", "maskgit_sample", sample(temperature=INF),
         err("temperature")),
    Case("sample-temperature-negative", "maskgit_sample", sample(temperature=-1.0),
         err("temperature")),
    Case("sample-temperature-str", "maskgit_sample", sample(temperature="1"),
         err("temperature")),
    Case("sample-top-k-0", "maskgit_sample", sample(top_k=0), err("top_k")),
    Case("sample-top-k-V+1", "maskgit_sample", sample(top_k=12), err("top_k")),
    Case("sample-top-k-float", "maskgit_sample", sample(top_k=1.5), err("top_k")),
    Case("sample-top-k-bool", "maskgit_sample", sample(top_k=True), err("top_k")),
    Case("sample-generator-type", "maskgit_sample", sample(generator=0), err("generator")),
    Case("sample-row-all-neg-inf", "maskgit_sample", sample(ALL_NEG_INF), err("logits")),
    Case("sample-row-all-nan", "maskgit_sample", sample(with_value(rn(7, 11), 2, NAN)),
         err("logits")),
    Case("sample-argmax", "maskgit_sample", sample(temperature=0.0), REF),
    Case("sample-temperature-1e-45", "maskgit_sample", sample(temperature=1e-45), REF),
    Case("sample-temperature-1e-300", "maskgit_sample", sample(temperature=1e-300), REF),
    Case("sample-one-pos-inf", "maskgit_sample", sample(with_value(rn(7, 11), (slice(None), 4),
                                                                   INF)), REF),
    Case("sample-nan-logits", "maskgit_sample",
         sample(with_value(rn(7, 11), (slice(None), 0), NAN), temperature=0.0), REF),
    Case("sample-colmajor", "maskgit_sample", sample(colmajor(rn(7, 11)), temperature=0.0),
         REF),
    Case("sample-expanded", "maskgit_sample", sample(rn(1, 11).expand(5, 11), temperature=0.0),
         REF),
    Case("sample-empty", "maskgit_sample", sample(rn(0, 11)), REF),
    Case("sample-bf16", "maskgit_sample", sample(rn(7, 11, dtype=torch.bfloat16),
                                                 temperature=0.0), REF,
         on={"triton": err("logits")}),
    Case("sample-float64", "maskgit_sample", sample(rn(7, 11).double(), temperature=0.0), REF,
         on=gpu_kernels(err("logits"))),
    Case("step-tokens-int32", "maskgit_step", step(tokens=torch.zeros(2, 6, dtype=torch.int32)),
         err("tokens")),
    Case("step-mask-float", "maskgit_step", step(mask=torch.ones(2, 6)), err("mask")),
    Case("step-tokens-shape", "maskgit_step", step(tokens=torch.zeros(2, 5, dtype=torch.long)),
         err("tokens")),
    Case("step-logits-2d", "maskgit_step", step(logits=rn(6, 9)), err("logits")),
    Case("step-num-masked-negative", "maskgit_step", step(num_masked=-1), err("num_masked")),
    Case("step-num-masked-N+1", "maskgit_step", step(num_masked=7), err("num_masked")),
    Case("step-num-masked-tensor-negative", "maskgit_step",
         step(num_masked=torch.tensor([1, -1])), err("num_masked")),
    Case("step-num-masked-tensor-shape", "maskgit_step",
         step(num_masked=torch.tensor([1, 1, 1])), err("num_masked")),
    Case("step-num-masked-float", "maskgit_step", step(num_masked=1.5), err("num_masked")),
    Case("step-choice-temperature-nan", "maskgit_step", step(choice_temperature=NAN),
         err("choice_temperature")),
    Case("step-choice-temperature-inf", "maskgit_step", step(choice_temperature=INF),
         err("choice_temperature")),
    Case("step-order", "maskgit_step", step(order="foo"), err("order")),
    Case("step-argmax", "maskgit_step", step(), REF),
    Case("step-colmajor-tokens-mask", "maskgit_step",
         step(tokens=colmajor(torch.arange(12).view(2, 6) % 9),
              mask=colmajor(torch.arange(12).view(2, 6) % 3 != 0)), REF),
    Case("step-colmajor-logits", "maskgit_step", step(logits=rn(9, 6, 2).permute(2, 1, 0)),
         REF),
    Case("step-nan-at-known", "maskgit_step",
         step(logits=with_value(rn(2, 6, 9), (0, 0), NAN)), REF),
    Case("step-all-known", "maskgit_step", step(mask=torch.zeros(2, 6, dtype=torch.bool)), REF),
    Case("schedule-negative-tensor", "maskgit_schedule",
         schedule(0, 4, torch.tensor([-5])), err("num_initial"), backends=()),
    Case("schedule-negative-int", "maskgit_schedule", schedule(0, 4, -1), err("num_initial"),
         backends=()),
    Case("schedule-float-tensor", "maskgit_schedule", schedule(0, 4, torch.tensor([5.0])),
         err("num_initial"), backends=()),
    Case("schedule-step-range", "maskgit_schedule", schedule(4, 4, 5), err("step"),
         backends=()),
    Case("schedule-total-0", "maskgit_schedule", schedule(0, 0, 5), err("total_steps"),
         backends=()),
    Case("schedule-name", "maskgit_schedule", schedule(0, 4, 5, "foo"), err("schedule"),
         backends=()),
    Case("schedule-step-bool", "maskgit_schedule", schedule(True, 4, 5), err("step"),
         backends=()),
    Case("decode-steps-0", "maskgit_step", decode(steps=0), err("steps")),
    Case("decode-steps-float", "maskgit_step", decode(steps=2.5), err("steps")),
    Case("decode-logits-fn", "maskgit_step", decode(logits_fn=3), err("logits_fn")),
    Case("decode-mask-shape", "maskgit_step", decode(mask=torch.ones(2, 5, dtype=torch.bool)),
         err("mask")),
    Case("decode-temperature-nan", "maskgit_step", decode(temperature=NAN), err("temperature")),
    Case("decode-argmax", "maskgit_step", decode(steps=3), REF),
]


# ---------------------------------------------------------------------------------------
# nn modules

def module(factory: Callable, *inputs):
    """Build the module under a fixed seed (same weights on every backend) and run it."""
    def call(b):
        torch.manual_seed(0)
        m = factory(b)
        return m(*inputs) if inputs else m
    return call


def vq_module(**kw):
    return lambda b: VectorQuantizer(8, 16, backend=b, **kw)


def sampler(**kw):
    return lambda b: MaskGITSampler(backend=b, **kw)


X = rn(2, 3, 5, 16)
NN_CASES = [
    Case(f"vq-{name}", "vq_lookup", module(vq_module(**{arg: value})), err(arg))
    for name, arg, value in [
        ("metric", "metric", "foo"), ("ema-1.5", "ema_decay", 1.5),
        ("ema-negative", "ema_decay", -0.1), ("ema-nan", "ema_decay", NAN),
        ("kmeans-iters", "kmeans_iters", -1), ("commitment-nan", "commitment_weight", NAN),
        ("eps-0", "eps", 0.0), ("dead-nan", "dead_code_threshold", NAN),
        ("dead-negative", "dead_code_threshold", -1.0),
    ]
] + [
    Case("vq-dim-0", "vq_lookup", lambda b: VectorQuantizer(0, 8, backend=b), err("dim")),
    Case("vq-dim-float", "vq_lookup", lambda b: VectorQuantizer(2.5, 8, backend=b), err("dim")),
    Case("vq-codebook-size-0", "vq_lookup", lambda b: VectorQuantizer(8, 0, backend=b),
         err("codebook_size")),
    Case("vq-x-dim", "vq_lookup", module(vq_module(), rn(3, 7)), err("x")),
    Case("vq-train-nan-row", "vq_lookup",
         lambda b: module(vq_module(), with_value(rn(9, 8), 2, NAN))(b)[:2], REF),
    Case("sampler-temperature-inf", "maskgit_sample", module(sampler(temperature=INF)),
         err("temperature")),
    Case("sampler-temperature-nan", "maskgit_sample", module(sampler(temperature=NAN)),
         err("temperature")),
    Case("sampler-choice-inf", "maskgit_sample", module(sampler(choice_temperature=INF)),
         err("choice_temperature")),
    Case("sampler-steps-0", "maskgit_sample", module(sampler(steps=0)), err("steps")),
    Case("sampler-top-k-0", "maskgit_sample", module(sampler(top_k=0)), err("top_k")),
    Case("sampler-schedule", "maskgit_sample", module(sampler(schedule="foo")),
         err("schedule")),
    Case("sampler-order", "maskgit_sample", module(sampler(order="foo")), err("order")),
    Case("spatial-heads", "spatial_attention",
         module(lambda b: SpatialAttention(16, 3, backend=b)), err("heads")),
    Case("spatial-x-rank", "spatial_attention",
         module(lambda b: SpatialAttention(16, 2, backend=b), rn(3, 5, 16)), err("x")),
    Case("spatial-x-dim", "spatial_attention",
         module(lambda b: SpatialAttention(16, 2, backend=b), rn(2, 3, 5, 8)), err("x")),
    Case("spatial-rope-odd", "spatial_attention",
         module(lambda b: SpatialAttention(6, 2, rope=True, backend=b)), err("rope")),
    Case("spatial-forward", "spatial_attention",
         module(lambda b: SpatialAttention(16, 2, backend=b), X), REF),
    Case("temporal-cache-type", "temporal_attention",
         module(lambda b: TemporalAttention(16, 2, backend=b), X, "cache"), err("cache")),
    Case("temporal-cache-noncausal", "temporal_attention",
         module(lambda b: TemporalAttention(16, 2, causal=False, backend=b), X,
                TemporalKVCache(2, 4, 5, 2, 8, 1)), err("causal")),
    Case("temporal-cache-layer", "temporal_attention",
         module(lambda b: TemporalAttention(16, 2, backend=b), X,
                TemporalKVCache(2, 4, 5, 2, 8, 1), 1), err("layer")),
    Case("temporal-cache-full", "temporal_attention",
         module(lambda b: TemporalAttention(16, 2, backend=b), X,
                TemporalKVCache(2, 2, 5, 2, 8, 1)), err("cache")),
    Case("temporal-forward-rope", "temporal_attention",
         module(lambda b: TemporalAttention(16, 2, rope=True, backend=b), X), REF),
    Case("stblock-mlp-ratio", "spatial_attention",
         module(lambda b: STBlock(16, 2, mlp_ratio=0.0, backend=b)), err("mlp_ratio")),
    Case("stblock-forward", "spatial_attention",
         module(lambda b: STBlock(16, 2, backend=b), X), REF),
    Case("cache-batch-0", "temporal_attention", lambda b: TemporalKVCache(0, 4, 5, 2, 8, 1),
         err("batch"), backends=()),
    Case("cache-append-shape", "temporal_attention",
         lambda b: TemporalKVCache(2, 4, 5, 2, 8, 1).append(0, rn(2, 1, 5, 2, 4),
                                                           rn(2, 1, 5, 2, 4)),
         err("k"), backends=()),
    Case("cache-append-dtype", "temporal_attention",
         lambda b: TemporalKVCache(2, 4, 5, 2, 8, 1).append(0, rn(2, 1, 5, 2, 8).double(),
                                                           rn(2, 1, 5, 2, 8).double()),
         err("k"), backends=()),
    Case("cache-truncate", "temporal_attention",
         lambda b: TemporalKVCache(2, 4, 5, 2, 8, 1).truncate(-1), err("frames"), backends=()),
]

CASES = VQ_CASES + ATTENTION_CASES + MASKGIT_CASES + NN_CASES


# ---------------------------------------------------------------------------------------
# Running a case

def backends_of(case: Case) -> list[str]:
    if case.backends is not None:
        return list(case.backends) or [None]
    return [b for b in routing._OPS[case.op] if routing.unavailable_reason(b, "cpu") is None]


def flatten(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flatten(o)]
    return []


def assert_same(got, want, case_id: str) -> None:
    got, want = flatten(got), flatten(want)
    assert len(got) == len(want), case_id
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (case_id, g.shape, w.shape)
        if not g.is_floating_point():
            assert torch.equal(g, w), f"{case_id}: {g} != {w}"
            continue
        tol = {torch.float16: 2e-2, torch.bfloat16: 6e-2}.get(g.dtype, 1e-4)
        torch.testing.assert_close(g, w, rtol=tol, atol=tol, equal_nan=True, msg=case_id)


def run_case(case: Case, backend: str | None) -> str:
    """Run one case on one backend; returns 'error' or 'answer' (assertion on failure)."""
    expect = case.on.get(backend, case.expect)
    if expect == REF:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # slow-path head-dim notes
            got = case.call(backend)
            want = case.call("reference")
        assert_same(got, want, case.id)
        return "answer"
    with pytest.raises(ERRORS) as info:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            case.call(backend)
    assert names(str(info.value), expect), (
        f"{case.id}: the error does not name {expect!r}: {info.value}")
    return "error"


def names(message: str, name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) is not None


PARAMS = [pytest.param(c, b, id=f"{c.id}-{b}") for c in CASES if not c.crash
          for b in backends_of(c)]
CRASH_PARAMS = [pytest.param(c, b, id=f"{c.id}-{b}") for c in CASES if c.crash
                for b in backends_of(c)]
child_only = pytest.mark.skipif(not CHILD, reason="crash-prone: runs in the child process of "
                                "test_crash_prone_cases_in_a_child_process")


@pytest.mark.parametrize("case,backend", PARAMS)
def test_bad_input(case, backend):
    run_case(case, backend)


def test_crash_prone_cases_in_a_child_process():
    """The cases that once killed the process (test_child_*), in a child pytest: a crash
    fails this test, naming the case that was running."""
    if CHILD:
        pytest.skip("this is the child")
    env = dict(os.environ, WMK_BAD_INPUT_CHILD="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                           "-k", "test_child_", str(Path(__file__).relative_to(ROOT))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, f"the child failed or died (code {done.returncode}):\n{tail}"
    expected = len(CRASH_PARAMS) + len(TORCH_OP_PARAMS)
    assert f" {expected} passed" in done.stdout, f"expected {expected} passed:\n{tail}"


@child_only
@pytest.mark.parametrize("case,backend", CRASH_PARAMS)
def test_child_crash_prone_case(case, backend):
    run_case(case, backend)


def _torch_op_cases():
    """(id, call, name the error must hold) for direct torch.ops.wmk calls on the CPU."""
    ops = torch.ops.wmk
    q = rn(1, 2, 3, 2, 4)
    out, lse = ops.spatial_attention_fwd(q, q, q, 0.5)
    tout, tlse = ops.temporal_attention_fwd(q, q, q, True, 0.5)
    cb, cs, es = rn(4, 3), rn(4).abs(), rn(4, 3)
    z, idx = rn(5, 3), torch.zeros(5, dtype=torch.long)
    seed = torch.zeros(1, dtype=torch.long)
    logits = rn(2, 6, 9)
    tokens, mask = torch.zeros(2, 6, dtype=torch.long), torch.ones(2, 6, dtype=torch.bool)
    nm = torch.ones(2, dtype=torch.long)
    cases = []
    for shape in [(0,), (1,), (1, 2, 2, 2)]:
        cases += [
            (f"spatial-bwd-lse-{shape}", lambda s=shape: ops.spatial_attention_bwd(
                out, q, q, q, out, torch.zeros(s), 0.5), "lse"),
            (f"temporal-bwd-lse-{shape}", lambda s=shape: ops.temporal_attention_bwd(
                tout, q, q, q, tout, torch.zeros(s), True, 0.5), "lse"),
        ]
    cases += [
        ("spatial-bwd-lse-dtype", lambda: ops.spatial_attention_bwd(
            out, q, q, q, out, lse.double(), 0.5), "lse"),
        ("spatial-bwd-grad-shape", lambda: ops.spatial_attention_bwd(
            out[:, :1], q, q, q, out, lse, 0.5), "grad_out"),
        ("temporal-bwd-out-dtype", lambda: ops.temporal_attention_bwd(
            tout, q, q, q, tout.double(), tlse, True, 0.5), "out"),
        ("temporal-bwd-Tq", lambda: ops.temporal_attention_bwd(
            tout, q, q[:, :1], q[:, :1], tout, tlse, True, 0.5), "Tq"),
        ("spatial-fwd-int", lambda: ops.spatial_attention_fwd(q.long(), q.long(), q.long(),
                                                              0.5), "q"),
        ("spatial-fwd-scale-nan", lambda: ops.spatial_attention_fwd(q, q, q, NAN), "scale"),
        ("temporal-fwd-scale-inf", lambda: ops.temporal_attention_fwd(q, q, q, True, INF),
         "scale"),
        ("ema-index-minus-1", lambda: ops.vq_ema_update_(
            cb, cs, es, z, with_value(idx, 1, -1), 0.9, 1e-5), "indices"),
        ("ema-index-1e9", lambda: ops.vq_ema_update_(
            cb, cs, es, z, with_value(idx, 1, 10**9), 0.9, 1e-5), "indices"),
        ("ema-index-K", lambda: ops.vq_ema_update_(
            cb, cs, es, z, with_value(idx, 1, 4), 0.9, 1e-5), "indices"),
        ("ema-codebook-K0", lambda: ops.vq_ema_update_(
            rn(0, 3), rn(0), rn(0, 3), z, idx, 0.9, 1e-5), "codebook"),
        ("ema-indices-length", lambda: ops.vq_ema_update_(
            cb, cs, es, z, idx[:3], 0.9, 1e-5), "indices"),
        ("ema-indices-int32", lambda: ops.vq_ema_update_(
            cb, cs, es, z, idx.int(), 0.9, 1e-5), "indices"),
        ("ema-embed-sum-shape", lambda: ops.vq_ema_update_(
            cb, cs, es[:2], z, idx, 0.9, 1e-5), "embed_sum"),
        ("ema-eps-nan", lambda: ops.vq_ema_update_(cb, cs, es, z, idx, 0.9, NAN), "eps"),
        ("ema-decay-2", lambda: ops.vq_ema_update_(cb, cs, es, z, idx, 2.0, 1e-5), "decay"),
        ("lookup-dim", lambda: ops.vq_lookup(z, rn(4, 2), "l2"), "codebook"),
        ("lookup-K0", lambda: ops.vq_lookup(z, rn(0, 3), "l2"), "codebook"),
        ("lookup-D0", lambda: ops.vq_lookup(rn(5, 0), rn(4, 0), "l2"), "D"),
        ("lookup-metric", lambda: ops.vq_lookup(z, cb, "foo"), "metric"),
        ("lookup-int", lambda: ops.vq_lookup(z.long(), cb.long(), "l2"), "z"),
        ("lookup-dtype-mismatch", lambda: ops.vq_lookup(z, cb.double(), "l2"), "codebook"),
        ("sample-temperature-inf", lambda: ops.maskgit_sample(logits[0], INF, 0, seed),
         "temperature"),
        ("sample-top-k", lambda: ops.maskgit_sample(logits[0], 1.0, 10, seed), "top_k"),
        ("sample-int", lambda: ops.maskgit_sample(logits[0].long(), 1.0, 0, seed), "logits"),
        ("sample-seed", lambda: ops.maskgit_sample(logits[0], 1.0, 0, seed.float()), "seed"),
        ("step-num-masked-shape", lambda: ops.maskgit_step(
            logits, tokens, mask, nm[:1], 1.0, 0, 0.0, False, seed), "num_masked"),
        ("step-tokens-dtype", lambda: ops.maskgit_step(
            logits, tokens.int(), mask, nm, 1.0, 0, 0.0, False, seed), "tokens"),
        ("step-choice-nan", lambda: ops.maskgit_step(
            logits, tokens, mask, nm, 1.0, 0, NAN, False, seed), "choice_temperature"),
    ]
    return cases


def _expect_error(fn, name):
    try:
        fn()
    except ERRORS as e:
        assert names(str(e), name), f"the error does not name {name!r}: {e}"
        return
    raise AssertionError("no error")


TORCH_OP_PARAMS = [pytest.param(fn, name, id=cid) for cid, fn, name in (
    _torch_op_cases() if _extension.has_cpu() else [])]


@child_only
@pytest.mark.parametrize("fn,name", TORCH_OP_PARAMS)
def test_child_torch_op(fn, name):
    """torch.ops.wmk C++ ops with arguments the Python front end would refuse: each must
    raise, never read or write out of bounds."""
    _expect_error(fn, name)

