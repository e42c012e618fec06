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
