// What every torch glue file (csrc/cuda/<op>.cu) does around a launcher: turn a failed
// launch into a torch error that names the op, and map the tensor dtype onto wmk::Dtype.
#pragma once
#include <ATen/ATen.h>
#include <cuda_runtime.h>

#include "wmk/dtype.h"

namespace wmk {

inline void check_launch(const char* op, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, op, ": CUDA launch failed: ", cudaGetErrorString(err));
}

// The Dtype of `t`; a dtype the op's kernels lack is a TypeError naming the op (the checks
// headers have already named the argument: this guards direct calls of torch.ops.wmk.*).
inline Dtype dtype_code(const char* op, at::ScalarType t, bool float64 = true) {
  switch (t) {
    case at::kFloat: return Dtype::kFloat32;
    case at::kHalf: return Dtype::kFloat16;
    case at::kBFloat16: return Dtype::kBFloat16;
    case at::kDouble:
      if (float64) return Dtype::kFloat64;
      break;
    default: break;
  }
  TORCH_CHECK_TYPE(false, op, ": the CUDA kernels take float16/bfloat16/float32",
                   float64 ? "/float64" : "", ", got ", t);
}

}  // namespace wmk
