"""Backend selection: argument > WMK_BACKEND > best available, with reasons when not."""

import pytest
import torch

import wmkernels
from wmkernels import _extension, routing


def test_backends_table_lists_every_op_and_reason():
    table = wmkernels.backends()
    assert {"vq_lookup", "vq_ema_update_"} <= set(table)
    row = table["vq_lookup"]["cpu"]
    assert row["reference"] == "available"
    assert "CUDA tensors" in row["cuda"]
    assert all(isinstance(v, str) and v for v in row.values())


def test_default_prefers_cpu_kernel_when_built():
    expected = "cpu" if _extension.has_cpu() else "reference"
    assert routing.select("vq_lookup", torch.device("cpu"), None) == expected


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("WMK_BACKEND", "cuda")
    assert routing.select("vq_lookup", torch.device("cpu"), "reference") == "reference"
    with pytest.raises(RuntimeError, match="WMK_BACKEND='cuda' cannot run"):
        routing.select("vq_lookup", torch.device("cpu"), None)


def test_unknown_backend_and_missing_implementation():
    with pytest.raises(ValueError, match="not a backend"):
        routing.select("vq_lookup", torch.device("cpu"), "tpu")
    with pytest.raises(ValueError, match="has no 'triton' backend"):
        routing.select("vq_ema_update_", torch.device("cpu"), "triton")


def test_extension_failure_is_reported_not_raised():
    # whatever the build state, importing worked and the reason is a sentence when absent
    assert _extension.has_cpu() or "not built" in _extension.LOAD_ERROR


@pytest.fixture
def scratch_registry(monkeypatch):
    """Backends and implementations registered by a test vanish after it."""
    monkeypatch.setattr(routing, "_EXTRA", dict(routing._EXTRA))
    monkeypatch.setattr(routing, "_OPS", dict(routing._OPS))


def test_registered_backend_runs_only_when_asked_for(scratch_registry):
    missing = []
    routing.register_backend("emu", "cpu", lambda: missing[0] if missing else None)
    routing.add_implementation("vq_lookup", "emu")
    routing.add_implementation("vq_lookup", "emu")  # idempotent
    assert routing._OPS["vq_lookup"].count("emu") == 1
    cpu = torch.device("cpu")
    assert routing.select("vq_lookup", cpu, None) != "emu"
    assert routing.select("vq_lookup", cpu, "emu") == "emu"
    assert wmkernels.backends()["vq_lookup"]["cpu"]["emu"] == "available"
    assert wmkernels.backends()["vq_ema_update_"]["cpu"]["emu"] == "not implemented for this op"
    missing.append("the emulator library is not built")
    with pytest.raises(RuntimeError, match="'emu' cannot run: the emulator library is not built"):
        routing.select("vq_lookup", cpu, "emu")
    with pytest.raises(ValueError, match="has no 'emu' backend"):
        routing.select("vq_ema_update_", cpu, "emu")
    assert "runs cpu tensors" in routing.unavailable_reason("emu", "cuda")


def test_registered_backend_names_are_checked(scratch_registry):
    with pytest.raises(ValueError, match="built-in backend"):
        routing.register_backend("cuda", "cpu", lambda: None)
    with pytest.raises(ValueError, match="not a backend"):
        routing.add_implementation("vq_lookup", "never-registered")


CPU = torch.device("cpu")
AUTO = routing.select("vq_lookup", CPU, None)


def test_use_backend_nests_and_restores():
    with wmkernels.use_backend("reference"):
        assert routing.select("vq_lookup", CPU, None) == "reference"
        with wmkernels.use_backend(None):
            assert routing.select("vq_lookup", CPU, None) == AUTO
        with wmkernels.use_backend("cuda"), pytest.raises(RuntimeError, match="cannot run"):
            routing.select("vq_lookup", CPU, None)
        assert routing.select("vq_lookup", CPU, None) == "reference"
    assert routing.select("vq_lookup", CPU, None) == AUTO


