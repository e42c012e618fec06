"""The SIMT emulation itself: each defect it exists to catch (missing barrier, divergent
barriers, a shuffle naming an exited or absent lane, misaligned vector loads, launch limits)
fails or changes the result, and the CUDA semantics it emulates (shuffle widths, atomics,
fp16/bf16 rounding, per-block shared memory) match the GPU's."""

from __future__ import annotations

import ctypes

import pytest
import torch

from cuda_sim import library

LAUNCH_FAILURE, INVALID_VALUE, INVALID_CONFIG, OK = 719, 1, 9, 0

pytestmark = pytest.mark.skipif(library.unavailable_reason() is not None,
                                reason=str(library.unavailable_reason()))


@pytest.fixture(scope="module")
def lib():
    handle = library.load()
    handle.wmk_selftest_error_string.restype = ctypes.c_char_p
    return handle


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def error(lib, code: int) -> str:
    return lib.wmk_selftest_error_string(code).decode()


@pytest.mark.parametrize("schedule", list(library.SCHEDULES))
def test_missing_barrier_changes_the_result(lib, schedule):
    x = torch.randn(3 * 256)
    want = x.view(3, 256).flip(1).reshape(-1)
    with library.schedule(schedule, seed=1):
        out = torch.full_like(x, float("nan"))
        assert lib.wmk_selftest_mirror(ptr(x), ptr(out), 3, 256, 1) == OK
        torch.testing.assert_close(out, want, rtol=0, atol=0)
        out = torch.full_like(x, float("nan"))
        assert lib.wmk_selftest_mirror(ptr(x), ptr(out), 3, 256, 0) == OK
        assert not torch.equal(out, want), "a missing barrier went unnoticed"


def test_shared_memory_is_poisoned_per_block(lib):
    out = torch.zeros(3 * 4, dtype=torch.int32)
    assert lib.wmk_selftest_unwritten_shared(ptr(out), 3) == OK
    assert (out == -1).all(), "unwritten shared memory must read as 0xffffffff in every block"


def test_divergent_barriers_fail(lib):
    code = lib.wmk_selftest_divergent_barriers()
    assert code == LAUNCH_FAILURE and "different barriers" in error(lib, code)


def test_exit_while_others_wait_at_a_barrier_fails(lib):
    code = lib.wmk_selftest_exit_before_barrier()
    assert code == LAUNCH_FAILURE and "thread 5 exited" in error(lib, code)


def test_shuffle_with_an_exited_lane_fails(lib):
    code = lib.wmk_selftest_shuffle_after_exit(ptr(torch.zeros(32)))
    assert code == LAUNCH_FAILURE and "lane 3" in error(lib, code)
    assert "has exited" in error(lib, code)


def test_full_mask_in_a_partial_warp_fails(lib):
    out = torch.zeros(32)
    assert lib.wmk_selftest_full_mask(ptr(out), 32) == OK
    assert (out == 0).all()
    code = lib.wmk_selftest_full_mask(ptr(out), 16)
    assert code == LAUNCH_FAILURE and "do not exist" in error(lib, code)


@pytest.mark.parametrize("width", [32, 16, 8, 4, 2])
def test_shuffle_semantics(lib, width):
    """The CUDA programming guide's rules: lanes form width-wide segments; xor/down past a
    segment's end and up before its start read the lane's own value."""
    values = torch.randint(-1000, 1000, (32,), dtype=torch.int32)
    out = torch.zeros(32, 4, dtype=torch.int32)
    assert lib.wmk_selftest_shuffle(ptr(values), ptr(out), width) == OK
    for lane in range(32):
        base = lane // width * width
        xor, up, down = lane ^ 1, lane - 1, lane + 2
        want = [values[xor if xor < base + width else lane],
                values[up if up >= base else lane],
                values[down if down < base + width else lane],
                values[base + 3 % width]]
        assert out[lane].tolist() == [int(w) for w in want], f"lane {lane}"


