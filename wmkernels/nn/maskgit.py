"""MaskGITSampler: the MaskGIT decoding settings of a model in one module."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from wmkernels import _checks
from wmkernels.ops.maskgit import ORDERS, SCHEDULES, maskgit_sample, maskgit_step
from wmkernels.ops.maskgit_decode import maskgit_decode
from wmkernels.ops.maskgit_schedules import CONVENTIONS


class MaskGITSampler(nn.Module):
    """MaskGIT iterative decoding with fixed settings (no parameters, nothing to train).

    Args:
        steps: decoding steps per call (Genie: 25).
        schedule: "cosine" | "linear" | "square" | "sqrt" (see `wmkernels.maskgit_schedule`).
        temperature: sampling temperature >= 0 (Genie: 2; 0 = argmax).
        top_k: None or the number of largest logits to sample from.
        choice_temperature: Gumbel noise scale on the confidences, annealed to 0 over the
            steps; None: the convention's (MaskGIT: 4.5, muse: 0).
        order: "confidence" (MaskGIT) or "random" (reveal in a random order).
        cuda_graph: capture the decode loop in a CUDA graph and replay it (CUDA only; see
            `wmkernels.maskgit_decode` for what logits_fn must satisfy).
        backend: passed to the ops (None = automatic).
        convention: "maskgit" | "muse": whose decode loop `forward` runs (see
            `wmkernels.maskgit_decode`).

    forward(logits_fn, tokens, mask, generator=None) -> tokens: the full decode, with
    `logits_fn(tokens (B, N), mask (B, N)) -> logits (B, N, V)`. `step` and `sample` run one
    step / one sampling pass with the same settings.
    """

    def __init__(self, *, steps: int = 25, schedule: str = "cosine", temperature: float = 1.0,
                 top_k: int | None = None, choice_temperature: float | None = None,
                 order: str = "confidence", cuda_graph: bool = False,
                 backend: str | None = None, convention: str = "maskgit"):
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1, got {steps!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        _checks.number("temperature", temperature, low=0.0)
        _checks.choice("convention", convention, CONVENTIONS)
        if choice_temperature is None:
            choice_temperature = 0.0 if convention == "muse" else 4.5
        _checks.number("choice_temperature", choice_temperature, low=0.0)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        self.steps, self.schedule, self.temperature, self.top_k = steps, schedule, \
            temperature, top_k
        self.choice_temperature, self.order = choice_temperature, order
        self.cuda_graph, self.backend, self.convention = cuda_graph, backend, convention

    def forward(self, logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                tokens: torch.Tensor, mask: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return maskgit_decode(logits_fn, tokens, mask, steps=self.steps,
                              schedule=self.schedule, temperature=self.temperature,
                              top_k=self.top_k, choice_temperature=self.choice_temperature,
                              order=self.order, generator=generator,
                              cuda_graph=self.cuda_graph, backend=self.backend,
                              convention=self.convention)

    def step(self, logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
             num_masked: int | torch.Tensor, *, choice_temperature: float | None = None,
             generator: torch.Generator | None = None):
        """One `wmkernels.maskgit_step` with these settings -> (tokens, mask)."""
        ct = self.choice_temperature if choice_temperature is None else choice_temperature
        return maskgit_step(logits, tokens, mask, num_masked, temperature=self.temperature,
                            top_k=self.top_k, choice_temperature=ct, order=self.order,
                            generator=generator, backend=self.backend)

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None):
        """`wmkernels.maskgit_sample` with these settings -> (tokens, confidence)."""
        return maskgit_sample(logits, temperature=self.temperature, top_k=self.top_k,
                              generator=generator, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"steps={self.steps}, schedule={self.schedule!r}, "
                f"temperature={self.temperature}, top_k={self.top_k}, "
                f"choice_temperature={self.choice_temperature}, order={self.order!r}, "
                f"cuda_graph={self.cuda_graph}, convention={self.convention!r}")
