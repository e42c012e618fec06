// Torch glue of the MaskGIT CUDA kernels (maskgit_kernel.cu): argument checks, device guard,
// the current stream, output allocation. Schemas are in csrc/ops.cpp.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "wmk/cuda_check.h"
#include "wmk/maskgit_checks.h"
#include "wmk/maskgit_kernel.h"
#include "wmk/registration.h"

namespace wmk {
namespace {

void check_seed(const char* op, const at::Tensor& logits, const at::Tensor& seed) {
  TORCH_CHECK(on_kernel_device(logits), op, ": logits must be a CUDA tensor");
  TORCH_CHECK(seed.device() == logits.device() && seed.scalar_type() == at::kLong &&
                  seed.numel() == 1,
              op, ": seed must be a one-element int64 tensor on the logits' device");
}

std::tuple<at::Tensor, at::Tensor> maskgit_sample_cuda(const at::Tensor& logits,
                                                       double temperature, int64_t top_k,
                                                       const at::Tensor& seed) {
  check_maskgit_sample(logits, temperature, top_k);
  check_seed("maskgit_sample", logits, seed);
  const Dtype dtype = dtype_code("maskgit_sample", logits.scalar_type(), /*float64=*/false);
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor x = logits.stride(1) == 1 ? logits : logits.contiguous();
  const int64_t R = x.size(0), V = x.size(1);
  TORCH_CHECK_VALUE(R <= 2147483647, "maskgit_sample: the CUDA kernel runs one block per row "
                    "(at most 2^31 - 1), got R = ", R);
  at::Tensor tokens = at::empty({R}, x.options().dtype(at::kLong));
  at::Tensor conf = at::empty({R}, x.options().dtype(at::kFloat));
  if (R == 0) return {tokens, conf};
  MaskgitSampleParams p{};
  p.logits = x.const_data_ptr();
  p.dtype = dtype;
  p.R = R;
  p.N = 1;
  p.V = V;
  p.stride_b = x.stride(0);
  p.temperature = static_cast<float>(temperature);
  p.top_k = top_k;
  p.seed = seed.const_data_ptr<int64_t>();
  p.tokens = tokens.data_ptr<int64_t>();
  p.out = conf.data_ptr<float>();
  check_launch("maskgit_sample",
               maskgit_sample_launch(p, c10::cuda::getCurrentCUDAStream().stream()));
  return {tokens, conf};
}

std::tuple<at::Tensor, at::Tensor> maskgit_step_cuda(
    const at::Tensor& logits, const at::Tensor& tokens, const at::Tensor& mask,
    const at::Tensor& num_masked, double temperature, int64_t top_k, double choice_temperature,
    bool random_order, const at::Tensor& seed) {
  check_maskgit_step(logits, tokens, mask, num_masked, temperature, top_k, choice_temperature);
  check_seed("maskgit_step", logits, seed);
  const int64_t B = logits.size(0), N = logits.size(1), V = logits.size(2);
  TORCH_CHECK_VALUE(B * N <= 2147483647, "maskgit_step: the CUDA sampler runs one block per "
                    "(b, n) (at most 2^31 - 1), got B*N = ", B * N, " (B = ", B, ", N = ", N,
                    ")");
  const Dtype dtype = dtype_code("maskgit_step", logits.scalar_type(), /*float64=*/false);
  const c10::cuda::CUDAGuard guard(logits.device());
  at::Tensor out_tokens = at::empty({B, N}, tokens.options());
  at::Tensor out_mask = at::empty({B, N}, mask.options());
  if (B * N == 0) return {out_tokens, out_mask};
  at::Tensor x = logits.stride(2) == 1 ? logits : logits.contiguous();
  at::Tensor tk = tokens.contiguous(), mk = mask.contiguous(), nm = num_masked.contiguous();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t* seed_ptr = seed.const_data_ptr<int64_t>();
  auto sample = [&](const bool* kept, int64_t* tok, float* score) {
    MaskgitSampleParams p{};
    p.logits = x.const_data_ptr();
    p.dtype = dtype;
    p.R = B * N;
    p.N = N;
    p.V = V;
    p.stride_b = x.stride(0);
    p.stride_n = x.stride(1);
    p.mask = mk.const_data_ptr<bool>();
    p.kept = kept;
    p.temperature = static_cast<float>(temperature);
    p.top_k = top_k;
    p.choice_temperature = static_cast<float>(choice_temperature);
    p.random_order = random_order;
    p.seed = seed_ptr;
    p.tokens = tok;
    p.out = score;
    check_launch("maskgit_step", maskgit_sample_launch(p, stream));
  };
  auto remask = [&](const float* score, const int64_t* sampled) {
    MaskgitRemaskParams p{};
    p.score = score;
    p.sampled = sampled;
    p.tokens = tk.const_data_ptr<int64_t>();
    p.mask = mk.const_data_ptr<bool>();
    p.num_masked = nm.const_data_ptr<int64_t>();
    p.B = B;
    p.N = N;
    p.random_order = random_order;
    p.seed = seed_ptr;
    p.out_tokens = out_tokens.data_ptr<int64_t>();
    p.out_mask = out_mask.data_ptr<bool>();
    check_launch("maskgit_step", maskgit_remask_launch(p, stream));
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