def test_misaligned_vector_load_fails(lib):
    x = torch.zeros(16)
    code = lib.wmk_selftest_misaligned_load(ptr(x), ptr(torch.zeros(1)))
    assert code == LAUNCH_FAILURE and "misaligned" in error(lib, code)


def test_launch_limits(lib):
    x = torch.zeros(2048)
    code = lib.wmk_selftest_mirror(ptr(x), ptr(x.clone()), 1, 1025, 1)
    assert code == INVALID_CONFIG and "block (1025, 1, 1)" in error(lib, code)
    n = 16 * 1024  # 64 KiB of floats: over the 48 KiB a kernel gets without opting in
    out = torch.zeros(2 * 64)
    code = lib.wmk_selftest_dynamic_shared(ptr(out), n, 0)
    assert code == INVALID_VALUE and "65536 bytes of dynamic shared memory" in error(lib, code)
    assert lib.wmk_selftest_dynamic_shared(ptr(out), n, 300 * 1024) == INVALID_VALUE
    assert lib.wmk_selftest_dynamic_shared(ptr(out), n, 4 * n) == OK
    assert (out == n).all()


def test_atomics(lib):
    count, total = torch.zeros(1, dtype=torch.int32), torch.zeros(1)
    bins = torch.zeros(4, dtype=torch.int32)
    assert lib.wmk_selftest_atomics(ptr(count), ptr(total), ptr(bins), 3, 100) == OK
    assert count.item() == 300 and total.item() == 150.0
    assert bins.tolist() == [75, 75, 75, 75]


def test_half_and_bfloat16_conversions_are_bit_exact(lib):
    """Round to nearest even, overflow, subnormals: the emulated conversions against
    torch's (NaN becomes the GPU's canonical 0x7fff)."""
    bits = torch.randint(-2**31, 2**31 - 1, (200000,), dtype=torch.int64).to(torch.int32)
    special = torch.tensor([0.0, -0.0, 65504.0, 65519.99, 65520.0, 1e-8, 2.0**-24, 2.0**-25,
                            3 * 2.0**-26, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 3.4e38,
                            float("inf"), float("-inf"), float("nan")])
    x = torch.cat([bits.view(torch.float32), special])
    n = x.numel()
    half, bf16 = torch.zeros(n, dtype=torch.int16), torch.zeros(n, dtype=torch.int16)
    half_back, bf16_back = torch.zeros(n), torch.zeros(n)
    lib.wmk_sim_convert(ptr(x), ctypes.c_int64(n), ptr(half), ptr(bf16), ptr(half_back),
                        ptr(bf16_back))
    nan = x.isnan()
    for got, back, dtype in ((half, half_back, torch.float16), (bf16, bf16_back,
                                                                torch.bfloat16)):
        want = x.to(dtype)
        assert torch.equal(got[~nan], want[~nan].view(torch.int16)), dtype
        assert (got[nan] == 0x7fff).all()
        assert torch.equal(back[~nan], want[~nan].float())
        assert back[nan].isnan().all()


def test_translation_keeps_lines():
    """The rewrites keep every line where it was, so that compile errors and ASan reports
    point at the right line of the .cu file."""
    source = ("__global__ void k(float* x) {\n"
              "  extern __shared__ float dyn[];\n"
              "  __shared__ float tile[32][33];\n"
              "}\n"
              "void go(float* x, cudaStream_t s) {\n"
              "  k<<<static_cast<unsigned>(4),\n"
              "      128, 64, s>>>(\n"
              "      x);\n"
              "  k2<<<1, 32>>>();\n"
              "}\n")
    out = library.translate(source)
    assert out.count("\n") == source.count("\n")
    assert "float* dyn = ::wmk_sim::dynamic_shared<float>();" in out
    assert "static float tile[32][33]; ::wmk_sim::block_shared(&tile, sizeof(tile));" in out
    assert ("::wmk_sim::launch(::wmk_sim::Config(static_cast<unsigned>(4),\n      128, 64, s), k,"
            in out)
    assert "::wmk_sim::launch(::wmk_sim::Config(1, 32), k2)" in out
    assert "<<<" not in out and "__shared__" not in out
