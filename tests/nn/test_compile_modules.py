"""`nn.VectorQuantizer` and `nn.MaskGITSampler` under torch.compile(fullgraph=True) with the
default (inductor) compiler: no graph break in training or eval, same results as eager."""

import copy

import pytest
import torch

from wmkernels.nn import MaskGITSampler, VectorQuantizer


def _compiled(module):
    torch._dynamo.reset()
    return torch.compile(module, fullgraph=True)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(metric="cosine"), dict(ema_decay=0.9), dict(ema_decay=0.9, metric="cosine"),
], ids=["param-l2", "param-cosine", "ema-l2", "ema-cosine"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_vector_quantizer_compiles_fullgraph(kwargs, train):
    vq = VectorQuantizer(8, 16, **kwargs).train(train)
    ref = copy.deepcopy(vq)
    compiled = _compiled(vq)
    for _ in range(2):  # the second step sees the first one's EMA update
        x = torch.randn(3, 11, 8)
        q, idx, loss = compiled(x)
        q0, idx0, loss0 = ref(x)
        assert torch.equal(idx, idx0)
        torch.testing.assert_close((q, loss), (q0, loss0), atol=1e-5, rtol=1e-5)
    for name, buf in ref.named_buffers():
        torch.testing.assert_close(dict(vq.named_buffers())[name], buf, atol=1e-5, rtol=1e-5)


def test_vector_quantizer_compiled_dead_code_restart_and_kmeans_init():
    vq = VectorQuantizer(4, 32, ema_decay=0.9, dead_code_threshold=1.0, kmeans_init=True)
    vq(torch.randn(64, 4))  # k-means init runs eagerly on the first training batch
    reloaded = VectorQuantizer(4, 32, ema_decay=0.9, dead_code_threshold=1.0, kmeans_init=True)
    reloaded.load_state_dict(vq.state_dict())
    assert not reloaded._kmeans_pending  # restored from the loaded `initted` buffer
    x = torch.randn(5, 4) + 10.0  # far from every code: at most 5 codes used
    before = vq.codebook.clone()
    vq.cluster_size.zero_()  # every code dead
    _compiled(vq)(x)
    moved = (vq.codebook != before).any(1)
    assert moved.all()
    # a restarted code is a batch vector (its EMA statistics restarted with it)
    unused = ~torch.isin(torch.arange(32), vq.eval()(x)[1])
    dist = (vq.codebook[:, None] - x[None]).norm(dim=-1).min(1).values
    assert unused.any() and torch.all(dist[unused] < 1e-5)


def test_maskgit_sampler_compiles_fullgraph():
    sampler = MaskGITSampler(steps=3, temperature=0.0, choice_temperature=0.0)
    table = torch.randn(9, 7, 16)

    def logits_fn(tokens, mask):
        return table[tokens % 9, torch.arange(7)]

    tokens = torch.randint(0, 16, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :3] = False
    for train in (True, False):
        sampler.train(train)
        out = _compiled(sampler)(logits_fn, tokens, mask)
        assert torch.equal(out, sampler(logits_fn, tokens, mask))
