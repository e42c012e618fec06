// Torch glue for the VQ CUDA kernels: argument checks, device guard, current stream.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>

#include "wmk/cuda_check.h"
#include "wmk/registration.h"
#include "wmk/vq_checks.h"
#include "wmk/vq_kernel.h"

namespace wmk {
namespace {

// The dispatcher picks this kernel when any argument is a CUDA tensor: every other argument
// must be on that same device, or the kernel would be handed a host or foreign pointer.
void check_device(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                  const at::Tensor& ref) {
  TORCH_CHECK(on_kernel_device(ref), op, ": ", ref_name, " must be a CUDA tensor, got ", ref.device());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref_name,
              "'s device ", ref.device(), ", got ", t.device());
}

at::Tensor vq_lookup_cuda(const at::Tensor& z, const at::Tensor& codebook,
                          c10::string_view metric) {
  TORCH_CHECK(z.dim() == 2 && codebook.dim() == 2 && z.size(1) == codebook.size(1),
              "vq_lookup: expected z (N, D) and codebook (K, D), got ", z.sizes(), " and ",
              codebook.sizes());
  TORCH_CHECK(z.scalar_type() == codebook.scalar_type(), "vq_lookup: z and codebook dtypes differ");
  TORCH_CHECK(metric == "l2" || metric == "cosine", "vq_lookup: metric must be l2 or cosine");
  TORCH_CHECK(codebook.size(0) > 0, "vq_lookup: codebook must have at least one code");
  check_device("vq_lookup", "codebook", codebook, "z", z);
  const c10::cuda::CUDAGuard guard(z.device());
  at::Tensor out = at::empty({z.size(0)}, z.options().dtype(at::kLong));
  if (z.size(0) == 0) return out;
  const bool l2 = metric == "l2";
  const auto acc = z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor codes = codebook;
  if (!l2) {
    at::Tensor c = codebook.to(acc);
    codes = (c / c.norm(2, {1}, true).clamp_min(1e-12)).to(codebook.scalar_type());
  }
  // a non-finite code: a zero vector whose bias carries its distance (NaN, or +inf), so that
  // inf - inf never happens (policy: wmkernels/reference/vq.py; rows of z holding NaN/inf
  // are resolved by the Python caller)
  const at::Tensor bad = codebook.isfinite().all(1).logical_not();
  codes = codes.masked_fill(bad.unsqueeze(1), 0).contiguous();
  at::Tensor bias = l2 ? codes.to(acc).pow(2).sum(1) : at::zeros({codes.size(0)}, codes.options().dtype(acc));
  bias = bias.masked_fill(bad, std::numeric_limits<double>::infinity())
             .masked_fill(codebook.isnan().any(1), std::numeric_limits<double>::quiet_NaN());
  VqLookupParams p{};
  p.z = z.data_ptr();
  p.stride_zn = z.stride(0);
  p.stride_zd = z.stride(1);
  p.codebook = codes.data_ptr();
  p.bias = bias.data_ptr();
  p.scale = l2 ? 2.0 : 1.0;
  p.N = z.size(0);
  p.K = codes.size(0);
  p.D = z.size(1);
  p.dtype = dtype_code("vq_lookup", z.scalar_type());
  p.out = out.data_ptr<int64_t>();
  check_launch("vq_lookup", vq_lookup_launch(p, c10::cuda::getCurrentCUDAStream()));
  return out;
}

void vq_ema_update_cuda(at::Tensor codebook, at::Tensor cluster_size, at::Tensor embed_sum,
                        const at::Tensor& z, const at::Tensor& indices, double decay,
                        double eps) {
  if (codebook.scalar_type() != at::kFloat) {
    // The kernels keep float32 state: update float32 copies of other state, then write back
    // (one rounding per element, as the other backends' low-precision state gets).
    at::Tensor cb = codebook.to(at::kFloat), cs = cluster_size.to(at::kFloat);
    at::Tensor es = embed_sum.to(at::kFloat);
    vq_ema_update_cuda(cb, cs, es, z, indices, decay, eps);
    codebook.copy_(cb);
    cluster_size.copy_(cs);
    embed_sum.copy_(es);
    return;
  }
  TORCH_CHECK(cluster_size.scalar_type() == at::kFloat && embed_sum.scalar_type() == at::kFloat,
              "vq_ema_update_: codebook, cluster_size and embed_sum must share a dtype, got ",
              codebook.scalar_type(), ", ", cluster_size.scalar_type(), ", ",
              embed_sum.scalar_type());
  TORCH_CHECK(codebook.is_contiguous() && cluster_size.is_contiguous() &&
                  embed_sum.is_contiguous(),
              "vq_ema_update_: codebook, cluster_size and embed_sum must be contiguous");
  check_device("vq_ema_update_", "cluster_size", cluster_size, "codebook", codebook);
  check_device("vq_ema_update_", "embed_sum", embed_sum, "codebook", codebook);
  check_device("vq_ema_update_", "z", z, "codebook", codebook);
  check_device("vq_ema_update_", "indices", indices, "codebook", codebook);
  // the kernels index every buffer by K, D and N: a mismatch would read or write past an end
  TORCH_CHECK(codebook.dim() == 2, "vq_ema_update_: codebook must be (K, D), got ",
              codebook.sizes());
  const int64_t K = codebook.size(0), D = codebook.size(1);
  TORCH_CHECK(cluster_size.numel() == K && embed_sum.numel() == K * D,
              "vq_ema_update_: cluster_size must be (K,) and embed_sum (K, D) with (K, D) = ",
              codebook.sizes(), ", got ", cluster_size.sizes(), " and ", embed_sum.sizes());
  TORCH_CHECK(z.dim() == 2 && z.size(1) == D && indices.numel() == z.size(0) &&
                  indices.scalar_type() == at::kLong,
              "vq_ema_update_: expected z (N, ", D, ") and int64 indices (N,), got z ",
              z.sizes(), " and indices ", indices.sizes(), " ", indices.scalar_type());
  const c10::cuda::CUDAGuard guard(codebook.device());
  check_vq_indices(indices, K);  // reads the index range back: a host sync
  at::Tensor zc = z.to(at::kFloat).contiguous();
  at::Tensor ic = indices.contiguous();
  at::Tensor scratch = at::empty({K * (D + 1) + 1}, codebook.options());
  VqEmaUpdateParams p{};
  p.codebook = codebook.data_ptr<float>();
  p.cluster_size = cluster_size.data_ptr<float>();
  p.embed_sum = embed_sum.data_ptr<float>();
  p.z = zc.data_ptr<float>();
  p.indices = ic.data_ptr<int64_t>();
  p.N = zc.size(0);
  p.K = K;
  p.D = D;
  p.decay = static_cast<float>(decay);
  p.eps = static_cast<float>(eps);
  p.scratch = scratch.data_ptr<float>();
  check_launch("vq_ema_update_", vq_ema_update_launch(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace

TORCH_LIBRARY_IMPL(WMK_CUDA_LIBRARY, WMK_CUDA_DEVICE, m) {
  m.impl("vq_lookup", &vq_lookup_cuda);
  m.impl("vq_ema_update_", &vq_ema_update_cuda);
}

}  // namespace wmk
