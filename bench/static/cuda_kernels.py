"""The CUDA C++ kernels as nvcc builds them, read without a GPU: compile commands shared with
the compile gate (tests/gates/test_cuda_compile.py), and `report(arch)`, a markdown section of
registers, spills, static shared memory and tensor-core instructions per kernel.

Every `__global__` of `csrc/cuda/*_kernel.cu` is listed once per template instantiation the
launchers use (nvcc emits exactly those). Registers, stack and spills come from `ptxas -v`;
instruction counts from the SASS (`cuobjdump -sass`, shipped in the triton wheel). It compiles
into a temporary directory and caches nothing.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
# The CPU torch wheel lacks this generated header, which the glue's c10/cuda includes need;
# its content in a CUDA build of torch (shared libraries) is this one define.
CMAKE_MACROS_STUB = "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n"
# Warnings are errors: nvcc's front end and ptxas, and the host compiler.
WERROR = ["-Werror", "all-warnings", "-Xptxas", "-Werror", "-Xcompiler", "-Wall,-Werror"]
# Opcodes counted in the report: tensor-core MMAs (HMMA: sm_70+ warp MMA; HGMMA: sm_90 warpgroup
# MMA; IMMA: integer) and, for contrast, scalar fp32/fp64 FMAs and shared-memory loads.
OPCODES = ("HGMMA", "HMMA", "IMMA", "FFMA", "DFMA", "LDS")


def find_nvcc() -> str | None:
    """Path of nvcc: $NVCC, then PATH, then the usual CUDA install paths; None if absent."""
    for candidate in (os.environ.get("NVCC"), shutil.which("nvcc"),
                      "/usr/local/cuda/bin/nvcc", "/usr/local/cuda-13.0/bin/nvcc"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def find_cuobjdump() -> str | None:
    """Path of cuobjdump: the triton wheel's copy, else the one beside nvcc; None if absent."""
    spec = importlib.util.find_spec("triton")
    candidates = []
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "backends/nvidia/bin/cuobjdump")
    nvcc = find_nvcc()
    if nvcc:
        candidates.append(Path(nvcc).parent / "cuobjdump")
    return next((str(c) for c in candidates if c.exists()), None)


def nvcc_flags() -> list[str]:
    """The extension's own nvcc flags: the NVCC_FLAGS literal of setup.py (one source of truth;
    read with ast so that setup.py is not executed)."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "NVCC_FLAGS" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("setup.py has no NVCC_FLAGS list literal")


def torch_nvcc_flags() -> list[str]:
    """What torch's BuildExtension adds to every nvcc command of the extension (its
    COMMON_NVCC_FLAGS, -fPIC, the extension macros), and the extension's own define."""
    import torch
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [*COMMON_NVCC_FLAGS, "-Xcompiler", "-fPIC", "-DWMK_WITH_CUDA=1",
            "-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C",
            f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]


def kernel_sources() -> list[Path]:
    """The plain-CUDA kernel files (no torch headers)."""
    return sorted(CUDA_DIR.glob("*_kernel.cu"))


def glue_sources() -> list[Path]:
    """The torch glue files, compiled against torch's headers."""
    return sorted(p for p in CUDA_DIR.glob("*.cu") if not p.name.endswith("_kernel.cu"))


def torch_includes(stub_dir: Path) -> list[str]:
    """-I flags for the glue: torch's headers and a directory holding the cmake-macros stub."""
    from torch.utils.cpp_extension import include_paths

    header = stub_dir / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    header.parent.mkdir(parents=True, exist_ok=True)
    header.write_text(CMAKE_MACROS_STUB)
    return [f"-I{p}" for p in (*include_paths(), stub_dir)]


def compile_command(src: Path, obj: Path, archs, extra=()) -> list[str]:
    """The nvcc command that builds `src` into `obj` for each sm_<arch> in `archs` with the
    extension's flags; add `torch_includes(...)` to `extra` for a glue file."""
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
    return [find_nvcc() or "nvcc", "-c", str(src), "-o", str(obj),
            f"-I{ROOT / 'csrc' / 'include'}",
            *torch_nvcc_flags(), *nvcc_flags(), *gencode, *extra]


@dataclass
class Build:
    """One finished nvcc run."""
    src: Path
    obj: Path
    cmd: list[str]
    returncode: int
    output: str

    def check(self) -> None:
        """Raise RuntimeError with the command and the compiler's output if it failed."""
        if self.returncode != 0:
            raise RuntimeError(f"nvcc failed on {self.src.name} ({self.returncode}):\n"
                               f"{' '.join(self.cmd)}\n{self.output[-6000:]}")


def run_builds(jobs: list[tuple[Path, Path, list[str]]], workers: int | None = None,
               timeout: float = 900) -> list[Build]:
    """Run (src, obj, cmd) nvcc jobs in parallel (one per core by default)."""
    def one(job):
        src, obj, cmd = job
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return Build(src, obj, cmd, done.returncode, done.stdout + done.stderr)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
        return list(pool.map(one, jobs))


def sass_functions(obj: Path) -> dict[tuple[int, str], list[str]]:
    """(arch, mangled kernel name) -> its SASS opcodes (with modifiers, predicates dropped),
    for every cubin in `obj`."""
    tool = find_cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found (it ships in the triton wheel)")
    text = subprocess.run([tool, "-sass", str(obj)], capture_output=True, text=True,
                          check=True).stdout
    funcs: dict[tuple[int, str], list[str]] = {}
    current: list[str] = []
    arch = 0
    for line in text.splitlines():
        if m := re.match(r"\s*code for sm_(\d+)", line):
            arch = int(m.group(1))
            continue
        if m := re.match(r"\s*Function : (\S+)", line):
            current = funcs.setdefault((arch, m.group(1)), [])
            continue
        ins = re.match(r"\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T\d]+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if ins:
            current.append(ins.group(1))
    return funcs


_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\S+)' for 'sm_(\d+)'")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads")
_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_SMEM = re.compile(r"(\d+) bytes smem")


