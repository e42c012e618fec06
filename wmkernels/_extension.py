"""Loads the compiled extension `wmkernels._C` if it was built, and remembers why not if not.

Importing `_C` registers the C++ ops under `torch.ops.wmk` (schemas in csrc/ops.cpp).
"""

from __future__ import annotations

import importlib.util
import warnings

import torch  # (the extension links against libtorch; load it first)

# The one command that builds the extension against the torch that is installed.
REINSTALL = "pip install --no-build-isolation --force-reinstall --no-deps <wmkernels source dir>"


def _load():
    """-> (module or None, why not). Tells "not in this install" (a pure-Python build: pip's
    build isolation, WMK_BUILD_EXT=0, a failed compile) from "present but not loadable"
    (built against another torch), instead of Python's generic import error."""
    spec = importlib.util.find_spec("wmkernels._C")
    if spec is None:
        return None, ("C++ extension not built: this install of wmkernels has no wmkernels._C "
                      "(a pure-Python build: pip's build isolation hid torch from the build, "
                      f"WMK_BUILD_EXT=0, or the compile failed); rebuild it with `{REINSTALL}`")
    try:
        from wmkernels import _C as module  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, (f"C++ extension {spec.origin} does not load with torch "
                      f"{torch.__version__} (built against another torch?): {exc}; rebuild it "
                      f"with `{REINSTALL}`")
    return module, None


_C, LOAD_ERROR = _load()
BUILD_INFO: dict = dict(_C.build_info()) if _C is not None else {}
if _C is None:
    # Once per process (a module runs once): without the extension every op silently runs
    # the eager reference, 10x or more slower.
    warnings.warn(f"wmkernels: {LOAD_ERROR}. The ops run the slow eager reference.",
                  RuntimeWarning, stacklevel=2)


def has_cpu() -> bool:
    return _C is not None


def has_cuda() -> bool:
    return _C is not None and bool(BUILD_INFO.get("cuda"))


def kernel_ops(backend: str):
    """The torch.ops namespace of the C++ kernels that `backend` runs: `wmk`, or `wmk_sim` for
    "cuda-sim", the test suite's emulation of the CUDA kernels on CPU tensors (tests/cuda_sim)."""
    return torch.ops.wmk_sim if backend == "cuda-sim" else torch.ops.wmk
