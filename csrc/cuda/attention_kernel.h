// Plain-CUDA launchers of the factorized attention forward kernels (attention_kernel.cu).
// No torch headers: the torch glue (attention.cu) checks arguments, allocates and calls these.
//
// Tensors are (B, T, S, H, D) with element strides for B, T, S, H and a unit stride on D;
// `out` is a contiguous (B, Tq, S, H, D) tensor of the same dtype, `lse` float32:
// (B, S, H, Tq) for temporal, (B, T, H, S) for spatial. Head dims 1..WMK_ATTN_MAX_HEAD_DIM.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#define WMK_ATTN_MAX_HEAD_DIM 256

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { WMK_ATTN_F32 = 0, WMK_ATTN_F16 = 1, WMK_ATTN_BF16 = 2 } wmk_attn_dtype;

// A strided (B, T, S, H, D) view: base pointer and element strides of its first four dims.
typedef struct {
  const void* ptr;
  int64_t b, t, s, h;
} wmk_attn_view;

// Temporal: for each (b, s, h), softmax over key frames; causal is bottom-right aligned
// (query frame i sees key frames j <= Tk - Tq + i). Requires 1 <= Tq <= Tk.
cudaError_t wmk_temporal_attention_fwd(wmk_attn_view q, wmk_attn_view k, wmk_attn_view v,
                                       void* out, float* lse, int64_t B, int64_t Tq,
                                       int64_t Tk, int64_t S, int64_t H, int64_t D,
                                       int causal, float scale, wmk_attn_dtype dtype,
                                       cudaStream_t stream);

// Spatial: for each (b, t, h), softmax over the S positions of frame t.
cudaError_t wmk_spatial_attention_fwd(wmk_attn_view q, wmk_attn_view k, wmk_attn_view v,
                                      void* out, float* lse, int64_t B, int64_t T, int64_t S,
                                      int64_t H, int64_t D, float scale, wmk_attn_dtype dtype,
                                      cudaStream_t stream);

#ifdef __cplusplus
}
#endif
