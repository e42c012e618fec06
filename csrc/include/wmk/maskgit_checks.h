// Argument checks shared by the CPU and CUDA implementations of the MaskGIT ops. The Python
// front end validates user input with friendlier messages; these guard direct calls of
// torch.ops.wmk.*. The seed is checked by each implementation: where it must live differs.
#pragma once
#include <ATen/ATen.h>

#include <cmath>

namespace wmk {

inline void check_maskgit_settings(const char* op, const at::Tensor& logits, double temperature,
                                   int64_t top_k) {
  const auto dt = logits.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   op, ": logits must be float16/bfloat16/float32/float64, got ", dt);
  TORCH_CHECK_VALUE(logits.size(-1) > 0, op, ": logits must have V >= 1");
  TORCH_CHECK_VALUE(std::isfinite(temperature) && temperature >= 0.0, op,
                    ": temperature must be finite and >= 0, got ", temperature);
  TORCH_CHECK_VALUE(top_k >= 0 && top_k <= logits.size(-1), op,
                    ": top_k must be in [0, V] (0 = all), got ", top_k);
}

inline void check_maskgit_sample(const at::Tensor& logits, double temperature, int64_t top_k) {
  TORCH_CHECK(logits.dim() == 2, "maskgit_sample: logits must be (R, V), got ", logits.sizes());
  check_maskgit_settings("maskgit_sample", logits, temperature, top_k);
}

inline void check_maskgit_step(const at::Tensor& logits, const at::Tensor& tokens,
                               const at::Tensor& mask, const at::Tensor& num_masked,
                               double temperature, int64_t top_k, double choice_temperature) {
  TORCH_CHECK(logits.dim() == 3, "maskgit_step: logits must be (B, N, V), got ", logits.sizes());
  const int64_t B = logits.size(0), N = logits.size(1);
  TORCH_CHECK(tokens.sizes() == at::IntArrayRef({B, N}) && mask.sizes() == tokens.sizes() &&
                  num_masked.sizes() == at::IntArrayRef({B}),
              "maskgit_step: expected tokens and mask (B, N) and num_masked (B,) for logits ",
              logits.sizes());
  TORCH_CHECK(tokens.scalar_type() == at::kLong && mask.scalar_type() == at::kBool &&
                  num_masked.scalar_type() == at::kLong,
              "maskgit_step: tokens and num_masked must be int64 and mask bool");
  TORCH_CHECK(tokens.device() == logits.device() && mask.device() == logits.device() &&
                  num_masked.device() == logits.device(),
              "maskgit_step: logits, tokens, mask and num_masked must be on the same device");
  check_maskgit_settings("maskgit_step", logits, temperature, top_k);
  TORCH_CHECK_VALUE(std::isfinite(choice_temperature) && choice_temperature >= 0.0,
                    "maskgit_step: choice_temperature must be finite and >= 0, got ",
                    choice_temperature);
}

}  // namespace wmk
