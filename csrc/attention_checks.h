// Argument checks shared by the CPU and CUDA implementations of the attention ops. The Python
// front end validates user input with friendlier messages; these guard direct calls of
// torch.ops.wmk.*.
#pragma once
#include <ATen/ATen.h>

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
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k, v must share a dtype");
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(), op,
              ": q, k, v must be on one device");
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->size(4) <= 1 || t->stride(4) == 1, op,
                ": q, k, v need a unit stride on the head dim, got strides ", t->strides());
  }
}

}  // namespace wmk
