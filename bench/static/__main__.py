"""`python -m bench.static`: regenerate bench/results/static/sm_80.md, sm_86.md and sm_90.md,
the static evidence about the GPU kernels that a machine without a GPU can produce."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path

from bench.static import triton_kernels

OUT = triton_kernels.ROOT / "bench" / "results" / "static"
COMMAND = ".venv/bin/python -m bench.static"


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cuda_section(arch: int) -> str:
    """The CUDA C++ section (bench/static/cuda_kernels.py), or why it is missing."""
    try:
        from bench.static import cuda_kernels
    except ImportError as err:
        return (f"## CUDA C++ kernels, sm_{arch}\n\nNot generated: bench/static/cuda_kernels.py "
                f"could not be imported ({err}).\n")
    try:
        return cuda_kernels.report(arch)
    except RuntimeError as err:
        return f"## CUDA C++ kernels, sm_{arch}\n\nNot generated: {err}\n"


def main() -> None:
    import torch
    import triton

    start = time.perf_counter()
    result = triton_kernels.run_isolated(triton_kernels.ARCHS, sass=True)
    OUT.mkdir(parents=True, exist_ok=True)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for arch in triton_kernels.ARCHS:
        header = "\n".join([
            f"# Static resource report, sm_{arch}",
            "",
            "**Static evidence, without a GPU: not a speed measurement.** Every kernel is "
            "compiled ahead of time for this architecture on a machine without a GPU, and "
            "what the compiler produced is read back: registers, stack (spills), shared "
            "memory against the per-block limit, and tensor-core instructions. Nothing here "
            "was run on a GPU; speed, memory ordering and fast-math numerics are not checked.",
            "",
            f"Regenerate: `{COMMAND}` (writes sm_80.md, sm_86.md and sm_90.md). Generated "
            f"{date} on a {os.cpu_count()}-core {_cpu()} ({platform.machine()}), Python "
            f"{platform.python_version()}, "
            f"torch {torch.__version__}, Triton {triton.__version__}. The compile gates "
            "(tests/gates) check the same compiles in the test suite.",
            "",
        ])
        text = header + "\n" + triton_kernels.report(arch, result) + "\n" + _cuda_section(arch)
        (OUT / f"sm_{arch}.md").write_text(text)
        print(f"wrote {OUT / f'sm_{arch}.md'}")
    print(f"{time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
