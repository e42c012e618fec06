"""wmkernels.nn.VectorQuantizer: training behaviour, EMA, dead codes, k-means init."""

import pytest
import torch

import wmkernels
from wmkernels.nn import VectorQuantizer


def clustered(n, centers, noise=0.05):
    return centers[torch.randint(0, centers.shape[0], (n,))] + noise * torch.randn(
        n, centers.shape[1])


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_training_reduces_quantization_error(ema_decay):
    centers = torch.randn(16, 8) * 3
    vq = VectorQuantizer(8, 16, ema_decay=ema_decay, kmeans_init=False)
    opt = torch.optim.Adam(vq.parameters(), lr=0.05) if ema_decay is None else None
    x = clustered(2048, centers)
    first = last = None
    for _ in range(60):
        q, idx, loss = vq(x)
        err = (q - x).pow(2).mean().item()
        first = err if first is None else first
        last = err
        if opt is not None:
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert last < 0.5 * first


def test_kmeans_init_and_perplexity():
    centers = torch.randn(8, 4) * 5
    vq = VectorQuantizer(4, 8, kmeans_init=True, ema_decay=0.99)
    x = clustered(4000, centers)
    q, idx, _ = vq(x)
    assert bool(vq.initted)
    assert (q - x).pow(2).mean() < 0.1  # k-means found the clusters
    assert 6.0 < float(vq.perplexity) <= 8.0  # eight near-equal clusters


def test_dead_codes_restart_from_batch():
    vq = VectorQuantizer(4, 32, dead_code_threshold=1.0)
    with torch.no_grad():
        vq.codebook.data[1:] = 100.0  # unreachable: only code 0 is ever used
    x = torch.randn(500, 4)
    vq.train()
    vq(x)
    assert (vq.codebook.abs() < 50).all(), "dead codes should have been moved to batch vectors"
    _, idx, _ = vq(x)
    assert idx.unique().numel() > 1


def test_straight_through_and_shapes():
    vq = VectorQuantizer(6, 10, metric="cosine")
    x = torch.randn(2, 3, 7, 6, requires_grad=True)
    q, idx, loss = vq(x)
    assert q.shape == x.shape and idx.shape == (2, 3, 7) and loss.dim() == 0
    (q.sum() + loss).backward()
    assert x.grad is not None and vq.codebook.grad is not None


def test_eval_mode_leaves_codebook_alone():
    vq = VectorQuantizer(4, 8, ema_decay=0.5, dead_code_threshold=10.0).eval()
    before = vq.codebook.clone()
    vq(torch.randn(100, 4))
    torch.testing.assert_close(vq.codebook, before)


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        VectorQuantizer(0, 8)
    with pytest.raises(ValueError, match="last dim must be 4"):
        VectorQuantizer(4, 8)(torch.randn(3, 5))


def test_module_matches_functional():
    vq = VectorQuantizer(5, 12).eval()
    x = torch.randn(40, 5)
    q, idx, loss = vq(x)
    q2, idx2, loss2 = wmkernels.vq_quantize(x, vq.codebook.detach())
    torch.testing.assert_close(idx, idx2)
    torch.testing.assert_close(q, q2)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_nonfinite_batch_leaves_codebook_untouched(backend):
    """One NaN in a training batch used to poison the EMA codebook (reference: every code,
    cpu: one), after which every vector mapped to code 0."""
    vq = VectorQuantizer(4, 8, ema_decay=0.9, dead_code_threshold=0.5, backend=backend)
    vq(torch.randn(64, 4))
    state = [t.clone() for t in (vq.codebook, vq.cluster_size, vq.embed_sum)]
    for value in (float("nan"), float("inf")):
        x = torch.randn(64, 4)
        x[10, 2] = value
        with pytest.warns(RuntimeWarning, match="left untouched"):
            vq(x)
        for t, before in zip((vq.codebook, vq.cluster_size, vq.embed_sum), state, strict=True):
            assert torch.equal(t, before)
    _, idx, _ = vq(torch.randn(256, 4))
    assert idx.unique().numel() > 1


def test_nan_rows_cpu_and_reference_agree():
    """Outside the module, a NaN row changes only its own code, on both backends."""
    x = torch.randn(64, 4)
    x[3, 0] = float("nan")
    out = []
    for backend in ("cpu", "reference"):
        torch.manual_seed(0)
        vq = VectorQuantizer(4, 8, ema_decay=0.9, backend=backend)
        _, idx, _ = vq.eval()(x)
        wmkernels.vq_ema_update_(vq.codebook, vq.cluster_size, vq.embed_sum, x, idx,
                                 decay=0.9, backend=backend)
        out.append(vq.codebook.isnan().any(1))
    assert torch.equal(out[0], out[1]) and int(out[0].sum()) == 1


def test_kmeans_init_waits_for_a_nonempty_finite_batch():
    vq = VectorQuantizer(4, 8, kmeans_init=True, ema_decay=0.99)
    q, idx, loss = vq(torch.randn(0, 4))  # "random_ expects 'from' < 'to'" before
    assert q.shape == (0, 4) and not bool(vq.initted)
    bad = torch.randn(100, 4)
    bad[0, 0] = float("nan")
    with pytest.warns(RuntimeWarning, match="k-means init waits"):
        vq(bad)
    assert not bool(vq.initted) and vq.codebook.isfinite().all()
    vq(torch.randn(100, 4))
    assert bool(vq.initted)


@pytest.mark.parametrize("kw,name", [
    (dict(metric="foo"), "metric"), (dict(ema_decay=1.5), "ema_decay"),
    (dict(ema_decay=float("nan")), "ema_decay"), (dict(kmeans_iters=-1), "kmeans_iters"),
    (dict(commitment_weight=float("inf")), "commitment_weight"), (dict(eps=0.0), "eps"),
    (dict(dead_code_threshold=-1.0), "dead_code_threshold"),
])
def test_bad_hyperparameters_refused(kw, name):
    with pytest.raises(ValueError, match=name):
        VectorQuantizer(4, 8, **kw)


def test_low_precision_ema_buffers_on_cpu():
    """fp16/bf16 EMA buffers train on the cpu backend (NotImplementedError before), like
    the reference."""
    x = torch.randn(200, 4)
    for dtype in (torch.float16, torch.bfloat16):
        books = []
        for backend in ("cpu", "reference"):
            torch.manual_seed(0)
            vq = VectorQuantizer(4, 8, ema_decay=0.9, backend=backend).to(dtype)
            vq(x.to(dtype))
            books.append(vq.codebook.float())
        torch.testing.assert_close(books[0], books[1], rtol=2e-2, atol=2e-2)
