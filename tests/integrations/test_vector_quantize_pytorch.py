"""vector-quantize-pytorch patched by `apply_to_vector_quantize_pytorch` against its own
code: same indices, quantized vectors, losses and gradients, EMA state within float
rounding (the library updates with `lerp_`, the fused op with mul/add), over a few
training steps of its main configurations."""

import copy
import warnings

import pytest
import torch

lib = pytest.importorskip("vector_quantize_pytorch.vector_quantize_pytorch")
from vector_quantize_pytorch import ResidualVQ  # noqa: E402

from wmkernels.integrations import (  # noqa: E402
    apply_to_vector_quantize_pytorch,
    unapply_from_vector_quantize_pytorch,
)
from wmkernels.integrations import vector_quantize_pytorch as integration  # noqa: E402

CONFIGS = {
    "euclidean": dict(),
    "cosine": dict(use_cosine_sim=True),
    "heads-shared": dict(heads=2, codebook_dim=8),
    "heads-separate": dict(heads=2, separate_codebook_per_head=True, codebook_dim=8),
    "kmeans-deadcode": dict(kmeans_init=True, threshold_ema_dead_code=2),
    "cosine-kmeans-deadcode": dict(use_cosine_sim=True, kmeans_init=True,
                                   threshold_ema_dead_code=2),
    "learnable": dict(learnable_codebook=True, ema_update=False),
    "straight-through-input": dict(rotation_trick=False),
}
BUFFERS = ("embed", "embed_avg", "cluster_size")


@pytest.fixture
def patched():
    """Run the test body's `patched()` calls with the integration on, restoring after."""
    yield _Patched()
    unapply_from_vector_quantize_pytorch()


class _Patched:
    def __call__(self, fn):
        apply_to_vector_quantize_pytorch()
        try:
            return fn()
        finally:
            unapply_from_vector_quantize_pytorch()


def _steps(vq, xs, masks=None, seed=0):
    """Training steps; returns per-step (quantize, indices, loss, x.grad, codebook grads)."""
    out = []
    torch.manual_seed(seed)  # dead-code replacement and k-means sample randomly
    for n, x in enumerate(xs):
        x = x.clone().requires_grad_()
        kwargs = {} if masks is None else {"mask": masks[n]}
        q, idx, loss = vq(x, **kwargs)
        (q.square().sum() + loss.sum()).backward()
        grads = [p.grad.clone() for p in vq.parameters() if p.grad is not None]
        vq.zero_grad()
        out.append((q.detach(), idx, loss.detach(), x.grad, grads))
    return out


