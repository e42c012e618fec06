"""spatial_attention / temporal_attention: every backend against a float64 reference."""

import pytest
import torch
from checks import (
    assert_close,
    available_backends,
    backend_params,
    dtypes_for,
    gpu_only,
    opcheck,
)

import wmkernels
from wmkernels import routing
from wmkernels._extension import kernel_ops
from wmkernels.reference import attention as reference

SPATIAL = backend_params("spatial_attention")
TEMPORAL = backend_params("temporal_attention")
FLOAT64_BACKENDS = ("reference", "cpu", "sdpa")


def naive_attention(q, k, v, mask=None, scale=None):
    """(..., Lq, D) x (..., Lk, D): explicit softmax in float64, independent of SDPA."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.einsum("...id,...jd->...ij", q.double(), k.double()) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("...ij,...jd->...id", s.softmax(-1), v.double())


def spatial64(q, k, v, scale=None):
    # (B, T, S, H, D) -> (B, T, H, S, D) views, then back
    t = lambda x: x.double().transpose(2, 3)
    return naive_attention(t(q), t(k), t(v), scale=scale).transpose(2, 3)


def temporal64(q, k, v, causal=True, scale=None):
    t = lambda x: x.double().permute(0, 2, 3, 1, 4)  # (B, S, H, T, D)
    mask = reference.causal_mask(q.shape[1], k.shape[1], q.device) if causal else None
    return naive_attention(t(q), t(k), t(v), mask, scale).permute(0, 3, 1, 2, 4)


def packed(B, T, S, H, D, dtype, device, requires_grad=False):
    """q, k, v as strided views of one packed (B, T, S, 3, H, D) projection."""
    qkv = torch.randn(B, T, S, 3, H, D, dtype=dtype, device=device)
    qkv.requires_grad_(requires_grad)
    return qkv, qkv.unbind(3)


def rand(shape, dtype, device):
    return torch.randn(shape, dtype=dtype, device=device)


def check_fwd(fn, ref_fn, q, k, v, dtype, **kw):
    out = fn(q, k, v, **kw)
    assert out.is_contiguous() and out.dtype == dtype and out.shape == q.shape
    ref = ref_fn(q, k, v, **{a: b for a, b in kw.items() if a != "backend"})
    low = fn(q, k, v, **{**kw, "backend": "reference"})
    assert_close(out, ref, low, dtype=dtype)


def spatial_shapes(backend):
    if backend == "triton":  # interpreted: keep it tiny
        return [(1, 1, 1, 1, 32), (1, 2, 7, 2, 32), (1, 1, 100, 1, 64)]
    return [(1, 1, 1, 1, 32), (2, 3, 7, 2, 32), (1, 2, 100, 2, 64), (1, 1, 257, 2, 32)]


@pytest.mark.parametrize("device,backend", SPATIAL)
def test_spatial_matches_float64(device, backend):
    for dtype in dtypes_for(device, backend):
        for B, T, S, H, D in spatial_shapes(backend):
            _, (q, k, v) = packed(B, T, S, H, D, dtype, device)
            check_fwd(wmkernels.spatial_attention, spatial64, q, k, v, dtype, backend=backend)


def temporal_shapes(backend):
    # (B, Tq, Tk, S, H, D)
    if backend == "triton":
        return [(1, 1, 1, 1, 1, 32), (1, 3, 3, 5, 2, 32), (1, 3, 17, 3, 1, 64),
                (1, 16, 16, 2, 1, 32), (1, 37, 40, 1, 1, 32)]  # last: several key chunks
    return [(1, 1, 1, 1, 1, 32), (2, 3, 3, 7, 2, 32), (1, 16, 16, 5, 2, 64),
            (1, 17, 17, 3, 1, 32), (1, 1, 16, 9, 2, 64), (2, 5, 17, 4, 1, 32),
            # the fp32 CPU kernel's edges: two key chunks (32 + 8 frames) under rows paired
            # and a head dim with a 32-column block and a tail; a head dim under one block;
            # one query frame (dot products with K in place) with a key group of 3 and a
            # head dim tail of 4; K's 8 x 8 transposes with a partial frame group and a
            # head dim tail
            (1, 6, 40, 3, 2, 40), (1, 2, 2, 2, 1, 8), (2, 1, 7, 3, 2, 44), (1, 3, 10, 2, 2, 12)]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("device,backend", TEMPORAL)
def test_temporal_matches_float64(device, backend, causal):
    for dtype in dtypes_for(device, backend):
        for B, Tq, Tk, S, H, D in temporal_shapes(backend):
            _, (q, _, _) = packed(B, Tq, S, H, D, dtype, device)
            _, (_, k, v) = packed(B, Tk, S, H, D, dtype, device)
            check_fwd(wmkernels.temporal_attention, temporal64, q, k, v, dtype,
                      causal=causal, backend=backend)


@pytest.mark.parametrize("device,backend", TEMPORAL)
def test_temporal_kv_cache_prefix_view(device, backend):
    """k/v as the `[:, :t]` prefix of a larger preallocated cache buffer."""
    B, S, H, D, Tmax, t = 2, 5, 2, 32, 16, 7
    kbuf, vbuf = rand((B, Tmax, S, H, D), torch.float32, device), rand(
        (B, Tmax, S, H, D), torch.float32, device)
    k, v = kbuf[:, :t], vbuf[:, :t]
    q = rand((B, 1, S, H, D), torch.float32, device)
    assert not k.is_contiguous()
    check_fwd(wmkernels.temporal_attention, temporal64, q, k, v, torch.float32,
              causal=True, backend=backend)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("device,backend", TEMPORAL)
def test_temporal_contiguous_inputs(device, backend, causal):
    """Separate contiguous q, k, v: the layout where temporal SDPA views exist (no copy)."""
    for Tq, Tk in ((1, 6), (4, 6), (5, 5)):
        q = rand((2, Tq, 3, 2, 32), torch.float32, device)
        k, v = (rand((2, Tk, 3, 2, 32), torch.float32, device) for _ in range(2))
        check_fwd(wmkernels.temporal_attention, temporal64, q, k, v, torch.float32,
                  causal=causal, backend=backend)


@pytest.mark.parametrize("device,backend", SPATIAL)
def test_spatial_gradients(device, backend):
    for dtype in dtypes_for(device, backend, (torch.float32, torch.float16)):
        B, T, S, H, D = (1, 2, 19, 2, 32)
        qkv, (q, k, v) = packed(B, T, S, H, D, dtype, device, requires_grad=True)
        grad = torch.randn(B, T, S, H, D, dtype=dtype, device=device)
        out = wmkernels.spatial_attention(q, k, v, backend=backend)
        (g,) = torch.autograd.grad(out, qkv, grad)
        qkv64 = qkv.detach().double().requires_grad_()
        (g64,) = torch.autograd.grad(spatial64(*qkv64.unbind(3)), qkv64, grad.double())
        low = wmkernels.spatial_attention(q, k, v, backend="reference")
        (glow,) = torch.autograd.grad(low, qkv, grad)
        assert_close(g, g64, glow, dtype=dtype, name="grad of packed qkv")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", [(1, 3, 5, 4, 2, 32), (1, 35, 37, 1, 1, 32)],
                         ids=["short", "chunked"])
@pytest.mark.parametrize("device,backend", TEMPORAL)
def test_temporal_gradients(device, backend, causal, shape):
    for dtype in dtypes_for(device, backend, (torch.float32, torch.float16)):
        B, Tq, Tk, S, H, D = shape
        q = rand((B, Tq, S, H, D), dtype, device).requires_grad_()
        kv = rand((B, Tk, S, 2, H, D), dtype, device).requires_grad_()
        k, v = kv.unbind(3)
        grad = torch.randn(B, Tq, S, H, D, dtype=dtype, device=device)
        out = wmkernels.temporal_attention(q, k, v, causal=causal, backend=backend)
        gq, gkv = torch.autograd.grad(out, (q, kv), grad)
        q64, kv64 = (x.detach().double().requires_grad_() for x in (q, kv))
        ref = temporal64(q64, *kv64.unbind(3), causal=causal)
        gq64, gkv64 = torch.autograd.grad(ref, (q64, kv64), grad.double())
        low = wmkernels.temporal_attention(q, k, v, causal=causal, backend="reference")
        lq, lkv = torch.autograd.grad(low, (q, kv), grad)
        assert_close(gq, gq64, lq, dtype=dtype, name="grad q")
        assert_close(gkv, gkv64, lkv, dtype=dtype, name="grad kv")


@pytest.mark.parametrize("device,backend", SPATIAL)
def test_gradcheck_float64(device, backend):
    if backend not in FLOAT64_BACKENDS:
        pytest.skip(f"{backend} does not run float64")
    q, k, v = (rand((1, 2, 3, 1, 4), torch.float64, device).requires_grad_() for _ in range(3))
    torch.autograd.gradcheck(
        lambda q, k, v: wmkernels.spatial_attention(q, k, v, backend=backend), (q, k, v))
    kt, vt = (rand((1, 4, 3, 1, 4), torch.float64, device).requires_grad_() for _ in range(2))
    for causal in (True, False):
        torch.autograd.gradcheck(lambda q, k, v, c=causal: wmkernels.temporal_attention(
            q, k, v, causal=c, backend=backend), (q, kt, vt))


@pytest.mark.parametrize("device,backend", SPATIAL)
def test_empty_inputs(device, backend):
    q = rand((0, 2, 3, 1, 32), torch.float32, device)
    assert wmkernels.spatial_attention(q, q, q, backend=backend).shape == q.shape
    assert wmkernels.temporal_attention(q, q, q, backend=backend).shape == q.shape


@pytest.mark.parametrize("device,backend", SPATIAL)
def test_compile_fullgraph(device, backend):
    qkv, (q, k, v) = packed(1, 3, 5, 2, 32, torch.float32, device)

    def block(q, k, v):
        return (wmkernels.spatial_attention(q, k, v, backend=backend)
                + wmkernels.temporal_attention(q, k, v, backend=backend))

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(q, k, v), block(q, k, v))
    leaf = qkv.clone().requires_grad_()
    (g_compiled,) = torch.autograd.grad(compiled(*leaf.unbind(3)).sum(), leaf)
    (g_eager,) = torch.autograd.grad(block(*leaf.unbind(3)).sum(), leaf)
    torch.testing.assert_close(g_compiled, g_eager)


def test_scale_is_applied():
    _, (q, k, v) = packed(1, 2, 6, 1, 32, torch.float32, "cpu")
    out = wmkernels.spatial_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, spatial64(q, k, v, scale=0.3).float())
    out = wmkernels.temporal_attention(q, k, v, scale=0.3)
    torch.testing.assert_close(out, temporal64(q, k, v, scale=0.3).float())


BAD = [
    ("rank", lambda x: (x[0], x, x), ValueError, "q must be 5-D"),
    ("shape", lambda x: (x, x[:, :, :3], x[:, :, :3]), ValueError, "k must"),
    ("kv", lambda x: (x, x, x[:, :, :, :1]), ValueError, "k and v"),
    ("dtype", lambda x: (x, x.double(), x), TypeError, "k has dtype"),
    ("int", lambda x: (x.int(), x, x), TypeError, "q must have dtype"),
    ("stride", lambda x: (x, x, x.transpose(3, 4)), ValueError, "v must have unit stride"),
    ("device", lambda x: (x, x.to("meta"), x), ValueError, "k is on meta"),
]


@pytest.mark.parametrize("what,make,exc,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(what, make, exc, msg):
    x = torch.randn(1, 2, 4, 2, 2)
    for fn in (wmkernels.spatial_attention, wmkernels.temporal_attention):
        with pytest.raises(exc, match=msg):
            fn(*make(x))


def test_bad_temporal_args():
    q, k = torch.randn(1, 3, 4, 2, 8), torch.randn(1, 2, 4, 2, 8)
    with pytest.raises(ValueError, match="Tq = 3 > Tk = 2"):
        wmkernels.temporal_attention(q, k, k)
    with pytest.raises(ValueError, match="q's B, S, H, D"):
        wmkernels.temporal_attention(q, torch.randn(1, 3, 5, 2, 8), torch.randn(1, 3, 5, 2, 8))
    with pytest.raises(TypeError, match="causal must be a bool"):
        wmkernels.temporal_attention(k, k, k, causal=1)
    with pytest.raises(ValueError, match="scale must be a finite positive"):
        wmkernels.spatial_attention(k, k, k, scale=-1.0)
    with pytest.raises(ValueError, match="backend"):
        wmkernels.spatial_attention(k, k, k, backend="nope")


OPS = {"cpu": ("spatial_attention_fwd", "spatial_attention_bwd", "temporal_attention_fwd",
               "temporal_attention_bwd"),
       "cuda": ("spatial_attention_fwd", "spatial_attention_bwd", "temporal_attention_fwd",
                "temporal_attention_bwd"),
       "triton": ("spatial_attention_triton_fwd", "spatial_attention_triton_bwd",
                  "temporal_attention_triton_fwd", "temporal_attention_triton_bwd")}


@pytest.mark.parametrize("device,backend", SPATIAL)
def test_opcheck(device, backend):
    if backend in ("reference", "sdpa"):
        pytest.skip(f"{backend} is eager PyTorch, not an op of ours")
    ops = {"cuda-sim": "cuda"}.get(backend, backend)
    sf, sb, tf, tb = (getattr(kernel_ops(backend), name) for name in OPS[ops])
    qkv, (q, k, v) = packed(1, 3, 5, 2, 32, torch.float32, device, requires_grad=True)
    opcheck(sf, (q, k, v, 0.2))
    out, lse = sf(q, k, v, 0.2)
    opcheck(sb, (torch.randn_like(out), q.detach(), k.detach(), v.detach(), out.detach(),
                 lse.detach(), 0.2))
    q1 = q[:, 1:]  # Tq < Tk
    for causal in (True, False):
        opcheck(tf, (q1, k, v, causal, 0.2))
        out, lse = tf(q1, k, v, causal, 0.2)
        opcheck(tb, (torch.randn_like(out), q1.detach(), k.detach(), v.detach(),
                     out.detach(), lse.detach(), causal, 0.2))


@pytest.mark.parametrize("device,backend", SPATIAL)
def test_compile_dynamic(device, backend):
    fn = torch.compile(lambda q, k, v: wmkernels.temporal_attention(q, k, v, backend=backend),
                       fullgraph=True, dynamic=True, backend="aot_eager")
    torch._dynamo.reset()
    for S in (3, 6):
        _, (q, k, v) = packed(1, 4, S, 2, 32, torch.float32, device)
        torch.testing.assert_close(fn(q, k, v), wmkernels.temporal_attention(q, k, v))


def test_kernel_head_dim_and_dtype_limits():
    if routing.unavailable_reason("triton", "cpu") is not None:
        pytest.skip("triton is not available here")
    big = torch.randn(1, 1, 2, 1, 264)
    with pytest.raises(ValueError, match="D <= 256"):
        wmkernels.spatial_attention(big, big, big, backend="triton")
    with pytest.raises(TypeError, match="float64"):
        x = torch.randn(1, 2, 3, 1, 32, dtype=torch.float64)
        wmkernels.temporal_attention(x, x, x, backend="triton")
    odd = torch.randn(1, 2, 3, 1, 24)
    with pytest.warns(UserWarning, match="slower path"):
        out = wmkernels.spatial_attention(odd, odd, odd, backend="triton")
    torch.testing.assert_close(out, wmkernels.spatial_attention(odd, odd, odd, backend="cpu"
                               if "cpu" in available_backends("spatial_attention", "cpu")
                               else "reference"))


@gpu_only("B*S*H = 65536 at S = 1024 is too large for the CPU emulation; the launch paths "
          "run there at small sizes (tests/cuda_sim/test_kernels.py)")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_large_batch_heads_on_gpu(backend):
    """B*S*H >= 65536, where SDPA's fused kernels hit launch limits."""
    if routing.unavailable_reason(backend, "cuda") is not None:
        pytest.skip(routing.unavailable_reason(backend, "cuda"))
    B, T, S, H, D = 4, 4, 1024, 16, 64  # B*S*H = 65536
    _, (q, k, v) = packed(B, T, S, H, D, torch.bfloat16, "cuda")
    out = wmkernels.temporal_attention(q, k, v, backend=backend)
    ref = wmkernels.temporal_attention(q.float(), k.float(), v.float(), backend="reference")
    assert (out.float() - ref).abs().max().item() < 2e-2
    sp = wmkernels.spatial_attention(q[:, :1], k[:, :1], v[:, :1], backend=backend)
    ref = wmkernels.spatial_attention(q[:, :1].float(), k[:, :1].float(), v[:, :1].float(),
                                      backend="reference")
    assert (sp.float() - ref).abs().max().item() < 2e-2


