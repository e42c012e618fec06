"""The Triton kernels as a GPU would run them, compiled ahead of time without a GPU.

For every case below (the canonical shapes of shared/BENCHMARKS.md, every autotune choice,
and the extremes the API accepts) the launchers' own `*_launches` functions give the exact
launches a GPU call would make, on meta tensors of the call's shapes, strides and dtypes.
Triton's own binder specializes their arguments (alignment, divisibility by 16, i32/i64)
as a real call would, and `triton.compile(ASTSource(...), target=GPUTarget("cuda", arch,
32))` builds each distinct (kernel, signature, constexprs, attributes, options, arch) once,
in a pool of worker processes, with a fresh cache directory (nothing is reused across runs).

Per compile it records: shared memory (`metadata.shared`, against the arch's per-block
limit), registers and stack frame from `cuobjdump -res-usage`, spill stores (STL
instructions in the SASS where there is a stack frame: Triton kernels have no local arrays,
so a store to local memory is a spilled register; a frame without one is a call frame),
tensor-core instructions (wgmma / mma in the PTX; HGMMA / HMMA in the SASS with
`sass=True`), and the 32-bit multiplies of a stride argument in the TTIR (an index x
stride product that can wrap at 2^31).

Used by tests/gates/test_triton_compile.py (the gate) and `python -m bench.static` (the
report). Run it only where TRITON_INTERPRET is unset: the interpreter replaces compilation.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ARCHS = (80, 86, 90)
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    """A call the API accepts: `shape` names it, `canonical` marks a BENCHMARKS.md shape."""

    op: str
    shape: str
    dtype: str
    canonical: bool
    params: dict

    @property
    def name(self) -> str:
        return f"{self.op} {self.shape} {self.dtype}"

    @property
    def spill_free(self) -> bool:
        """Where a register spill fails the gate: the canonical shapes, and attention's fast
        head dims (D <= 128 in 16-bit types, D <= 64 in fp32). The other extremes must
        compile and fit, and may spill (the report lists them)."""
        D = self.params.get("D")
        if self.canonical or not self.op.endswith("attention"):
            return self.canonical
        return D <= (64 if self.dtype == "float32" else 128)


def _attention_cases() -> list[Case]:
    cases = []
    canonical = [  # name, kind, B, Tq, Tk, S, H, D, backward
        ("attn-spatial-genie", "spatial", 8, 16, 16, 1024, 16, 64, True),
        ("attn-spatial-dit", "spatial", 2, 16, 16, 4096, 16, 128, True),
        ("attn-temporal-genie", "temporal", 8, 16, 16, 1024, 16, 64, True),
        ("attn-temporal-long", "temporal", 2, 64, 64, 1024, 16, 64, True),
        ("attn-temporal-decode", "temporal", 8, 1, 16, 1024, 16, 64, False),
    ]
    for name, kind, B, tq, tk, S, H, D, bwd in canonical:
        cases.append(Case(f"{kind}_attention", name, "bfloat16", True,
                          dict(kind=kind, B=B, tq=tq, tk=tk, S=S, H=H, D=D, bwd=bwd)))
    # extremes: the largest head dim, and fp32 (three tf32 dots per product) up to its
    # largest head dim on triton (128: wmkernels.ops.attention._check_kernel_support)
    for kind in ("spatial", "temporal"):
        for dtype, D in (("bfloat16", 128), ("bfloat16", 256), ("float32", 64),
                         ("float32", 128)):
            cases.append(Case(f"{kind}_attention", f"B2 T16 S1024 H4 D{D}", dtype, False,
                              dict(kind=kind, B=2, tq=16, tk=16, S=1024, H=4, D=D, bwd=True)))
    return cases


def _vq_cases() -> list[Case]:
    shapes = [("vq-tokenizer", 131072, 1024, 32, ("float32", "bfloat16")),
              ("vq-large", 131072, 8192, 256, ("bfloat16",)),
              ("vq-actions", 131072, 8, 32, ("float32",))]
    return [Case("vq_lookup", name, dt, True, dict(N=N, K=K, D=D, metric="l2"))
            for name, N, K, D, dts in shapes for dt in dts]


def _maskgit_cases() -> list[Case]:
    from wmkernels.triton import maskgit

    cases = []
    for name, B, N, V, dts in (("maskgit-genie", 8, 1024, 1024, ("float32", "bfloat16")),
                               ("maskgit-large", 16, 4096, 8192, ("bfloat16",))):
        for dt in dts:
            cases.append(Case("maskgit_step", name, dt, True, dict(B=B, N=N, V=V)))
    # extremes: the largest vocabulary a sampler row holds, the longest re-masked row
    cases.append(Case("maskgit_sample", f"R64 V{maskgit.MAX_V}", "bfloat16", False,
                      dict(R=64, V=maskgit.MAX_V)))
    cases.append(Case("maskgit_step", f"B2 N{maskgit.MAX_N} V16", "float32", False,
                      dict(B=2, N=maskgit.MAX_N, V=16)))
    return cases


def cases() -> list[Case]:
    """Every case the gate compiles."""
    return _attention_cases() + _vq_cases() + _maskgit_cases()


# --------------------------------------------------------------------------------------
# Launches of a case (meta tensors: shapes, strides and dtypes, no memory)


def _launches(case: Case, smem: int) -> list[tuple[str, object]]:
    """(label, Launch) pairs: what the launchers run for `case` on a device with `smem`."""
    import torch

    dtype = getattr(torch, case.dtype)
    meta = dict(device="meta", dtype=dtype)
    p = case.params
    if case.op.endswith("attention"):
        from wmkernels.triton import attention as A

        B, tq, tk, S, H, D = p["B"], p["tq"], p["tk"], p["S"], p["H"], p["D"]
        # q, k, v are views of one packed projection, as the models call them
        if p["kind"] == "spatial" or tq == tk:
            qkv = torch.empty(B, tq, S, 3, H, D, **meta)
            q, k, v = qkv.unbind(3)
        else:  # decode: one new frame against a KV cache prefix
            q = torch.empty(B, tq, S, H, D, **meta)
            kv = torch.empty(B, 2 * tk, S, 2, H, D, **meta)[:, :tk]
            k, v = kv.unbind(3)
        out = torch.empty(B, tq, S, H, D, **meta)
        spatial = p["kind"] == "spatial"
        lse = torch.empty((B, tq, H, S) if spatial else (B, S, H, tq), device="meta")
        if spatial:
            runs = [("fwd", A.spatial_fwd_launches(q, k, v, out, lse, D ** -0.5, smem))]
        else:
            runs = [("fwd", A.temporal_fwd_launches(q, k, v, out, lse, True, D ** -0.5, smem))]
        if p["bwd"]:
            grad = torch.empty_like(out)
            delta = torch.empty(B, tq, S, H, device="meta")
            dq, dk, dv = (torch.empty(x.shape, **meta) for x in (q, k, v))
            if spatial:
                bwd = A.spatial_bwd_launches(grad, q, k, v, lse, delta, dq, dk, dv, D ** -0.5,
                                             smem)
            else:
                bwd = A.temporal_bwd_launches(grad, q, k, v, lse, delta, dq, dk, dv, True,
                                              D ** -0.5, smem)
            runs.append(("bwd", bwd))
        return [(f"{label} {launch.kernel.__name__}", launch)
                for label, ls in runs for launch in ls]
    if case.op == "vq_lookup":
        from wmkernels.triton import vq

        N, K, D = p["N"], p["K"], p["D"]
        z = torch.empty(N, D, **meta)
        codes = torch.empty(K, D, **meta)
        bias = torch.empty(K, device="meta")
        out = torch.empty(N, device="meta", dtype=torch.long)
        block_d = max(16, min(64, 1 << (D - 1).bit_length()))
        fits = vq.configs_for(block_d, z.element_size(), smem)
        pairs = [(f"capture {fits[0]}", vq.lookup_launches(z, codes, bias, out, 2.0, smem,
                                                            tune=False)[0])]
        # every autotune choice that the pruning keeps for this device (vq-actions shares
        # the tokenizer's fp32 D=32 kernels but K=8 specializes differently: its capture
        # choice is compiled, the others once at the tokenizer's K)
        for choice in fits if case.shape != "vq-actions" else ():
            pairs.append((f"autotune {choice}", vq.lookup_launches(
                z, codes, bias, out, 2.0, smem, choice=choice)[0]))
        return pairs
    from wmkernels.triton import maskgit

    seed = torch.empty(1, device="meta", dtype=torch.long)
    if case.op == "maskgit_sample":
        x = torch.empty(p["R"], p["V"], **meta)
        tok = torch.empty(p["R"], device="meta", dtype=torch.long)
        conf = torch.empty(p["R"], device="meta")
        return [(f"sample top_k={k}", launch) for k in (0, 50)
                for launch in maskgit.sample_launches(x, 1.0, k, seed, tok, conf)]
    B, N, V = p["B"], p["N"], p["V"]
    x = torch.empty(B, N, V, **meta)
    tokens = torch.empty(B, N, device="meta", dtype=torch.long)
    mask = torch.empty(B, N, device="meta", dtype=torch.bool)
    num = torch.empty(B, device="meta", dtype=torch.long)
    outs = (torch.empty(B, N, device="meta", dtype=torch.long),
            torch.empty(B, N, device="meta", dtype=torch.bool))
    scratch = (torch.empty(B * N, device="meta", dtype=torch.long),
               torch.empty(B * N, device="meta"))
    pairs = []
    for random_order, top_k in ((False, 0), (False, 50), (True, 0)):
        ls = maskgit.step_launches(x, tokens, mask, num, 1.0, top_k, 4.5, random_order, seed,
                                   *outs, None if random_order else scratch)
        order = "random" if random_order else "confidence"
        pairs += [(f"step {order} top_k={top_k} {launch.kernel.__name__}", launch)
                  for launch in ls]
    return pairs


# --------------------------------------------------------------------------------------
# Compilation


def _bind(launch, arch: int):
    """(kernel, ASTSource arguments, options) as triton's own binder specializes the call."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, options = binder(*launch.args, **launch.meta)
    options, signature, constexprs, attrs = fn._pack_args(backend, dict(launch.meta), bound,
                                                          spec, options)
    return fn, (signature, constexprs, attrs), options.__dict__


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


