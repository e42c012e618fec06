"""MaskGIT sampling: distributions (chi-square against exact probabilities), determinism,
re-masking counts and choice, schedule, decode loop, bad input, compile and opcheck, for
every backend that can run here."""

from __future__ import annotations

import math

import pytest
import torch
from checks import backend_params, gpu_only
from scipy import stats

import wmkernels
from wmkernels._extension import kernel_ops
from wmkernels.bench import baselines
from wmkernels.reference import maskgit as reference

SAMPLE = backend_params("maskgit_sample")
STEP = backend_params("maskgit_step")
P_MIN = 1e-3


def _dtypes(device, backend):
    if backend == "triton" and device == "cpu":
        return [torch.float32, torch.float16]  # the interpreter cannot do bf16
    low = [torch.float32, torch.float16, torch.bfloat16]
    return low if backend in ("triton", "cuda", "cuda-sim") else low + [torch.float64]


def _gen(device, seed=0):
    return torch.Generator(device).manual_seed(seed)


def _exact_probs(row: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    x = row.double()
    if top_k is not None:
        kth = torch.topk(x, top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    return torch.softmax(x / temperature, -1)


def _chi2_pvalue(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(tokens.cpu(), minlength=probs.numel()).double()
    support = probs > 0
    assert counts[~support].sum() == 0, "sampled a token of probability 0"
    expected = probs[support] * tokens.numel()
    return stats.chisquare(counts[support].numpy(), expected.numpy()).pvalue


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("device,backend", SAMPLE)
@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (2.0, None), (0.5, 5), (1.0, 1)])
def test_sample_distribution(device, backend, temperature, top_k):
    V, R = 13, 3000
    row = torch.randn(V) * 1.5
    logits = row.to(device).expand(R, V)  # stride-0 rows: one distribution, R samples
    tokens, conf = wmkernels.maskgit_sample(logits, temperature=temperature, top_k=top_k,
                                            generator=_gen(device), backend=backend)
    assert tokens.dtype == torch.int64 and conf.dtype == torch.float32
    probs = _exact_probs(row, temperature, top_k)
    if top_k == 1:
        assert (tokens.cpu() == row.argmax()).all()
    else:
        assert _chi2_pvalue(tokens, probs) > P_MIN
    exact_conf = torch.softmax(row.double(), -1)[tokens.cpu()]
    torch.testing.assert_close(conf.cpu().double(), exact_conf, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_mixed_rows_distribution(device, backend):
    """Different rows, each sampled many times through a (rows, repeats) batch."""
    V, rows, reps = 37, 3, 1500
    base = torch.randn(rows, V) * 2
    logits = base.to(device)[:, None, :].expand(rows, reps, V)
    tokens, _ = wmkernels.maskgit_sample(logits, temperature=1.5, top_k=10,
                                         generator=_gen(device, 3), backend=backend)
    assert tokens.shape == (rows, reps)
    for r in range(rows):
        assert _chi2_pvalue(tokens[r], _exact_probs(base[r], 1.5, 10)) > P_MIN


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_small_top_k_of_large_vocabulary(device, backend):
    """top_k much smaller than V (the CPU kernel's heap path), and ties at the threshold."""
    V, R, k = 300, 800, 8
    row = torch.randn(V) * 0.5
    top = torch.randperm(V)[:k]
    row[top] = 3.0 + torch.randn(k) * 0.5
    tokens, _ = wmkernels.maskgit_sample(row.to(device).expand(R, V), top_k=k,
                                         generator=_gen(device, 5), backend=backend)
    assert _chi2_pvalue(tokens, _exact_probs(row, 1.0, k)) > P_MIN
    tied = torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0, 0.0], device=device).expand(400, 6)
    tokens, _ = wmkernels.maskgit_sample(tied, top_k=2, generator=_gen(device, 6),
                                         backend=backend)
    counts = torch.bincount(tokens.cpu(), minlength=6)
    assert counts[4:].sum() == 0 and (counts[1:4] > 0).all(), "ties at the k-th value are kept"


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_argmax_and_confidence(device, backend):
    for dtype in _dtypes(device, backend):
        logits = torch.randn(5, 17, 100, device=device).to(dtype)
        tokens, conf = wmkernels.maskgit_sample(logits, temperature=0.0, backend=backend)
        x64 = logits.double()
        torch.testing.assert_close(tokens, x64.argmax(-1))
        ref = torch.softmax(x64, -1).gather(-1, tokens[..., None]).squeeze(-1)
        torch.testing.assert_close(conf.double(), ref, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_determinism(device, backend):
    logits = torch.randn(64, 257, device=device)
    a = wmkernels.maskgit_sample(logits, generator=_gen(device, 1), backend=backend)
    b = wmkernels.maskgit_sample(logits, generator=_gen(device, 1), backend=backend)
    c = wmkernels.maskgit_sample(logits, generator=_gen(device, 2), backend=backend)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    g = _gen(device, 1)
    first = wmkernels.maskgit_sample(logits, generator=g, backend=backend)[0]
    second = wmkernels.maskgit_sample(logits, generator=g, backend=backend)[0]
    assert not torch.equal(first, second), "the generator must advance between calls"


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_dtypes_strides_and_shapes(device, backend):
    for dtype in _dtypes(device, backend):
        big = torch.randn(6, 40, 2 * 33, device=device).to(dtype)
        logits = big[:, ::3, ::2]  # strided in every dim, V = 33
        tokens, conf = wmkernels.maskgit_sample(logits, temperature=0.0, backend=backend)
        torch.testing.assert_close(tokens, logits.double().argmax(-1))
        tokens, conf = wmkernels.maskgit_sample(logits, top_k=3, generator=_gen(device),
                                                backend=backend)
        top3 = torch.topk(logits.float(), 3, -1).values[..., -1:]
        picked = logits.float().gather(-1, tokens[..., None])
        assert (picked >= top3).all(), "a token outside the top-k"
    one = torch.randn(4, 1, device=device)
    tokens, conf = wmkernels.maskgit_sample(one, generator=_gen(device), backend=backend)
    assert (tokens == 0).all() and (conf == 1).all()
    empty = torch.randn(0, 5, 7, device=device)
    tokens, conf = wmkernels.maskgit_sample(empty, backend=backend)
    assert tokens.shape == (0, 5) and conf.shape == (0, 5)
    vec = torch.randn(9, device=device)
    tokens, conf = wmkernels.maskgit_sample(vec, temperature=0.0, backend=backend)
    assert tokens.shape == () and tokens.item() == vec.argmax().item()


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_inf_and_nan_policy(device, backend):
    logits = torch.randn(400, 6, device=device)
    logits[:, 0] = float("-inf")
    logits[:, 3] = float("nan")
    tokens, conf = wmkernels.maskgit_sample(logits, generator=_gen(device), backend=backend)
    assert not ((tokens == 0) | (tokens == 3)).any(), "-inf/NaN logits must never be sampled"
    clean = logits.double().nan_to_num(nan=float("-inf"))
    ref = torch.softmax(clean, -1).gather(-1, tokens[:, None]).squeeze(-1)
    torch.testing.assert_close(conf.double(), ref, rtol=1e-5, atol=1e-7)
    # +inf tokens share all the probability mass
    pos = torch.randn(300, 5, device=device)
    pos[:, 1] = float("inf")
    pos[:, 4] = float("inf")
    tokens, conf = wmkernels.maskgit_sample(pos, temperature=0.7, generator=_gen(device),
                                            backend=backend)
    assert ((tokens == 1) | (tokens == 4)).all()
    assert (tokens == 1).any() and (tokens == 4).any()
    torch.testing.assert_close(conf, torch.full_like(conf, 0.5))
    # a row with no finite logit has no distribution
    bad = torch.randn(3, 4, 8, device=device)
    bad[1, 2] = float("-inf")
    bad[1, 2, 5] = float("nan")
    if device == "cpu":
        with pytest.raises(ValueError, match=r"row \(1, 2\)"):
            wmkernels.maskgit_sample(bad, generator=_gen(device), backend=backend)
    else:
        tokens, conf = wmkernels.maskgit_sample(bad, generator=_gen(device), backend=backend)
        assert tokens[1, 2] == -1 and conf[1, 2] == 0
        assert (tokens.flatten()[torch.arange(12) != 6] >= 0).all()


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_bad_input(device, backend):
    x = torch.randn(4, 10, device=device)
    with pytest.raises(TypeError, match="logits"):
        wmkernels.maskgit_sample(x.long(), backend=backend)
    with pytest.raises(ValueError, match="vocabulary"):
        wmkernels.maskgit_sample(x[:, :0], backend=backend)
    for k in (0, -1, 11):
        with pytest.raises(ValueError, match="top_k"):
            wmkernels.maskgit_sample(x, top_k=k, backend=backend)
    with pytest.raises(TypeError, match="top_k"):
        wmkernels.maskgit_sample(x, top_k=2.0, backend=backend)
    for t in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            wmkernels.maskgit_sample(x, temperature=t, backend=backend)
    with pytest.raises(TypeError, match="generator"):
        wmkernels.maskgit_sample(x, generator=0, backend=backend)
    if backend in ("triton", "cuda", "cuda-sim"):
        with pytest.raises(TypeError, match="float64"):
            wmkernels.maskgit_sample(x.double(), backend=backend)


# --------------------------------------------------------------------------- step


def _step_inputs(B, N, V, device, dtype=torch.float32, known=0.4):
    logits = (torch.randn(B, N, V, device=device) * 2).to(dtype)
    tokens = torch.randint(0, V, (B, N), device=device)
    mask = torch.rand(B, N, device=device) > known
    tokens[mask] = V  # a placeholder "mask token" id outside the vocabulary
    return logits, tokens, mask


def _check_step(logits, tokens, mask, k, out_tokens, out_mask):
    """Exact counts, known positions untouched, revealed positions hold valid tokens."""
    B, N, V = logits.shape
    unknown = mask.sum(-1)
    k = torch.as_tensor(k, device=mask.device).expand(B)
    assert torch.equal(out_mask.sum(-1), torch.minimum(k, unknown))
    assert not (out_mask & ~mask).any(), "a known position was re-masked"
    assert torch.equal(out_tokens[~mask], tokens[~mask]), "a known token changed"
    assert torch.equal(out_tokens[out_mask], tokens[out_mask]), "a masked token changed"
    revealed = mask & ~out_mask
    assert ((out_tokens[revealed] >= 0) & (out_tokens[revealed] < V)).all()


@pytest.mark.parametrize("device,backend", STEP)
def test_step_counts_and_lowest_confidence(device, backend):
    for dtype in _dtypes(device, backend):
        B, N, V = 3, 67, 50
        logits, tokens, mask = _step_inputs(B, N, V, device, dtype)
        for k in (0, 5, 30, N):
            out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, k,
                                                  choice_temperature=0.0,
                                                  generator=_gen(device, k), backend=backend)
            _check_step(logits, tokens, mask, k, out_t, out_m)
            # kept-masked positions are the least confident: compare float64 scores of the
            # tokens each position would have taken (re-sampled with the same generator
            # state would differ per backend, so use the revealed ones' scores as a bound)
            logp = torch.log_softmax(logits.double(), -1)
            full_t, _ = wmkernels.maskgit_step(logits, tokens, mask, 0,
                                               generator=_gen(device, k), backend=backend)
            score = logp.gather(-1, full_t.clamp(0, V - 1)[..., None]).squeeze(-1)
            for b in range(B):
                kept = score[b][out_m[b]]
                shown = score[b][mask[b] & ~out_m[b]]
                if kept.numel() and shown.numel():
                    assert kept.max() <= shown.min() + 1e-3 * (dtype != torch.float32) + 1e-6