def _triton_on_cpu():
    reason = routing.unavailable_reason("triton", "cpu")
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.parametrize("causal", [False, True])
def test_triton_temporal_nonfinite_stays_in_its_sequence(causal):
    """inf/NaN in k and v of one (b, s, h) must not reach the other sequences packed into
    the same block-diagonal tile (0 * inf there is NaN), forward or backward; without a
    causal mask that sequence's outputs are non-finite exactly where the reference's are."""
    _triton_on_cpu()
    B, T, S, H, D = 1, 4, 3, 2, 16  # 6 sequences of 4 frames share one tile
    q, k, v = (torch.randn(B, T, S, H, D) for _ in range(3))
    v[0, 1, 1, 0, 3], v[0, 2, 1, 0, 5], v[0, 0, 1, 0, 7] = float("inf"), float("nan"), -float(
        "inf")
    k[0, 3, 1, 0, 2] = float("inf")
    poisoned = torch.zeros(S, H, dtype=torch.bool)
    poisoned[1, 0] = True
    grad = torch.randn(B, T, S, H, D)
    outs = {}
    for backend, dtype in (("triton", torch.float32), ("reference", torch.float64)):
        leaves = [x.detach().to(dtype, copy=True).requires_grad_() for x in (q, k, v)]
        out = wmkernels.temporal_attention(*leaves, causal=causal, backend=backend)
        out.backward(grad.to(dtype))
        outs[backend] = [out.detach()] + [x.grad for x in leaves]
    for name, got, ref in zip(("out", "dq", "dk", "dv"), outs["triton"], outs["reference"],
                              strict=True):
        clean = got[:, :, ~poisoned]
        assert torch.isfinite(clean).all(), f"{name}: non-finite values leaked"
        torch.testing.assert_close(clean.double(), ref[:, :, ~poisoned], atol=1e-4, rtol=1e-4)
    if not causal:
        got, ref = outs["triton"][0][:, :, poisoned], outs["reference"][0][:, :, poisoned]
        assert torch.equal(torch.isfinite(got), torch.isfinite(ref))


