// Stand-in for c10's CUDA stream under the SIMT emulation (tests/cuda_sim): one in-order
// stream, the null stream; kernels run to completion when launched.
#pragma once
#include <c10/core/Device.h>
#include <cuda_runtime.h>

namespace c10 {
namespace cuda {

struct CUDAStream {
  cudaStream_t stream() const { return nullptr; }
  operator cudaStream_t() const { return nullptr; }
};

inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }

}  // namespace cuda
}  // namespace c10
