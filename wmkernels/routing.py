"""Which implementation runs an op: the routing rule shared by every public function.

Order of choice: the `backend=` argument, then the innermost `use_backend(name)` block, then
the `WMK_BACKEND` environment variable, then the rule (`rank`). A backend that is asked for
explicitly but cannot run raises an error that says why.

The rule is a pure function of the op, the device (type and compute capability), the call's
sizes and dtype, and whether zero-copy SDPA views exist (`Call`); it returns the op's
implementations best first, each with its reason, and the first one that is implemented and
available runs:
  CUDA: the roofline of wmkernels.roofline (FLOP and bytes per call and implementation, the
        device's datasheet peaks by compute capability): the smallest estimated time wins, so
        compute-bound calls go to tensor-core implementations and memory-bound calls to the
        one that moves the fewest bytes; equal estimates (within 2%) keep PREFERENCE order.
  CPU:  measured (see CPU_MEASURED): SDPA on zero-copy views for spatial attention when
        the views exist, the C++ kernels otherwise and for all temporal attention.
Ops or calls without sizes fall back to PREFERENCE order.

Backends:
  reference  eager PyTorch (wmkernels/reference): the semantics and the baseline
  cpu        C++ kernels of the extension, CPU tensors
  triton     Triton kernels; on CUDA tensors, or CPU tensors under TRITON_INTERPRET=1
  cuda       CUDA C++ kernels of the extension, CUDA tensors
  sdpa       torch's scaled_dot_product_attention on zero-copy views (attention ops only;
             a reshaped copy where no view exists), any device

Backends registered at run time (`register_backend`, e.g. a test suite's emulator) run only
when asked for by name: the rule never picks them.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib.util
import os
from collections.abc import Callable

import torch

from wmkernels import _extension, roofline

NAMES = ("reference", "cpu", "triton", "cuda", "sdpa")

# Tie order, best first, per device type. Triton is never chosen on CPU: there it only runs
# in the interpreter, which is for testing.
PREFERENCE = {"cuda": ("cuda", "triton", "sdpa", "reference"),
              "cpu": ("cpu", "sdpa", "reference")}

# CPU decisions, measured on a 2-core AMD EPYC (torch 2.13.0+cpu, fp32; interleaved rounds,
# medians: `python -m wmkernels.bench.sdpa_views --threads N`, 2026-12-04). Time of SDPA on
# zero-copy views over the cpu kernel's:
#   spatial, packed QKV, S = 16..1024, D = 32/64: forward 0.65-0.93x, forward+backward
#     0.54-0.95x (1 thread); the kernel never won, so spatial takes SDPA wherever a view exists.
#   temporal, B1 S256 H4 D64, contiguous or packed q/k/v: T = 16 forward 1.08-1.52x (1 thread)
#     and 2.45-3.23x (2 threads), forward+backward 0.99-1.19x and 1.52-2.28x; one query frame
#     of 16 (KV-cache decode) 1.44-1.63x and 2.11-2.41x; 4 query frames of 16 1.04-1.06x and
#     5.4-5.9x.
#   temporal, T = 64 S64: causal forward 1.06x / 1.57x, forward+backward 0.99x / 1.49x;
#     non-causal forward 0.75x / 1.13x, forward+backward 0.81x / 0.91x (1 / 2 threads): the
#     only case measured where SDPA wins, long clips without a mask; the kernel stays.
CPU_MEASURED = {
    "spatial": "SDPA on (B*T, H, S, D) views measured 0.65-0.93x the cpu kernel's forward "
               "time, 0.54-0.95x forward+backward (2-core AMD EPYC)",
    "kernel": "the cpu kernel measured faster than SDPA on views here: 1.08-3.2x forward at "
              "T = 16, 1.4-2.4x for a KV-cache decode step (2-core AMD EPYC; see "
              "routing.CPU_MEASURED)",
    "no view": "no zero-copy SDPA view of these strides: the kernel reads them in place, "
               "SDPA would need copies",
}

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
    if backend in ("reference", "sdpa"):
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


@dataclasses.dataclass(frozen=True)
class Call:
    """What the rule knows about one call: no tensors, so the rule is a pure function.

    sizes: per op, e.g. attention B, Tq, Tk, S, H, D, causal; vq_lookup N, K, D (empty: the
    rule falls back to PREFERENCE). view: zero-copy SDPA views exist. grad: a backward will
    run. capability: the CUDA device's (major, minor).
    """
    device: str
    dtype: torch.dtype = torch.float32
    sizes: dict = dataclasses.field(default_factory=dict)
    view: bool = False
    grad: bool = False
    capability: tuple[int, int] | None = None


@torch.compiler.assume_constant_result
def _capability(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def call(x: torch.Tensor, *, view: bool = False, grad: bool = False, **sizes) -> Call:
    """The `Call` of an op whose main input is `x` (device, dtype, capability from `x`)."""
    cap = None
    if x.device.type == "cuda":
        cap = _capability(x.device.index or 0)
        # The roofline compares sizes; under torch.compile(dynamic=True) that would need
        # guards on symbolic floats, so the CUDA choice specializes on the traced sizes.
        sizes = {k: int(v) for k, v in sizes.items()}
    return Call(x.device.type, x.dtype, sizes, view, grad, cap)


def rank(op: str, c: Call) -> list[tuple[str, str]]:
    """The rule: the implementations of `op` for call `c`, best first, each with its reason.
    Pure: it looks at neither the machine nor what is installed."""
    order = tuple(n for n in PREFERENCE.get(c.device, ("reference",))
                  if n in _OPS.get(op, NAMES))
    if c.device == "cuda" and c.sizes:
        return _rank_roofline(op, c, order)
    if c.device == "cpu" and op in ("spatial_attention", "temporal_attention"):
        return _rank_cpu_attention(op, c, order)
    return [(n, f"{c.device} preference order {order}") for n in order]


def _rank_cpu_attention(op: str, c: Call, order) -> list[tuple[str, str]]:
    if op == "spatial_attention" and c.view:
        why = CPU_MEASURED["spatial"]
        return [("sdpa", why)] + [(n, why) for n in order if n != "sdpa"]
    why = CPU_MEASURED["kernel"] if c.view else CPU_MEASURED["no view"]
    return [(n, why) for n in order]


def _rank_roofline(op: str, c: Call, order) -> list[tuple[str, str]]:
    p = roofline.peaks(c.capability)
    est = {}
    for n in order:
        cost = roofline.cost(op, n, c.dtype, c.sizes, view=c.view, grad=c.grad)
        if cost is not None:
            est[n] = (cost.seconds(p, c.dtype), cost)
    if not est:
        return [(n, f"no roofline model: cuda preference order {order}") for n in order]
    best = min(t for t, _ in est.values())
    # equal estimates (within 2%) keep the preference order
    close = [n for n in order if n in est and est[n][0] <= best * 1.02]
    ranked = close + sorted((n for n in est if n not in close), key=lambda n: est[n][0])
    ridge = p.fp32 / p.bandwidth
    out = []
    for n in ranked:
        t, cost = est[n]
        bound = "compute" if cost.flops / cost.bytes > (
            ridge if cost.unit == "fp32" else p.tensor16 / p.bandwidth) else "memory"
        out.append((n, f"roofline {p.name}: {cost.flops / 1e9:.3g} GFLOP, {cost.bytes / 1e6:.4g} "
                       f"MB, {cost.flops / cost.bytes:.0f} FLOP/B ({cost.unit} units, "
                       f"{bound}-bound; scalar ridge {ridge:.0f} FLOP/B) -> est. "
                       f"{t * 1e3:.3g} ms"))
    unmodelled = [n for n in order if n not in est]
    return out + [(n, "cannot serve this call (dtype or size)") for n in unmodelled]


# Records of the backends chosen inside `record()` blocks (see there).
_RECORD: contextvars.ContextVar[dict | None] = contextvars.ContextVar("wmk_record",
                                                                      default=None)


@contextlib.contextmanager
def record():
    """Collect the backend every op called inside the block ran on: yields a dict
    {op: {backend: reason}}, filled as ops run. Benches label rows with it, so a row names
    the backend that actually ran. Not filled while torch.compile traces."""
    seen: dict = {}
    token = _RECORD.set(seen)
    try:
        yield seen
    finally:
        _RECORD.reset(token)


def explain(op: str, device: torch.device, backend: str | None = None,
            c: Call | None = None,
            refuses: Callable[[str], str | None] | None = None) -> tuple[str, str]:
    """(backend that runs `op`, why): see the module docstring for the order of choice.
    `refuses(name)`, when given, says why the op's own checks refuse this call on `name`
    (e.g. a kernel's head-dim limit): the rule then takes the next implementation."""
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
        return backend, f"asked for: {asked}"
    for name, why in rank(op, c or Call(device.type)):
        if (name in implemented and unavailable_reason(name, device.type) is None
                and not (refuses and refuses(name))):
            return name, why
    return "reference", "no other implementation can run here"


def select(op: str, device: torch.device, backend: str | None, c: Call | None = None,
           refuses: Callable[[str], str | None] | None = None) -> str:
    """The backend that runs `op` on `device` for call `c` (see `explain`)."""
    name, why = explain(op, device, backend, c, refuses)
    if not torch.compiler.is_compiling():
        seen = _RECORD.get()
        if seen is not None:
            seen.setdefault(op, {})[name] = why
    return name


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
