"""Loads the compiled extension `wmkernels._C` if it was built, and remembers why not if not.

Importing `_C` registers the C++ ops under `torch.ops.wmk` (schemas in csrc/ops.cpp).
"""

from __future__ import annotations

import torch  # noqa: F401  (the extension links against libtorch; load it first)

try:
    from wmkernels import _C  # type: ignore[attr-defined]

    BUILD_INFO: dict = dict(_C.build_info())
    LOAD_ERROR: str | None = None
except ImportError as exc:  # not built, or built against another torch
    _C = None
    BUILD_INFO = {}
    LOAD_ERROR = f"C++ extension not built or not loadable ({exc}); reinstall with "
    LOAD_ERROR += "`pip install --no-build-isolation -e .` to build it"


def has_cpu() -> bool:
    return _C is not None


def has_cuda() -> bool:
    return _C is not None and bool(BUILD_INFO.get("cuda"))
