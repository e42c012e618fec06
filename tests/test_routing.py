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