@pytest.mark.parametrize("device,backend", STEP)
@pytest.mark.parametrize("order", ["confidence", "random"])
def test_step_revealed_tokens_distribution(device, backend, order):
    V, N = 13, 1200
    row = torch.randn(V) * 1.5
    logits = row.to(device).expand(2, N, V)
    tokens = torch.full((2, N), -1, device=device)
    mask = torch.ones(2, N, dtype=torch.bool, device=device)
    out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, N // 3, temperature=2.0,
                                          top_k=9, choice_temperature=1.0, order=order,
                                          generator=_gen(device, 9), backend=backend)
    revealed = out_t[~out_m]
    assert revealed.numel() == 2 * (N - N // 3)
    if order == "random":  # the kept-masked set is independent of the tokens
        assert _chi2_pvalue(revealed, _exact_probs(row, 2.0, 9)) > P_MIN
    else:
        assert ((revealed >= 0) & (revealed < V)).all()


@pytest.mark.parametrize("device,backend", STEP)
def test_step_num_masked_tensor_and_clamp(device, backend):
    B, N, V = 4, 33, 21
    logits, tokens, mask = _step_inputs(B, N, V, device)
    k = torch.tensor([0, 3, N, 10], device=device)
    out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, k, choice_temperature=1.0,
                                          generator=_gen(device), backend=backend)
    _check_step(logits, tokens, mask, k, out_t, out_m)
    out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, torch.tensor(7, device=device),
                                          generator=_gen(device), backend=backend)
    _check_step(logits, tokens, mask, 7, out_t, out_m)


