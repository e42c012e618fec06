"""MaskGIT sampling ops: one sampling pass over the logits, re-masking on device and the mask
schedule. The full decode loop built on them is `wmkernels.ops.maskgit_decode`.

Semantics (shared by every backend) are in `wmkernels.reference.maskgit`. Random ops draw
their randomness from a `torch.Generator` (the device's default one when None); the fused
kernels take a 64-bit Philox key drawn from it on the device (no host sync, capturable in a
CUDA graph), so results are reproducible per generator state and backend. The samplers
differ per backend (reference: torch.multinomial; cpu: inverse CDF with one Philox uniform
per row; triton and cuda: Gumbel-max with one Philox draw per logit), so the same generator
state gives different tokens on different backends, from the same distribution.

Kernels: `torch.ops.wmk.maskgit_sample` / `maskgit_step` (C++: CPU, and CUDA when built) and
`torch.ops.wmk.maskgit_sample_triton` / `maskgit_step_triton`; fake implementations are
registered here so every path traces under torch.compile(fullgraph=True) (pass
generator=None there: dynamo cannot trace a Generator argument).
"""

from __future__ import annotations

import math

import torch

from wmkernels import _checks, _extension, routing
from wmkernels.reference import maskgit as reference

ORDERS = ("confidence", "random")
SCHEDULES = ("cosine", "linear", "square", "sqrt")

routing.register("maskgit_sample", ("reference", "cpu", "triton", "cuda"))
routing.register("maskgit_step", ("reference", "cpu", "triton", "cuda"))


def _sample_fake(logits, temperature, top_k, seed):
    R = logits.shape[0]
    return logits.new_empty(R, dtype=torch.long), logits.new_empty(R, dtype=torch.float32)


def _step_fake(logits, tokens, mask, num_masked, temperature, top_k, choice_temperature,
               random_order, seed):
    return torch.empty_like(tokens), torch.empty_like(mask)


if _extension.has_cpu():
    torch.library.register_fake("wmk::maskgit_sample")(_sample_fake)
    torch.library.register_fake("wmk::maskgit_step")(_step_fake)

if routing.HAS_TRITON:
    from wmkernels.triton import maskgit as _triton_maskgit

    @torch.library.custom_op("wmk::maskgit_sample_triton", mutates_args=())
    def _maskgit_sample_triton(logits: torch.Tensor, temperature: float, top_k: int,
                               seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _triton_maskgit.maskgit_sample(logits, temperature, top_k, seed)

    @torch.library.custom_op("wmk::maskgit_step_triton", mutates_args=())
    def _maskgit_step_triton(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                             num_masked: torch.Tensor, temperature: float, top_k: int,
                             choice_temperature: float, random_order: bool,
                             seed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _triton_maskgit.maskgit_step(logits, tokens, mask, num_masked, temperature,
                                            top_k, choice_temperature, random_order, seed)

    _maskgit_sample_triton.register_fake(_sample_fake)
    _maskgit_step_triton.register_fake(_step_fake)


def _seed(device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """The 64-bit Philox key of one call, drawn on the device from the generator: no host
    sync, and inside a CUDA graph each replay draws a fresh one (graph-safe RNG)."""
    return torch.randint(0, 2**63 - 1, (1,), dtype=torch.long, device=device,
                         generator=generator)


def _check_settings(V: int, temperature, top_k, generator, device) -> None:
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool):
        raise TypeError(f"temperature must be a float, got {type(temperature).__name__}")
    if not 0 <= temperature < math.inf:  # also rejects NaN
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if top_k is not None:
        if not isinstance(top_k, int) or isinstance(top_k, bool):
            raise TypeError(f"top_k must be an int or None, got {type(top_k).__name__}")
        if not 1 <= top_k <= V:
            raise ValueError(f"top_k must be in [1, V={V}], got {top_k}")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        if generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device} but logits are on {device}; "
                             "expected a generator of the logits' device")


def _check_rows(tokens: torch.Tensor, what: str, used: torch.Tensor | None = None) -> None:
    """On CPU, a row with no finite logit whose sample is used is an error; on CUDA the check
    would be a host sync, so the token stays -1 there (documented)."""
    if tokens.device.type != "cpu" or torch.compiler.is_compiling():
        return
    invalid = tokens < 0
    bad = (invalid if used is None else invalid & used).nonzero()
    if bad.shape[0]:
        row = tuple(bad[0].tolist())
        raise ValueError(f"{what}: logits row {row} has no finite value (all -inf or NaN), so "
                         "there is no distribution to sample from")


