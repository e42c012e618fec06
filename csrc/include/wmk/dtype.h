// The element types of the kernels, one enum for every op, and the conversion of each to the
// type it accumulates in. Plain CUDA (no torch headers): the kernel files compile with nvcc
// alone and under the CPU emulation; the torch glue maps at::ScalarType onto Dtype with
// dtype_code (wmk/cuda_check.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace wmk {

enum class Dtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// 16-bit and fp32 values accumulate in fp32, fp64 values in fp64 (the exact references).
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ double to_float(double x) { return x; }

}  // namespace wmk
