"""VQ ops against float64 brute force, on every backend present."""

import pytest
import torch
import torch.nn.functional as F
from checks import assert_close, backend_params, dtypes_for, opcheck

import wmkernels
from wmkernels._extension import kernel_ops
from wmkernels.bench import baselines
from wmkernels.reference import vq as ref

LOOKUP = backend_params("vq_lookup")
EMA = backend_params("vq_ema_update_")
# (N, K, D): every size of the issue appears; Triton under the interpreter gets the subset
# that stays quick there.
SHAPES = [(0, 8, 32), (1, 1, 3), (1, 4097, 129), (1000, 8, 32), (1000, 1000, 3),
          (4099, 1000, 32), (4099, 4097, 3)]
SHAPES_INTERPRETED = [(0, 8, 32), (1, 1, 3), (37, 4097, 32), (1000, 8, 32), (100, 1000, 129),
                      (4099, 8, 3)]


def distances64(z, codebook, metric):
    """Exact float64 distances (chunked brute force, no expansion tricks)."""
    z, c = z.double().reshape(-1, z.shape[-1]), codebook.double()
    if metric == "cosine":
        return -(F.normalize(z, dim=-1) @ F.normalize(c, dim=-1).t())
    return torch.cat([((zc[:, None] - c[None]) ** 2).sum(-1) for zc in z.split(256)]
                     or [z.new_zeros(0, c.shape[0])])


def assert_nearest(idx, z, codebook, metric, dtype):
    """The chosen code's exact distance is within rounding of the true minimum."""
    d = distances64(z, codebook, metric)
    assert idx.dtype == torch.int64 and idx.shape == z.shape[:-1]
    if d.shape[0] == 0:
        return
    flat = idx.reshape(-1).cpu()
    assert int(flat.min()) >= 0 and int(flat.max()) < codebook.shape[0]
    chosen = d.gather(1, flat[:, None]).squeeze(1)
    best = d.min(1).values
    eps = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}
    scale = (z.double().reshape(-1, z.shape[-1]).pow(2).sum(-1) + codebook.double().pow(2)
             .sum(-1).max()) if metric == "l2" else torch.ones_like(best)
    assert (chosen - best <= eps[dtype] * scale + 1e-12).all()


def shapes_for(device, backend):
    emulated = backend in ("triton", "cuda-sim") and device == "cpu"
    return SHAPES_INTERPRETED if emulated else SHAPES


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("device,backend", LOOKUP)
def test_lookup_matches_bruteforce(device, backend, metric):
    for dtype in dtypes_for(device, backend):
        for N, K, D in shapes_for(device, backend):
            z = torch.randn(N, D, device=device).to(dtype)
            codebook = torch.randn(K, D, device=device).to(dtype)
            idx = wmkernels.vq_lookup(z, codebook, metric=metric, backend=backend)
            assert_nearest(idx, z, codebook, metric, dtype)


@pytest.mark.parametrize("device,backend", [p for p in LOOKUP if "triton" not in p.id])
def test_lookup_float64(device, backend):
    z, codebook = torch.randn(300, 17, dtype=torch.float64), torch.randn(129, 17).double()
    idx = wmkernels.vq_lookup(z.to(device), codebook.to(device), backend=backend)
    torch.testing.assert_close(idx.cpu(), distances64(z, codebook, "l2").argmin(1))


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("device,backend", LOOKUP)
def test_lookup_exact_on_separated_codes(device, backend, metric):
    K, D = 257, 32
    codebook = torch.randn(K, D, device=device)
    truth = torch.randint(0, K, (3, 41), device=device)
    z = codebook[truth] + 0.01 * torch.randn(3, 41, D, device=device)
    idx = wmkernels.vq_lookup(z, codebook, metric=metric, backend=backend)
    torch.testing.assert_close(idx, truth)


@pytest.mark.parametrize("device,backend", LOOKUP)
def test_ties_go_to_smallest_index(device, backend):
    """Small-integer data make every distance exact in any summation order, so planted ties
    (duplicate codes, and equidistant codes) are real ties for every backend."""
    base = torch.randint(-3, 4, (40, 16), device=device).float()
    codebook = torch.cat([base, base, base[:7]])  # every code appears two or three times
    z = torch.randint(-3, 4, (333, 16), device=device).float()
    idx = wmkernels.vq_lookup(z, codebook, backend=backend)
    assert (idx < 40).all(), "a duplicate code with a larger index won a tie"
    torch.testing.assert_close(idx.cpu(), distances64(z, codebook, "l2").argmin(1))
    # cosine: normalization rounds, so only near-ties can be planted; the choice must be
    # a nearest code within rounding
    idx = wmkernels.vq_lookup(z, codebook, metric="cosine", backend=backend)
    assert_nearest(idx, z, codebook, "cosine", torch.float32)