def maskgit_sample(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                   generator: torch.Generator | None = None, backend: str | None = None):
    """Sample one token per row of logits and return its confidence.

    Args:
        logits: (..., V) float16/bfloat16/float32/float64, any strides, V >= 1.
        temperature: >= 0. Tokens are drawn from softmax(logits / temperature); 0 = argmax
            (the first maximum).
        top_k: None, or 1 <= top_k <= V: sample only among the logits >= the top_k-th largest
            (ties at the threshold are kept).
        generator: a torch.Generator on the logits' device (None: the default one). It
            advances on every call. Not traceable by torch.compile: pass None there.
        backend: "reference" | "cpu" | "triton" | "cuda"; default: WMK_BACKEND or the best
            for the device.

    Returns:
        tokens: int64 (...). confidence: float32 (...) = softmax(logits)[token], untempered
        and over the full vocabulary (the MaskGIT/MUSE convention).

    NaN logits count as -inf and +inf as the largest finite value. A row with no finite
    logit raises ValueError on CPU tensors; on CUDA tensors (where checking would need a host
    sync) it gets token -1 and confidence 0. No gradient flows through sampling.

    Raises:
        TypeError: non-float logits, bad argument types. ValueError: V = 0, top_k or
        temperature out of range, generator on another device, a row without a finite logit.
    """
    _checks.tensor("logits", logits, min_ndim=1)
    V = logits.shape[-1]
    if V == 0:
        raise ValueError(f"logits must have a vocabulary of at least 1, got shape "
                         f"{tuple(logits.shape)}")
    _check_settings(V, temperature, top_k, generator, logits.device)
    name = routing.select("maskgit_sample", logits.device, backend)
    tokens, conf = _sample(name, logits.detach(), float(temperature), top_k, generator)
    _check_rows(tokens, "maskgit_sample")
    return tokens, conf


def _check_kernel_dtype(name: str, logits: torch.Tensor) -> None:
    if name in ("triton", "cuda", "cuda-sim") and logits.dtype == torch.float64:
        raise TypeError(f"the {name} maskgit kernels run float16/bfloat16/float32 logits; got "
                        "float64 (use backend='reference' or 'cpu')")
    _checks.kernel_dtype(name, "maskgit kernels", "logits", logits)


def _sample(name, logits, temperature, top_k, generator):
    if name == "reference":
        return reference.maskgit_sample(logits, temperature, top_k, generator)
    _check_kernel_dtype(name, logits)
    shape, V = logits.shape[:-1], logits.shape[-1]
    flat = logits.reshape(-1, V)
    seed = _seed(logits.device, generator)
    ops = _extension.kernel_ops(name)
    op = torch.ops.wmk.maskgit_sample_triton if name == "triton" else ops.maskgit_sample
    tokens, conf = op(flat, temperature, top_k or 0, seed)
    return tokens.view(shape), conf.view(shape)


def _step(name, logits, tokens, mask, k, temperature, top_k, choice_temperature, order,
          generator):
    if name == "reference":
        return reference.maskgit_step(logits, tokens, mask, k, temperature, top_k,
                                      choice_temperature, order, generator)
    _check_kernel_dtype(name, logits)
    seed = _seed(logits.device, generator)
    ops = _extension.kernel_ops(name)
    op = torch.ops.wmk.maskgit_step_triton if name == "triton" else ops.maskgit_step
    return op(logits, tokens, mask, k, temperature, top_k or 0, choice_temperature,
              order == "random", seed)


def _num_masked_tensor(num_masked, B: int, N: int, device: torch.device) -> torch.Tensor:
    if isinstance(num_masked, bool) or not isinstance(num_masked, (int, torch.Tensor)):
        raise TypeError(f"num_masked must be an int or an int64 tensor of shape ({B},), got "
                        f"{type(num_masked).__name__}")
    if isinstance(num_masked, int):
        if not 0 <= num_masked <= N:
            raise ValueError(f"num_masked must be in [0, N={N}], got {num_masked}")
        return torch.full((B,), num_masked, dtype=torch.long, device=device)
    _checks.tensor("num_masked", num_masked, dtypes=(torch.int64,))
    if num_masked.device != device:
        raise ValueError(f"num_masked is on {num_masked.device} but logits are on {device}; "
                         "expected the same device")
    if num_masked.shape not in ((B,), ()):
        raise ValueError(f"num_masked must have shape ({B},) or (), got "
                         f"{tuple(num_masked.shape)}")
    if device.type == "cpu" and not torch.compiler.is_compiling():
        bad = ((num_masked < 0) | (num_masked > N)).nonzero()
        if bad.shape[0]:
            i = bad[0].tolist()
            raise ValueError(f"num_masked values must be in [0, N={N}], got "
                             f"{num_masked.reshape(-1)[i[0] if i else 0].item()} "
                             f"at {tuple(i)}")
    # on CUDA the values are not read back (no host sync); out-of-range ones are clamped
    return num_masked.expand(B).clamp(0, N).contiguous()


def _check_step(logits, tokens, mask):
    _checks.tensor("logits", logits, ndim=3)
    _checks.tensor("tokens", tokens, dtypes=(torch.int64,), ndim=2)
    _checks.tensor("mask", mask, dtypes=(torch.bool,), ndim=2)
    _checks.same_device(logits=logits, tokens=tokens, mask=mask)
    B, N, V = logits.shape
    if tokens.shape != (B, N) or mask.shape != (B, N):
        raise ValueError(f"tokens and mask must be (B, N) = ({B}, {N}) to match logits "
                         f"{tuple(logits.shape)}; got tokens {tuple(tokens.shape)} and mask "
                         f"{tuple(mask.shape)}")
    if V == 0:
        raise ValueError(f"logits must have a vocabulary of at least 1, got shape "
                         f"{tuple(logits.shape)}")