@pytest.mark.parametrize("device,backend", STEP)
def test_step_ties_go_to_lower_index(device, backend):
    B, N, V = 2, 10, 1  # V = 1: every confidence is 1, every score equal
    logits = torch.randn(B, N, V, device=device)
    tokens = torch.full((B, N), 7, device=device)
    mask = torch.ones(B, N, dtype=torch.bool, device=device)
    mask[1, :3] = False
    out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, 4, backend=backend)
    expect = torch.zeros(B, N, dtype=torch.bool, device=device)
    expect[0, :4] = True
    expect[1, 3:7] = True
    assert torch.equal(out_m, expect)
    assert torch.equal(out_t, torch.where(mask & ~expect, 0, tokens))


@pytest.mark.parametrize("device,backend", STEP)
def test_step_order_random(device, backend):
    """Random order ignores confidence: a position that is certain is kept masked about as
    often as any other, while order="confidence" never keeps it."""
    B, N, V = 100, 8, 5
    logits = torch.zeros(B, N, V, device=device)
    logits[:, 0, 2] = 30.0  # position 0 is near-certain
    tokens = torch.zeros(B, N, dtype=torch.long, device=device)
    mask = torch.ones(B, N, dtype=torch.bool, device=device)
    _, m_conf = wmkernels.maskgit_step(logits, tokens, mask, 4, generator=_gen(device),
                                       backend=backend)
    assert not m_conf[:, 0].any()
    _, m_rand = wmkernels.maskgit_step(logits, tokens, mask, 4, order="random",
                                       generator=_gen(device), backend=backend)
    assert torch.equal(m_rand.sum(-1), torch.full((B,), 4, device=device))
    # each position is kept with probability 1/2: binomial test on the certain one
    kept = int(m_rand[:, 0].sum())
    assert stats.binomtest(kept, B, 0.5).pvalue > P_MIN


