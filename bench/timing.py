"""Timing and peak-memory measurement for one callable.

GPU: triton.testing.do_bench (CUDA events, L2 flushed between runs, median), peak memory from
the caching allocator. CPU: warm-up, then the median of repeated perf_counter runs (CPU work
is synchronous); peak memory is the growth of the resident set, sampled by a thread, because
the CPU allocator has no peak counter (large blocks are mmap'd, so they show up there).

Implementations compared with each other are timed by `time_interleaved`: on a CPU that other
work shares, a slow spell then hits every implementation of a round alike instead of
whichever one happened to be running, and the median over rounds discards it.
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


def time_interleaved(fns: list, device: str, *, rounds: int = 5, min_time_s: float = 0.1,
                     max_runs: int = 15) -> list[float]:
    """Median milliseconds of one call of each of `fns`, timed in `rounds` interleaved rounds
    (each round runs every fn in turn; each fn's time is the median of its round medians).
    GPU: one `time_fn` each (do_bench already takes a median over many runs)."""
    if device == "cuda" or rounds <= 1:
        return [time_fn(fn, device, min_time_s=min_time_s * max(1, rounds), max_runs=max_runs)
                for fn in fns]
    runs = []
    for fn in fns:     # warm up, and size each fn's round from one timed call
        fn()
        t0 = time.perf_counter()
        fn()
        runs.append(int(max(1, min(max_runs, min_time_s / max(time.perf_counter() - t0, 1e-6)))))
    medians: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, n, out in zip(fns, runs, medians, strict=True):
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out.append(statistics.median(times))
    return [statistics.median(m) * 1e3 for m in medians]


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