def maskgit_step(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                 num_masked: int | torch.Tensor, *, temperature: float = 1.0,
                 top_k: int | None = None, choice_temperature: float = 0.0,
                 order: str = "confidence", generator: torch.Generator | None = None,
                 backend: str | None = None):
    """One MaskGIT decoding step: sample the unknown positions, keep the least confident
    `num_masked` of them masked, reveal the rest.

    Args:
        logits: (B, N, V) float16/bfloat16/float32/float64, any strides. Rows of known
            positions are not used (they may hold anything, NaN included).
        tokens: (B, N) int64, the current tokens (masked positions hold any placeholder).
        mask: (B, N) bool, True = still unknown.
        num_masked: int in [0, N], or int64 tensor (B,) (or 0-d): how many positions stay
            masked after this step; exactly min(num_masked[b], #unknown in row b) do.
        temperature, top_k: sampling settings, as in `maskgit_sample`.
        choice_temperature: >= 0, scale of the Gumbel noise added to log(confidence) before
            choosing which positions stay masked (MaskGIT anneals it over the steps).
        order: "confidence" (score = log(confidence) + choice_temperature * Gumbel) or
            "random" (score = Gumbel: a uniformly random order).
        generator, backend: as in `maskgit_sample`.

    Returns:
        (tokens, mask), new tensors: per row, the unknown positions with the lowest scores
        (ties: lower index) stay masked with their input token; the other unknown positions
        take their sample; known positions keep their token and stay known.

    No host synchronization on CUDA (capturable in a CUDA graph): there, num_masked tensor
    values outside [0, N] are clamped, and an unknown position revealed from a logits row
    without a finite value gets token -1 (on CPU both raise ValueError).

    Raises:
        TypeError: dtypes. ValueError: shapes, devices, ranges, order.
    """
    _check_step(logits, tokens, mask)
    B, N, V = logits.shape
    _check_settings(V, temperature, top_k, generator, logits.device)
    _checks.number("choice_temperature", choice_temperature, low=0.0)
    _checks.choice("order", order, ORDERS)
    k = _num_masked_tensor(num_masked, B, N, logits.device)
    name = routing.select("maskgit_step", logits.device, backend)
    out_tokens, out_mask = _step(name, logits.detach(), tokens, mask, k, float(temperature),
                                 top_k, float(choice_temperature), order, generator)
    _check_rows(out_tokens, "maskgit_step", mask & ~out_mask)
    return out_tokens, out_mask


def maskgit_schedule(step: int, total_steps: int, num_initial: int | torch.Tensor,
                     schedule: str = "cosine") -> int | torch.Tensor:
    """How many positions stay masked after `step` (0-based) of `total_steps`.

    With r = (step + 1) / total_steps and n0 = num_initial:
    cosine floor(n0 cos(pi/2 r)) (MaskGIT), linear floor(n0 (1 - r)),
    square floor(n0 (1 - r^2)), sqrt floor(n0 (1 - sqrt(r))). Always 0 at the last step.

    Args:
        step: 0 <= step < total_steps. total_steps: >= 1.
        num_initial: int >= 0, or an int64 tensor (e.g. the per-row unknown counts (B,)).
        schedule: "cosine" | "linear" | "square" | "sqrt".

    Returns:
        an int for an int num_initial, else an int64 tensor like num_initial (computed on
        its device, no host sync).
    """
    for arg, v in (("step", step), ("total_steps", total_steps)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{arg} must be an int, got {type(v).__name__}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= step < total_steps:
        raise ValueError(f"step must be in [0, total_steps={total_steps}), got {step}")
    _checks.choice("schedule", schedule, SCHEDULES)
    r = (step + 1) / total_steps
    ratio = {"cosine": math.cos(math.pi / 2 * r), "linear": 1.0 - r,
             "square": 1.0 - r * r, "sqrt": 1.0 - math.sqrt(r)}[schedule]
    if step == total_steps - 1:
        ratio = 0.0
    if isinstance(num_initial, torch.Tensor):
        _checks.tensor("num_initial", num_initial, dtypes=(torch.int64, torch.int32))
        if (num_initial.device.type == "cpu" and num_initial.numel()
                and not torch.compiler.is_compiling() and int(num_initial.min()) < 0):
            raise ValueError(f"num_initial values must be >= 0, got {int(num_initial.min())}")
        return torch.floor(num_initial.double() * ratio).to(num_initial.dtype)
    if isinstance(num_initial, bool) or not isinstance(num_initial, int):
        raise TypeError(f"num_initial must be an int or an int tensor, got "
                        f"{type(num_initial).__name__}")
    if num_initial < 0:
        raise ValueError(f"num_initial must be >= 0, got {num_initial}")
    return math.floor(num_initial * ratio)