def _compare(vq_ref, vq_new, ref, new):
    for (q0, i0, l0, g0, p0), (q1, i1, l1, g1, p1) in zip(ref, new, strict=True):
        assert torch.equal(i0, i1)
        torch.testing.assert_close(q1, q0, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(l1, l0, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(g1, g0, atol=1e-6, rtol=1e-6)
        assert len(p0) == len(p1)
        for a, b in zip(p0, p1, strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    for name in BUFFERS:
        a, b = getattr(vq_ref._codebook, name), getattr(vq_new._codebook, name)
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_steps_match_the_library(name, patched):
    vq = lib.VectorQuantize(dim=16, codebook_size=64, decay=0.8, **CONFIGS[name])
    vq_new = copy.deepcopy(vq)
    assert integration.vector_quantize_fallback_reason(vq) is None
    xs = [torch.randn(3, 37, 16) for _ in range(3)]
    ref = _steps(vq, xs)
    new = patched(lambda: _steps(vq_new, xs))
    _compare(vq, vq_new, ref, new)


def test_masked_sequences_match_the_library(patched):
    vq = lib.VectorQuantize(dim=16, codebook_size=32, decay=0.8, threshold_ema_dead_code=1)
    vq_new = copy.deepcopy(vq)
    xs = [torch.randn(4, 21, 16) for _ in range(2)]
    masks = [torch.arange(21) < torch.tensor([[21], [5], [13], [1]]) for _ in range(2)]
    ref = _steps(vq, xs, masks)
    new = patched(lambda: _steps(vq_new, xs, masks))
    _compare(vq, vq_new, ref, new)


def test_eval_and_residual_vq_match_the_library(patched):
    rvq = ResidualVQ(dim=16, num_quantizers=3, codebook_size=32, decay=0.8)
    rvq_new = copy.deepcopy(rvq)
    xs = [torch.randn(2, 40, 16) for _ in range(2)]
    ref, new = _steps(rvq, xs), patched(lambda: _steps(rvq_new, xs))
    for (q0, i0, l0, g0, _), (q1, i1, l1, g1, _) in zip(ref, new, strict=True):
        assert torch.equal(i0, i1)
        # Later quantizers see residuals of codebooks that differ by EMA rounding (~1e-7).
        torch.testing.assert_close((q1, l1, g1), (q0, l0, g0), atol=1e-5, rtol=1e-5)
    rvq.eval()
    rvq_new.eval()
    x = torch.randn(2, 40, 16)
    q0, i0, _ = rvq(x)
    q1, i1, _ = patched(lambda: rvq_new(x))
    assert torch.equal(i0, i1)
    torch.testing.assert_close(q1, q0, atol=1e-6, rtol=1e-6)


def test_the_patched_path_builds_no_distance_matrix(patched, monkeypatch):
    vq = lib.VectorQuantize(dim=8, codebook_size=16)

    def fail(*args, **kwargs):
        raise AssertionError("the library's cdist ran: the call was not routed")

    monkeypatch.setattr(lib, "cdist", fail)
    patched(lambda: vq(torch.randn(2, 5, 8)))
    with pytest.raises(AssertionError, match="not routed"):
        vq(torch.randn(2, 5, 8))  # unapplied again: the library's own code


@pytest.mark.parametrize("kwargs, reason", [
    (dict(codebook_diversity_loss_weight=0.1), "codebook_diversity_loss_weight"),
    (dict(commitment_use_cross_entropy_loss=True), "commitment_use_cross_entropy_loss"),
    (dict(stochastic_sample_codes=True), "stochastic"),
    (dict(affine_param=True), "affine_param"),
])
def test_uncovered_options_fall_back_to_the_library(kwargs, reason, patched):
    vq = lib.VectorQuantize(dim=16, codebook_size=32, decay=0.8, **kwargs)
    vq_new = copy.deepcopy(vq)
    assert reason in integration.vector_quantize_fallback_reason(vq)
    xs = [torch.randn(2, 19, 16) for _ in range(2)]
    ref, new = _steps(vq, xs), patched(lambda: _steps(vq_new, xs))
    for a, b in zip(ref, new, strict=True):
        assert torch.equal(a[1], b[1])
        torch.testing.assert_close(b[:4], a[:4], atol=0, rtol=0)


def test_cross_entropy_on_given_indices_falls_back(patched):
    vq = lib.VectorQuantize(dim=8, codebook_size=16)
    vq_new = copy.deepcopy(vq)
    x, codes = torch.randn(2, 5, 8), torch.randint(0, 16, (2, 5))
    assert integration.vector_quantize_fallback_reason(vq, indices=codes) is not None
    _, ce = vq(x, indices=codes)
    _, ce_new = patched(lambda: vq_new(x, indices=codes))
    torch.testing.assert_close(ce_new, ce, atol=0, rtol=0)


def test_apply_and_unapply_restore_the_library():
    original = (lib.VectorQuantize.forward, lib.Codebook.forward)
    apply_to_vector_quantize_pytorch()
    apply_to_vector_quantize_pytorch()  # idempotent
    assert lib.VectorQuantize.forward is not original[0]
    unapply_from_vector_quantize_pytorch()
    unapply_from_vector_quantize_pytorch()
    assert (lib.VectorQuantize.forward, lib.Codebook.forward) == original


def test_untested_version_warns(monkeypatch):
    monkeypatch.setattr(integration, "TESTED_VERSIONS", ("0.0.1",))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_to_vector_quantize_pytorch()
    unapply_from_vector_quantize_pytorch()
    assert any("tested with vector-quantize-pytorch 0.0.1" in str(w.message) for w in caught)
