"""MaskGIT's full decode loop: `steps` calls of the model and `maskgit_step`, optionally
captured once in a CUDA graph and replayed (a bounded cache of captured loops).

The loop runs on device tensors only (no host sync), which is what makes it capturable.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch

from wmkernels import _checks
from wmkernels.ops import maskgit_schedules
from wmkernels.ops.maskgit import ORDERS, SCHEDULES, maskgit_step


def _decode_loop(logits_fn, tokens, mask, steps, schedule, temperature, top_k,
                 choice_temperature, order, generator, backend, convention):
    """The MaskGIT loop on device tensors only (no host sync), so it can be captured."""
    n0 = mask.sum(-1)
    for step in range(steps):
        logits = logits_fn(tokens, mask)
        k = maskgit_schedules.kept_masked(convention, step, steps, n0, mask.sum(-1), schedule)
        t, ct, tk = maskgit_schedules.step_settings(convention, step, steps, temperature,
                                                    choice_temperature, top_k, logits.shape[-1])
        tokens, mask = maskgit_step(logits, tokens, mask, k, temperature=t, top_k=tk,
                                    choice_temperature=ct, order=order, generator=generator,
                                    backend=backend)
    return tokens, mask


class _CapturedDecode:
    """A decode loop captured in a CUDA graph with its static input/output buffers."""

    def __init__(self, run, tokens, mask, generator):
        self.tokens, self.mask = tokens.clone(), mask.clone()
        self.graph = torch.cuda.CUDAGraph()
        if generator is not None:
            # a non-default generator advances inside a graph only once registered with it
            register = getattr(self.graph, "register_generator_state", None)
            if register is None:
                raise RuntimeError("this torch cannot capture a non-default CUDA generator in "
                                   "a graph; pass generator=None or cuda_graph=False")
            register(generator)
        with torch.cuda.graph(self.graph):
            self.out_tokens, _ = run(self.tokens, self.mask)

    def __call__(self, tokens, mask):
        self.tokens.copy_(tokens)
        self.mask.copy_(mask)
        self.graph.replay()
        return self.out_tokens.clone()


# (logits_fn, shapes, settings) -> captured loop; small and bounded (graphs hold memory)
_GRAPHS: OrderedDict = OrderedDict()
_MAX_GRAPHS = 4


def maskgit_decode(logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   tokens: torch.Tensor, mask: torch.Tensor, *, steps: int = 25,
                   schedule: str = "cosine", temperature: float = 1.0,
                   top_k: int | None = None, choice_temperature: float | None = None,
                   order: str = "confidence", generator: torch.Generator | None = None,
                   cuda_graph: bool = False, backend: str | None = None,
                   convention: str = "maskgit") -> torch.Tensor:
    """Full MaskGIT decoding: `steps` calls of `logits_fn` and `maskgit_step`.

    `convention` picks the loop of a known implementation (`wmkernels.ops.maskgit_schedules`):
    "maskgit" (google-research/maskgit): at step s (0-based) the number kept masked is
    `maskgit_schedule(s, steps, n0, schedule)` with n0 the per-row unknown count at the
    start, clamped (as MaskGIT does) to [1, unknown - 1] before the last step, and 0 at the
    last step; fixed temperature; the choice temperature (default 4.5) is annealed as
    choice_temperature * (1 - (s + 1) / steps). "muse" (muse-maskgit-pytorch's `generate`):
    counts from linspace(0, 1, steps) including 1 with int() truncation and at least one,
    temperature annealed to 0, top_k default ceil(0.1 V), no confidence noise by default.

    Args:
        logits_fn: (tokens (B, N) int64, mask (B, N) bool) -> logits (B, N, V).
        tokens: (B, N) int64 with any placeholder at masked positions. mask: (B, N) bool.
        steps: >= 1. schedule, temperature, top_k, choice_temperature, order, generator,
            backend: as in `maskgit_schedule` / `maskgit_step`; top_k and
            choice_temperature None: the convention's default.
        convention: "maskgit" | "muse".
        cuda_graph: on CUDA, capture the whole loop (logits_fn included, which must then be
            capturable) in a CUDA graph on the first call and replay it on later calls with
            the same logits_fn, shapes and settings. A replay re-reads only `tokens` and
            `mask`: other tensors logits_fn uses must live at fixed addresses (parameters,
            static buffers updated in place). Ignored on CPU.

    Returns:
        tokens (B, N) int64 with every position known.
    """
    if not callable(logits_fn):
        raise TypeError(f"logits_fn must be callable, got {type(logits_fn).__name__}")
    _checks.tensor("tokens", tokens, dtypes=(torch.int64,), ndim=2)
    _checks.tensor("mask", mask, dtypes=(torch.bool,), ndim=2)
    _checks.same_device(tokens=tokens, mask=mask)
    if tokens.shape != mask.shape:
        raise ValueError(f"tokens and mask must have the same shape, got "
                         f"{tuple(tokens.shape)} and {tuple(mask.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    _checks.choice("schedule", schedule, SCHEDULES)
    _checks.choice("order", order, ORDERS)
    _checks.choice("convention", convention, maskgit_schedules.CONVENTIONS)
    args = (steps, schedule, temperature, top_k, choice_temperature, order, generator, backend,
            convention)
    run = lambda t, m: _decode_loop(logits_fn, t, m, *args)
    if not (cuda_graph and tokens.is_cuda):
        return run(tokens, mask)[0]
    key = (logits_fn, tuple(tokens.shape), tokens.device, *args)
    captured = _GRAPHS.get(key)
    if captured is None:
        # one eager run first: lazy initializations (kernel compilation, cuBLAS workspaces)
        # must not happen during capture
        side = torch.cuda.Stream(tokens.device)
        side.wait_stream(torch.cuda.current_stream(tokens.device))
        with torch.cuda.stream(side):
            run(tokens.clone(), mask.clone())
        torch.cuda.current_stream(tokens.device).wait_stream(side)
        captured = _GRAPHS[key] = _CapturedDecode(run, tokens, mask, generator)
        while len(_GRAPHS) > _MAX_GRAPHS:
            _GRAPHS.popitem(last=False)
    _GRAPHS.move_to_end(key)
    return captured(tokens, mask)