@pytest.mark.parametrize("device,backend", STEP)
def test_step_choice_temperature_noise(device, backend):
    """Large Gumbel noise on the scores makes the kept set depend on the seed."""
    logits, tokens, mask = _step_inputs(2, 40, 16, device, known=0.0)
    a = wmkernels.maskgit_step(logits, tokens, mask, 20, choice_temperature=50.0,
                               generator=_gen(device, 0), backend=backend)[1]
    b = wmkernels.maskgit_step(logits, tokens, mask, 20, choice_temperature=50.0,
                               generator=_gen(device, 1), backend=backend)[1]
    c = wmkernels.maskgit_step(logits, tokens, mask, 20, choice_temperature=50.0,
                               generator=_gen(device, 0), backend=backend)[1]
    assert not torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("device,backend", STEP)
def test_step_edge_shapes(device, backend):
    for B, N, V in ((0, 5, 7), (3, 0, 7), (1, 1, 1), (2, 1, 9)):
        logits, tokens, mask = _step_inputs(B, N, V, device, known=0.0)
        out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, 0, backend=backend)
        _check_step(logits, tokens, mask, 0, out_t, out_m)
        assert out_t.shape == (B, N) and out_m.dtype == torch.bool
    logits, tokens, mask = _step_inputs(2, 30, 2 * 41, device)
    strided = logits[:, :, ::2]
    out_t, out_m = wmkernels.maskgit_step(strided, tokens, mask, 6, generator=_gen(device),
                                          backend=backend)
    _check_step(strided, tokens, mask, 6, out_t, out_m)


