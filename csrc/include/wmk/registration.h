// Where the torch glue (csrc/cuda/<op>.cu) registers the CUDA kernels: the `wmk` library's
// CUDA dispatch key. The test suite's SIMT emulation (tests/cuda_sim) compiles the same glue
// with -DWMK_CUDA_LIBRARY=wmk_sim -DWMK_CUDA_DEVICE=CPU to run these kernels on CPU tensors.
#pragma once
#include <ATen/ATen.h>

#ifndef WMK_CUDA_LIBRARY
#define WMK_CUDA_LIBRARY wmk
#endif
#ifndef WMK_CUDA_DEVICE
#define WMK_CUDA_DEVICE CUDA  // names both a c10::DeviceType and a c10::DispatchKey
#endif

namespace wmk {

// Whether `t` lives on the device the kernels of this build run on.
inline bool on_kernel_device(const at::Tensor& t) {
  return t.device().type() == c10::DeviceType::WMK_CUDA_DEVICE;
}

}  // namespace wmk
