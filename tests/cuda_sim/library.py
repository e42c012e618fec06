"""Build and load the SIMT emulation of the CUDA C++ kernels: the `cuda-sim` backend.

The torch-free `csrc/cuda/<op>_kernel.cu` files are compiled with g++ against `simt.h`
after three rewrites (a launch `k<<<grid, block, smem, stream>>>(...)` becomes a call, a
static `__shared__` variable a function-static one poisoned per block, `extern __shared__`
the launch's dynamic buffer); the torch glue `csrc/cuda/<op>.cu` is compiled unchanged
against stand-ins of the c10 CUDA headers (`include/`), registering the same kernels under
`torch.ops.wmk_sim.*` for CPU tensors. Same schemas as `torch.ops.wmk`, the same fakes and
autograd as the CUDA ops (wmkernels/ops).

Built on first use with ninja (torch.utils.cpp_extension.load) into `build/cuda_sim` (or
`build/cuda_sim_asan` under WMK_SIM_SANITIZE=1, which adds AddressSanitizer and needs
libasan preloaded: see README.md here).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import re
import shutil
from pathlib import Path

import torch
import torch.utils.cpp_extension

from wmkernels import _extension, routing

NAME = "cuda-sim"
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CUDA_DIR = ROOT / "csrc" / "cuda"
SLICES = ("vq", "attention", "maskgit")
SANITIZE = os.environ.get("WMK_SIM_SANITIZE") == "1"
BUILD = ROOT / "build" / ("cuda_sim_asan" if SANITIZE else "cuda_sim")

# public op -> the C++ ops behind it
PUBLIC_OPS = {
    "vq_lookup": ("vq_lookup",),
    "vq_ema_update_": ("vq_ema_update_",),
    "spatial_attention": ("spatial_attention_fwd", "spatial_attention_bwd"),
    "temporal_attention": ("temporal_attention_fwd", "temporal_attention_bwd"),
    "maskgit_sample": ("maskgit_sample",),
    "maskgit_step": ("maskgit_step",),
}
SCHEDULES = {"forward": 0, "reversed": 1, "shuffled": 2}

_LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;]*>)?)(\s*)<<<(.*?)>>>(\s*)\((\s*\))?", re.S)
_EXTERN_SHARED = re.compile(r"extern\s+__shared__\s+([\w:]+)\s+(\w+)\s*\[\s*\]\s*;")
_SHARED = re.compile(r"__shared__\s+([^;(){}]*?)\s+(\w+)\s*((?:\[[^\]]*\])*)\s*;")


def translate(source: str) -> str:
    """A CUDA kernel file as C++ for simt.h, line for line (errors point at the .cu)."""

    def launch(m: re.Match) -> str:
        newlines = "\n" * (m[2] + m[4] + (m[5] or "")).count("\n")
        call = f"::wmk_sim::launch(::wmk_sim::Config({m[3]}), {m[1]}"
        return call + (f"){newlines}" if m[5] else f",{newlines} ")

    source = _LAUNCH.sub(launch, source)
    source = _EXTERN_SHARED.sub(r"\1* \2 = ::wmk_sim::dynamic_shared<\1>();", source)
    return _SHARED.sub(r"static \1 \2\3; ::wmk_sim::block_shared(&\2, sizeof(\2));", source)


def unavailable_reason() -> str | None:
    """None if the emulated backend can be built and run here, else why not."""
    if not _extension.has_cpu():
        return f"the wmk extension is not built ({_extension.LOAD_ERROR})"
    if shutil.which("g++") is None or shutil.which("ninja") is None:
        return "the CUDA emulation needs g++ and ninja on PATH"
    if SANITIZE and "libasan" not in Path("/proc/self/maps").read_text():
        return ("WMK_SIM_SANITIZE=1 needs AddressSanitizer loaded first (and libstdc++ with it, "
                "for the C++ exceptions of triton and torch): LD_PRELOAD=\"$(g++ "
                "-print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)\"")
    return None


def register() -> None:
    """Make `backend="cuda-sim"` known to wmkernels (it runs only when asked for)."""
    if NAME not in routing.names():
        reason = unavailable_reason()  # once: torch.compile traces the check of every call
        routing.register_backend(NAME, "cpu", lambda: reason)
    for op in PUBLIC_OPS:
        routing.add_implementation(op, NAME)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _sources() -> list[str]:
    """Generated translation units: each kernel file translated, each glue file verbatim
    (as .cpp, so that g++ compiles it)."""
    BUILD.mkdir(parents=True, exist_ok=True)
    out = []
    files = [(HERE / "selftest_kernel.cu", True)]
    for op in SLICES:
        files += [(CUDA_DIR / f"{op}_kernel.cu", True), (CUDA_DIR / f"{op}.cu", False)]
    for cu, translated in files:
        text = cu.read_text()
        cpp = BUILD / (cu.stem + ".cpp")
        _write_if_changed(cpp, f'#line 1 "{cu}"\n' + (translate(text) if translated else text))
        out.append(str(cpp))
    return out + [str(HERE / "simt.cpp")]


def _headers_digest() -> str:
    """torch's build cache hashes the sources only: the headers go into a flag."""
    h = hashlib.sha256()
    for path in sorted([*ROOT.glob("csrc/**/*.h"), *HERE.glob("**/*.h")]):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _define_schemas() -> torch.library.Library:
    lib = torch.library.Library("wmk_sim", "DEF")
    for ops in PUBLIC_OPS.values():
        for op in ops:
            schema = str(getattr(torch.ops.wmk, op).default._schema)
            lib.define(schema.split("::", 1)[1])
    return lib


