"""Factorized video attention ops: spatial (over the S positions of a frame) and temporal
(over frames, causal bottom-right aligned), on (B, T, S, H, D) tokens read through their
strides.

Each kernel backend is a pair of torch ops, a forward returning (out, lse) and a backward
recomputing the probabilities from lse:
    C++ (CPU, and CUDA when built)  torch.ops.wmk.{spatial,temporal}_attention_{fwd,bwd}
    Triton                          torch.ops.wmk.{spatial,temporal}_attention_triton_{fwd,bwd}
The forwards get their gradient through `torch.library.register_autograd`, and every op has
a fake implementation, so each path traces under torch.compile(fullgraph=True). Public
functions validate, pick a backend (wmkernels.routing) and call one forward op. The
reference backend is eager PyTorch (rearrange + SDPA), differentiable as it is.
"""

from __future__ import annotations

import math
import warnings

import torch

from wmkernels import _checks, _extension, routing
from wmkernels.ops import sdpa_views
from wmkernels.reference import attention as reference

IMPLEMENTED = ("reference", "cpu", "triton", "cuda", "sdpa")
routing.register("spatial_attention", IMPLEMENTED)
routing.register("temporal_attention", IMPLEMENTED)

# Head dims the Triton and CUDA kernels are tuned for; others up to MAX_HEAD_DIM run
# correctly on a slower path (a warning says so). The CPU kernel runs any head dim.
FAST_HEAD_DIMS = (32, 64, 128)
MAX_HEAD_DIM = 256


def _lse_dtype(q):
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def _spatial_fwd_fake(q, k, v, scale):
    B, T, S, H, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(
        (B, T, H, S), dtype=_lse_dtype(q))


def _temporal_fwd_fake(q, k, v, causal, scale):
    B, Tq, S, H, _ = q.shape
    return torch.empty_like(q, memory_format=torch.contiguous_format), q.new_empty(
        (B, S, H, Tq), dtype=_lse_dtype(q))


def _bwd_fake(grad_out, q, k, v, out, lse, *args):
    new = lambda x: torch.empty_like(x, memory_format=torch.contiguous_format)
    return new(q), new(k), new(v)


def _register_autograd(fwd, bwd, causal: bool) -> None:
    """Gradient of a forward op (q, k, v, [causal,] scale) -> (out, lse) via its backward op.
    lse is an auxiliary output: its gradient is ignored."""

    def setup_context(ctx, inputs, output):
        q, k, v = inputs[:3]
        ctx.extra = tuple(inputs[3:])  # ([causal,] scale)
        ctx.save_for_backward(q, k, v, *output)

    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = bwd(grad_out, q, k, v, out, lse, *ctx.extra)
        return (dq, dk, dv) + (None,) * len(ctx.extra)

    torch.library.register_autograd(fwd, backward, setup_context=setup_context)


if _extension.has_cpu():
    torch.library.register_fake("wmk::spatial_attention_fwd")(_spatial_fwd_fake)
    torch.library.register_fake("wmk::temporal_attention_fwd")(_temporal_fwd_fake)
    torch.library.register_fake("wmk::spatial_attention_bwd")(_bwd_fake)
    torch.library.register_fake("wmk::temporal_attention_bwd")(_bwd_fake)
    _register_autograd("wmk::spatial_attention_fwd", torch.ops.wmk.spatial_attention_bwd, False)
    _register_autograd("wmk::temporal_attention_fwd", torch.ops.wmk.temporal_attention_bwd,
                       True)


