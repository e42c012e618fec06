"""Which implementation runs an op: the routing rule shared by every public function.

Order of choice: the `backend=` argument, then the innermost `use_backend(name)` block, then
the `WMK_BACKEND` environment variable, then the first available entry of the op's preference
list for the tensor's device. A backend that is asked for explicitly but cannot run raises an
error that says why.

Backends:
  reference  eager PyTorch (wmkernels/reference): the semantics and the baseline
  cpu        C++ kernels of the extension, CPU tensors
  triton     Triton kernels; on CUDA tensors, or CPU tensors under TRITON_INTERPRET=1
  cuda       CUDA C++ kernels of the extension, CUDA tensors

Backends registered at run time (`register_backend`, e.g. a test suite's emulator) run only
when asked for by name: the rule never picks them.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import os
from collections.abc import Callable

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


# name -> (device type it runs, callable giving why it cannot run or None); see register_backend.
_EXTRA: dict[str, tuple[str, Callable[[], str | None]]] = {}


def register(op: str, implemented: tuple[str, ...]) -> None:
    """Declare the backends that implement `op` (called once by its wmkernels.ops module)."""
    _OPS[op] = implemented


def add_implementation(op: str, backend: str) -> None:
    """Add `backend` (built in or registered with `register_backend`) to the ones `op` has."""
    if backend not in names():
        raise ValueError(f"{backend!r} is not a backend; expected one of {names()}")
    if backend not in _OPS[op]:
        _OPS[op] = _OPS[op] + (backend,)


def register_backend(name: str, device_type: str, reason: Callable[[], str | None]) -> None:
    """Add a backend at run time, e.g. an emulator that runs the CUDA kernels on CPU tensors.

    It runs tensors of `device_type` when `reason()` returns None (else that sentence says
    why not), only when asked for by name (`backend=`, `use_backend`, WMK_BACKEND), and only
    for ops given it with `add_implementation`. `backends()` lists it.
    """
    if name in NAMES:
        raise ValueError(f"{name!r} is a built-in backend; pick another name")
    _EXTRA[name] = (device_type, reason)


# The backend asked for by the innermost `use_backend` block of this thread / async task.
_USE: contextvars.ContextVar[str | None] = contextvars.ContextVar("wmk_use_backend",
                                                                   default=None)


@contextlib.contextmanager
def use_backend(name: str | None):
    """Run every wmkernels op called inside the block on backend `name`.

    A `backend=` argument still wins over it; it wins over WMK_BACKEND. `None` gives the
    automatic choice back inside an outer block. The choice lives in a `contextvars`
    variable (as `torch.nn.attention.sdpa_kernel` keeps its own), so blocks nest and other
    threads and asyncio tasks are unaffected. Under `torch.compile` the backend is chosen
    while tracing: a compiled function keeps the backend it was traced with, so wrap the
    first call (or the `torch.compile` call's first run) in the block.

    An op that does not implement `name`, or a backend that cannot run on the tensors'
    device, raises when that op is called, as with `backend=`.

    Example: `with wmkernels.use_backend("reference"): out = model(x)`.
    """
    if name is not None and name not in names():
        raise ValueError(f"use_backend({name!r}): not a backend; expected one of {names()} "
                         "or None")
    token = _USE.set(name)
    try:
        yield
    finally:
        _USE.reset(token)


# torch.compile cannot trace a ContextVar read; this makes the read happen once, at trace time.
@torch.compiler.assume_constant_result
def _used_backend() -> str | None:
    return _USE.get()


def names() -> tuple[str, ...]:
    """Every backend name: the built-in ones, then those added by `register_backend`."""
    return NAMES + tuple(_EXTRA)


def unavailable_reason(backend: str, device_type: str) -> str | None:
    """None if `backend` can run on `device_type`, else a sentence saying why not."""
    if backend in _EXTRA:
        runs, reason = _EXTRA[backend]
        if device_type != runs:
            return f"the {backend} backend runs {runs} tensors, got a {device_type} tensor"
        return reason()
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
    return f"unknown backend {backend!r}; expected one of {names()}"


def select(op: str, device: torch.device, backend: str | None) -> str:
    """The backend that runs `op` on `device` (see module docstring for the rule)."""
    implemented = _OPS[op]
    source = "backend={!r}"
    if backend is None:
        backend, source = _used_backend(), "use_backend({!r})"
    if backend is None:
        backend, source = os.environ.get("WMK_BACKEND") or None, "WMK_BACKEND={!r}"
    if backend is not None:
        asked = source.format(backend)
        if backend not in names():
            raise ValueError(f"{asked} is not a backend; expected one of {names()}")
        if backend not in implemented:
            raise ValueError(f"{op} has no {backend!r} backend ({asked}); it has {implemented}")
        reason = unavailable_reason(backend, device.type)
        if reason is not None:
            raise RuntimeError(f"{op}: {asked} cannot run: {reason}")
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
            for name in names():
                if name not in implemented:
                    row[name] = "not implemented for this op"
                else:
                    row[name] = unavailable_reason(name, dev) or "available"
            table[op][dev] = row
    return table
