"""The one benchmark harness: runs every case of the chosen ops, derives bandwidth, throughput,
% of the measured peaks, speedup vs eager and peak memory, prints a table and writes
bench/results/<device>/<op>.json, .md and .png.

Each op module in wmkernels.bench.ops defines `cases(device, quick) -> list[Case | Skip]`.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from wmkernels import routing
from wmkernels.bench import peaks
from wmkernels.bench.timing import peak_memory, time_interleaved


@dataclasses.dataclass
class Case:
    op: str
    shape: str
    backend: str
    dtype: str
    fn: Callable[[], object]
    bytes: int = 0
    flops: int = 0
    params: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Skip:
    op: str
    shape: str
    backend: str
    reason: str


def device_slug(device: str) -> str:
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = "cpu-" + _cpu_model()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() + f" {os.cpu_count()}c"
    except OSError:
        pass
    return (platform.processor() or platform.machine()) + f" {os.cpu_count()}c"


def environment(device: str) -> dict:
    import importlib.util

    env = {
        "device": torch.cuda.get_device_name() if device == "cuda" else _cpu_model(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["wmk", *sys.argv[1:]]) if sys.argv else "",
        "threads": torch.get_num_threads(),
    }
    if importlib.util.find_spec("triton"):
        import triton

        env["triton"] = triton.__version__
    if device == "cuda":
        env["driver"] = torch.cuda.get_device_properties(0).name
    return env


def bench_package(name: str) -> str:
    """Ops live in wmkernels.bench.ops, model pipelines in wmkernels.bench.models."""
    from wmkernels.bench.models import MODELS

    return "models" if name in MODELS else "ops"


def ran(case: Case) -> dict[str, dict[str, str]]:
    """The wmkernels backends one call of the case ran, per op, with the rule's reasons
    (recorded by the ops themselves, so a row names what actually ran)."""
    with routing.record() as seen:
        case.fn()
    return seen


def _ran_label(seen: dict) -> str:
    return "; ".join(f"{op}: {'+'.join(sorted(b))}" for op, b in sorted(seen.items())) or "-"


def row_of(case: Case, seen: dict, ms: float, device: str, peak: dict) -> dict:
    mem = peak_memory(case.fn, device)
    row = {"op": case.op, "shape": case.shape, "backend": case.backend, "dtype": case.dtype,
           "ran": _ran_label(seen), "why": {op: b for op, b in seen.items()},
           "ms": ms, "GBps": case.bytes / ms / 1e6 if case.bytes else None,
           "TFLOPs": case.flops / ms / 1e9 if case.flops else None, "peak_mem_bytes": mem,
           "params": case.params}
    row["pct_copy_peak"] = 100 * row["GBps"] / peak["copy_GBps"] if row["GBps"] else None
    row["pct_matmul_peak"] = (100 * row["TFLOPs"] / peak["matmul_TFLOPs"]
                              if row["TFLOPs"] else None)
    return row


def add_speedups(rows: list[dict]) -> None:
    eager = {(r["op"], r["shape"], r["dtype"]): r["ms"] for r in rows if r["backend"] == "eager"}
    for r in rows:
        base = eager.get((r["op"], r["shape"], r["dtype"]))
        r["speedup_vs_eager"] = base / r["ms"] if base else None


def run_op(op: str, device: str, *, quick: bool = False, shapes: list[str] | None = None,
           peak: dict | None = None, log=print, rounds: int = 9) -> dict:
    module = importlib.import_module(f"wmkernels.bench.{bench_package(op)}.{op}")
    peak = peak or peaks.measure(device)
    rows, skipped = [], []
    groups: dict[tuple, list[Case]] = {}
    for case in module.cases(device, quick):
        if shapes and case.shape not in shapes:
            continue
        if isinstance(case, Skip):
            skipped.append(dataclasses.asdict(case))
            log(f"  {case.op:<22} {case.shape:<22} {case.backend:<13} skipped: {case.reason}")
            continue
        groups.setdefault((case.op, case.shape, case.dtype), []).append(case)
    for group in groups.values():
        # the implementations of one (op, shape, dtype) are timed in interleaved rounds
        # (timing.time_interleaved), so their ratios hold on a machine other work shares
        working, seen = [], []
        for case in group:
            try:   # the first call also records what ran, and finds the cases that fail
                seen.append(ran(case))
                working.append(case)
            except Exception as exc:  # report it and keep measuring the other rows
                reason = f"failed: {type(exc).__name__}: {exc}"
                skipped.append({"op": case.op, "shape": case.shape, "backend": case.backend,
                                "reason": reason})
                log(f"  {case.op:<22} {case.shape:<22} {case.backend:<13} {reason}")
        times = time_interleaved([c.fn for c in working], device, rounds=rounds)
        for case, what, ms in zip(working, seen, times, strict=True):
            rows.append(row_of(case, what, ms, device, peak))
            log(format_row(rows[-1]))
    add_speedups(rows)
    return {"op": op, "environment": environment(device), "peaks": peak, "rows": rows,
            "skipped": skipped}


def _fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def format_row(r: dict) -> str:
    return (f"  {r['op']:<22} {r['shape']:<22} {r['backend']:<13} {r['dtype']:<9} "
            f"{r['ms']:>9.3f} ms "
            f"{_fmt(r['GBps'], '>8.1f')} GB/s {_fmt(r['TFLOPs'], '>7.3f')} TFLOP/s  "
            f"ran: {r.get('ran', '-')}")


def markdown(result: dict) -> str:
    env, peak = result["environment"], result["peaks"]
    lines = [f"# {result['op']} on {env['device']}", "",
             f"torch {env['torch']}, triton {env.get('triton', '-')}, CUDA {env['cuda']}, "
             f"{env['date']}, `{env['command']}`", "",
             f"Measured peaks: copy {peak['copy_GBps']:.1f} GB/s, {peak['matmul_dtype']} matmul "
             f"{peak['matmul_TFLOPs']:.2f} TFLOP/s", "",
             "Column `ran`: the wmkernels backend each op of the row actually ran (recorded by "
             "the ops; `-`: no wmkernels op).", "",
             "| op | shape | backend | ran | dtype | median ms | GB/s | TFLOP/s | % copy peak "
             "| % matmul peak | speedup vs eager | peak mem MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        mem = r["peak_mem_bytes"] / 2**20 if r["peak_mem_bytes"] is not None else None
        lines.append(
            f"| {r['op']} | {r['shape']} | {r['backend']} | {r.get('ran', '-')} | {r['dtype']} | "
            f"{r['ms']:.3f} | "
            f"{_fmt(r['GBps'], '.1f')} | {_fmt(r['TFLOPs'], '.3f')} | "
            f"{_fmt(r['pct_copy_peak'], '.1f')} | {_fmt(r['pct_matmul_peak'], '.1f')} | "
            f"{_fmt(r['speedup_vs_eager'], '.2f')} | {_fmt(mem, '.1f')} |")
    if result["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {s['op']} {s['shape']} {s['backend']}: {s['reason']}"
                  for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["backend"] != "eager"]
    if not rows:
        return
    labels = [f"{r['op']} {r['shape']}\n{r['backend']} {r['dtype']}" for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.7 * len(rows) + 4), 4.5))
    axes[0].bar(labels, [r["speedup_vs_eager"] or 0 for r in rows])
    axes[0].axhline(1.0, color="k", lw=0.8)
    axes[0].set_ylabel("speedup vs eager")
    pct = [max(r["pct_copy_peak"] or 0, r["pct_matmul_peak"] or 0) for r in rows]
    axes[1].bar(labels, pct, color="tab:orange")
    axes[1].set_ylabel("% of measured peak (copy or matmul)")
    for ax in axes:
        ax.tick_params(axis="x", labelrotation=75, labelsize=7)
    fig.suptitle(f"{result['op']} on {result['environment']['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(result: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    op = result["op"]
    paths = [out_dir / f"{op}.json", out_dir / f"{op}.md", out_dir / f"{op}.png"]
    paths[0].write_text(json.dumps(result, indent=1, default=str) + "\n")
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    return [p for p in paths if p.exists()]


def default_out_dir(device: str) -> Path:
    return Path("bench") / "results" / device_slug(device)
