"""Compile gates, on a machine without a GPU.

test_cuda_compile.py: every csrc/cuda/*.cu is built by nvcc with the extension's own flags
(setup.py NVCC_FLAGS, plus what torch's BuildExtension adds) and every warning as an error: the
plain-CUDA *_kernel.cu files alone for sm_80 and sm_90, the torch glue files for sm_90 against
the installed CPU torch's headers. The compiled SASS is then checked for what no CPU test can
see.

test_triton_compile.py: every Triton kernel is compiled ahead of time for sm_80, sm_86 and
sm_90 with the launches its launcher makes at the canonical shapes, every autotune choice and
the extremes the API accepts, and checked for compile errors, shared memory over the block
limit, register spills at the canonical shapes and 32-bit stride products.
"""
