"""Decode conventions of the known MaskGIT implementations, selected by name in
`maskgit_decode(convention=...)`: per step, how many positions stay masked, the sampling
temperature, the choice (confidence-noise) temperature and the vocabulary top-k.

- "maskgit": google-research/maskgit `parallel_decode`. After step s of T, with r = (s+1)/T,
  floor(n0 * schedule(r)) stay masked, clamped to [1, unknown - 1] before the last step;
  fixed sampling temperature; Gumbel noise on the confidences with scale
  choice_temperature * (1 - r) (MaskGIT: 4.5); no vocabulary filter by default.
- "muse": muse-maskgit-pytorch `MaskGit.generate`. Times t = linspace(0, 1, T) include 1;
  step s re-masks max(int(n0 * schedule(t_s)), 1) before predicting (int() truncation of a
  float32 product, at least one), which is predict-then-keep-masked with the count of step
  s + 1 (and 0 after the last step); sampling temperature annealed as
  temperature * (T - 1 - s) / T (0 = argmax at the last step); logits filtered to the
  top ceil(0.1 V) (its topk_filter_thres = 0.9); no confidence noise.

Both compute on device tensors only (no host sync), so the loop stays capturable.
"""

from __future__ import annotations

import math

import torch

from wmkernels.ops.maskgit import maskgit_schedule

CONVENTIONS = ("maskgit", "muse")

# mask ratio at time t in [0, 1] (1 at t = 0, 0 at t = 1), as float32 torch ops so the muse
# counts truncate exactly as that library's float32 arithmetic does
_RATIO = {
    "cosine": lambda t: torch.cos(t * math.pi * 0.5),
    "linear": lambda t: 1.0 - t,
    "square": lambda t: 1.0 - t * t,
    "sqrt": lambda t: 1.0 - torch.sqrt(t),
}


def muse_top_k(V: int) -> int:
    """muse-maskgit-pytorch's default vocabulary filter: the top ceil((1 - 0.9) V) logits."""
    return math.ceil((1 - 0.9) * V)


def kept_masked(convention: str, step: int, steps: int, n0: torch.Tensor,
                unknown: torch.Tensor, schedule: str) -> torch.Tensor:
    """Per-row count left masked after `step` (int64 like n0), from the initial unknown
    counts `n0` and the current ones `unknown`."""
    if step == steps - 1:
        return torch.zeros_like(unknown)
    if convention == "muse":
        t = torch.linspace(0, 1, steps)[step + 1]
        k = (_RATIO[schedule](t).to(n0.device) * n0.float()).long().clamp(min=1)
        return torch.minimum(k, unknown)
    k = maskgit_schedule(step, steps, n0, schedule)
    # MaskGIT: reveal at least one and keep at least one masked before the last step
    k = torch.clamp(torch.minimum(unknown - 1, k), min=1)
    return torch.minimum(k, unknown)


def step_settings(convention: str, step: int, steps: int, temperature: float,
                  choice_temperature: float | None, top_k: int | None, V: int):
    """-> (temperature, choice_temperature, top_k) for `step`; None for choice_temperature
    or top_k means the convention's default."""
    anneal = 1.0 - (step + 1) / steps
    if convention == "muse":
        ct = 0.0 if choice_temperature is None else choice_temperature
        return (temperature * (steps - 1 - step) / steps, ct * anneal,
                muse_top_k(V) if top_k is None else top_k)
    ct = 4.5 if choice_temperature is None else choice_temperature
    return temperature, ct * anneal, top_k
