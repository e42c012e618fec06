// Argument checks shared by the CPU and CUDA implementations of the VQ ops. The Python front
// end validates user input with friendlier messages; these guard direct calls of
// torch.ops.wmk.*, which must never read or write out of bounds whatever they are given.
#pragma once
#include <ATen/ATen.h>

#include <cmath>

namespace wmk {

inline bool is_vq_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_vq_lookup(const at::Tensor& z, const at::Tensor& codebook,
                            c10::string_view metric) {
  TORCH_CHECK_VALUE(z.dim() == 2 && codebook.dim() == 2 && z.size(1) == codebook.size(1),
                    "vq_lookup: expected z (N, D) and codebook (K, D), got ", z.sizes(),
                    " and ", codebook.sizes());
  TORCH_CHECK_TYPE(is_vq_float(z.scalar_type()) && z.scalar_type() == codebook.scalar_type(),
                   "vq_lookup: z and codebook must share a float dtype, got ", z.scalar_type(),
                   " and ", codebook.scalar_type());
  TORCH_CHECK_VALUE(z.device() == codebook.device(), "vq_lookup: z is on ", z.device(),
                    " but codebook is on ", codebook.device());
  TORCH_CHECK_VALUE(metric == "l2" || metric == "cosine",
                    "vq_lookup: metric must be l2 or cosine, got ", metric);
  TORCH_CHECK_VALUE(codebook.size(0) > 0, "vq_lookup: codebook must have at least one code");
  TORCH_CHECK_VALUE(codebook.size(1) > 0, "vq_lookup: z and codebook need D >= 1, got ",
                    codebook.sizes());
}

// Everything but the index values (see check_vq_indices).
inline void check_vq_ema_update(const at::Tensor& codebook, const at::Tensor& cluster_size,
                                const at::Tensor& embed_sum, const at::Tensor& z,
                                const at::Tensor& indices, double decay, double eps) {
  const char* op = "vq_ema_update_";
  TORCH_CHECK_VALUE(codebook.dim() == 2 && codebook.size(0) > 0 && codebook.size(1) > 0, op,
                    ": codebook must be (K, D) with K, D >= 1, got ", codebook.sizes());
  const int64_t K = codebook.size(0), D = codebook.size(1);
  TORCH_CHECK_VALUE(cluster_size.sizes() == at::IntArrayRef({K}) &&
                        embed_sum.sizes() == codebook.sizes(),
                    op, ": cluster_size must be (K,) and embed_sum (K, D) for codebook ",
                    codebook.sizes(), ", got ", cluster_size.sizes(), " and ",
                    embed_sum.sizes());
  TORCH_CHECK_VALUE(z.dim() == 2 && z.size(1) == D, op, ": z must be (N, ", D, "), got ",
                    z.sizes());
  TORCH_CHECK_VALUE(indices.dim() == 1 && indices.size(0) == z.size(0), op,
                    ": indices must be (N,) = (", z.size(0), ",), got ", indices.sizes());
  TORCH_CHECK_TYPE(is_vq_float(codebook.scalar_type()) &&
                       cluster_size.scalar_type() == codebook.scalar_type() &&
                       embed_sum.scalar_type() == codebook.scalar_type(),
                   op, ": codebook, cluster_size and embed_sum must share a float dtype, got ",
                   codebook.scalar_type(), ", ", cluster_size.scalar_type(), ", ",
                   embed_sum.scalar_type());
  TORCH_CHECK_TYPE(is_vq_float(z.scalar_type()), op, ": z must be float, got ",
                   z.scalar_type());
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong, op, ": indices must be int64, got ",
                   indices.scalar_type());
  for (const at::Tensor* t : {&cluster_size, &embed_sum, &z, &indices}) {
    TORCH_CHECK_VALUE(t->device() == codebook.device(), op,
                      ": every tensor must be on codebook's device ", codebook.device(),
                      ", got one on ", t->device());
  }
  TORCH_CHECK_VALUE(codebook.is_contiguous() && cluster_size.is_contiguous() &&
                        embed_sum.is_contiguous(),
                    op, ": codebook, cluster_size and embed_sum must be contiguous");
  TORCH_CHECK_VALUE(std::isfinite(decay) && decay >= 0.0 && decay <= 1.0, op,
                    ": decay must be in [0, 1], got ", decay);
  TORCH_CHECK_VALUE(std::isfinite(eps) && eps > 0.0, op, ": eps must be finite and > 0, got ",
                    eps);
}

// Every index must name a code: an index outside [0, K) would write outside the statistics.
// Reads two scalars back (a host sync on CUDA).
inline void check_vq_indices(const at::Tensor& indices, int64_t K) {
  if (indices.numel() == 0) return;
  const auto [lo, hi] = at::aminmax(indices);
  const int64_t mn = lo.item<int64_t>(), mx = hi.item<int64_t>();
  TORCH_CHECK_VALUE(mn >= 0 && mx < K, "vq_ema_update_: indices must be in [0, K) = [0, ", K,
                    "), got values in [", mn, ", ", mx, "]");
}

}  // namespace wmk
