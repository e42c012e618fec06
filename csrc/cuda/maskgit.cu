// Torch glue of the MaskGIT CUDA kernels (maskgit_kernel.cu): argument checks, device guard,
// the current stream, output allocation. Schemas are in csrc/ops.cpp.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "maskgit_checks.h"
#include "maskgit_kernel.h"
#include "registration.h"

namespace wmk {
namespace {

MaskgitDtype kernel_dtype(const at::Tensor& logits, const char* op) {
  switch (logits.scalar_type()) {
    case at::kFloat: return kMaskgitF32;
    case at::kHalf: return kMaskgitF16;
    case at::kBFloat16: return kMaskgitBF16;
    default: break;
  }
  TORCH_CHECK_TYPE(false, op, ": CUDA logits must be float32, float16 or bfloat16, got ",
                   logits.scalar_type());
}

void check_seed(const char* op, const at::Tensor& logits, const at::Tensor& seed) {
  TORCH_CHECK(on_kernel_device(logits), op, ": logits must be a CUDA tensor");
  TORCH_CHECK(seed.device() == logits.device() && seed.scalar_type() == at::kLong &&
                  seed.numel() == 1,
              op, ": seed must be a one-element int64 tensor on the logits' device");
}

void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> maskgit_sample_cuda(const at::Tensor& logits,
                                                       double temperature, int64_t top_k,
                                                       const at::Tensor& seed) {
  check_maskgit_sample(logits, temperature, top_k);
  check_seed("maskgit_sample", logits, seed);
  const MaskgitDtype dtype = kernel_dtype(logits, "maskgit_sample");
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor x = logits.stride(1) == 1 ? logits : logits.contiguous();
  const int64_t R = x.size(0), V = x.size(1);
  at::Tensor tokens = at::empty({R}, x.options().dtype(at::kLong));
  at::Tensor conf = at::empty({R}, x.options().dtype(at::kFloat));
  if (R == 0) return {tokens, conf};
  check_launch(maskgit_sample_launch(x.const_data_ptr(), dtype, R, 1, V, x.stride(0), 0, nullptr,
                                     nullptr, static_cast<float>(temperature), top_k, 0.0f, false,
                                     seed.const_data_ptr<int64_t>(), tokens.data_ptr<int64_t>(),
                                     conf.data_ptr<float>(),
                                     c10::cuda::getCurrentCUDAStream().stream()),
               "maskgit_sample");
  return {tokens, conf};
}

std::tuple<at::Tensor, at::Tensor> maskgit_step_cuda(
    const at::Tensor& logits, const at::Tensor& tokens, const at::Tensor& mask,
    const at::Tensor& num_masked, double temperature, int64_t top_k, double choice_temperature,
    bool random_order, const at::Tensor& seed) {
  check_maskgit_step(logits, tokens, mask, num_masked, temperature, top_k, choice_temperature);
  check_seed("maskgit_step", logits, seed);
  const int64_t B = logits.size(0), N = logits.size(1), V = logits.size(2);
  const MaskgitDtype dtype = kernel_dtype(logits, "maskgit_step");
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor out_tokens = at::empty({B, N}, tokens.options());
  at::Tensor out_mask = at::empty({B, N}, mask.options());
  if (B * N == 0) return {out_tokens, out_mask};
  at::Tensor x = logits.stride(2) == 1 ? logits : logits.contiguous();
  at::Tensor tk = tokens.contiguous(), mk = mask.contiguous(), nm = num_masked.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t* seed_ptr = seed.const_data_ptr<int64_t>();
  auto sample = [&](const bool* kept, int64_t* tok, float* score) {
    check_launch(maskgit_sample_launch(x.const_data_ptr(), dtype, B * N, N, V, x.stride(0),
                                       x.stride(1), mk.const_data_ptr<bool>(), kept,
                                       static_cast<float>(temperature), top_k,
                                       static_cast<float>(choice_temperature), random_order,
                                       seed_ptr, tok, score, stream),
                 "maskgit_step");
  };
  auto remask = [&](const float* score, const int64_t* sampled) {
    check_launch(maskgit_remask_launch(score, sampled, tk.const_data_ptr<int64_t>(),
                                       mk.const_data_ptr<bool>(), nm.const_data_ptr<int64_t>(),
                                       B, N, random_order, seed_ptr,
                                       out_tokens.data_ptr<int64_t>(),
                                       out_mask.data_ptr<bool>(), stream),
                 "maskgit_step");
  };
  if (random_order) {
    // the scores are noise only: choose first, then sample just the revealed positions
    remask(nullptr, nullptr);
    sample(out_mask.const_data_ptr<bool>(), out_tokens.data_ptr<int64_t>(), nullptr);
  } else {
    at::Tensor sampled = at::empty({B * N}, tokens.options());
    at::Tensor score = at::empty({B * N}, x.options().dtype(at::kFloat));
    sample(nullptr, sampled.data_ptr<int64_t>(), score.data_ptr<float>());
    remask(score.const_data_ptr<float>(), sampled.const_data_ptr<int64_t>());
  }
  return {out_tokens, out_mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(WMK_CUDA_LIBRARY, WMK_CUDA_DEVICE, m) {
  m.impl("maskgit_sample", &maskgit_sample_cuda);
  m.impl("maskgit_step", &maskgit_step_cuda);
}

}  // namespace wmk