def test_use_backend_restores_after_an_error():
    with pytest.raises(KeyError), wmkernels.use_backend("reference"):
        raise KeyError
    assert routing.select("vq_lookup", CPU, None) == AUTO


def test_use_backend_precedence(monkeypatch):
    monkeypatch.setenv("WMK_BACKEND", "cuda")
    with wmkernels.use_backend("reference"):
        assert routing.select("vq_lookup", CPU, None) == "reference"  # beats WMK_BACKEND
        assert routing.select("vq_lookup", CPU, AUTO) == AUTO  # the argument beats it
        with wmkernels.use_backend(None), pytest.raises(RuntimeError, match="WMK_BACKEND="):
            routing.select("vq_lookup", CPU, None)


def test_use_backend_bad_names():
    with pytest.raises(ValueError, match=r"use_backend\('tpu'\): not a backend"):
        with wmkernels.use_backend("tpu"):
            pass
    with wmkernels.use_backend("triton"), pytest.raises(ValueError,
                                                        match=r"has no 'triton' backend \(use_"):
        routing.select("vq_ema_update_", CPU, None)


def test_use_backend_is_local_to_a_thread_and_a_task():
    import asyncio
    import threading

    seen = {}
    inside, done = threading.Event(), threading.Event()

    def other_thread():
        inside.wait()
        seen["thread"] = routing.select("vq_lookup", CPU, None)
        done.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with wmkernels.use_backend("reference"):
        inside.set()
        done.wait()
    t.join()
    assert seen["thread"] == AUTO

    async def task(name, hold):
        with wmkernels.use_backend(name):
            await hold.wait()
            return routing.select("vq_lookup", CPU, None)

    async def both():
        hold = asyncio.Event()
        a = asyncio.create_task(task("reference", hold))
        b = asyncio.create_task(task(None, hold))
        await asyncio.sleep(0)
        hold.set()
        return await a, await b

    assert asyncio.run(both()) == ("reference", AUTO)


def test_use_backend_is_read_while_tracing_under_compile():
    q = torch.randn(1, 2, 3, 1, 4)

    def f(x):
        return wmkernels.spatial_attention(x, x, x)

    torch._dynamo.reset()
    with wmkernels.use_backend("reference"):
        out = torch.compile(f, fullgraph=True, backend="eager")(q)
    torch.testing.assert_close(out, f(q))
    torch._dynamo.reset()
    with wmkernels.use_backend("cuda"), pytest.raises(Exception, match=r"use_backend\('cuda'\)"):
        torch.compile(f, fullgraph=True, backend="eager")(q)
    torch._dynamo.reset()


# The canonical shapes of shared/BENCHMARKS.md: op, sizes, dtype, SDPA views exist (packed
# QKV: spatial views do, temporal views do not).
ATT = dict(H=16, D=64, causal=True)
CANONICAL = {
    "attn-spatial-genie": ("spatial_attention", dict(ATT, B=8, Tq=16, Tk=16, S=1024),
                           torch.bfloat16, True),
    "attn-spatial-dit": ("spatial_attention", dict(ATT, B=2, Tq=16, Tk=16, S=4096, D=128),
                         torch.bfloat16, True),
    "attn-temporal-genie": ("temporal_attention", dict(ATT, B=8, Tq=16, Tk=16, S=1024),
                            torch.bfloat16, False),
    "attn-temporal-long": ("temporal_attention", dict(ATT, B=2, Tq=64, Tk=64, S=1024),
                           torch.bfloat16, False),
    "attn-temporal-decode": ("temporal_attention", dict(ATT, B=8, Tq=1, Tk=16, S=1024),
                             torch.bfloat16, False),
    "vq-tokenizer-fp32": ("vq_lookup", dict(N=131072, K=1024, D=32), torch.float32, False),
    "vq-tokenizer-bf16": ("vq_lookup", dict(N=131072, K=1024, D=32), torch.bfloat16, False),
    "vq-large": ("vq_lookup", dict(N=131072, K=8192, D=256), torch.bfloat16, False),
    "vq-actions": ("vq_lookup", dict(N=131072, K=8, D=32), torch.float32, False),
}
# shape -> (inference, training) choice on an sm_90 GPU and on CPU
EXPECTED = {
    "attn-spatial-genie": ("triton", "triton", "sdpa"),  # tensor cores; cuda C++ is FFMA
    "attn-spatial-dit": ("triton", "triton", "sdpa"),
    "attn-temporal-genie": ("cuda", "triton", "cpu"),  # memory-bound: equal bytes, then
    "attn-temporal-long": ("cuda", "triton", "cpu"),  # the unfused C++ backward's bytes
    "attn-temporal-decode": ("cuda", "triton", "cpu"),
    "vq-tokenizer-fp32": ("triton", None, "cpu"),
    "vq-tokenizer-bf16": ("triton", None, "cpu"),
    "vq-large": ("triton", None, "cpu"),  # 10x under the FFMA kernel's floor (issue 20)
    "vq-actions": ("cuda", None, "cpu"),  # K = 8: memory-bound, equal bytes -> preference
}