@pytest.mark.parametrize("device,backend", STEP)
def test_step_known_rows_may_hold_garbage(device, backend):
    logits, tokens, mask = _step_inputs(2, 20, 11, device)
    logits[~mask] = float("nan")
    out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, 3, generator=_gen(device),
                                          backend=backend)
    _check_step(logits, tokens, mask, 3, out_t, out_m)
    # an unknown row without a finite logit is never revealed while others can stay masked
    logits, tokens, mask = _step_inputs(1, 12, 11, device, known=0.0)
    logits[0, 4] = float("-inf")
    out_t, out_m = wmkernels.maskgit_step(logits, tokens, mask, 1, generator=_gen(device),
                                          backend=backend)
    assert out_m[0, 4] and out_m.sum() == 1
    if device == "cpu":
        with pytest.raises(ValueError, match=r"row \(0, 4\)"):
            wmkernels.maskgit_step(logits, tokens, mask, 0, backend=backend)


@pytest.mark.parametrize("device,backend", STEP)
def test_step_bad_input(device, backend):
    logits, tokens, mask = _step_inputs(2, 6, 5, device)
    step = lambda *a, **k: wmkernels.maskgit_step(*a, backend=backend, **k)
    with pytest.raises(ValueError, match="logits"):
        step(logits[0], tokens, mask, 1)
    with pytest.raises(TypeError, match="tokens"):
        step(logits, tokens.int(), mask, 1)
    with pytest.raises(TypeError, match="mask"):
        step(logits, tokens, mask.long(), 1)
    with pytest.raises(ValueError, match="tokens and mask"):
        step(logits, tokens[:, :5], mask[:, :5], 1)
    for k in (-1, 7):
        with pytest.raises(ValueError, match="num_masked"):
            step(logits, tokens, mask, k)
    with pytest.raises(ValueError, match="num_masked"):
        step(logits, tokens, mask, torch.tensor([1, 9], device=device))
    with pytest.raises(ValueError, match="num_masked"):
        step(logits, tokens, mask, torch.tensor([1, 2, 3], device=device))
    with pytest.raises(TypeError, match="num_masked"):
        step(logits, tokens, mask, torch.tensor([1.0, 2.0], device=device))
    with pytest.raises(TypeError, match="num_masked"):
        step(logits, tokens, mask, 1.5)
    with pytest.raises(ValueError, match="order"):
        step(logits, tokens, mask, 1, order="sorted")
    with pytest.raises(ValueError, match="choice_temperature"):
        step(logits, tokens, mask, 1, choice_temperature=-1.0)
    with pytest.raises(ValueError, match="top_k"):
        step(logits, tokens, mask, 1, top_k=6)


# --------------------------------------------------------------------------- schedule, decode


@pytest.mark.parametrize("schedule", ["cosine", "linear", "square", "sqrt"])
def test_schedule(schedule):
    f = {"cosine": lambda r: math.cos(math.pi / 2 * r), "linear": lambda r: 1 - r,
         "square": lambda r: 1 - r * r, "sqrt": lambda r: 1 - math.sqrt(r)}[schedule]
    n0, T = 1000, 12
    counts = [wmkernels.maskgit_schedule(s, T, n0, schedule) for s in range(T)]
    assert counts == [math.floor(n0 * f((s + 1) / T)) for s in range(T - 1)] + [0]
    assert all(a >= b for a, b in zip(counts, counts[1:], strict=False))
    n = torch.tensor([0, 7, 1000])
    for s in range(T):
        got = wmkernels.maskgit_schedule(s, T, n, schedule)
        assert got.dtype == torch.int64
        assert got.tolist() == [wmkernels.maskgit_schedule(s, T, int(v), schedule) for v in n]
    with pytest.raises(ValueError, match="step"):
        wmkernels.maskgit_schedule(T, T, n0)
    with pytest.raises(ValueError, match="total_steps"):
        wmkernels.maskgit_schedule(0, 0, n0)
    with pytest.raises(ValueError, match="schedule"):
        wmkernels.maskgit_schedule(0, T, n0, "exp")
    with pytest.raises(ValueError, match="num_initial"):
        wmkernels.maskgit_schedule(0, T, -1)