@pytest.mark.parametrize("device,backend", LOOKUP)
def test_nan_policy(device, backend):
    """A NaN distance counts as the smallest (torch.argmin): NaN rows of z get code 0, and a
    NaN code is chosen by every row (the first NaN code if several)."""
    z = torch.randn(50, 8, device=device)
    z[3, 2] = float("nan")
    codebook = torch.randn(20, 8, device=device)
    idx = wmkernels.vq_lookup(z, codebook, backend=backend)
    assert idx[3].item() == 0
    codebook[11, 0] = float("nan")
    codebook[15, 1] = float("nan")
    idx = wmkernels.vq_lookup(z, codebook, backend=backend)
    assert idx[3].item() == 0 and (idx[torch.arange(50, device=device) != 3] == 11).all()
    eager = ref.vq_distances(z, codebook).argmin(-1)
    torch.testing.assert_close(idx, eager)


@pytest.mark.parametrize("device,backend", LOOKUP)
def test_leading_dims_and_strided_z(device, backend):
    packed = torch.randn(2, 5, 7, 3, 24, device=device)  # e.g. a (B, T, S, 3, D) projection
    z = packed[:, :, :, 1, 4:20]  # non-contiguous view, D = 16
    codebook = torch.randn(33, 16, device=device)
    idx = wmkernels.vq_lookup(z, codebook, backend=backend)
    assert idx.shape == (2, 5, 7)
    torch.testing.assert_close(idx.reshape(-1).cpu(),
                               distances64(z, codebook, "l2").argmin(1))


@pytest.mark.parametrize("device,backend", LOOKUP)
def test_empty(device, backend):
    idx = wmkernels.vq_lookup(torch.randn(2, 0, 8, device=device),
                              torch.randn(4, 8, device=device), backend=backend)
    assert idx.shape == (2, 0) and idx.dtype == torch.int64


def test_bad_input_errors():
    z, cb = torch.randn(10, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match="codebook.shape"):
        wmkernels.vq_lookup(z, torch.randn(4, 7))
    with pytest.raises(ValueError, match="codebook must be 2-D"):
        wmkernels.vq_lookup(z, torch.randn(8))
    with pytest.raises(TypeError, match="z must have dtype"):
        wmkernels.vq_lookup(z.long(), cb.long())
    with pytest.raises(TypeError, match="codebook has dtype"):
        wmkernels.vq_lookup(z, cb.double())
    with pytest.raises(ValueError, match="at least one code"):
        wmkernels.vq_lookup(z, torch.randn(0, 8))
    with pytest.raises(ValueError, match="metric"):
        wmkernels.vq_lookup(z, cb, metric="l1")
    with pytest.raises(ValueError, match="not a backend"):
        wmkernels.vq_lookup(z, cb, backend="fast")
    with pytest.raises(RuntimeError, match="cuda backend runs CUDA tensors"):
        wmkernels.vq_lookup(z, cb, backend="cuda")
    with pytest.raises(TypeError, match="z must be a torch.Tensor"):
        wmkernels.vq_lookup([1.0], cb)
    with pytest.raises(ValueError, match="no 'triton' backend"):
        wmkernels.vq_ema_update_(cb, torch.zeros(4), cb.clone(), z, torch.zeros(10).long(),
                                 backend="triton")