@pytest.mark.parametrize("shape", list(CANONICAL))
def test_rule_at_canonical_shapes(shape):
    op, sizes, dtype, view = CANONICAL[shape]
    infer, train, cpu = EXPECTED[shape]
    got = routing.rank(op, routing.Call("cuda", dtype, sizes, view, False, (9, 0)))
    assert got[0][0] == infer, got
    assert "roofline H100 SXM" in got[0][1] and "FLOP/B" in got[0][1]
    if train:
        assert routing.rank(op, routing.Call("cuda", dtype, sizes, view, True, (9, 0)))[0][0] \
            == train
    assert routing.rank(op, routing.Call("cpu", torch.float32, sizes, view))[0][0] == cpu


def test_rule_roofline_regimes():
    """Above the scalar ridge point tensor cores win by about their peak ratio; far below
    it the implementation moving the fewest bytes wins."""
    op, sizes, dtype, view = CANONICAL["vq-large"]
    est = {n: float(w.rsplit("est. ", 1)[1].split()[0]) for n, w in routing.rank(
        op, routing.Call("cuda", dtype, sizes, view, False, (9, 0)))}
    assert est["cuda"] / est["triton"] > 10  # 989 vs 67 TFLOP/s
    assert est["reference"] > est["triton"]  # the N x K distance matrix round trip
    # temporal attention on copies (reference) moves ~3x the bytes of a strided kernel
    op, sizes, dtype, view = CANONICAL["attn-temporal-decode"]
    ranked = [n for n, _ in routing.rank(op, routing.Call("cuda", dtype, sizes, view, False,
                                                          (8, 0)))]
    assert ranked.index("reference") > ranked.index("cuda")
    assert ranked.index("reference") > ranked.index("triton")


def test_rule_peaks_by_capability():
    from wmkernels import roofline

    assert roofline.peaks((9, 0)).name == "H100 SXM"
    assert roofline.peaks((8, 0)).name == "A100 SXM"
    assert roofline.peaks((8, 9)).name == "L4"
    assert roofline.peaks((8, 7)).name == "A10"  # nearest older listed
    assert roofline.peaks((12, 0)).name == "H100 SXM"
    assert roofline.peaks((6, 1)).name == "T4"


def test_rule_routes_around_what_a_kernel_cannot_run():
    op, sizes, _, view = CANONICAL["attn-spatial-genie"]
    got = routing.rank(op, routing.Call("cuda", torch.float64, sizes, view, False, (9, 0)))
    assert got[0][0] == "sdpa" and {"triton", "cuda"}.isdisjoint(n for n, _ in got[:2])
    got = routing.rank(op, routing.Call("cuda", torch.bfloat16, dict(sizes, D=512), view))
    assert got[0][0] == "sdpa"