@pytest.mark.parametrize("device,backend", STEP)
@pytest.mark.parametrize("order", ["confidence", "random"])
def test_decode(device, backend, order):
    B, N, V, steps = 3, 40, 17, 6
    table = torch.randn(N, V, device=device) * 3
    calls = []

    def logits_fn(tokens, mask):
        calls.append(int(mask.sum()))
        return table.expand(tokens.shape[0], N, V) + tokens[..., None].clamp(max=0) * 0.0

    tokens = torch.randint(0, V, (B, N), device=device)
    mask = torch.rand(B, N, device=device) < 0.7
    mask[0] = True
    out = wmkernels.maskgit_decode(logits_fn, tokens.masked_fill(mask, -5), mask,
                                   steps=steps, temperature=2.0, top_k=10, order=order,
                                   generator=_gen(device), backend=backend)
    assert len(calls) == steps
    assert calls[0] == int(mask.sum()) and calls == sorted(calls, reverse=True)
    assert torch.equal(out[~mask], tokens[~mask])
    assert ((out >= 0) & (out < V)).all()
    top10 = torch.topk(table, 10, -1).values[:, -1]
    picked = table.gather(-1, out.T).T
    assert (picked >= top10)[mask].all(), "a revealed token outside the top-k"


def test_decode_reveals_like_maskgit():
    """Counts per step follow the schedule with MaskGIT's clamp [1, unknown - 1]."""
    B, N, V, steps = 2, 50, 5, 8
    seen = []

    def logits_fn(tokens, mask):
        seen.append(mask.sum(-1).tolist())
        return torch.randn(B, N, V)

    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, :45] = False  # 5 unknown: the schedule would reveal 0 in early steps
    wmkernels.maskgit_decode(logits_fn, torch.zeros(B, N, dtype=torch.long), mask,
                             steps=steps)
    n0 = [50, 5]
    for s in range(1, steps):
        for b in range(B):
            unknown = seen[s - 1][b]
            k = wmkernels.maskgit_schedule(s - 1, steps, n0[b])
            expect = min(max(1, min(unknown - 1, k)), unknown)
            assert seen[s][b] == expect


def test_decode_bad_input():
    fn = lambda t, m: torch.zeros(*t.shape, 3)
    t = torch.zeros(2, 4, dtype=torch.long)
    m = torch.ones(2, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="logits_fn"):
        wmkernels.maskgit_decode(None, t, m)
    with pytest.raises(ValueError, match="steps"):
        wmkernels.maskgit_decode(fn, t, m, steps=0)
    with pytest.raises(ValueError, match="same shape"):
        wmkernels.maskgit_decode(fn, t, m[:, :3])
    with pytest.raises(ValueError, match="schedule"):
        wmkernels.maskgit_decode(fn, t, m, schedule="exp")


def test_sampler_module():
    sampler = wmkernels.nn.MaskGITSampler(steps=4, temperature=2.0, top_k=3)
    assert "steps=4" in repr(sampler)
    B, N, V = 2, 12, 9
    table = torch.randn(N, V)
    out = sampler(lambda t, m: table.expand(B, N, V), torch.zeros(B, N, dtype=torch.long),
                  torch.ones(B, N, dtype=torch.bool), generator=_gen("cpu"))
    assert out.shape == (B, N)
    top3 = torch.topk(table, 3, -1).values[:, -1]
    assert (table.gather(-1, out.T).T >= top3).all()
    tokens, conf = sampler.sample(table)
    assert tokens.shape == (N,) and conf.shape == (N,)
    with pytest.raises(ValueError, match="order"):
        wmkernels.nn.MaskGITSampler(order="bad")


# --------------------------------------------------------------------------- compile


@pytest.mark.parametrize("device,backend", STEP)
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph(device, backend, dynamic):
    if dynamic and backend == "reference":
        pytest.skip("the eager reference is the baseline; dynamic shapes are tested on kernels")
    torch._dynamo.reset()
    logits, tokens, mask = _step_inputs(2, 16, 24, device)

    def f(logits, tokens, mask):
        t, c = wmkernels.maskgit_sample(logits, temperature=0.0, backend=backend)
        nt, nm = wmkernels.maskgit_step(logits, tokens, mask, 3, backend=backend)
        return t, c, nt, nm

    t, c, nt, nm = torch.compile(f, fullgraph=True, dynamic=dynamic)(logits, tokens, mask)
    torch.testing.assert_close(t, logits.argmax(-1))
    _check_step(logits, tokens, mask, 3, nt, nm)


