// C-style launchers of the VQ CUDA kernels (csrc/cuda/vq_kernel.cu). No torch headers, so
// the kernels compile with plain nvcc; csrc/cuda/vq.cu is the torch glue.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

enum WmkDtype { WMK_FLOAT32 = 0, WMK_FLOAT16 = 1, WMK_BFLOAT16 = 2, WMK_FLOAT64 = 3 };

// out[n] = argmin_k bias[k] - scale * <z[n], codebook[k]>, first index on ties, NaN smallest.
// z: (N, D) with element strides; codebook: (K, D) contiguous, same dtype; bias: (K,) in the
// accumulation type (float, or double for WMK_FLOAT64).
cudaError_t wmk_vq_lookup(const void* z, int64_t stride_zn, int64_t stride_zd,
                          const void* codebook, const void* bias, double scale, int64_t N,
                          int64_t K, int64_t D, int dtype, int64_t* out, cudaStream_t stream);

// In-place EMA k-means update (float32 state). z: (N, D) contiguous float32; indices: (N,),
// validated by the caller; a row with an index outside [0, K) is skipped, never written.
// scratch: K * (D + 1) + 1 floats of device memory, overwritten.
cudaError_t wmk_vq_ema_update(float* codebook, float* cluster_size, float* embed_sum,
                              const float* z, const int64_t* indices, int64_t N, int64_t K,
                              int64_t D, float decay, float eps, float* scratch,
                              cudaStream_t stream);