def test_rule_without_views_or_sizes():
    op, sizes, _, _ = CANONICAL["attn-spatial-genie"]
    assert routing.rank(op, routing.Call("cpu", torch.float32, sizes, False))[0][0] == "cpu"
    assert routing.rank("maskgit_step", routing.Call("cuda"))[0][0] == "cuda"


def test_default_path_on_cpu_and_record():
    """What runs by default on CPU, read back from the record the benches use."""
    if not _extension.has_cpu():
        pytest.skip(_extension.LOAD_ERROR)
    qkv = torch.randn(1, 3, 5, 3, 2, 8)
    q, k, v = qkv.unbind(3)
    split = [torch.randn(3, 2, 5, 2, 8).transpose(0, 1) for _ in range(3)]  # B, T split
    with routing.record() as seen:
        wmkernels.spatial_attention(q, k, v)
        wmkernels.temporal_attention(q, k, v)
    assert set(seen["spatial_attention"]) == {"sdpa"}
    assert set(seen["temporal_attention"]) == {"cpu"}
    with routing.record() as seen:
        wmkernels.spatial_attention(*split)
        wmkernels.spatial_attention(q, k, v, backend="reference")
    assert set(seen["spatial_attention"]) == {"cpu", "reference"}
    assert "asked for: backend='reference'" in seen["spatial_attention"]["reference"]
    assert routing.explain("vq_lookup", CPU) == ("cpu", routing.rank(
        "vq_lookup", routing.Call("cpu"))[0][1])


def test_cpu_rule_for_temporal_views():
    """Temporal attention on CPU runs the kernel for whole clips, KV-cache decode steps and
    backward passes alike, views or not (measured faster than SDPA on views: routing.py)."""
    sizes = dict(B=1, Tq=1, Tk=16, S=256, H=4, D=64, causal=True)
    first = lambda **kw: routing.rank("temporal_attention", routing.Call(
        "cpu", torch.float32, dict(sizes, **kw.pop("sizes", {})), **kw))[0][0]
    for kw in (dict(view=True), dict(view=True, sizes=dict(Tq=4, causal=False)),
               dict(view=True, grad=True), dict(view=True, sizes=dict(Tq=16)),
               dict(view=False)):
        assert first(**kw) == "cpu", kw
    # through the public op: a contiguous decode query and a KV-cache prefix
    cache = torch.randn(2, 8, 3, 2, 16)
    q = torch.randn(2, 1, 3, 2, 16)
    with routing.record() as seen:
        wmkernels.temporal_attention(q, cache[:, :5], cache[:, :5])
    assert set(seen["temporal_attention"]) == {AUTO}


def test_cuda_rule_traces_under_compile():
    """On a GPU the rule runs while torch.compile traces an op: it must not break the graph."""
    op, sizes, dtype, view = CANONICAL["attn-spatial-genie"]

    def f(x):
        name, _ = routing.rank(op, routing.Call("cuda", dtype, sizes, view, False, (9, 0)))[0]
        return x + (1 if name == "triton" else 2)

    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, fullgraph=True, backend="eager")(torch.zeros(2)),
                       torch.ones(2))
    torch._dynamo.reset()


def test_rule_skips_what_the_op_refuses():
    """An op's own limits (e.g. a kernel's head-dim limit) send the rule to the next
    implementation; an explicit choice still gets the refusal."""
    op, sizes, _, _ = CANONICAL["attn-spatial-genie"]
    c = routing.Call("cpu", torch.float32, sizes, True)
    assert routing.explain(op, CPU, None, c)[0] == "sdpa"
    no_sdpa = lambda name: "refused" if name == "sdpa" else None
    assert routing.explain(op, CPU, None, c, no_sdpa)[0] == AUTO
    assert routing.explain(op, CPU, "sdpa", c, no_sdpa)[0] == "sdpa"
