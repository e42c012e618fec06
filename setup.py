"""Build script: decides which extension (if any) to build from the torch that is installed.

- no torch importable, or WMK_BUILD_EXT=0  -> pure-Python package (reference + Triton paths)
- CPU torch                                 -> C++ extension `wmkernels._C` (CPU kernels)
- CUDA torch and an nvcc of the same major  -> the same extension with the CUDA kernels too
  (WMK_FORCE_CUDA=1 builds CUDA even when no GPU is visible, e.g. in a container build)

The extension is optional: if compiling fails, the install still succeeds and
`wmk info` reports that the C++ backends are unavailable.
"""

import glob
import os
import re
import subprocess
import sys

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

# nvcc flags of the CUDA kernels. tests/gates/test_cuda_compile.py and
# bench/static/cuda_kernels.py read this list (keep it a literal) so the compile gate and the
# resource report build exactly what the extension builds.
# - C++20: torch's own extension default; its headers use C++20 features.
# - No --use_fast_math: it would flush denormals to zero everywhere (a denormal Laplace-smoothed
#   count in the VQ EMA update becomes 0 and the code turns inf; fp32 codebooks differing by
#   denormal amounts tie; MaskGIT's top-k threshold merges denormal logits with 0) and make
#   every division approximate. The kernels call the fast intrinsics (__expf, __logf) only where
#   the argument range makes them safe, and say why beside each call.
NVCC_FLAGS = ["-O3", "-std=c++20", "-lineinfo"]


# models/ and bench/ live at the top of the repository but install under the package, so
# site-packages gets `wmkernels.models` and `wmkernels.bench`, never bare `models`.
PACKAGE_DIR = {"wmkernels": "wmkernels", "wmkernels.models": "models", "wmkernels.bench": "bench"}


def _packages():
    """Every directory holding an __init__.py under the three roots: none can be left out."""
    found = []
    for package, directory in PACKAGE_DIR.items():
        subs = find_packages(os.path.join(ROOT, directory))
        found += [package, *(f"{package}.{sub}" for sub in subs)]
    return found


def _nvcc_major(cuda_home):
    try:
        out = subprocess.run(
            [os.path.join(cuda_home, "bin", "nvcc"), "--version"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+)\.", out)
    return int(match.group(1)) if match else None


def _want_cuda(torch, cuda_home):
    if torch.version.cuda is None or cuda_home is None:
        return False
    nvcc = _nvcc_major(cuda_home)
    if nvcc != int(torch.version.cuda.split(".")[0]):
        print(f"wmkernels: nvcc major {nvcc} != torch CUDA {torch.version.cuda}; CPU-only build")
        return False
    return os.environ.get("WMK_FORCE_CUDA") == "1" or torch.cuda.is_available() or bool(
        os.environ.get("TORCH_CUDA_ARCH_LIST")
    )


def _extensions():
    if os.environ.get("WMK_BUILD_EXT", "1") == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        # pip hides a build's output unless it fails or runs with -v, so the installed package
        # also warns at import (wmkernels/_extension.py); this banner is for build logs.
        bar = "!" * 78
        print(f"\n{bar}\nwmkernels: torch is not importable in this build environment, so the C++\n"
              "kernels are NOT built (pip's build isolation hides the installed torch): the ops\n"
              "will run the slow eager reference. Reinstall with\n"
              f"    pip install --no-build-isolation --force-reinstall --no-deps .\n{bar}",
              file=sys.stderr)
        return [], {}

    sources = ["csrc/ops.cpp", *sorted(glob.glob("csrc/cpu/*.cpp"))]
    cxx = ["-O3", "-std=c++17", "-fopenmp"]
    kwargs = dict(
        name="wmkernels._C",
        extra_link_args=["-fopenmp"],
        include_dirs=[os.path.join(ROOT, "csrc", "include")],  # #include "wmk/..."
        optional=True,  # a failed compile leaves a working pure-Python package
    )
    if _want_cuda(torch, CUDA_HOME):
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        ext = CUDAExtension(
            sources=sources,
            define_macros=[("WMK_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": NVCC_FLAGS},
            **kwargs,
        )
    else:
        ext = CppExtension(sources=sources, extra_compile_args={"cxx": cxx}, **kwargs)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(package_dir=PACKAGE_DIR, packages=_packages(), ext_modules=ext_modules, cmdclass=cmdclass)