def test_bench_gumbel_baseline_distribution():
    V, R = 13, 3000
    row = torch.randn(V) * 1.5
    tokens, conf = baselines.maskgit_sample_gumbel(row.expand(R, V), 2.0, 6, _gen("cpu", 4))
    assert _chi2_pvalue(tokens, _exact_probs(row, 2.0, 6)) > P_MIN
    torch.testing.assert_close(conf.double(), torch.softmax(row.double(), -1)[tokens])


def test_reference_remask_matches_float64_sort():
    scores = torch.randn(3, 20, dtype=torch.float64)
    mask = torch.rand(3, 20) > 0.3
    k = torch.tensor([0, 4, 100])
    got = reference.remask(scores, mask, k)
    for b in range(3):
        s = scores[b].masked_fill(~mask[b], float("inf"))
        n = min(int(k[b]), int(mask[b].sum()))
        expect = torch.zeros(20, dtype=torch.bool)
        expect[torch.argsort(s)[:n]] = True
        assert torch.equal(got[b], expect)


def _kernel_ops(backend):
    if backend == "triton":
        return torch.ops.wmk.maskgit_sample_triton, torch.ops.wmk.maskgit_step_triton
    return kernel_ops(backend).maskgit_sample, kernel_ops(backend).maskgit_step


@pytest.mark.parametrize("device,backend", [p for p in STEP if p.values[1] != "reference"])
def test_opcheck(device, backend):
    from checks import opcheck

    sample_op, step_op = _kernel_ops(backend)
    seed = torch.tensor([1234], device=device)
    logits, tokens, mask = _step_inputs(2, 7, 11, device)
    for t, k in ((1.0, 0), (0.5, 3), (0.0, 0)):
        opcheck(sample_op, (logits[0], t, k, seed))
    nm = torch.tensor([2, 5], device=device)
    for ct, rnd in ((0.0, False), (2.0, False), (0.0, True)):
        opcheck(step_op, (logits, tokens, mask, nm, 1.0, 4, ct, rnd, seed))


