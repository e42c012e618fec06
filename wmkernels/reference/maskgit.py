"""MaskGIT sampling written the way MaskGIT/MUSE/Genie repos write it today: a tempered,
top-k filtered softmax materialized over (rows, V), `torch.multinomial`, a gather for the
confidence, Gumbel noise on the log-confidences, a full sort of the scores per row and a
scatter back to positions.

These functions define the semantics every backend matches (the random streams differ per
backend; the distributions do not):

Sampling, per row of logits x (V,):
- NaN logits count as -inf (never sampled, no probability mass); +inf counts as the largest
  finite float, so +inf tokens share all the mass.
- top_k keeps the logits >= the k-th largest value (ties at the threshold are all kept).
- temperature > 0: token ~ softmax(x_topk / temperature). temperature == 0: the first
  argmax of x.
- confidence = softmax(x)[token], untempered and over the full vocabulary (the MaskGIT/MUSE
  convention: the score measures the model's belief, not the sampler's).
- A row with no finite logit has no distribution: it gets token -1 and confidence 0 (the
  public functions turn that into a ValueError on CPU tensors).

Re-masking, per row b of a step:
- unknown positions (mask True) get a sample; score = log(confidence) + choice_temperature *
  g (order "confidence") or score = g (order "random"), g ~ Gumbel(0, 1) in float32;
  known positions score +inf, so they are never re-masked.
- the k = min(num_masked[b], #unknown) positions with the lowest (score, index) stay masked
  and keep their input token; every other unknown position takes its sample.
"""

from __future__ import annotations

import torch


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def clean_logits(logits: torch.Tensor) -> torch.Tensor:
    """Logits in the compute dtype with the NaN/inf policy applied (NaN -> -inf, +inf -> max)."""
    x = logits.to(_compute_dtype(logits))
    return x.nan_to_num(nan=float("-inf"), posinf=torch.finfo(x.dtype).max,
                        neginf=float("-inf"))


def maskgit_sample(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                   generator: torch.Generator | None = None):
    """(..., V) logits -> (tokens int64 (...), confidence float32 (...)); see module docstring."""
    shape, V = logits.shape[:-1], logits.shape[-1]
    x = clean_logits(logits.reshape(-1, V))
    tokens = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    conf = torch.empty(x.shape[0], dtype=torch.float32, device=x.device)
    if x.shape[0] == 0:
        return tokens.view(shape), conf.view(shape)
    valid = x.amax(-1) > float("-inf")
    # give rows without a distribution a harmless one, and mark them afterwards
    x = torch.where(valid[:, None], x, torch.zeros_like(x))
    if temperature == 0:
        tokens = x.argmax(-1)
    else:
        t = x
        if top_k is not None and top_k < V:
            kth = torch.topk(t, top_k, dim=-1).values[:, -1:]
            t = t.masked_fill(t < kth, float("-inf"))
        # shifted by the row maximum first, so that a tiny temperature cannot overflow x / T
        # to +inf (which would spread the mass over every positive logit): the maximum
        # becomes 0 / T = 0 (NaN when T underflows to 0 in the compute dtype) and the others
        # go to -inf, i.e. the argmax, as the temperature goes to 0
        t = ((t - t.amax(-1, keepdim=True)) / temperature).nan_to_num(
            nan=0.0, neginf=float("-inf"))
        probs = torch.softmax(t, dim=-1)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    conf = torch.softmax(x, dim=-1).gather(-1, tokens[:, None]).squeeze(-1).float()
    tokens = torch.where(valid, tokens, torch.full_like(tokens, -1))
    conf = torch.where(valid, conf, torch.zeros_like(conf))
    return tokens.view(shape), conf.view(shape)


def gumbel(shape, device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise in float32, from uniforms kept inside (0, 1)."""
    u = torch.rand(shape, dtype=torch.float32, device=device, generator=generator)
    tiny = torch.finfo(torch.float32).tiny
    u = u.clamp(tiny, 1.0 - torch.finfo(torch.float32).eps / 2)
    return -torch.log(-torch.log(u))


def remask(scores: torch.Tensor, mask: torch.Tensor, num_masked: torch.Tensor) -> torch.Tensor:
    """The new mask: per row, the num_masked[b] lowest (score, index) unknown positions.

    scores (B, N) float, mask (B, N) bool, num_masked (B,) int64 -> bool (B, N). The sort is
    stable, so equal scores keep position order and ties go to the lower index.
    """
    scores = scores.masked_fill(~mask, float("inf"))
    order = torch.sort(scores, dim=-1, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    k = torch.minimum(num_masked, mask.sum(-1))
    return rank < k[:, None]


def maskgit_step(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                 num_masked: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                 choice_temperature: float = 0.0, order: str = "confidence",
                 generator: torch.Generator | None = None):
    """One MaskGIT step: logits (B, N, V), tokens (B, N) int64, mask (B, N) bool, num_masked
    (B,) int64 -> (tokens, mask); see module docstring."""
    sampled, conf = maskgit_sample(logits, temperature, top_k, generator)
    g = gumbel(mask.shape, mask.device, generator)
    if order == "random":
        scores = g
    else:
        scores = torch.log(conf) + choice_temperature * g
    new_mask = remask(scores, mask, num_masked)
    take = mask & ~new_mask
    return torch.where(take, sampled, tokens), new_mask