_STRIDE_ARG = re.compile(r"^s[qkvg][btsh]$|^stride_")
_SSA = re.compile(r"%[\w.#]+")


def i32_stride_muls(ttir: str) -> list[str]:
    """TTIR lines multiplying, in 32 bits, a value derived from a stride argument (splat,
    broadcast, expand_dims or reshape of it): products that wrap once they pass 2^31."""
    header = ttir[ttir.index("tt.func"):].split("\n", 1)[0]
    derived = {m.group(1) for m in re.finditer(r"(%[\w]+): i32", header)
               if _STRIDE_ARG.match(m.group(1)[1:])}
    bad = []
    for line in ttir.splitlines():
        if "=" not in line:
            continue
        lhs, rhs = line.split("=", 1)
        operands = set(_SSA.findall(rhs.split(" loc(")[0]))
        if re.search(r"tt\.(splat|broadcast|expand_dims|reshape)\b", rhs) and operands & derived:
            derived.add(lhs.strip())
        elif "arith.muli" in rhs and operands & derived and re.search(r"i32>?\s+loc", rhs):
            bad.append(line.strip())
    return bad


_JOBS: list = []  # filled before the workers fork: kernels are not picklable


def _compile(index: int) -> dict:
    """Worker: compile one distinct kernel specialization and read its resources."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, src_args, options, arch, sass = _JOBS[index]
    rec = dict(kernel=fn.__name__, arch=arch)
    start = time.perf_counter()
    try:
        k = triton.compile(ASTSource(fn, *src_args), target=GPUTarget("cuda", arch, 32),
                           options=options)
    except Exception as e:  # the gate reports it; keep the other compiles going
        rec["error"] = f"{type(e).__name__}: {e}"[:2000]
        return rec
    rec["seconds"] = round(time.perf_counter() - start, 2)
    rec["shared"] = k.metadata.shared
    ptx = k.asm["ptx"]
    rec["ptx_wgmma"] = len(re.findall(r"\bwgmma\.mma_async", ptx))
    rec["ptx_mma"] = len(re.findall(r"\bmma\.sync", ptx))
    rec["i32_stride_muls"] = i32_stride_muls(k.asm["ttir"])
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True,
                               text=True, check=True).stdout
        m = re.search(r"REG:(\d+) STACK:(\d+)", usage)
        rec["regs"], rec["stack"] = int(m.group(1)), int(m.group(2))
        rec["spill_stores"] = 0
        if sass or rec["stack"]:  # a stack frame may be a call frame: count the spill stores
            text = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True,
                                  text=True, check=True).stdout
            ops = Counter(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)",
                                     text, re.MULTILINE))
            rec["spill_stores"] = ops["STL"]  # stores to local memory: Triton has no arrays
            if sass:
                rec["sass"] = {op: ops[op] for op in ("HGMMA", "HMMA", "FFMA", "LDS", "STL",
                                                      "LDL")}
    return rec


def _key(fn, src_args, options, arch) -> str:
    signature, constexprs, attrs = src_args
    return repr((fn.__name__, sorted(signature.items()), sorted(constexprs.items()),
                 sorted(attrs.items()), sorted((k, str(v)) for k, v in options.items()), arch))


def compile_all(archs=ARCHS, sass: bool = False, workers: int = 2) -> dict:
    """Compile every case for every arch; returns {"compiles": [...], "seconds": ...}.
    Each compile record lists the (case, launch) uses that share it."""
    from wmkernels.triton.launch import SMEM_LIMIT

    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("TRITON_INTERPRET=1 replaces compilation: run without it")
    start = time.perf_counter()
    jobs, uses = {}, {}
    for arch in archs:
        for case in cases():
            for label, launch in _launches(case, SMEM_LIMIT[arch]):
                fn, src_args, options = _bind(launch, arch)
                key = _key(fn, src_args, options, arch)
                jobs.setdefault(key, (fn, src_args, options, arch, sass))
                uses.setdefault(key, []).append(dict(
                    op=case.op, case=case.name, canonical=case.canonical,
                    spill_free=case.spill_free, launch=label,
                    constexprs={str(k[0]) if len(k) == 1 else str(k): v
                                for k, v in src_args[1].items()},
                    num_warps=options["num_warps"], num_stages=options["num_stages"]))
    keys = list(jobs)
    _JOBS[:] = [jobs[k] for k in keys]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        recs = list(pool.map(_compile, range(len(keys))))
    for key, rec in zip(keys, recs, strict=True):
        rec["limit"] = SMEM_LIMIT[rec["arch"]]
        rec["uses"] = uses[key]
    return dict(compiles=recs, seconds=round(time.perf_counter() - start, 1))


def run_isolated(archs=ARCHS, sass: bool = False, timeout: float = 1200) -> dict:
    """`compile_all` in a fresh process without TRITON_INTERPRET and with an empty Triton
    cache (so that a test process running the interpreter can call it)."""
    with tempfile.TemporaryDirectory(prefix="wmk-triton-aot-") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["TRITON_CACHE_DIR"] = str(Path(tmp) / "cache")
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench.static.triton_kernels", "--json", str(out),
               "--archs", ",".join(map(str, archs))] + (["--sass"] if sass else [])
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
        return json.loads(out.read_text())


# --------------------------------------------------------------------------------------
# Report


def _tensor_cores(rec: dict) -> str:
    ptx = ("wgmma" if rec["ptx_wgmma"] else "") or ("mma" if rec["ptx_mma"] else "") or "-"
    if "sass" not in rec:
        return ptx
    s = rec["sass"]
    return f"{ptx} / HGMMA {s['HGMMA']}, HMMA {s['HMMA']}"


def report(arch: int, result: dict | None = None) -> str:
    """Markdown section for sm_<arch>: per Triton kernel and configuration, registers, stack
    (spills), shared memory against the per-block limit, and tensor-core instructions."""
    import triton

    if result is None:
        result = run_isolated((arch,), sass=True)
    recs = [r for r in result["compiles"] if r["arch"] == arch]
    lines = [
        f"## Triton kernels, sm_{arch}",
        "",
        f"Compiled ahead of time by Triton {triton.__version__} (`triton.compile` for "
        f"GPUTarget(\"cuda\", {arch}, 32)) with the launch parameters the launchers choose "
        f"for this architecture's {recs[0]['limit'] if recs else '?'} B of shared memory per "
        "block; registers and stack from `cuobjdump -res-usage` (a stack frame in a Triton "
        "kernel is spilled registers), tensor cores from the PTX (wgmma / mma.sync) and the "
        "SASS (`cuobjdump -sass`: HGMMA / HMMA instruction counts, static).",
        "",
        "| kernel | used by (case: launch) | constexprs | warps | stages | regs | stack B | "
        "spill stores | smem B | smem % of limit | tensor cores (PTX / SASS) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(recs, key=lambda r: (r["kernel"], r["uses"][0]["case"])):
        u0 = r["uses"][0]
        used = "<br>".join(f"{u['case']}: {u['launch']}" for u in r["uses"])
        consts = ", ".join(f"{k}={v}" for k, v in u0["constexprs"].items()
                           if k.startswith("BLOCK") or k in ("CAUSAL", "TOP_K", "RANDOM",
                                                             "STEP", "PRECISION"))
        if "error" in r:
            lines.append(f"| `{r['kernel']}` | {used} | {consts} | {u0['num_warps']} | "
                         f"{u0['num_stages']} | compile error: {r['error'][:120]} | | | | | |")
            continue
        lines.append(
            f"| `{r['kernel']}` | {used} | {consts} | {u0['num_warps']} | {u0['num_stages']} | "
            f"{r['regs']} | {r['stack']} | {r['spill_stores']} | {r['shared']} | "
            f"{100 * r['shared'] / r['limit']:.0f}"
            f" | {_tensor_cores(r)} |")
    over = [r for r in recs if r.get("shared", 0) > r["limit"]]
    spills = [r for r in recs if r.get("spill_stores", 0) > 0]
    errors = [r for r in recs if "error" in r]
    lines += [
        "",
        f"{len(recs)} distinct compiles; compile errors: {len(errors)}; over the shared "
        f"memory limit: {len(over)}; spilling registers: "
        + (", ".join(sorted({f"`{r['kernel']}` ({r['stack']} B of stack, "
                            f"{r['uses'][0]['case']})" for r in spills})) or "none") + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", required=True, help="write the compile records here")
    parser.add_argument("--archs", default=",".join(map(str, ARCHS)))
    parser.add_argument("--sass", action="store_true", help="also count SASS opcodes")
    args = parser.parse_args(argv)
    result = compile_all(tuple(int(a) for a in args.archs.split(",")), sass=args.sass)
    Path(args.json).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