@pytest.mark.parametrize("op", ["spatial", "temporal"])
def test_triton_offsets_past_2_31(op):
    """A row (spatial) or frame (temporal) index times its stride passing 2^31 elements:
    the kernels compute such offsets in 64 bits. The views stride through 4 GiB of address
    space of which only a few pages are ever touched."""
    _triton_on_cpu()
    D, step = 16, 2 ** 30  # the stride fits in int32, 2 * stride does not
    try:
        buf = torch.empty(2 * step + 64, dtype=torch.float16)
    except RuntimeError:
        pytest.skip("cannot reserve 4 GiB of address space here")
    if op == "spatial":  # (B, T, S, H, D) = (1, 1, 3, 1, D), rows `step` apart
        size, stride = (1, 1, 3, 1, D), (0, 0, step, D, 1)
    else:  # (1, 3, 1, 1, D), frames `step` apart
        size, stride = (1, 3, 1, 1, D), (0, step, D, D, 1)
    q, k, v = (buf.as_strided(size, stride, offset) for offset in (0, D, 2 * D))
    for x in (q, k, v):
        x.copy_(torch.randn(size))
    dense = [x.contiguous() for x in (q, k, v)]
    scale = D ** -0.5
    if op == "spatial":
        fwd, bwd = (torch.ops.wmk.spatial_attention_triton_fwd,
                    torch.ops.wmk.spatial_attention_triton_bwd)
        extra = ()
    else:
        fwd, bwd = (torch.ops.wmk.temporal_attention_triton_fwd,
                    torch.ops.wmk.temporal_attention_triton_bwd)
        extra = (True,)
    out, lse = fwd(q, k, v, *extra, scale)
    ref_out, ref_lse = fwd(*dense, *extra, scale)
    torch.testing.assert_close(out, ref_out, atol=0, rtol=0)
    grad = torch.randn(size, dtype=torch.float16)
    for got, ref in zip(bwd(grad, q, k, v, out, lse, *extra, scale),
                        bwd(grad, *dense, ref_out, ref_lse, *extra, scale), strict=True):
        torch.testing.assert_close(got, ref, atol=0, rtol=0)


