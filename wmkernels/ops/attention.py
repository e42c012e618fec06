"""Factorized video attention ops: spatial (over the S positions of a frame) and temporal
(over frames, causal bottom-right aligned), on (B, T, S, H, D) tokens read through their
strides.

Public functions validate, pick a backend (wmkernels.routing) and call it. The reference
backend is eager PyTorch (rearrange + SDPA, differentiable as is).
"""

from __future__ import annotations

import math

import torch

from wmkernels import _checks, routing
from wmkernels.reference import attention as reference

IMPLEMENTED = ("reference",)
routing.register("spatial_attention", IMPLEMENTED)
routing.register("temporal_attention", IMPLEMENTED)


def _check_5d(name: str, x) -> None:
    _checks.tensor(name, x, ndim=5)
    if x.shape[-1] > 1 and x.stride(-1) != 1:
        raise ValueError(f"{name} must have unit stride on its last (head) dim, got strides "
                         f"{tuple(x.stride())}; slice q/k/v from a packed projection so that "
                         "D stays innermost")


def _check_scale(scale, head_dim: int) -> float:
    if scale is None:
        return head_dim ** -0.5 if head_dim > 0 else 1.0
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite positive float, got {scale}")
    return float(scale)


def _check_qkv(q, k, v) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        _check_5d(name, x)
    _checks.same_dtype(q=q, k=k, v=v)
    _checks.same_device(q=q, k=k, v=v)
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)}")


def spatial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                      scale: float | None = None, backend: str | None = None) -> torch.Tensor:
    """Softmax attention over the S positions of each frame, for every (batch, frame, head).

    Args:
        q, k, v: (B, T, S, H, D), same dtype (float16/bfloat16/float32; float64 on the
            reference and cpu backends) and device. Any strides with a unit last stride,
            e.g. views of a packed (B, T, S, 3, H, D) projection: no copy is made.
        scale: multiplies q.k; default D ** -0.5.
        backend: "reference" | "cpu" | "triton" | "cuda"; default: WMK_BACKEND or the best
            for the device.

    Returns:
        (B, T, S, H, D) contiguous, dtype of q (so `.view(B, T, S, H * D)` is free).
        Differentiable with respect to q, k and v.

    Raises:
        TypeError: non-float or mismatched dtypes, non-float scale.
        ValueError: rank != 5, shapes that differ, devices that differ, a non-unit last
            stride, a bad scale. RuntimeError: the requested backend cannot run here.
    """
    _check_qkv(q, k, v)
    if k.shape != q.shape:
        raise ValueError(f"k must have q's shape (B, T, S, H, D) = {tuple(q.shape)}, got "
                         f"{tuple(k.shape)}")
    scale = _check_scale(scale, q.shape[-1])
    name = routing.select("spatial_attention", q.device, backend)
    if q.numel() == 0:
        return torch.zeros_like(q, memory_format=torch.contiguous_format) + (
            k.sum() + v.sum()) * 0
    if name == "reference":
        return reference.spatial_attention(q, k, v, scale)
    raise AssertionError(f"unrouted backend {name}")  # routing only offers IMPLEMENTED


def temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                       causal: bool = True, scale: float | None = None,
                       backend: str | None = None) -> torch.Tensor:
    """Softmax attention over frames, for every (batch, spatial position, head).

    Args:
        q: (B, Tq, S, H, D); k, v: (B, Tk, S, H, D) with Tq <= Tk, same dtype and device.
            Any strides with a unit last stride (packed-QKV views, a KV cache's `[:, :t]`
            prefix): no copy is made.
        causal: if True, query frame i sees key frames j <= Tk - Tq + i (bottom-right
            aligned: the last query frame is the last key frame, as with a KV cache).
        scale: multiplies q.k; default D ** -0.5.
        backend: as for `spatial_attention`.

    Returns:
        (B, Tq, S, H, D) contiguous, dtype of q. Differentiable with respect to q, k, v.

    Raises:
        TypeError / ValueError as `spatial_attention`; ValueError when Tq > Tk or B, S, H, D
        of q and k differ.
    """
    _check_qkv(q, k, v)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    B, Tq, S, H, D = q.shape
    if (k.shape[0], k.shape[2], k.shape[3], k.shape[4]) != (B, S, H, D):
        raise ValueError(f"k must be (B, Tk, S, H, D) with q's B, S, H, D = {(B, S, H, D)}, "
                         f"got {tuple(k.shape)}")
    if Tq > k.shape[1]:
        raise ValueError(f"q has more frames than k: Tq = {Tq} > Tk = {k.shape[1]}; "
                         "expected Tq <= Tk")
    scale = _check_scale(scale, D)
    name = routing.select("temporal_attention", q.device, backend)
    if q.numel() == 0 or k.numel() == 0:
        return torch.zeros_like(q, memory_format=torch.contiguous_format) + (
            k.sum() + v.sum()) * 0
    if name == "reference":
        return reference.temporal_attention(q, k, v, causal, scale)
    raise AssertionError(f"unrouted backend {name}")
