// Launchers of the factorized attention forward kernels (csrc/cuda/attention_kernel.cu).
// No torch headers: the torch glue (csrc/cuda/attention.cu) checks arguments, allocates and
// calls these.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "wmk/dtype.h"

#define WMK_ATTN_MAX_HEAD_DIM 256

namespace wmk {

// A strided (B, T, S, H, D) view: base pointer and element strides of its first four dims
// (the head dim has unit stride).
struct AttnView {
  const void* ptr;
  int64_t b, t, s, h;
};

// q (B, Tq, S, H, D), k and v (B, Tk, S, H, D); `out` a contiguous (B, Tq, S, H, D) tensor
// of q's dtype, `lse` float32: (B, S, H, Tq) for temporal, (B, T, H, S) for spatial.
// Head dims 1..WMK_ATTN_MAX_HEAD_DIM; dtype float32, float16 or bfloat16.
struct AttentionParams {
  AttnView q, k, v;
  void* out;
  float* lse;
  int64_t B, Tq, Tk, S, H, D;  // spatial: Tq == Tk == T
  bool causal;                 // temporal only
  float scale;
  Dtype dtype;
};

// Temporal: for each (b, s, h), softmax over key frames; causal is bottom-right aligned
// (query frame i sees key frames j <= Tk - Tq + i). Requires 1 <= Tq <= Tk.
cudaError_t temporal_attention_fwd_launch(const AttentionParams& p, cudaStream_t stream);

// Spatial: for each (b, t, h), softmax over the S positions of frame t (Tq == Tk == T).
cudaError_t spatial_attention_fwd_launch(const AttentionParams& p, cudaStream_t stream);

}  // namespace wmk
