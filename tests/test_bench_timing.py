"""The benchmark timer: interleaved rounds measure each implementation, not the machine's
slow spells (bench/timing.py)."""

import time

from wmkernels.bench.timing import time_interleaved


def test_interleaved_rounds_alternate_the_implementations_and_time_each():
    calls = []

    def sleeper(name, seconds):
        def fn():
            calls.append(name)
            time.sleep(seconds)
        return fn

    fast, slow = time_interleaved([sleeper("a", 0.002), sleeper("b", 0.006)], "cpu",
                                  rounds=4, min_time_s=0.01, max_runs=3)
    assert 2.0 <= fast < 5.0 and 6.0 <= slow < 12.0
    # after each one's warm-up and sizing call, the rounds take turns: a..a b..b a..a ...
    timed = calls[4:]
    switches = sum(x != y for x, y in zip(timed, timed[1:], strict=False))
    assert switches == 2 * 4 - 1


def test_one_round_is_plain_timing():
    (ms,) = time_interleaved([lambda: time.sleep(0.001)], "cpu", rounds=1, min_time_s=0.005)
    assert 1.0 <= ms < 4.0