def test_triton_refuses_float32_head_dims_over_128():
    """fp32 tiles past D = 128 cannot run without spilling: refused before any launch."""
    _triton_on_cpu()
    x = torch.randn(1, 2, 3, 1, 160)
    for fn in (wmkernels.spatial_attention, wmkernels.temporal_attention):
        with pytest.raises(ValueError, match="float32 head dims D <= 128"):
            fn(x, x, x, backend="triton")


def _hidden_frame_runs(backend, device, Tq, Tk, plant):
    """Causal temporal attention and its gradients, clean and with NaN/inf planted in the
    last key frame (`plant` "k" or "v"), which every query frame but the last must not see."""
    gen = torch.Generator().manual_seed(7)
    B, S, H, D = 1, 3, 2, 32
    q, k, v = (torch.randn(B, t, S, H, D, generator=gen) for t in (Tq, Tk, Tk))
    grad = torch.randn(B, Tq, S, H, D, generator=gen)
    bad = (k if plant == "k" else v).clone()
    bad[0, -1, 1, 0, 3], bad[0, -1, 2, 1, :] = float("nan"), float("inf")
    runs = []
    for kk, vv in ((k, v), (bad, v) if plant == "k" else (k, bad)):
        leaves = [x.to(device).requires_grad_() for x in (q, kk, vv)]
        out = wmkernels.temporal_attention(*leaves, causal=True, backend=backend)
        runs.append([out.detach(), *torch.autograd.grad(out, leaves, grad.to(device))])
    return runs


