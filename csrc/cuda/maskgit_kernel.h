// C-style launchers of the MaskGIT CUDA kernels (maskgit_kernel.cu): plain CUDA types only,
// so the kernels compile with nvcc alone; csrc/cuda/maskgit.cu is the torch glue.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace wmk {

enum MaskgitDtype : int { kMaskgitF32 = 0, kMaskgitF16 = 1, kMaskgitBF16 = 2 };

// Samples rows r in [0, R) of logits laid out as (R / N, N, V) with element strides
// (stride_b, stride_n, 1). Row r writes tokens[r] and out[r].
// mask == nullptr: sampling op, out = confidence (untempered softmax prob of the token).
// mask != nullptr: step, only rows with mask[r] (and not kept[r], when kept is given) are
// read and written; out = choice score log confidence + choice_temperature * Gumbel, or
// nothing when random_order (the re-mask then ran first: out may be nullptr).
// temperature == 0: argmax. top_k == 0: whole vocabulary. seed: device pointer to the 64-bit
// Philox key. A row without a finite logit gets token -1 and confidence 0 (log: -inf).
cudaError_t maskgit_sample_launch(const void* logits, MaskgitDtype dtype, int64_t R, int64_t N,
                                  int64_t V, int64_t stride_b, int64_t stride_n,
                                  const bool* mask, const bool* kept, float temperature,
                                  int64_t top_k,
                                  float choice_temperature, bool random_order,
                                  const int64_t* seed, int64_t* tokens, float* out,
                                  cudaStream_t stream);

// Per batch row b: the min(num_masked[b], #unknown) unknown positions with the lowest
// (score, index) stay masked with their token; other unknown positions take sampled[];
// known positions are copied. All arrays (B, N) contiguous, num_masked (B,).
// random_order: the scores are the Gumbel noise of the sampler's choice stream (score and
// sampled are not read) and every token is copied; the sampler runs next with kept =
// out_mask and writes the revealed tokens into out_tokens.
cudaError_t maskgit_remask_launch(const float* score, const int64_t* sampled,
                                  const int64_t* tokens, const bool* mask,
                                  const int64_t* num_masked, int64_t B, int64_t N,
                                  bool random_order, const int64_t* seed, int64_t* out_tokens,
                                  bool* out_mask, cudaStream_t stream);

}  // namespace wmk
