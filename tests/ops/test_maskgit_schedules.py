"""`maskgit_decode(convention=...)` against faithful eager ports of the loops it reproduces:
google-research/maskgit's `parallel_decode` and muse-maskgit-pytorch's `MaskGit.generate`
(the transformer replaced by a fixed logits function). Count sequence per step always;
exact tokens where the sampling is deterministic (temperature 0, no choice noise)."""

import math

import pytest
import torch

import wmkernels
from wmkernels.ops import maskgit_schedules

B, N, V = 3, 16, 11
MASK_ID = V


def _model():
    """A logits function of the visible tokens: logits[b, n] = table[n, id] with id the
    token at (b, n), or MASK_ID where masked. Returns (ids_fn for the ports, logits_fn for
    maskgit_decode, list recording the masked count per call)."""
    table = torch.randn(N, V + 1, V) * 3
    seen = []

    def ids_fn(ids):
        seen.append((ids == MASK_ID).sum(-1).tolist())
        return table[torch.arange(N), ids]

    def logits_fn(tokens, mask):
        return ids_fn(torch.where(mask, MASK_ID, tokens))

    return ids_fn, logits_fn, seen


def _log(t, eps=1e-20):
    return torch.log(t.clamp(min=eps))


def muse_generate(ids_fn, steps, temperature, topk_filter_thres=0.9):
    """muse-maskgit-pytorch 0.3.5 `MaskGit.generate` (no text conditioning, no token
    critic, cosine noise schedule), line for line."""
    ids = torch.full((B, N), MASK_ID, dtype=torch.long)
    scores = torch.zeros(B, N)
    for timestep, steps_until_x0 in zip(torch.linspace(0, 1, steps), reversed(range(steps)),
                                        strict=True):
        rand_mask_prob = torch.cos(timestep * math.pi * 0.5)
        num_token_masked = max(int((rand_mask_prob * N).item()), 1)
        masked_indices = scores.topk(num_token_masked, dim=-1).indices
        ids = ids.scatter(1, masked_indices, MASK_ID)
        logits = ids_fn(ids)
        k = math.ceil((1 - topk_filter_thres) * logits.shape[-1])
        val, ind = logits.topk(k, dim=-1)
        filtered = torch.full_like(logits, float("-inf")).scatter_(2, ind, val)
        t = temperature * (steps_until_x0 / steps)
        noise = -_log(-_log(torch.zeros_like(filtered).uniform_(0, 1)))
        pred_ids = ((filtered / max(t, 1e-10)) + noise).argmax(dim=-1)
        is_mask = ids == MASK_ID
        ids = torch.where(is_mask, pred_ids, ids)
        scores = 1 - logits.softmax(dim=-1).gather(2, pred_ids[..., None])[..., 0]
        scores = scores.masked_fill(~is_mask, -1e5)
    return ids


def google_parallel_decode(ids_fn, steps, choice_temperature, sample=None):
    """google-research/maskgit `libml/parallel_decode.decode` (cosine schedule) in torch.
    `sample` replaces `jax.random.categorical` (None: the categorical draw)."""
    cur = torch.full((B, N), MASK_ID, dtype=torch.long)
    unknown_at_start = (cur == MASK_ID).sum(-1)
    final = None
    for step in range(steps):
        logits = ids_fn(cur)
        if sample is None:
            sampled = torch.distributions.Categorical(logits=logits).sample()
        else:
            sampled = sample(logits)
        unknown_map = cur == MASK_ID
        sampled = torch.where(unknown_map, sampled, cur)
        ratio = 1.0 * (step + 1) / steps
        mask_ratio = math.cos(math.pi / 2.0 * ratio)
        final = sampled
        probs = logits.softmax(-1)
        selected = probs.gather(-1, sampled[..., None])[..., 0]
        selected = torch.where(unknown_map, selected, torch.inf)
        mask_len = torch.floor(unknown_at_start * mask_ratio)[:, None]
        mask_len = torch.maximum(torch.ones_like(mask_len), torch.minimum(
            unknown_map.sum(-1, keepdim=True) - 1, mask_len)).long()
        gumbel = -torch.log(-torch.log(torch.rand_like(selected)))
        confidence = torch.log(selected) + choice_temperature * (1.0 - ratio) * gumbel
        cut_off = confidence.sort(-1).values.gather(-1, mask_len)
        cur = torch.where(confidence < cut_off, MASK_ID, sampled)
    return final


