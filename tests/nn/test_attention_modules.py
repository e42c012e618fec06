"""SpatialAttention, TemporalAttention, STBlock and the temporal KV cache."""

import pytest
import torch
from checks import available_backends

import wmkernels
from wmkernels import routing
from wmkernels.nn import SpatialAttention, STBlock, TemporalAttention, TemporalKVCache

BACKENDS = available_backends("temporal_attention", "cpu")


def manual_spatial(layer, x):
    """SpatialAttention written out by hand: explicit softmax over S in float64."""
    B, T, S, C = x.shape
    H, D = layer.heads, layer.head_dim
    q, k, v = layer.qkv(x).view(B, T, S, 3, H, D).unbind(3)
    q, k = layer.q_norm(q), layer.k_norm(k)
    att = torch.einsum("btshd,btrhd->bthsr", q.double(), k.double()) * D ** -0.5
    out = torch.einsum("bthsr,btrhd->btshd", att.softmax(-1), v.double())
    return layer.proj(out.reshape(B, T, S, C).to(x.dtype))


def test_spatial_attention_is_attention_over_s():
    layer = SpatialAttention(32, 2)
    x = torch.randn(2, 3, 7, 32)
    torch.testing.assert_close(layer(x), manual_spatial(layer, x), atol=1e-5, rtol=1e-5)


def test_temporal_attention_is_causal():
    layer = TemporalAttention(32, 4, rope=True)
    x = torch.randn(1, 5, 3, 32)
    out = layer(x)
    x2 = x.clone()
    x2[:, 3:] = torch.randn_like(x2[:, 3:])  # the future must not change frames 0..2
    torch.testing.assert_close(layer(x2)[:, :3], out[:, :3])
    assert not torch.allclose(layer(x2)[:, 3:], out[:, 3:])
    bidir = TemporalAttention(32, 4, causal=False)
    assert not torch.allclose(bidir(x2)[:, :3], bidir(x)[:, :3])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rope", [False, True])
def test_kv_cache_generation_equals_full_causal_forward(backend, rope):
    B, T, S, dim, heads, layers = 2, 6, 5, 64, 2, 2
    blocks = torch.nn.ModuleList(
        STBlock(dim, heads, rope=rope, backend=backend) for _ in range(layers)).eval()
    x = torch.randn(B, T, S, dim)
    with torch.no_grad():
        full = x
        for blk in blocks:
            full = blk(full)
        cache = TemporalKVCache(B, T, S, heads, dim // heads, layers, dtype=x.dtype)
        # a 2-frame prompt at once, then one frame at a time
        steps, t = [], 0
        for n in (2, 1, 1, 1, 1):
            h = x[:, t:t + n]
            for i, blk in enumerate(blocks):
                h = blk(h, cache=cache, layer=i)
            steps.append(h)
            t += n
            assert cache.frames == t
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=2e-5, rtol=2e-5)
    cache.reset()
    assert cache.frames == 0 and cache.keys(0).shape[1] == 0