def ptxas_resources(output: str) -> dict[tuple[int, str], dict[str, int]]:
    """(arch, mangled kernel name) -> registers, stack, spill stores/loads and static shared
    memory, from the `-Xptxas -v` output of a build."""
    res: dict[tuple[int, str], dict[str, int]] = {}
    name = None
    for line in output.splitlines():
        if m := _PTXAS_ENTRY.search(line):
            name = (int(m.group(2)), m.group(1))
            res[name] = dict(registers=0, stack=0, spill_stores=0, spill_loads=0, smem=0)
        elif name and (m := _PTXAS_FRAME.search(line)):
            res[name].update(stack=int(m.group(1)), spill_stores=int(m.group(2)),
                             spill_loads=int(m.group(3)))
        elif name and (m := _PTXAS_USED.search(line)):
            res[name]["registers"] = int(m.group(1))
            if s := _PTXAS_SMEM.search(line):
                res[name]["smem"] = int(s.group(1))
    return res


def demangle(names) -> dict[str, str]:
    """Mangled -> short readable kernel name: `temporal_fwd_kernel<__half, 8, 2>`."""
    names = list(names)
    tool = shutil.which("c++filt") or str(Path(find_nvcc() or "nvcc").parent / "cu++filt")
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True,
                         check=True).stdout.splitlines()
    short = {}
    for mangled, full in zip(names, out, strict=True):
        # "void wmk::(anonymous namespace)::f<__half, 8, 2>(args)" -> "f<half, 8, 2>"
        head = full.replace("(anonymous namespace)::", "").removeprefix("void ").split("(")[0]
        head = re.sub(r"^(?:\w+::)+", "", head)
        short[mangled] = head.replace("__nv_bfloat16", "bf16").replace("__half", "half")
    return short


def kernel_table(arch: int, workdir: Path) -> list[dict]:
    """One row per kernel instantiation of every *_kernel.cu at sm_<arch>."""
    jobs = []
    for src in kernel_sources():
        obj = workdir / f"{src.stem}.sm{arch}.o"
        jobs.append((src, obj, compile_command(src, obj, [arch], ["-Xptxas", "-v"])))
    rows = []
    for build in run_builds(jobs):
        build.check()
        res = ptxas_resources(build.output)
        sass = sass_functions(build.obj)
        names = demangle(name for _, name in res)
        for key, r in res.items():
            counts = Counter(op.split(".")[0] for op in sass.get(key, []))
            rows.append(dict(file=build.src.name, kernel=names[key[1]], **r,
                             **{op: counts[op] for op in OPCODES}))
    return rows


def report(arch: int) -> str:
    """Markdown section for sm_<arch>: per CUDA C++ kernel instantiation, registers, stack,
    spill stores/loads, static shared memory, and HGMMA/HMMA/IMMA (tensor cores), FFMA, DFMA
    and LDS counts in its SASS. Raises RuntimeError when nvcc or cuobjdump is missing or a
    build fails."""
    if find_nvcc() is None:
        raise RuntimeError("nvcc not found: set NVCC or put it on PATH")
    with tempfile.TemporaryDirectory(prefix="wmk-cuda-report-") as tmp:
        rows = kernel_table(arch, Path(tmp))
    version = subprocess.run([find_nvcc(), "--version"], capture_output=True,
                             text=True).stdout.strip().splitlines()[-1]
    tc = sum(r["HGMMA"] + r["HMMA"] + r["IMMA"] for r in rows)
    spilled = [r["kernel"] for r in rows if r["spill_stores"] or r["spill_loads"]]
    lines = [
        f"## CUDA C++ kernels, sm_{arch}",
        "",
        f"Compiled by nvcc ({version}) with setup.py's NVCC_FLAGS; registers, stack and spills "
        "from `ptxas -v`, instruction counts (static, not executed) from `cuobjdump -sass`. "
        "Shared memory is the static part; the launchers add dynamic shared memory (spatial "
        "attention 4*(32*(D+1) + 48*D) B, 82 KB at D=256 with the opt-in; MaskGIT sampler "
        "4*V B up to V=10240, re-mask 4*N B up to N=10240).",
        "",
        "| file | kernel | regs | stack B | spill st/ld B | static smem B | HGMMA | HMMA "
        "| IMMA | FFMA | DFMA | LDS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["file"], r["kernel"])):
        lines.append(
            f"| {r['file']} | `{r['kernel']}` | {r['registers']} | {r['stack']} | "
            f"{r['spill_stores']}/{r['spill_loads']} | {r['smem']} | {r['HGMMA']} | "
            f"{r['HMMA']} | {r['IMMA']} | {r['FFMA']} | {r['DFMA']} | {r['LDS']} |")
    lines += [
        "",
        f"Tensor-core instructions in the CUDA C++ kernels: {tc}"
        + (" (none: every dot product is scalar FFMA, DFMA for fp64, on the CUDA cores)."
           if tc == 0 else "."),
        "Kernels that spill: " + (", ".join(f"`{k}`" for k in spilled) if spilled else "none")
        + ".",
        "",
    ]
    return "\n".join(lines)