def _decode(logits_fn, steps, **kwargs):
    tokens = torch.zeros(B, N, dtype=torch.long)
    mask = torch.ones(B, N, dtype=torch.bool)
    return wmkernels.maskgit_decode(logits_fn, tokens, mask, steps=steps, **kwargs)


@pytest.mark.parametrize("steps", [1, 2, 5, 12])
@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_muse_convention_matches_muse_generate(steps, temperature):
    ids_fn, logits_fn, seen = _model()
    ref = muse_generate(ids_fn, steps, temperature)
    ref_counts = seen[:]
    seen.clear()
    out = _decode(logits_fn, steps, convention="muse", temperature=temperature)
    assert seen == ref_counts
    if temperature == 0.0:
        assert torch.equal(out, ref)


def test_muse_counts_by_hand():
    # linspace(0, 1, 5) = 0, .25, .5, .75, 1; int(16 cos(pi t / 2)) = 16, 14, 11, 6, 0 -> 1
    _, logits_fn, seen = _model()
    _decode(logits_fn, 5, convention="muse")
    assert seen == [[n] * B for n in (16, 14, 11, 6, 1)]


def test_muse_top_k_filter_and_annealed_temperature():
    assert maskgit_schedules.muse_top_k(1024) == 103
    settings = [maskgit_schedules.step_settings("muse", s, 4, 2.0, None, None, 1024)
                for s in range(4)]
    assert settings == [(1.5, 0.0, 103), (1.0, 0.0, 103), (0.5, 0.0, 103), (0.0, 0.0, 103)]


@pytest.mark.parametrize("steps", [1, 3, 8, 12])
def test_maskgit_convention_matches_google_parallel_decode(steps):
    ids_fn, logits_fn, seen = _model()
    ref = google_parallel_decode(ids_fn, steps, 0.0, sample=lambda lg: lg.argmax(-1))
    ref_counts = seen[:]
    seen.clear()
    out = _decode(logits_fn, steps, temperature=0.0, choice_temperature=0.0)
    assert seen == ref_counts
    assert torch.equal(out, ref)
    # with sampling and choice noise the tokens are random, the count sequence is not
    seen.clear()
    google_parallel_decode(ids_fn, steps, 4.5)
    ref_counts = seen[:]
    seen.clear()
    _decode(logits_fn, steps, choice_temperature=4.5)
    assert seen == ref_counts


def test_unknown_convention_is_rejected():
    _, logits_fn, _ = _model()
    with pytest.raises(ValueError, match="convention"):
        _decode(logits_fn, 3, convention="google")


def test_sampler_runs_the_muse_convention():
    ids_fn, logits_fn, seen = _model()
    ref = muse_generate(ids_fn, 5, 0.0)
    seen.clear()
    sampler = wmkernels.nn.MaskGITSampler(steps=5, temperature=0.0, convention="muse")
    assert sampler.choice_temperature == 0.0  # muse has no confidence noise
    out = sampler(logits_fn, torch.zeros(B, N, dtype=torch.long),
                  torch.ones(B, N, dtype=torch.bool))
    assert torch.equal(out, ref)
    assert seen == [[n] * B for n in (16, 14, 11, 6, 1)]
    assert wmkernels.nn.MaskGITSampler().choice_temperature == 4.5
    with pytest.raises(ValueError, match="convention"):
        wmkernels.nn.MaskGITSampler(convention="google")
