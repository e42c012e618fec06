// SIMT emulation of the CUDA device and runtime API that csrc/cuda/*_kernel.cu use, so that
// those files compile with g++ and run on the CPU under the test suite (tests/cuda_sim).
//
// Each CUDA thread is a fiber; the threads of a block run on one OS thread, and a fiber
// yields only at a sync point (__syncthreads, a warp shuffle, __syncwarp, its exit). Blocks
// run one after another; the order of the fibers inside a block is a run-time schedule
// (forward, reversed or a seeded shuffle, see wmk_sim_set_schedule), so a missing barrier
// reads shared memory the other threads have not written yet, or have already overwritten.
// Shared memory is poisoned (0xff bytes: NaN floats, -1 integers) at the start of every block.
//
// Checked like a GPU would (or should) fail: threads of one block waiting at different sync
// points, a thread exiting while others wait at a barrier, a shuffle whose mask names a lane
// that is absent or has exited or that reads a lane outside its mask, an unaligned 16-byte
// __ldg, launch configurations over the hardware limits, more shared memory than the limits
// without cudaFuncSetAttribute. A failed launch returns its error from cudaGetLastError,
// and cudaGetErrorString gives the details. Out-of-bounds accesses are the job of the
// AddressSanitizer build (tests/cuda_sim/README.md).
//
// Not emulated: the fast-math approximations (__expf is expf), denormal flushing, the memory
// model across blocks (blocks never run concurrently) and timing.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <bit>
#include <cfloat>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ------------------------------------------------------------------------- runtime types

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
};
typedef struct CUstream_st* cudaStream_t;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) float4 {
  float x, y, z, w;
};

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t err);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = nullptr);

namespace wmk_sim {

// ------------------------------------------------------------------------- scheduler state

struct Fiber;
namespace detail {
extern Fiber* current;  // the running CUDA thread (only valid inside a kernel)
extern uint3 block_idx;
extern dim3 block_dim, grid_dim;
const uint3& thread_idx(const Fiber* f);
unsigned char* dynamic_shared();
cudaError_t launch(dim3 grid, dim3 block, size_t smem, const void* kernel,
                   const std::function<void()>& body);
cudaError_t set_max_dynamic_shared(const void* kernel, int bytes);
[[noreturn]] void fail(const char* what, ...);
void syncthreads(const char* file, int line);
uint64_t exchange(unsigned mask, uint64_t value, int src_lane, const char* what);
int lane_id();
}  // namespace detail

// First use of a static __shared__ variable in a block: poison it and count it towards the
// block's shared memory.
void block_shared(void* ptr, size_t bytes);

template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(detail::dynamic_shared());
}

// `kernel<<<grid, block, smem, stream>>>(args...)` is rewritten into this call: every CUDA
// thread calls the kernel with its own copies of the arguments.
struct Config {
  dim3 grid, block;
  size_t smem;
  template <typename G, typename B>
  Config(G g, B b, size_t s = 0, cudaStream_t = nullptr) : grid(to_dim3(g)), block(to_dim3(b)),
                                                            smem(s) {}
  static dim3 to_dim3(dim3 d) { return d; }
  template <typename I, typename = std::enable_if_t<std::is_integral<I>::value>>
  static dim3 to_dim3(I n) {
    return dim3(static_cast<unsigned>(n));
  }
};

template <typename... P, typename... A>
void launch(const Config& cfg, void (*kernel)(P...), A&&... args) {
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  const std::function<void()> body = [&] {
    std::apply([&](const std::decay_t<P>&... p) { kernel(p...); }, params);
  };
  detail::launch(cfg.grid, cfg.block, cfg.smem, reinterpret_cast<const void*>(kernel), body);
}

}  // namespace wmk_sim

template <typename... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return wmk_sim::detail::set_max_dynamic_shared(reinterpret_cast<const void*>(kernel), value);
}

// ------------------------------------------------------------------------- device built-ins

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (::wmk_sim::detail::thread_idx(::wmk_sim::detail::current))
#define blockIdx (static_cast<const uint3&>(::wmk_sim::detail::block_idx))
#define blockDim (static_cast<const dim3&>(::wmk_sim::detail::block_dim))
#define gridDim (static_cast<const dim3&>(::wmk_sim::detail::grid_dim))
#define __syncthreads() ::wmk_sim::detail::syncthreads(__FILE__, __LINE__)

constexpr int warpSize = 32;

namespace wmk_sim {

template <typename T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value,
                "a shuffle moves at most 8 bytes");
  uint64_t b = 0;
  memcpy(&b, &v, sizeof(T));
  return b;
}

template <typename T>
T from_bits(uint64_t b) {
  T v;
  memcpy(&v, &b, sizeof(T));
  return v;
}

// The lane a shuffle reads, per the CUDA programming guide: a lane outside its own
// `width`-wide segment (above it for xor/down, below it for up) reads its own value.
inline int check_width(int width) {
  if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    detail::fail("shuffle width %d is not a power of two in [1, 32]", width);
  return width;
}

template <typename T>
T shfl(unsigned mask, T v, int src, const char* what) {
  return from_bits<T>(detail::exchange(mask, to_bits(v), src, what));
}

}  // namespace wmk_sim

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
  const int w = wmk_sim::check_width(width), lane = wmk_sim::detail::lane_id();
  return wmk_sim::shfl(mask, v, (lane & ~(w - 1)) + (src_lane & (w - 1)), "__shfl_sync");
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  const int w = wmk_sim::check_width(width), lane = wmk_sim::detail::lane_id();
  const int src = lane ^ lane_mask;
  return wmk_sim::shfl(mask, v, src >= (lane & ~(w - 1)) + w ? lane : src, "__shfl_xor_sync");
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int w = wmk_sim::check_width(width), lane = wmk_sim::detail::lane_id();
  const int src = lane - static_cast<int>(delta);
  return wmk_sim::shfl(mask, v, src < (lane & ~(w - 1)) ? lane : src, "__shfl_up_sync");
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int w = wmk_sim::check_width(width), lane = wmk_sim::detail::lane_id();
  const int src = lane + static_cast<int>(delta);
  return wmk_sim::shfl(mask, v, src >= (lane & ~(w - 1)) + w ? lane : src, "__shfl_down_sync");
}

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  wmk_sim::detail::exchange(mask, 0, wmk_sim::detail::lane_id(), "__syncwarp");
}

// Fibers never interleave inside a call: a plain read-modify-write is atomic here.
#define WMK_SIM_ATOMIC_ADD(T)              \
  inline T atomicAdd(T* address, T value) { \
    const T old = *address;                 \
    *address = old + value;                 \
    return old;                             \
  }
WMK_SIM_ATOMIC_ADD(int)
WMK_SIM_ATOMIC_ADD(unsigned int)
WMK_SIM_ATOMIC_ADD(unsigned long long)
WMK_SIM_ATOMIC_ADD(float)
WMK_SIM_ATOMIC_ADD(double)
#undef WMK_SIM_ATOMIC_ADD

template <typename T>
T __ldg(const T* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0)
    wmk_sim::detail::fail("__ldg of a %zu-byte type at the misaligned address %p", sizeof(T),
                          static_cast<const void*>(p));
  return *p;
}

inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }

// The fast intrinsics at full precision (their GPU error bounds are not emulated).
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __fdividef(float a, float b) { return a / b; }
