"""Argument checks shared by the public functions: every message names the argument,
what was expected and what was given."""

from __future__ import annotations

import math

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name: str, x, *, dtypes=FLOAT_DTYPES, ndim: int | None = None,
           min_ndim: int | None = None) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dtypes is not None and x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype in ({names}), got {x.dtype}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dims, got shape {tuple(x.shape)}")


def same_device(**named: torch.Tensor) -> None:
    (first, a), *rest = named.items()
    for name, b in rest:
        if b.device != a.device:
            raise ValueError(f"{name} is on {b.device} but {first} is on {a.device}; "
                             "expected the same device")


def same_dtype(**named: torch.Tensor) -> None:
    (first, a), *rest = named.items()
    for name, b in rest:
        if b.dtype != a.dtype:
            raise TypeError(f"{name} has dtype {b.dtype} but {first} has {a.dtype}; "
                            "expected the same dtype")


def choice(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """A finite real number >= low (> low with low_open) and <= high; returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    bounds = [f"{'>' if low_open else '>='} {low}"] if low is not None else []
    bounds += [f"<= {high}"] if high is not None else []
    below = low is not None and (value <= low if low_open else value < low)
    # `abs(x) < inf` rather than math.isfinite: it traces under torch.compile (and is False
    # for NaN)
    if not abs(value) < math.inf or below or (high is not None and value > high):
        raise ValueError(f"{name} must be a finite number {' and '.join(bounds)}, got {value}")
    return value


def integer(name: str, value, *, low: int) -> int:
    """An int (not a bool) >= low."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value}")
    return value


def kernel_dtype(backend: str, op: str, name: str, x: torch.Tensor) -> None:
    """The Triton interpreter (Triton on CPU tensors) computes bfloat16 wrongly: refuse it
    there rather than answer."""
    if backend == "triton" and x.device.type == "cpu" and x.dtype == torch.bfloat16:
        raise TypeError(f"the triton {op} cannot run bfloat16 {name} on CPU tensors (the Triton "
                        "interpreter does not support bfloat16); use float16/float32, or "
                        "backend='cpu' / 'reference'")
