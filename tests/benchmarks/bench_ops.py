"""The benchmark cases as a pytest-benchmark suite:
`pytest tests/benchmarks/bench_ops.py --benchmark-only` (named bench_*.py so that `pytest -q` does
not collect it; not in the wheel).

Same case definitions as `wmk bench` (wmkernels.bench.ops.*); WMK_BENCH_QUICK=1 uses the tiny
shapes. Timing here is pytest-benchmark's wall clock, so on CUDA each call synchronizes.
"""

import importlib
import importlib.util
import os

import pytest
import torch

from wmkernels.bench.harness import Skip, bench_package
from wmkernels.bench.models import MODELS
from wmkernels.bench.ops import OPS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
QUICK = os.environ.get("WMK_BENCH_QUICK") == "1"


def _all_cases():
    params = []
    for op in (*OPS, *MODELS):
        module = f"wmkernels.bench.{bench_package(op)}.{op}"
        if importlib.util.find_spec(module) is None:
            continue
        for case in importlib.import_module(module).cases(DEVICE, QUICK):
            label = f"{case.op}-{case.shape}-{case.backend}-{getattr(case, 'dtype', '')}"
            params.append(pytest.param(case, id=label))
    return params


@pytest.mark.parametrize("case", _all_cases())
def test_bench(benchmark, case):
    if isinstance(case, Skip):
        pytest.skip(case.reason)
    if DEVICE == "cuda":
        fn = lambda: (case.fn(), torch.cuda.synchronize())
    else:
        fn = case.fn
    benchmark.extra_info.update(shape=case.shape, backend=case.backend, dtype=case.dtype,
                                **case.params)
    benchmark(fn)
