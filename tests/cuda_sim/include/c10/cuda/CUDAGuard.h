// Stand-in for c10's CUDA device guard under the SIMT emulation (tests/cuda_sim): the
// emulated device is the CPU, so the guard checks that the glue guards a CPU tensor's device,
// where the real guard requires a CUDA one.
#pragma once
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

namespace c10 {
namespace cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device device) {
    TORCH_CHECK(device.is_cpu(), "cuda-sim: the emulated kernels run CPU tensors, got ", device);
  }
};

using OptionalCUDAGuard = CUDAGuard;

}  // namespace cuda
}  // namespace c10
