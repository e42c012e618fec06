"""Benchmark harness (installed as wmkernels.bench): `wmk bench` and `pytest bench`."""