# sdpa lets hidden NaN/inf through (documented in wmkernels/ops/sdpa_views.py; tested below)
@pytest.mark.parametrize("plant", ["k", "v"])
@pytest.mark.parametrize("Tq,Tk", [(4, 4), (3, 5)])
@pytest.mark.parametrize("device,backend", [p for p in TEMPORAL if p.values[1] != "sdpa"])
def test_temporal_hidden_nonfinite_frame_is_invisible(device, backend, Tq, Tk, plant):
    """NaN and inf in the last key frame leave the outputs of the query frames that do not see
    it, their dq, and (NaN in v: the probabilities stay finite) every dv, finite and equal to
    the clean run: a masked key never enters a sum, forward or backward."""
    (out, dq, _, dv), (bad_out, bad_dq, _, bad_dv) = _hidden_frame_runs(backend, device, Tq,
                                                                        Tk, plant)
    checked = [("out", out[:, :-1], bad_out[:, :-1]), ("dq", dq[:, :-1], bad_dq[:, :-1])]
    if plant == "v":
        checked.append(("dv", dv[:, :-1], bad_dv[:, :-1]))
    for name, clean, got in checked:
        assert torch.isfinite(got).all(), f"{name}: a hidden frame's NaN/inf leaked"
        torch.testing.assert_close(got, clean, atol=1e-6, rtol=1e-6, msg=name)
    assert not torch.isfinite(bad_out[:, -1]).all()  # the last query frame does see it


