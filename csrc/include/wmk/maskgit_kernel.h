// Launchers of the MaskGIT CUDA kernels (csrc/cuda/maskgit_kernel.cu): plain CUDA types only,
// so the kernels compile with nvcc alone; csrc/cuda/maskgit.cu is the torch glue.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "wmk/dtype.h"

namespace wmk {

// Samples rows r in [0, R) of logits laid out as (R / N, N, V) with element strides
// (stride_b, stride_n, 1). Row r writes tokens[r] and out[r].
// mask == nullptr: sampling op, out = confidence (untempered softmax prob of the token).
// mask != nullptr: step, only rows with mask[r] (and not kept[r], when kept is given) are
// read and written; out = choice score log confidence + choice_temperature * Gumbel, or
// nothing when random_order (the re-mask then ran first: out may be nullptr).
// temperature == 0: argmax. top_k == 0: whole vocabulary. A row without a finite logit gets
// token -1 and confidence 0 (log: -inf).
struct MaskgitSampleParams {
  const void* logits;
  Dtype dtype;  // float32, float16 or bfloat16
  int64_t R, N, V, stride_b, stride_n;
  const bool* mask;
  const bool* kept;
  float temperature;
  int64_t top_k;
  float choice_temperature;
  bool random_order;
  const int64_t* seed;  // device pointer to the 64-bit Philox key
  int64_t* tokens;
  float* out;
};
cudaError_t maskgit_sample_launch(const MaskgitSampleParams& p, cudaStream_t stream);

// Per batch row b: the min(num_masked[b], #unknown) unknown positions with the lowest
// (score, index) stay masked with their token; other unknown positions take sampled[];
// known positions are copied. All arrays (B, N) contiguous, num_masked (B,).
// random_order: the scores are the Gumbel noise of the sampler's choice stream (score and
// sampled are not read) and every token is copied; the sampler runs next with kept =
// out_mask and writes the revealed tokens into out_tokens.
struct MaskgitRemaskParams {
  const float* score;
  const int64_t* sampled;
  const int64_t* tokens;
  const bool* mask;
  const int64_t* num_masked;
  int64_t B, N;
  bool random_order;
  const int64_t* seed;  // device pointer to the 64-bit Philox key
  int64_t* out_tokens;
  bool* out_mask;
};
cudaError_t maskgit_remask_launch(const MaskgitRemaskParams& p, cudaStream_t stream);

}  // namespace wmk