def _register_python_parts() -> None:
    """Fakes and autograd of the wmk_sim ops: those of the CUDA ops they stand for."""
    from wmkernels.ops import attention, maskgit, vq

    fake = torch.library.register_fake
    fake("wmk_sim::vq_lookup")(vq._vq_lookup_fake)
    fake("wmk_sim::vq_ema_update_")(vq._vq_ema_update_fake)
    fake("wmk_sim::spatial_attention_fwd")(attention._spatial_fwd_fake)
    fake("wmk_sim::temporal_attention_fwd")(attention._temporal_fwd_fake)
    fake("wmk_sim::spatial_attention_bwd")(attention._bwd_fake)
    fake("wmk_sim::temporal_attention_bwd")(attention._bwd_fake)
    fake("wmk_sim::maskgit_sample")(maskgit._sample_fake)
    fake("wmk_sim::maskgit_step")(maskgit._step_fake)
    attention._register_autograd("wmk_sim::spatial_attention_fwd",
                                 torch.ops.wmk_sim.spatial_attention_bwd, False)
    attention._register_autograd("wmk_sim::temporal_attention_fwd",
                                 torch.ops.wmk_sim.temporal_attention_bwd, True)


@functools.cache
def load() -> ctypes.CDLL:
    """Build (first call: about a minute on 2 cores; then cached) and load the library;
    returns its handle for the entry points of simt.cpp."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"cuda-sim cannot run: {reason}")
    _LOAD_STATE["schemas"] = _define_schemas()  # kept alive: dropping it removes the ops
    asan = ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"] if SANITIZE else []
    path = torch.utils.cpp_extension.load(
        name="wmk_cuda_sim_asan" if SANITIZE else "wmk_cuda_sim",
        sources=_sources(),
        extra_include_paths=[str(HERE / "include"), str(ROOT / "csrc" / "include")],
        # -fno-strict-aliasing: the kernels reinterpret vector registers (uint4 -> T[8]) as
        # CUDA code does; g++ would otherwise drop those reads.
        extra_cflags=["-O2", "-fno-strict-aliasing", "-Wno-unknown-pragmas",
                      "-DWMK_CUDA_LIBRARY=wmk_sim", "-DWMK_CUDA_DEVICE=CPU",
                      f"-DWMK_SIM_HEADERS={_headers_digest()}", *asan],
        extra_ldflags=asan,
        build_directory=str(BUILD),
        is_python_module=False,
        verbose=os.environ.get("WMK_SIM_VERBOSE") == "1",
    )
    _register_python_parts()
    handle = ctypes.CDLL(path)
    handle.wmk_sim_set_schedule.argtypes = [ctypes.c_int, ctypes.c_uint64]
    return handle


_LOAD_STATE: dict = {}


def set_schedule(name: str, seed: int = 0) -> None:
    """Order of the threads of a block: "forward", "reversed" or "shuffled" (seeded)."""
    if load().wmk_sim_set_schedule(SCHEDULES[name], seed) != 0:
        raise ValueError(f"bad schedule {name!r}")


@contextlib.contextmanager
def schedule(name: str, seed: int = 0):
    """Run the block inside under schedule `name`, then go back to "forward"."""
    set_schedule(name, seed)
    try:
        yield
    finally:
        set_schedule("forward")
