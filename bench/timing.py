"""Timing and peak-memory measurement for one callable.

GPU: triton.testing.do_bench (CUDA events, L2 flushed between runs, median), peak memory from
the caching allocator. CPU: warm-up, then the median of repeated perf_counter runs (CPU work
is synchronous); peak memory is the growth of the resident set, sampled by a thread, because
the CPU allocator has no peak counter (large blocks are mmap'd, so they show up there).
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import torch


def time_fn(fn, device: str, *, min_time_s: float = 0.2, max_runs: int = 50) -> float:
    """Median milliseconds of one call of `fn`."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    runs = int(max(3, min(max_runs, min_time_s / max(once, 1e-6))))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn, device: str) -> int | None:
    """Bytes allocated at peak during one call of `fn`, above what was live before."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    if not os.path.exists("/proc/self/statm"):
        return None
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    fn()
    done.set()
    thread.join()
    return max(0, max(peak[0], _rss_bytes()) - base)