def test_sdpa_backend_lets_hidden_nonfinite_frames_through():
    """The `sdpa` backend is torch's SDPA with a causal mask, which multiplies the hidden
    probabilities (zeros) by v: as its module docstring says, NaN in a hidden frame reaches
    the earlier query frames there. The other backends keep them out (test above)."""
    (_, _, _, _), (bad_out, _, _, _) = _hidden_frame_runs("sdpa", "cpu", 4, 4, "v")
    assert not torch.isfinite(bad_out[:, 0]).all()


@pytest.mark.parametrize("tq,tk,causal", [(5, 5, True), (3, 7, True), (1, 4, True), (4, 4, False)])
def test_bench_baseline_matches_reference(tq, tk, causal):
    """The benches' eager temporal baseline (bench/baselines.py) is the reference on finite
    inputs, so timing it instead measures the same op."""
    from wmkernels.bench.baselines import temporal_attention_rearrange

    g = torch.Generator().manual_seed(tq * 10 + tk)
    q = torch.randn(2, tq, 6, 3, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, tk, 6, 3, 8, generator=g, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(temporal_attention_rearrange(q, k, v, causal),
                               reference.temporal_attention(q, k, v, causal))


@pytest.mark.parametrize("B,tq,tk", [(1, 5, 5), (1, 2, 6), (1, 1, 4), (2, 3, 3)])
def test_sdpa_temporal_on_packed_projection_views(B, tq, tk):
    """Views of a packed (B, T, S, 3, H, D) projection: for one clip (B = 1) the sdpa backend
    runs on zero-copy (B*S, H, T, D) views; for more it has no view (a copy). Either way it
    matches the float64 reference, forward and backward."""
    from wmkernels.ops import sdpa_views

    g = torch.Generator().manual_seed(B * 100 + tq * 10 + tk)
    x = torch.randn(B, tk, 5, 3, 2, 8, generator=g, dtype=torch.float64, requires_grad=True)
    q, k, v = x.unbind(3)
    q = q[:, tk - tq:]
    assert sdpa_views.temporal_view_exists(q, k, v) == (B == 1)
    out = wmkernels.temporal_attention(q, k, v, causal=True, backend="sdpa")
    ref = reference.temporal_attention(q, k, v, True)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (got,) = torch.autograd.grad(out, x, grad)
    (want,) = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(got, want)
