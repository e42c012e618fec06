"""Which implementation runs an op: the routing rule shared by every public function.

Order of choice: the `backend=` argument, then the `WMK_BACKEND` environment variable, then
the first available entry of the op's preference list for the tensor's device. A backend that
is asked for explicitly but cannot run raises an error that says why.

Backends:
  reference  eager PyTorch (wmkernels/reference): the semantics and the baseline
  cpu        C++ kernels of the extension, CPU tensors
  triton     Triton kernels; on CUDA tensors, or CPU tensors under TRITON_INTERPRET=1
  cuda       CUDA C++ kernels of the extension, CUDA tensors
"""

from __future__ import annotations

import importlib.util
import os

import torch

from wmkernels import _extension

NAMES = ("reference", "cpu", "triton", "cuda")

# Best first, per device type. Triton is not preferred on CPU: there it only runs in the
# interpreter, which is for testing.
PREFERENCE = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

# op name -> backends that implement it (filled by wmkernels.ops.* at import).
_OPS: dict[str, tuple[str, ...]] = {}

HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def register(op: str, implemented: tuple[str, ...]) -> None:
    _OPS[op] = implemented


def unavailable_reason(backend: str, device_type: str) -> str | None:
    """None if `backend` can run on `device_type`, else a sentence saying why not."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device_type != "cpu":
            return f"the cpu backend runs CPU tensors, got a {device_type} tensor"
        return None if _extension.has_cpu() else _extension.LOAD_ERROR
    if backend == "cuda":
        if device_type != "cuda":
            return f"the cuda backend runs CUDA tensors, got a {device_type} tensor"
        if not _extension.has_cpu():
            return _extension.LOAD_ERROR
        return None if _extension.has_cuda() else "the extension was built without CUDA"
    if backend == "triton":
        if not HAS_TRITON:
            return "triton is not installed (pip install triton)"
        if device_type == "cpu" and not INTERPRET:
            return "triton runs CPU tensors only under TRITON_INTERPRET=1 (set before import)"
        if device_type not in ("cpu", "cuda"):
            return f"triton does not run {device_type} tensors"
        return None
    return f"unknown backend {backend!r}; expected one of {NAMES}"


def select(op: str, device: torch.device, backend: str | None) -> str:
    """The backend that runs `op` on `device` (see module docstring for the rule)."""
    implemented = _OPS[op]
    source = "backend="
    if backend is None:
        backend = os.environ.get("WMK_BACKEND") or None
        source = "WMK_BACKEND="
    if backend is not None:
        if backend not in NAMES:
            raise ValueError(f"{source}{backend!r} is not a backend; expected one of {NAMES}")
        if backend not in implemented:
            raise ValueError(f"{op} has no {backend!r} backend; it has {implemented}")
        reason = unavailable_reason(backend, device.type)
        if reason is not None:
            raise RuntimeError(f"{op}: {source}{backend!r} cannot run: {reason}")
        return backend
    for name in PREFERENCE.get(device.type, ("reference",)):
        if name in implemented and unavailable_reason(name, device.type) is None:
            return name
    return "reference"


def backends() -> dict[str, dict[str, dict[str, str]]]:
    """For every op and device type: each backend's status, "available" or why it is not.

    Example: `backends()["vq_lookup"]["cpu"]["triton"]`.
    """
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    table = {}
    for op, implemented in sorted(_OPS.items()):
        table[op] = {}
        for dev in devices:
            row = {}
            for name in NAMES:
                if name not in implemented:
                    row[name] = "not implemented for this op"
                else:
                    row[name] = unavailable_reason(name, dev) or "available"
            table[op][dev] = row
    return table
