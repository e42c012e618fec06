// Argument checks shared by the CPU and CUDA implementations of the attention ops. The Python
// front end validates user input with friendlier messages; these guard direct calls of
// torch.ops.wmk.*.
#pragma once
#include <ATen/ATen.h>

#include <cmath>

namespace wmk {

inline void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 5 && k.dim() == 5 && v.dim() == 5, op,
              ": q, k, v must be (B, T, S, H, D), got ", q.sizes(), ", ", k.sizes(), ", ",
              v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v must have one shape, got ", k.sizes(),
              " and ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3) &&
                  q.size(4) == k.size(4),
              op, ": q and k must share B, S, H, D, got ", q.sizes(), " and ", k.sizes());
  TORCH_CHECK_TYPE(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
                   ": q, k, v must share a dtype");
  const auto dt = q.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   op, ": q, k, v must be float16/bfloat16/float32/float64, got ", dt);
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), op,
              ": q, k, v must be on one device");
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->size(4) <= 1 || t->stride(4) == 1, op,
                ": q, k, v need a unit stride on the head dim, got strides ", t->strides());
  }
}

inline void check_scale(const char* op, double scale) {
  TORCH_CHECK_VALUE(std::isfinite(scale) && scale > 0.0, op,
                    ": scale must be finite and > 0, got ", scale);
}

// The saved tensors a backward reads: grad_out and out like q, lse `lse_sizes` in the forward's
// lse dtype (float64 for float64 q, else float32). A wrong lse would be read out of bounds.
inline void check_bwd(const char* op, const at::Tensor& grad_out, const at::Tensor& q,
                      const at::Tensor& out, const at::Tensor& lse,
                      at::IntArrayRef lse_sizes) {
  for (const auto& [name, t] : {std::pair<const char*, const at::Tensor*>{"grad_out", &grad_out},
                                {"out", &out}}) {
    TORCH_CHECK_VALUE(t->sizes() == q.sizes(), op, ": ", name, " must have q's shape ",
                      q.sizes(), ", got ", t->sizes());
    TORCH_CHECK_TYPE(t->scalar_type() == q.scalar_type(), op, ": ", name,
                     " must have q's dtype ", q.scalar_type(), ", got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == q.device(), op, ": ", name, " must be on q's device ",
                      q.device(), ", got ", t->device());
  }
  const auto lse_dtype = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK_VALUE(lse.sizes() == lse_sizes, op, ": lse must be ", lse_sizes, ", got ",
                    lse.sizes());
  TORCH_CHECK_TYPE(lse.scalar_type() == lse_dtype, op, ": lse must be ", lse_dtype, ", got ",
                   lse.scalar_type());
  TORCH_CHECK_VALUE(lse.device() == q.device(), op, ": lse must be on q's device ", q.device(),
                    ", got ", lse.device());
}

inline void check_spatial_bwd(const at::Tensor& grad_out, const at::Tensor& q,
                              const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                              const at::Tensor& lse, double scale) {
  const char* op = "spatial_attention_bwd";
  check_qkv(op, q, k, v);
  TORCH_CHECK_VALUE(q.sizes() == k.sizes(), op, ": q and k must have one shape, got ",
                    q.sizes(), " and ", k.sizes());
  check_scale(op, scale);
  check_bwd(op, grad_out, q, out, lse, {q.size(0), q.size(1), q.size(3), q.size(2)});
}

inline void check_temporal_bwd(const at::Tensor& grad_out, const at::Tensor& q,
                               const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                               const at::Tensor& lse, double scale) {
  const char* op = "temporal_attention_bwd";
  check_qkv(op, q, k, v);
  TORCH_CHECK_VALUE(q.size(1) <= k.size(1), op, ": Tq = ", q.size(1), " > Tk = ", k.size(1));
  check_scale(op, scale);
  check_bwd(op, grad_out, q, out, lse, {q.size(0), q.size(2), q.size(3), q.size(1)});
}

}  // namespace wmk
