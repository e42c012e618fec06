"""Argument checks shared by the public functions: every message names the argument,
what was expected and what was given."""

from __future__ import annotations

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
