"""Benchmark cases of the MaskGIT ops: the sampler, one re-masking step, and a 25-step decode.

Baselines: "eager" is the reference (softmax, multinomial, gather, Gumbel, sort, scatter: how
MaskGIT/MUSE/Genie repos write a step), "compile" is torch.compile of it, and for the sampler
"eager-gumbel" is the Gumbel-max form of google-research MaskGIT (noise over the whole
tensor, argmax). Canonical shapes
(BENCHMARKS.md) on CUDA; on CPU the same shapes scaled down, named "<shape>/cpu" with the
real sizes in params.
"""

from __future__ import annotations

import torch

import wmkernels
from wmkernels import routing
from wmkernels.bench import baselines
from wmkernels.bench.harness import Case, Skip
from wmkernels.reference import maskgit as reference

# name -> (B, N, V, dtypes) on CUDA, and the scaled CPU version
SHAPES = {
    "maskgit-genie": ((8, 1024, 1024), ("fp32", "bf16")),
    "maskgit-large": ((16, 4096, 8192), ("bf16",)),
}
CPU_SHAPES = {
    "maskgit-genie": ((2, 256, 1024), ("fp32",)),
    "maskgit-large": ((1, 256, 8192), ("fp32",)),
}
QUICK = {"maskgit-genie": ((1, 16, 64), ("fp32",))}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Genie inference settings (PIPELINES.md): temperature 2; MaskGIT's choice temperature 4.5
TEMPERATURE, CHOICE_TEMPERATURE, STEPS = 2.0, 4.5, 25
KERNEL_LABELS = {"cpu": "wmk-cpu", "triton": "wmk-triton", "cuda": "wmk-cuda"}


def _inputs(B, N, V, dtype, device):
    g = torch.Generator(device).manual_seed(0)
    logits = (torch.randn(B, N, V, device=device, generator=g) * 3).to(dtype)
    tokens = torch.randint(0, V, (B, N), device=device, generator=g)
    mask = torch.rand(B, N, device=device, generator=g) < 0.6
    return logits, tokens, mask


def _step_bytes(B, N, V, dtype):
    # logits read once; tokens and mask read once and written once; num_masked read
    return B * N * V * torch.finfo(dtype).bits // 8 + B * N * (8 + 1) * 2 + B * 8


def _kernel_backends(device):
    rows = []
    for name in ("cpu", "triton", "cuda"):
        reason = routing.unavailable_reason(name, device)
        if reason is None and name == "triton" and device == "cpu":
            reason = "triton on CPU runs only in the interpreter (a correctness tool)"
        rows.append((name, reason))
    return rows


def _shape_cases(op, shape, B, N, V, dt, device, quick, params):
    dtype = DTYPES[dt]
    logits, tokens, mask = _inputs(B, N, V, dtype, device)
    k = N // 2
    cases: list = []
    nbytes = _step_bytes(B, N, V, dtype) if op == "maskgit_step" else (
        B * N * V * torch.finfo(dtype).bits // 8 + B * N * 12)

    if op == "maskgit_step":
        def call(backend):
            return lambda: wmkernels.maskgit_step(
                logits, tokens, mask, k, temperature=TEMPERATURE,
                choice_temperature=CHOICE_TEMPERATURE, backend=backend)
        nm = torch.full((B,), k, dtype=torch.long, device=device)
        eager = lambda: reference.maskgit_step(logits, tokens, mask, nm, TEMPERATURE, None,
                                               CHOICE_TEMPERATURE, "confidence")
    else:
        def call(backend):
            return lambda: wmkernels.maskgit_sample(logits, temperature=TEMPERATURE,
                                                    backend=backend)
        eager = lambda: reference.maskgit_sample(logits, TEMPERATURE)
        # the google-research MaskGIT way (Gumbel-max over the whole tensor), as a peer
        peer = lambda: baselines.maskgit_sample_gumbel(logits, TEMPERATURE)

    row = dict(op=op, shape=shape, dtype=dt, bytes=nbytes, params=params)
    cases.append(Case(backend="eager", fn=eager, **row))
    if op == "maskgit_sample":
        cases.append(Case(backend="eager-gumbel", fn=peer, **row))
    if quick:
        cases.append(Skip(op, shape, "compile", "not compiled in quick mode (compile time)"))
    else:
        cases.append(Case(backend="compile", fn=torch.compile(eager), **row))
    for name, reason in _kernel_backends(device):
        label = KERNEL_LABELS[name]
        if reason is not None:
            cases.append(Skip(op, shape, label, reason))
        elif name == "triton" and dtype == torch.float64:
            cases.append(Skip(op, shape, label, "triton runs fp16/bf16/fp32"))
        else:
            cases.append(Case(backend=label, fn=call(name), **row))
    return cases


def _decode_cases(shape, B, N, V, dt, device, params):
    """25-step decode with a trivial logits_fn (a fixed table): the loop's own cost."""
    dtype = DTYPES[dt]
    table, tokens, mask = _inputs(B, N, V, dtype, device)
    logits_fn = lambda t, m: table
    row = dict(op="maskgit_decode", shape=shape, dtype=dt,
               bytes=STEPS * _step_bytes(B, N, V, dtype), params={**params, "steps": STEPS})

    def run(backend, graph=False):
        return lambda: wmkernels.maskgit_decode(
            logits_fn, tokens, mask, steps=STEPS, temperature=TEMPERATURE,
            choice_temperature=CHOICE_TEMPERATURE, backend=backend, cuda_graph=graph)

    cases = [Case(backend="eager", fn=run("reference"), **row)]
    best = routing.select("maskgit_step", torch.device(device), None)
    if best != "reference":
        graph = device == "cuda"
        row["params"] = {**row["params"], "cuda_graph": graph}
        cases.append(Case(backend=KERNEL_LABELS[best], fn=run(best, graph), **row))
    return cases


def cases(device: str, quick: bool) -> list:
    """Every MaskGIT benchmark row for `device` ("cpu" or "cuda")."""
    if device == "cuda" and not torch.cuda.is_available():
        return [Skip(op, s, "all", "no CUDA device") for op in ("maskgit_sample", "maskgit_step")
                for s in SHAPES]
    table = QUICK if quick else SHAPES if device == "cuda" else CPU_SHAPES
    out: list = []
    for name, ((B, N, V), dts) in table.items():
        shape = name if device == "cuda" and not quick else f"{name}/{device}"
        params = {"B": B, "N": N, "V": V, "temperature": TEMPERATURE,
                  "choice_temperature": CHOICE_TEMPERATURE}
        for dt in dts:
            for op in ("maskgit_sample", "maskgit_step"):
                out += _shape_cases(op, shape, B, N, V, dt, device, quick, params)
        if name == "maskgit-genie":
            out += _decode_cases(shape, B, N, V, dts[0], device, params)
    return out
