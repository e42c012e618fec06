// Launchers of the VQ CUDA kernels (csrc/cuda/vq_kernel.cu). No torch headers, so the
// kernels compile with plain nvcc; csrc/cuda/vq.cu is the torch glue.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "wmk/dtype.h"

namespace wmk {

// out[n] = argmin_k bias[k] - scale * <z[n], codebook[k]>, first index on ties, NaN smallest.
struct VqLookupParams {
  const void* z;  // (N, D) with element strides stride_zn, stride_zd
  int64_t stride_zn, stride_zd;
  const void* codebook;  // (K, D) contiguous, z's dtype
  const void* bias;      // (K,) in the accumulation type (float, or double for kFloat64)
  double scale;
  int64_t N, K, D;
  Dtype dtype;
  int64_t* out;  // (N,)
};
cudaError_t vq_lookup_launch(const VqLookupParams& p, cudaStream_t stream);

// In-place EMA k-means update (float32 state).
struct VqEmaUpdateParams {
  float* codebook;            // (K, D) contiguous
  float* cluster_size;        // (K,)
  float* embed_sum;           // (K, D) contiguous
  const float* z;             // (N, D) contiguous
  const int64_t* indices;     // (N,), validated by the caller; one outside [0, K) is skipped
  int64_t N, K, D;
  float decay, eps;
  float* scratch;  // K * (D + 1) + 1 floats of device memory, overwritten
};
cudaError_t vq_ema_update_launch(const VqEmaUpdateParams& p, cudaStream_t stream);

}  // namespace wmk
