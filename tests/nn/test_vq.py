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
