"""Compile gates for the Triton kernels, on a machine without a GPU.

Every @triton.jit kernel of wmkernels/triton is compiled ahead of time for sm_80, sm_86 and
sm_90 with exactly the launches the launchers make (their `*_launches` functions, the
autotune choices kept for each device, the CUDA-graph capture choice) at the canonical
shapes of shared/BENCHMARKS.md and at the extremes the API accepts, specialized by Triton's
own binder (bench/static/triton_kernels.py). The interpreter tests check what the kernels
compute; these check that a GPU can run them: they compile, fit the shared memory of a
block, do not spill at the canonical shapes, and never multiply a stride in 32 bits.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

from wmkernels import routing
from wmkernels.bench.static import triton_kernels as tk

pytestmark = pytest.mark.skipif(not routing.HAS_TRITON, reason="triton is not installed")

TRITON_DIR = Path(routing.__file__).parent / "triton"


@pytest.fixture(scope="module")
def compiles() -> list[dict]:
    """Every distinct kernel specialization compiled once per arch (a fresh process without
    TRITON_INTERPRET, an empty Triton cache, two worker processes)."""
    start = time.perf_counter()
    result = tk.run_isolated(tk.ARCHS)
    print(f"\ntriton gate: {len(result['compiles'])} compiles for sm_{tk.ARCHS} in "
          f"{time.perf_counter() - start:.0f} s")
    return result["compiles"]


def _where(rec: dict) -> str:
    uses = "; ".join(f"{u['case']}: {u['launch']}" for u in rec["uses"][:3])
    return f"{rec['kernel']} sm_{rec['arch']} ({uses})"


def _jit_kernels() -> set[str]:
    """Names of the launched @triton.jit functions of wmkernels/triton (helpers called from
    kernels are compiled inside them)."""
    names = set()
    for path in TRITON_DIR.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_kernel") and any(
                    "jit" in ast.unparse(d) for d in node.decorator_list):
                names.add(node.name)
    return names


def test_every_kernel_is_compiled_for_every_arch(compiles):
    kernels = _jit_kernels()
    assert kernels, "no @triton.jit kernels found"
    for arch in tk.ARCHS:
        seen = {r["kernel"] for r in compiles if r["arch"] == arch}
        assert kernels <= seen, f"sm_{arch}: never compiled: {sorted(kernels - seen)}"


def test_every_kernel_compiles(compiles):
    errors = [f"{_where(r)}: {r['error']}" for r in compiles if "error" in r]
    assert not errors, "\n".join(errors)


def test_shared_memory_fits_the_block(compiles):
    over = [f"{_where(r)}: {r['shared']} B > {r['limit']} B" for r in compiles
            if "error" not in r and r["shared"] > r["limit"]]
    assert not over, "\n".join(over)


def test_no_register_spills_at_canonical_shapes(compiles):
    """No spills at the canonical shapes and attention's fast head dims (Case.spill_free)."""
    spills = [f"{_where(r)}: {r['spill_stores']} spill stores, {r['stack']} B of stack, "
              f"{r['regs']} registers" for r in compiles
              if "error" not in r and r["spill_stores"] > 0
              and any(u["spill_free"] for u in r["uses"])]
    assert not spills, "\n".join(spills)


def test_no_32_bit_stride_products(compiles):
    """An index x stride product computed in i32 wraps once it passes 2^31 (a frame index
    times the frame stride of a long video, a row index times a packed-QKV row stride)."""
    bad = [f"{_where(r)}: {line}" for r in compiles if "error" not in r
           for line in r["i32_stride_muls"]]
    assert not bad, "\n".join(bad)


def test_tensor_cores_at_canonical_shapes(compiles):
    """The attention and VQ dots are tensor-core instructions: mma.sync, or wgmma on sm_90
    where a tile has the 64 rows a warpgroup MMA needs (scalar FMA loops would be 10-30x
    slower)."""
    missing = []
    for r in compiles:
        if "error" in r or not r["kernel"].startswith(("_spatial", "_temporal", "_vq")):
            continue
        if not any(u["canonical"] for u in r["uses"]):
            continue
        if r["ptx_wgmma"] + r["ptx_mma"] == 0:
            missing.append(_where(r))
    assert not missing, "\n".join(missing)


def test_i32_stride_check_sees_a_32_bit_product():
    """The TTIR check itself: it flags `index * stride` in i32, not the i64 one."""
    header = ('tt.func public @k(%x: !tt.ptr<f16> loc("x"), %sqt: i32 {tt.divisibility = 16 : '
              'i32} loc("sqt")) {\n')
    bad = header + ('    %0 = tt.splat %sqt : i32 -> tensor<64xi32> loc(#loc1)\n'
                    '    %1 = arith.muli %i, %0 : tensor<64xi32> loc(#loc2)\n')
    good = header + ('    %0 = arith.extsi %sqt : i32 to i64 loc(#loc1)\n'
                     '    %1 = tt.splat %0 : i64 -> tensor<64xi64> loc(#loc1)\n'
                     '    %2 = arith.muli %i, %1 : tensor<64xi64> loc(#loc2)\n')
    assert len(tk.i32_stride_muls(bad)) == 1
    assert tk.i32_stride_muls(good) == []


def test_vq_tunes_per_dtype_and_never_inside_graph_capture():
    """fp32 and bf16 never share a tuned config (DTYPE is in the autotune key), and the
    capture path launches one fixed config (autotuning times kernels, which capture
    forbids): the plain kernel with its block sizes given."""
    import torch

    from wmkernels.triton import vq

    assert "DTYPE" in vq._vq_lookup_tuned.keys
    z = torch.empty(100, 32, device="meta", dtype=torch.bfloat16)
    codes, bias = torch.empty(8, 32, device="meta", dtype=torch.bfloat16), torch.empty(8)
    out = torch.empty(100, dtype=torch.long, device="meta")
    (tuned,) = vq.lookup_launches(z, codes, bias, out, 2.0, 101_376, tune=True)
    (fixed,) = vq.lookup_launches(z, codes, bias, out, 2.0, 101_376, tune=False)
    assert tuned.kernel is vq._vq_lookup_tuned
    assert fixed.kernel is vq._vq_lookup_kernel and "BLOCK_N" in fixed.meta