@pytest.mark.parametrize("device,backend", [p for p in STEP if p.values[1] != "reference"])
def test_same_seed_same_result_across_calls_of_the_kernel(device, backend):
    """The kernels are pure functions of the seed tensor (counter-based RNG)."""
    sample_op, step_op = _kernel_ops(backend)
    logits, tokens, mask = _step_inputs(3, 9, 40, device)
    nm = torch.tensor([2, 5, 0], device=device)
    s1, s2 = torch.tensor([7], device=device), torch.tensor([8], device=device)
    a = step_op(logits, tokens, mask, nm, 2.0, 0, 3.0, False, s1)
    b = step_op(logits, tokens, mask, nm, 2.0, 0, 3.0, False, s1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    x = logits.reshape(-1, 40)
    assert torch.equal(sample_op(x, 2.0, 0, s1)[0], sample_op(x, 2.0, 0, s1)[0])
    assert not torch.equal(sample_op(x, 2.0, 0, s1)[0], sample_op(x, 2.0, 0, s2)[0])


def test_decode_cuda_graph_ignored_on_cpu():
    calls = []
    table = torch.randn(6, 5)

    def logits_fn(tokens, mask):
        calls.append(1)
        return table.expand(2, 6, 5)

    out = wmkernels.maskgit_decode(logits_fn, torch.zeros(2, 6, dtype=torch.long),
                                   torch.ones(2, 6, dtype=torch.bool), steps=3, cuda_graph=True)
    assert len(calls) == 3 and ((out >= 0) & (out < 5)).all()


@gpu_only("CUDA graph capture and replay have no CPU emulation")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_decode_cuda_graph_replays(backend):
    B, N, V, steps = 2, 64, 33, 5
    table = torch.randn(N, V, device="cuda")
    calls = []

    def logits_fn(tokens, mask):
        calls.append(1)
        return table.expand(B, N, V) + 0.0 * tokens[..., None]

    tokens = torch.zeros(B, N, dtype=torch.long, device="cuda")
    mask = torch.ones(B, N, dtype=torch.bool, device="cuda")
    gen = torch.Generator("cuda").manual_seed(0)
    kw = dict(steps=steps, temperature=2.0, generator=gen, backend=backend, cuda_graph=True)
    first = wmkernels.maskgit_decode(logits_fn, tokens, mask, **kw)
    n_first = len(calls)
    second = wmkernels.maskgit_decode(logits_fn, tokens, mask, **kw)
    torch.cuda.synchronize()
    assert len(calls) == n_first, "a replay must not call logits_fn from Python"
    for out in (first, second):
        assert ((out >= 0) & (out < V)).all()
    assert not torch.equal(first, second), "each replay draws fresh noise from the generator"


@pytest.mark.parametrize("temperature", [1e-45, 1e-300])
@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_tiny_temperature_is_argmax(device, backend, temperature):
    """The reference divided before shifting, so logits / 1e-45 overflowed to +inf and every
    positive logit got an equal share; every backend must give the argmax."""
    logits = torch.randn(200, 50, device=device) * 3
    tokens, conf = wmkernels.maskgit_sample(logits, temperature=temperature, backend=backend,
                                            generator=_gen(device))
    torch.testing.assert_close(tokens, logits.argmax(-1))
    torch.testing.assert_close(conf, torch.softmax(logits, -1).amax(-1))


def test_schedule_refuses_negative_tensor_counts():
    with pytest.raises(ValueError, match="num_initial"):
        wmkernels.maskgit_schedule(0, 4, torch.tensor([3, -5]))
    assert wmkernels.maskgit_schedule(0, 4, torch.tensor([0, 8])).tolist() == [0, 7]


def test_sampler_refuses_non_finite_temperatures():
    for kw in (dict(temperature=float("inf")), dict(temperature=float("nan")),
               dict(choice_temperature=float("inf")), dict(choice_temperature=-1.0)):
        with pytest.raises(ValueError, match=next(iter(kw))):
            wmkernels.nn.MaskGITSampler(**kw)


@pytest.mark.parametrize("device,backend", STEP)
@pytest.mark.parametrize("order", ["confidence", "random"])
def test_step_column_major_tokens_and_mask(device, backend, order):
    """tokens/mask given as column-major views (x.t().contiguous().t()) give the same step
    as row-major ones: outputs are laid out as the kernels write them, whatever the inputs'
    strides."""
    B, N, V = 3, 37, 20
    logits, tokens, mask = _step_inputs(B, N, V, device)
    col = lambda x: x.t().contiguous().t()
    assert not col(tokens).is_contiguous()
    want = wmkernels.maskgit_step(logits, tokens, mask, 9, order=order,
                                  generator=_gen(device, 3), backend=backend)
    got = wmkernels.maskgit_step(logits, col(tokens), col(mask), 9, order=order,
                                 generator=_gen(device, 3), backend=backend)
    _check_step(logits, tokens, mask, 9, *got)
    for w, g in zip(want, got, strict=True):
        assert torch.equal(w, g)


@pytest.mark.parametrize("device,backend", SAMPLE)
def test_sample_top_k_threshold_at_signed_zero(device, backend):
    """The k-th largest logit is 0 and the row holds both +0.0 and -0.0: top-k keeps every
    logit >= 0 as floats compare (-0.0 == +0.0, torch.topk's threshold), so the -0.0 tokens
    are sampled too. An order-preserving integer image of the floats without -0.0 mapped to
    +0.0 puts -0.0 below the +0.0 threshold and never samples it."""
    row = torch.tensor([0.5, -0.0, 0.0, -0.0, -3.0, -1.0])
    top_k, R = 2, 600
    probs = _exact_probs(row, 1.0, top_k)
    assert (probs[[1, 2, 3]] > 0.2).all()
    for dtype in _dtypes(device, backend):
        logits = row.to(device, dtype).expand(R, -1)
        tokens, _ = wmkernels.maskgit_sample(logits, temperature=1.0, top_k=top_k,
                                             generator=_gen(device, 5), backend=backend)
        assert _chi2_pvalue(tokens, probs) > P_MIN, dtype