if routing.HAS_TRITON:
    from wmkernels.triton import attention as _triton_attention

    @torch.library.custom_op("wmk::spatial_attention_triton_fwd", mutates_args=())
    def _spatial_triton_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return _triton_attention.spatial_fwd(q, k, v, scale)

    @torch.library.custom_op("wmk::spatial_attention_triton_bwd", mutates_args=())
    def _spatial_triton_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                            v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                            scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _triton_attention.spatial_bwd(grad_out, q, k, v, out, lse, scale)

    @torch.library.custom_op("wmk::temporal_attention_triton_fwd", mutates_args=())
    def _temporal_triton_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        return _triton_attention.temporal_fwd(q, k, v, causal, scale)

    @torch.library.custom_op("wmk::temporal_attention_triton_bwd", mutates_args=())
    def _temporal_triton_bwd(grad_out: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                             v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                             causal: bool, scale: float
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return _triton_attention.temporal_bwd(grad_out, q, k, v, out, lse, causal, scale)

    _spatial_triton_fwd.register_fake(_spatial_fwd_fake)
    _temporal_triton_fwd.register_fake(_temporal_fwd_fake)
    _spatial_triton_bwd.register_fake(_bwd_fake)
    _temporal_triton_bwd.register_fake(_bwd_fake)
    _register_autograd(_spatial_triton_fwd, _spatial_triton_bwd, False)
    _register_autograd(_temporal_triton_fwd, _temporal_triton_bwd, True)


_WARNED: set = set()


def _select(op: str, q, k, v, backend: str | None, causal: bool = False) -> str:
    """The backend for this call (wmkernels.routing decides), told what the rule needs: the
    sizes, whether zero-copy SDPA views exist, whether a backward will run."""
    B, Tq, S, H, D = q.shape
    exists = (sdpa_views.spatial_view_exists if op == "spatial_attention"
              else sdpa_views.temporal_view_exists)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    call = routing.call(q, view=exists(q, k, v), grad=grad, B=B, Tq=Tq, Tk=k.shape[1], S=S,
                        H=H, D=D, causal=causal)
    return routing.select(op, q.device, backend, call, lambda name: _refusal(op, name, q))


def _refusal(op: str, backend: str, q: torch.Tensor) -> str | None:
    """Why `_check_kernel_support` refuses this call on a GPU kernel backend, else None: the
    routing rule then takes the next implementation instead of failing."""
    if backend not in ("triton", "cuda"):
        return None
    try:
        _check_kernel_support(op, backend, q)
    except (TypeError, ValueError) as err:
        return str(err)
    return None


def _check_kernel_support(op: str, backend: str, q: torch.Tensor) -> None:
    """dtype and head-dim limits of the kernel backends (the reference runs anything)."""
    if backend in ("triton", "cuda", "cuda-sim") and q.dtype == torch.float64:
        raise TypeError(f"the {backend} {op} runs float16/bfloat16/float32; got float64 q "
                        "(use backend='cpu' or 'reference' for float64)")
    _checks.kernel_dtype(backend, op, "q", q)
    D = q.shape[-1]
    if backend in ("triton", "cuda", "cuda-sim"):
        if D > MAX_HEAD_DIM:
            raise ValueError(f"the {backend} {op} supports head dims D <= {MAX_HEAD_DIM}, got "
                             f"D = {D} (backend='reference' runs any D)")
        # fp32 runs three tf32 products per dot: past D = 128 its tiles spill kilobytes of
        # registers at any block size (bench/results/static), so the Triton kernels refuse it
        if backend == "triton" and q.dtype == torch.float32 and D > 128:
            raise ValueError(f"the triton {op} supports float32 head dims D <= 128, got D = {D}"
                             " (use bfloat16/float16 q, k, v, or backend='cuda' or 'reference')")
        if D not in FAST_HEAD_DIMS and (op, backend, D) not in _WARNED and not (
                torch.compiler.is_compiling()):
            _WARNED.add((op, backend, D))
            warnings.warn(f"{op}: head dim D = {D} runs on a correct but slower path of the "
                          f"{backend} backend; the fast paths are D in {FAST_HEAD_DIMS}",
                          stacklevel=3)


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


def _empty_output(q, k, v) -> torch.Tensor:
    """The output of a call with nothing to attend: zeros like q, connected to q, k and v so
    that their gradients are zeros, not None."""
    return torch.zeros_like(q, memory_format=torch.contiguous_format) + (
        q.sum() + k.sum() + v.sum()) * 0


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
            reference, cpu and sdpa backends) and device. Any strides with a unit last stride,
            e.g. views of a packed (B, T, S, 3, H, D) projection: no copy is made.
        scale: multiplies q.k; default D ** -0.5.
        backend: "reference" | "cpu" | "triton" | "cuda" | "sdpa" (torch's SDPA on
            zero-copy views); default: `use_backend`, WMK_BACKEND, or the routing rule
            (wmkernels.routing: the implementation that should be fastest for this call).

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
    name = _select("spatial_attention", q, k, v, backend)
    if q.numel() == 0:
        return _empty_output(q, k, v)
    if name == "reference":
        return reference.spatial_attention(q, k, v, scale)
    if name == "sdpa":
        return sdpa_views.spatial_attention(q, k, v, scale)
    _check_kernel_support("spatial_attention", name, q)
    if name == "triton":
        return torch.ops.wmk.spatial_attention_triton_fwd(q, k, v, scale)[0]
    return _extension.kernel_ops(name).spatial_attention_fwd(q, k, v, scale)[0]


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
    name = _select("temporal_attention", q, k, v, backend, causal)
    if q.numel() == 0 or k.numel() == 0:
        return _empty_output(q, k, v)
    if name == "reference":
        return reference.temporal_attention(q, k, v, causal, scale)
    if name == "sdpa":
        return sdpa_views.temporal_attention(q, k, v, causal, scale)
    _check_kernel_support("temporal_attention", name, q)
    if name == "triton":
        return torch.ops.wmk.temporal_attention_triton_fwd(q, k, v, causal, scale)[0]
    return _extension.kernel_ops(name).temporal_attention_fwd(q, k, v, causal, scale)[0]
