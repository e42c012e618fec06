// Small CUDA kernels, some with deliberate defects, that check the SIMT emulation itself
// (tests/cuda_sim/test_simt.py): each defect must fail or change the result as it would on
// a GPU. Compiled into the emulated library like the project's kernels, through the same
// rewrites; the entry points are plain C for ctypes.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>

namespace {

// out[i] = in[mirror of i within the block], through shared memory.
__global__ void mirror_kernel(const float* in, float* out, int barrier) {
  __shared__ float tile[1024];
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  tile[threadIdx.x] = in[i];
  if (barrier) __syncthreads();
  out[i] = tile[blockDim.x - 1 - threadIdx.x];
}

// What a block's shared memory holds before any thread writes it.
__global__ void unwritten_shared_kernel(uint32_t* out) {
  __shared__ uint32_t fresh[4];
  if (threadIdx.x < 4) out[blockIdx.x * 4 + threadIdx.x] = fresh[threadIdx.x];
  __syncthreads();
  if (threadIdx.x < 4) fresh[threadIdx.x] = 7;  // the next block must not see this
}

__global__ void divergent_barriers_kernel() {
  if (threadIdx.x % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void exit_before_barrier_kernel() {
  if (threadIdx.x == 5) return;
  __syncthreads();
}

__global__ void shuffle_after_exit_kernel(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void full_mask_kernel(float* out) {
  out[threadIdx.x] = __shfl_sync(0xffffffffu, static_cast<float>(threadIdx.x), 0);
}

// Per lane: [xor 1 within width, up by 1 within width, down by 2 within width, lane 3's
// value of the width-wide segment].
__global__ void shuffle_kernel(const int* in, int* out, int width) {
  const int v = in[threadIdx.x];
  int* o = out + 4 * threadIdx.x;
  o[0] = __shfl_xor_sync(0xffffffffu, v, 1, width);
  o[1] = __shfl_up_sync(0xffffffffu, v, 1, width);
  o[2] = __shfl_down_sync(0xffffffffu, v, 2, width);
  o[3] = __shfl_sync(0xffffffffu, v, 3, width);
}

__global__ void misaligned_load_kernel(const float* in, float* out) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(in + 1));
  out[threadIdx.x] = static_cast<float>(raw.x);
}

__global__ void dynamic_shared_kernel(float* out, int n) {
  extern __shared__ float buf[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = 1.0f;
  __syncthreads();
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += buf[i];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

__global__ void atomics_kernel(int* count, float* sum, unsigned* bins) {
  __shared__ unsigned local[4];
  if (threadIdx.x < 4) local[threadIdx.x] = 0;
  __syncthreads();
  atomicAdd(count, 1);
  atomicAdd(sum, 0.5f);
  atomicAdd(&local[threadIdx.x % 4], 1u);
  __syncthreads();
  if (threadIdx.x < 4) atomicAdd(&bins[threadIdx.x], local[threadIdx.x]);
}

}  // namespace

extern "C" {

int wmk_selftest_mirror(const float* in, float* out, int blocks, int threads, int barrier) {
  mirror_kernel<<<blocks, threads>>>(in, out, barrier);
  return cudaGetLastError();
}

int wmk_selftest_unwritten_shared(uint32_t* out, int blocks) {
  unwritten_shared_kernel<<<blocks, 32>>>(out);
  return cudaGetLastError();
}

int wmk_selftest_divergent_barriers() {
  divergent_barriers_kernel<<<1, 64>>>();
  return cudaGetLastError();
}

int wmk_selftest_exit_before_barrier() {
  exit_before_barrier_kernel<<<1, 64>>>();
  return cudaGetLastError();
}

int wmk_selftest_shuffle_after_exit(float* out) {
  shuffle_after_exit_kernel<<<1, 32>>>(out);
  return cudaGetLastError();
}

int wmk_selftest_full_mask(float* out, int threads) {
  full_mask_kernel<<<1, threads>>>(out);
  return cudaGetLastError();
}

int wmk_selftest_shuffle(const int* in, int* out, int width) {
  shuffle_kernel<<<1, 32>>>(in, out, width);
  return cudaGetLastError();
}

int wmk_selftest_misaligned_load(const float* in, float* out) {
  misaligned_load_kernel<<<1, 1>>>(in, out);
  return cudaGetLastError();
}

int wmk_selftest_dynamic_shared(float* out, int n, int opt_in_bytes) {
  if (opt_in_bytes > 0) {
    const cudaError_t err = cudaFuncSetAttribute(
        dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, opt_in_bytes);
    if (err != cudaSuccess) return cudaGetLastError();  // also clears it, as on a GPU
  }
  dynamic_shared_kernel<<<2, 64, n * sizeof(float)>>>(out, n);
  return cudaGetLastError();
}

int wmk_selftest_atomics(int* count, float* sum, unsigned* bins, int blocks, int threads) {
  atomics_kernel<<<blocks, threads>>>(count, sum, bins);
  return cudaGetLastError();
}

const char* wmk_selftest_error_string(int err) {
  return cudaGetErrorString(static_cast<cudaError_t>(err));
}

}  // extern "C"