def test_env_backend_routing(monkeypatch):
    z, cb = torch.randn(10, 8), torch.randn(4, 8)
    monkeypatch.setenv("WMK_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="WMK_BACKEND="):
        wmkernels.vq_lookup(z, cb)
    monkeypatch.setenv("WMK_BACKEND", "reference")
    torch.testing.assert_close(wmkernels.vq_lookup(z, cb), ref.vq_lookup(z, cb))


@pytest.mark.parametrize("device,backend", [p for p in LOOKUP if "reference" not in p.id])
def test_opcheck(device, backend):
    op = torch.ops.wmk.vq_lookup_triton if backend == "triton" else kernel_ops(backend).vq_lookup
    z, cb = torch.randn(37, 16, device=device), torch.randn(19, 16, device=device)
    for metric in ("l2", "cosine"):
        opcheck(op, (z, cb, metric))


@pytest.mark.parametrize("device,backend", [p for p in EMA if "reference" not in p.id])
def test_opcheck_ema(device, backend):
    K, D = 9, 5
    args = (torch.randn(K, D, device=device), torch.rand(K, device=device),
            torch.randn(K, D, device=device), torch.randn(31, D, device=device),
            torch.randint(0, K, (31,), device=device), 0.9, 1e-5)
    opcheck(kernel_ops(backend).vq_ema_update_, args)


@pytest.mark.parametrize("dynamic", [False, True])
@pytest.mark.parametrize("device,backend", LOOKUP)
def test_compile_fullgraph(device, backend, dynamic):
    codebook = torch.randn(64, 16, device=device, requires_grad=True)
    z = torch.randn(4, 50, 16, device=device, requires_grad=True)
    fn = lambda z, c: wmkernels.vq_quantize(z, c, backend=backend)
    compiled = torch.compile(fn, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    out, idx, loss = compiled(z, codebook)
    e_out, e_idx, e_loss = fn(z, codebook)
    torch.testing.assert_close(idx, e_idx)
    torch.testing.assert_close(out, e_out)
    torch.testing.assert_close(loss, e_loss)
    loss.backward()
    assert z.grad is not None and codebook.grad is not None


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("device,backend", LOOKUP)
def test_quantize_values_and_gradients(device, backend, metric):
    dtype = torch.float32 if backend == "triton" else torch.float64
    z = torch.randn(3, 29, 12, device=device, dtype=dtype, requires_grad=True)
    codebook = torch.randn(50, 12, device=device, dtype=dtype, requires_grad=True)
    z_q, idx, loss = wmkernels.vq_quantize(z, codebook, metric=metric, commitment_weight=0.3,
                                           backend=backend)
    codes = codebook if metric == "l2" else F.normalize(codebook, dim=-1)
    zz = z if metric == "l2" else F.normalize(z, dim=-1)
    e = codes[idx]
    torch.testing.assert_close(z_q, e)
    expected = ((zz - e) ** 2).mean() * 1.3
    torch.testing.assert_close(loss, expected)
    # straight-through: d(sum(w * z_q))/dz is w (through the normalization for cosine)
    w = torch.randn_like(z_q)
    (gz,) = torch.autograd.grad((z_q * w).sum(), z)
    (gz_ref,) = torch.autograd.grad((zz * w).sum(), z)
    torch.testing.assert_close(gz, gz_ref)


@pytest.mark.parametrize("device,backend", [p for p in LOOKUP if "triton" not in p.id])
def test_quantize_loss_gradients(device, backend):
    """The stop-gradients make the loss's gradients differ from its total derivative (so
    gradcheck does not apply): z gets only the commitment term, the codebook only the first."""
    beta = 0.25
    z = torch.randn(7, 5, device=device, dtype=torch.float64, requires_grad=True)
    codebook = torch.randn(6, 5, device=device, dtype=torch.float64, requires_grad=True)
    _, idx, loss = wmkernels.vq_quantize(z, codebook, commitment_weight=beta, backend=backend)
    gz, gc = torch.autograd.grad(loss, (z, codebook))
    diff = (z - codebook[idx]).detach()
    torch.testing.assert_close(gz, beta * 2 * diff / z.numel())
    want = torch.zeros_like(codebook).index_add_(0, idx, -2 * diff / z.numel())
    torch.testing.assert_close(gc, want)


def test_quantize_empty():
    z = torch.randn(0, 4, requires_grad=True)
    z_q, idx, loss = wmkernels.vq_quantize(z, torch.randn(3, 4))
    assert z_q.shape == (0, 4) and idx.shape == (0,) and loss.item() == 0.0


@pytest.mark.parametrize("device,backend", EMA)
def test_ema_update_matches_onehot_reference(device, backend):
    for N, K, D in [(1, 1, 3), (1000, 37, 32), (4099, 1000, 3), (0, 5, 4)]:
        dtype = torch.float64 if backend not in ("cuda", "cuda-sim") else torch.float32
        opts = dict(device=device, dtype=dtype)
        codebook, embed_sum = torch.randn(K, D, **opts), torch.randn(K, D, **opts)
        cluster_size = torch.rand(K, **opts) * 3
        z = torch.randn(N, D, **opts)
        idx = torch.randint(0, max(1, K // 2), (N,), device=device)  # leave some codes unused
        state = [t.clone() for t in (codebook, cluster_size, embed_sum)]
        ref.vq_ema_update_(*state, z, idx, 0.9, 1e-5)
        codebook.fill_(float("nan"))  # poison: every entry must be written
        wmkernels.vq_ema_update_(codebook, cluster_size, embed_sum, z, idx, decay=0.9, eps=1e-5,
                                 backend=backend)
        for got, want in zip((codebook, cluster_size, embed_sum), state, strict=True):
            torch.testing.assert_close(got, want)


def test_ema_bad_input():
    cb, cs, es = torch.randn(4, 3), torch.zeros(4), torch.randn(4, 3)
    z, idx = torch.randn(5, 3), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ValueError, match="cluster_size must be"):
        wmkernels.vq_ema_update_(cb, torch.zeros(5), es, z, idx)
    with pytest.raises(TypeError, match="indices must have dtype"):
        wmkernels.vq_ema_update_(cb, cs, es, z, idx.int())
    with pytest.raises(ValueError, match="decay"):
        wmkernels.vq_ema_update_(cb, cs, es, z, idx, decay=1.5)
    with pytest.raises(ValueError, match="contiguous"):
        wmkernels.vq_ema_update_(torch.randn(3, 4).t(), cs, es, z, idx)


def test_bench_onehot_baseline_agrees_with_reference():
    z, cb = torch.randn(200, 8), torch.randn(30, 8)
    idx, zq = baselines.vq_lookup_onehot(z, cb)
    torch.testing.assert_close(idx, ref.vq_lookup(z, cb))
    torch.testing.assert_close(zq, cb[idx])
    _ = assert_close  # the tolerance rule is exercised by the attention and maskgit tests


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/statm"), reason="needs /proc")
def test_cpu_kernel_never_materializes_distances():
    """Extra memory is O(N + K): at N = 65536, K = 1024 the N x K fp32 matrix is 256 MiB."""
    from wmkernels.bench.timing import peak_memory
    from wmkernels.routing import unavailable_reason

    if unavailable_reason("cpu", "cpu"):
        pytest.skip(unavailable_reason("cpu", "cpu"))
    z, codebook = torch.randn(65536, 32), torch.randn(1024, 32)
    eager = peak_memory(lambda: ref.vq_lookup(z, codebook), "cpu")
    fused = peak_memory(lambda: wmkernels.vq_lookup(z, codebook, backend="cpu"), "cpu")
    assert eager > 200 * 2**20, "the measurement should see the eager N x K matrix"
    assert fused < 16 * 2**20, f"fused lookup grew memory by {fused / 2**20:.1f} MiB"


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("device,backend", LOOKUP)
def test_inf_policy(device, backend, metric):
    """A code holding inf is never nearest while a finite code exists (rows equal to finite
    codes used to map to it through inf - inf = NaN); a row of z holding inf maps to the
    first NaN code, or to 0 when no code holds NaN; a NaN row maps to 0."""
    inf, nan = float("inf"), float("nan")
    codebook = torch.tensor([[0.0, 1.0], [1.0, 1.0], [inf, 0.0], [2.0, -2.0]], device=device)
    z = torch.tensor([[1.0, 1.0], [2.0, -2.0], [0.0, 1.0], [inf, 1.0], [-inf, 0.0],
                      [nan, 0.0]], device=device)
    idx = wmkernels.vq_lookup(z, codebook, metric=metric, backend=backend)
    assert idx.tolist() == [1, 3, 0, 0, 0, 0]
    codebook[0, 1] = nan
    idx = wmkernels.vq_lookup(z, codebook, metric=metric, backend=backend)
    assert idx.tolist() == [0, 0, 0, 0, 0, 0]
    codebook = codebook[[1, 3, 0, 2]]  # the NaN code is now code 2
    idx = wmkernels.vq_lookup(z, codebook, metric=metric, backend=backend)
    assert idx.tolist() == [2, 2, 2, 2, 2, 0]
    everything_inf = torch.full((3, 2), inf, device=device)
    idx = wmkernels.vq_lookup(z[:3], everything_inf, metric=metric, backend=backend)
    assert idx.tolist() == [0, 0, 0]


@pytest.mark.parametrize("device,backend", [p for p in LOOKUP if "triton" not in p.id])
def test_inf_policy_float64(device, backend):
    inf = float("inf")
    codebook = torch.tensor([[0.0, 1.0], [1.0, 1.0], [inf, 0.0]], dtype=torch.float64)
    z = torch.tensor([[1.0, 1.0], [0.0, 1.0], [inf, 1.0]], dtype=torch.float64)
    idx = wmkernels.vq_lookup(z.to(device), codebook.to(device), backend=backend)
    assert idx.tolist() == [1, 0, 0]


@pytest.mark.parametrize("bad", [-1, 10**9, 4, 7])
@pytest.mark.parametrize("device,backend", EMA)
def test_ema_index_out_of_range(device, backend, bad):
    """-1 and 10**9 crashed the cpu kernel; 4..7 (in [K, 2K)) wrote past its scratch and
    returned normally. Now all are refused before anything is written."""
    cb, cs, es = (torch.randn(4, 3, device=device), torch.rand(4, device=device),
                  torch.randn(4, 3, device=device))
    before = [t.clone() for t in (cb, cs, es)]
    idx = torch.zeros(5, dtype=torch.long, device=device)
    idx[2] = bad
    with pytest.raises(ValueError, match=r"indices must be in \[0, K\)"):
        wmkernels.vq_ema_update_(cb, cs, es, torch.randn(5, 3, device=device), idx,
                                 backend=backend)
    for t, b in zip((cb, cs, es), before, strict=True):
        torch.testing.assert_close(t, b)


@pytest.mark.parametrize("device,backend", EMA)
def test_ema_empty_codebook_and_bad_hyperparameters(device, backend):
    z, idx = torch.randn(5, 3, device=device), torch.zeros(5, dtype=torch.long, device=device)
    empty = (torch.randn(0, 3, device=device), torch.zeros(0, device=device),
             torch.randn(0, 3, device=device))
    with pytest.raises(ValueError, match="codebook must be"):
        wmkernels.vq_ema_update_(*empty, z, idx, backend=backend)
    state = (torch.randn(4, 3, device=device), torch.rand(4, device=device),
             torch.randn(4, 3, device=device))
    for kw, name in [(dict(eps=float("nan")), "eps"), (dict(eps=float("inf")), "eps"),
                     (dict(decay=float("nan")), "decay"), (dict(decay=-1e-3), "decay")]:
        with pytest.raises(ValueError, match=name):
            wmkernels.vq_ema_update_(*state, z, idx, backend=backend, **kw)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("device,backend", EMA)
def test_ema_update_low_precision_state(device, backend, dtype):
    """fp16/bf16 buffers (the cpu kernel used to raise NotImplementedError): the tolerance
    rule against the float64 reference."""
    K, D, N = 37, 8, 500
    state64 = [torch.randn(K, D, dtype=torch.float64), torch.rand(K, dtype=torch.float64) * 3,
               torch.randn(K, D, dtype=torch.float64)]
    z = torch.randn(N, D, dtype=torch.float64)
    idx = torch.randint(0, K, (N,))
    low_ref = [t.to(dtype) for t in state64]
    ref.vq_ema_update_(*low_ref, z.to(dtype), idx, 0.9, 1e-5)
    got = [t.to(dtype).to(device) for t in state64]
    wmkernels.vq_ema_update_(*got, z.to(dtype).to(device), idx.to(device), decay=0.9,
                             backend=backend)
    ref64 = [t.clone() for t in state64]
    ref.vq_ema_update_(*ref64, z.to(dtype).double(), idx, 0.9, 1e-5)
    for name, g, low, r in zip(("codebook", "cluster_size", "embed_sum"), got, low_ref, ref64,
                               strict=True):
        assert_close(g.cpu(), r, low, dtype=dtype, name=name)


@pytest.mark.parametrize("device,backend", EMA)
def test_ema_nonfinite_row_changes_only_its_code(device, backend):
    """The reference used a one-hot GEMM, which spread one NaN row to every code (the cpu
    kernel touched only its own): both now change only the row's code."""
    K, D = 8, 4
    cb, cs, es = torch.randn(K, D), torch.rand(K) + 1, torch.randn(K, D)
    z, idx = torch.randn(20, D), torch.randint(0, K, (20,))
    idx[5] = 3
    for value in (float("nan"), float("inf")):
        zz = z.clone()
        zz[5, 1] = value
        state = [t.clone().to(device) for t in (cb, cs, es)]
        wmkernels.vq_ema_update_(*state, zz.to(device), idx.to(device), backend=backend)
        finite = state[0].isfinite().all(1).cpu()
        assert finite.tolist() == [k != 3 for k in range(K)]
        assert state[1].isfinite().all()


@pytest.mark.parametrize("device,backend", LOOKUP)
def test_lookup_zero_dim_vectors_refused(device, backend):
    with pytest.raises(ValueError, match="D >= 1"):
        wmkernels.vq_lookup(torch.randn(5, 0, device=device), torch.randn(4, 0, device=device),
                            backend=backend)


def test_quantize_refuses_bad_commitment_weight():
    z, cb = torch.randn(5, 3), torch.randn(4, 3)
    for value in (float("nan"), float("inf"), -0.5):
        with pytest.raises(ValueError, match="commitment_weight"):
            wmkernels.vq_quantize(z, cb, commitment_weight=value)
    with pytest.raises(TypeError, match="commitment_weight"):
        wmkernels.vq_quantize(z, cb, commitment_weight="0.25")
