"""Compile gates for the CUDA C++ kernels, on a machine without a GPU.

Every csrc/cuda/*.cu is built by nvcc with the extension's own flags (setup.py NVCC_FLAGS,
plus what torch's BuildExtension adds) and every warning as an error: the plain-CUDA
*_kernel.cu files alone for sm_80 and sm_90, the torch glue files for sm_90 against the
installed CPU torch's headers. The compiled SASS is then checked for what no CPU test can see.
"""

from __future__ import annotations

import re
import resource
import time

import pytest
from checks import NVCC

from wmkernels.bench.static import cuda_kernels as ck

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc not found (set NVCC or put it on "
                                                     "PATH): the CUDA compile gates need it")

ARCHS = (80, 90)
# The glue holds no device code, only host code against torch's headers, whose device-side
# parse costs ~12 s of CPU per arch: one arch proves it compiles.
GLUE_ARCHS = (90,)
SOURCES = [*ck.kernel_sources(), *ck.glue_sources()]


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, ck.Build]:
    """Every .cu built once, in parallel, with warnings as errors."""
    tmp = tmp_path_factory.mktemp("nvcc")
    glue_includes = ck.torch_includes(tmp / "include")
    jobs = []
    # the longest builds first, so two cores finish together
    for src in sorted(SOURCES, key=lambda p: p.name != "attention_kernel.cu"):
        glue = src in ck.glue_sources()
        obj = tmp / f"{src.stem}.o"
        extra = [*ck.WERROR, *(glue_includes if glue else ["-Xptxas", "-v"])]
        jobs.append((src, obj, ck.compile_command(src, obj, GLUE_ARCHS if glue else ARCHS,
                                                  extra)))
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = ck.run_builds(jobs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(f"\nnvcc gate: {len(jobs)} files, {time.perf_counter() - start:.0f} s wall, "
          f"{cpu:.0f} s CPU")
    return {b.src.name: b for b in done}


@pytest.mark.parametrize("name", [p.name for p in SOURCES])
def test_compiles_without_warnings(builds, name):
    builds[name].check()


def test_gate_uses_the_extension_flags(builds):
    cmd = builds["vq_kernel.cu"].cmd
    flags = ck.nvcc_flags()
    assert flags and all(f in cmd for f in flags), (flags, cmd)
    assert {f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS} <= set(cmd)


def _sass(builds, name) -> dict[tuple[int, str], list[str]]:
    builds[name].check()
    sass = ck.sass_functions(builds[name].obj)
    assert {arch for arch, _ in sass} == set(ARCHS), f"{name}: cubins for {sorted(sass)}"
    return sass


def test_maskgit_sampler_loads_16_bytes(builds):
    """Vec16<T> is alignas(16): each sampler instantiation's vector path is LDG.E.128, not
    split into scalar loads (it was, before the alignas)."""
    sass = _sass(builds, "maskgit_kernel.cu")
    samplers = {key: ops for key, ops in sass.items() if "sample_kernel" in key[1]}
    assert len(samplers) == 3 * len(ARCHS), sorted(samplers)  # fp32, fp16, bf16
    for (arch, name), ops in samplers.items():
        wide = [op for op in ops if op.startswith("LDG.E.128")]
        assert wide, f"sm_{arch} {name}: no 128-bit global load in {sorted(set(ops))}"


# vq_lookup_kernel is exempt: at sm_90 ptxas keeps it at 64 registers (4 blocks per SM) and
# spills 24 B in the epilogue of each 64-code tile, a few local accesses per >= 512 FFMA (the
# fp64 instance, for exact references, spills 72 B at sm_80); trading occupancy for it is a
# call for GPU measurements.
SPILL_EXEMPT = ("vq_lookup_kernel",)


@pytest.mark.parametrize("name", [p.name for p in ck.kernel_sources()])
def test_no_register_spills(builds, name):
    """No kernel spills registers to local memory at sm_80 or sm_90 (the MaskGIT sampler did on
    sm_90: 80 B of stores in its block reductions)."""
    builds[name].check()
    res = ck.ptxas_resources(builds[name].output)
    assert {arch for arch, _ in res} == set(ARCHS), sorted(res)
    short = ck.demangle(kernel for _, kernel in res)
    for (arch, kernel), r in res.items():
        if short[kernel].startswith(SPILL_EXEMPT):
            continue
        assert r["spill_stores"] == r["spill_loads"] == 0, f"sm_{arch} {short[kernel]}: {r}"


@pytest.mark.parametrize("name", [p.name for p in ck.kernel_sources()])
def test_no_flush_to_zero_arithmetic(builds, name):
    """No --use_fast_math: fp32 multiplies and FMAs keep denormals. Under fast math every one
    becomes FMUL.FTZ / FFMA.FTZ (thousands in these kernels); without it there are none (the
    explicit __expf/__logf of the MaskGIT kernel compile to MUFU, not to these)."""
    for (arch, kernel), ops in _sass(builds, name).items():
        ftz = [op for op in ops if re.match(r"(FFMA|FMUL)\S*\.FTZ", op)]
        assert not ftz, f"sm_{arch} {kernel}: {len(ftz)} flush-to-zero FMUL/FFMA"


def test_no_fast_math_flag():
    assert "--use_fast_math" not in ck.nvcc_flags()


def _function_body(src: str, name: str) -> tuple[str, str]:
    """(parameter list, body) of the first definition of function `name` in C++ source."""
    m = re.search(rf"\b{name}\s*\(([^)]*)\)\s*\{{", src)
    assert m, f"{name} not found"
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        i += 1
    return m.group(1), src[m.end():i]


@pytest.mark.parametrize("op", ["vq_lookup_cuda", "vq_ema_update_cuda"])
def test_vq_glue_checks_every_device(op):
    """The VQ glue hands raw pointers to the kernels, so each tensor argument must be checked to
    be on one CUDA device (a CPU codebook used to reach the kernel as a host pointer). Source
    level: no CPU test can dispatch to the CUDA kernels."""
    params, body = _function_body((ck.CUDA_DIR / "vq.cu").read_text(), op)
    tensors = set(re.findall(r"at::Tensor&?\s+(\w+)", params))
    checked = set()
    for name, t, ref_name, ref in re.findall(
            r'check_device\(\s*"\w+",\s*"(\w+)",\s*(\w+),\s*"(\w+)",\s*(\w+)\)', body):
        assert (name, ref_name) == (t, ref), "a message must name the tensor it checks"
        checked |= {t, ref}
    assert tensors and tensors <= checked, f"{op}: unchecked devices {tensors - checked}"


def test_ema_scatter_skips_out_of_range_indices():
    """The EMA scatter indexes the scratch by the code index: one outside [0, K) must be skipped
    before any write (source level, as above)."""
    _, body = _function_body((ck.CUDA_DIR / "vq_kernel.cu").read_text(), "ema_scatter_kernel")
    guard = re.search(r"if \(k < 0 \|\| k >= K\) continue;", body)
    assert guard and guard.start() < body.index("atomicAdd"), body


# What each of these matches is defined once, in csrc/include/wmk (each op file used to carry
# its own copy: three dtype enums, three to_float sets, three at::ScalarType switches, a launch
# check per glue file, the Cephes polynomial in two CPU kernels).
SHARED_DEFINITIONS = {
    r"\benum\b": "dtype.h",
    r"__device__[^;{]*\bto_float\s*\(": "dtype.h",
    r"case at::kHalf": "cuda_check.h",
    r"cudaGetErrorString": "cuda_check.h",
    r"1\.9875691500e-4f": "simd_math.h",  # the Cephes expf polynomial's leading coefficient
}


def test_shared_helpers_defined_once():
    """Source level: the helpers every op shares are defined in one header of csrc/include/wmk,
    and every local include names its header as "wmk/..."."""
    csrc = ck.CUDA_DIR.parent
    sources = {p.relative_to(csrc).as_posix(): p.read_text()
               for p in sorted(csrc.rglob("*")) if p.suffix in {".h", ".cpp", ".cu"}}
    for pattern, header in SHARED_DEFINITIONS.items():
        found = sorted(name for name, text in sources.items() if re.search(pattern, text))
        assert found == [f"include/wmk/{header}"], (pattern, found)
    for name, text in sources.items():
        local = re.findall(r'#include\s+"([^"]+)"', text)
        assert all(inc.startswith("wmk/") for inc in local), (name, local)