def test_kv_cache_truncate_rewinds_a_look_ahead():
    """Append a frame, truncate it away, append a different one: the cache then serves
    exactly what a cache that never saw the first one serves."""
    B, S, heads, dim = 1, 3, 2, 16
    blk = STBlock(dim, heads).eval()
    x = torch.randn(B, 3, S, dim)
    with torch.no_grad():
        clean = TemporalKVCache(B, 3, S, heads, dim // heads, 1)
        rewound = TemporalKVCache(B, 3, S, heads, dim // heads, 1)
        blk(x[:, :1], cache=clean)
        blk(x[:, :1], cache=rewound)
        blk(torch.randn(B, 1, S, dim), cache=rewound)   # a look-ahead pass
        assert rewound.frames == 2
        rewound.truncate(1)
        assert rewound.frames == 1 and rewound.keys(0).shape[1] == 1
        torch.testing.assert_close(blk(x[:, 1:2], cache=rewound), blk(x[:, 1:2], cache=clean),
                                   rtol=0, atol=0)
    for bad in (-1, 3, 1.0, True):
        with pytest.raises(ValueError, match="frames must be an int"):
            rewound.truncate(bad)


def test_kv_cache_errors():
    cache = TemporalKVCache(1, 2, 3, 2, 8, 1)
    blk = STBlock(16, 2)
    with pytest.raises(ValueError, match="cannot append 3 more"):
        blk(torch.randn(1, 3, 3, 16), cache=cache)
    with pytest.raises(ValueError, match="must be"):
        blk(torch.randn(1, 1, 4, 16), cache=cache)
    with pytest.raises(ValueError, match="layer must be"):
        blk(torch.randn(1, 1, 3, 16), cache=cache, layer=1)
    with pytest.raises(ValueError, match="cache holds"):
        blk.double()(torch.randn(1, 1, 3, 16, dtype=torch.float64), cache=cache)
    with pytest.raises(ValueError, match="causal"):
        STBlock(16, 2, causal_time=False)(torch.randn(1, 1, 3, 16), cache=cache)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        TemporalKVCache(0, 2, 3, 2, 8, 1)


def test_module_errors():
    with pytest.raises(ValueError, match="multiple of heads"):
        SpatialAttention(30, 4)
    with pytest.raises(ValueError, match="even head dim"):
        TemporalAttention(9, 3, rope=True)
    with pytest.raises(ValueError, match=r"x must be \(B, T, S, 16\)"):
        SpatialAttention(16, 2)(torch.randn(2, 3, 16))


@pytest.mark.parametrize("backend", BACKENDS)
def test_stblock_backends_agree_with_gradients(backend):
    torch.manual_seed(0)
    blk = STBlock(64, 2, rope=True, backend=backend)
    ref = STBlock(64, 2, rope=True, backend="reference")
    ref.load_state_dict(blk.state_dict())
    x = torch.randn(1, 4, 9, 64, requires_grad=True)
    out, out_ref = blk(x), ref(x)
    torch.testing.assert_close(out, out_ref, atol=2e-5, rtol=2e-5)
    g = torch.randn_like(out)
    gx, gx_ref = torch.autograd.grad(out, x, g)[0], torch.autograd.grad(out_ref, x, g)[0]
    torch.testing.assert_close(gx, gx_ref, atol=5e-5, rtol=5e-5)


def test_stblock_compiles_fullgraph():
    blk = STBlock(32, 2, qk_norm=True)
    x = torch.randn(1, 3, 5, 32)
    torch._dynamo.reset()
    compiled = torch.compile(blk, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), blk(x))


def test_failed_temporal_call_leaves_the_cache_as_it_was():
    """The frames were appended before the attention op ran, so a call that failed left the
    layer one frame longer."""
    attn = TemporalAttention(16, 2, backend="reference").double()
    cache = TemporalKVCache(1, 4, 3, 2, 8, 1, dtype=torch.float64)
    attn(torch.randn(1, 1, 3, 16, dtype=torch.float64), cache=cache)
    attn.backend = "triton" if routing.unavailable_reason("triton", "cpu") is None else "nope"
    with pytest.raises((TypeError, ValueError, RuntimeError)):
        attn(torch.randn(1, 1, 3, 16, dtype=torch.float64), cache=cache)  # triton: no float64
    assert cache.lengths == [1] and cache.frames == 1


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("op", ["spatial", "temporal"])
def test_empty_inputs_get_zero_gradients(op, backend):
    """q.grad was None for empty q/k/v; it must be zeros like q."""
    if routing.unavailable_reason(backend, "cpu"):
        pytest.skip(routing.unavailable_reason(backend, "cpu"))
    q, k, v = (torch.randn(2, 3, 0, 2, 8, requires_grad=True) for _ in range(3))
    fn = wmkernels.spatial_attention if op == "spatial" else wmkernels.temporal_attention
    fn(q, k, v, backend=backend).sum().backward()
    for x in (q, k, v):
        assert x.grad is not None and x.grad.shape == x.shape
    if op == "temporal":  # no query frame: k and v (3 frames) get zero gradients
        q = torch.randn(2, 0, 3, 2, 8, requires_grad=True)
        k, v = (torch.randn(2, 3, 3, 2, 8, requires_grad=True) for _ in range(2))
        fn(q, k, v, backend=backend).sum().backward()
        assert q.grad is not None and q.grad.shape == q.shape
        assert torch.equal(k.grad, torch.zeros_like(k)) and torch.equal(v.grad,
                                                                         torch.zeros_like(v))
