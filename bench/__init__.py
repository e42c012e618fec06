"""Benchmark harness (installed as wmkernels.bench): `wmk bench`.

The same cases as a pytest-benchmark suite: tests/benchmarks/bench_ops.py (not installed).
"""
