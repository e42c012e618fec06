// MaskGIT sampling and re-masking CUDA kernels (plain CUDA, no torch headers).
//
// Sampler: one 256-thread block per logits row. Pass 1 reads the row from global memory
// once with 16-byte vector loads (4 fp32 or 8 fp16/bf16 per load), applies the NaN/inf
// policy, keeps an fp32 copy in shared memory (V <= kSmemMaxV), and reduces the
// online (max, sum exp, first argmax) of the untempered logits. With top-k, a 4-pass radix
// select (8-bit digits, 256-bin shared histogram, digit found by one warp) on the
// order-preserving integer image of the fp32 values gives the k-th largest exactly. Pass 2
// runs over the shared copy: Gumbel-max, argmax of (x - max) / T + g, with g = -log(E),
// E = -log1p(-v) exponential, v from Philox4x32-10 (one call per 4 logits; counter =
// (v / 4, row, stream 0), key = the per-call seed read from device memory: no host sync).
// Noise is only drawn where it can win: g <= kGumbelMax, so a logit with
// (x - max) / T + kGumbelMax below the thread's best cannot be the argmax.
// Confidence = exp(x_tok - max) / sum (untempered, full vocabulary).
//
// Re-mask: one 1024-thread block per batch row; the scores of unknown positions (shared
// memory up to kSmemMaxN, else global/L2) go through the same radix select for the k-th
// smallest key; positions below it stay masked, and among the equal ones the first
// (k - #below) in position order (a block-wide scan over contiguous per-thread chunks).
// In the random order the scores are the choice noise alone: the re-mask runs first (it
// draws the noise itself) and the sampler then reads only the revealed positions' rows.
//
// Roofline at maskgit-large (B16 N4096 V8192 bf16 logits): 1.07 GB read once; at 3.35 TB/s
// (H100 SXM HBM3) that is 0.32 ms. Per logit: conversion, max/sum (one __expf) and the
// pruned Gumbel test, ~10-20 instructions: the kernel is memory-bound while noise is
// pruned and close to the ALU bound when every logit draws noise (flat logits, T large).
// maskgit-genie (B8 N1024 V1024): 16-32 MB, a few microseconds: launch-bound, hence the
// CUDA-graph decode loop.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>
#include <cstdint>

#include "wmk/dtype.h"
#include "wmk/maskgit_kernel.h"
#include "wmk/maskgit_philox.h"

namespace wmk {
namespace {

constexpr int kSampleThreads = 256;
constexpr int kRemaskThreads = 1024;
// Dynamic shared memory per block stays under the 48 KB that needs no opt-in, with room
// for the static reduction scratch.
constexpr int64_t kSmemMaxV = 10240;
constexpr int64_t kSmemMaxN = 10240;
// Bound on the Gumbel noise: v >= 2^-24 so E >= ~2^-24 and g = -log(E) <= 24 ln 2 = 16.64
// (with margin for the rounding of the fast logarithm).
constexpr float kGumbelMax = 17.5f;

// NaN counts as -inf, +inf as the largest float.
__device__ __forceinline__ float clean(float x) {
  if (x != x) return -INFINITY;
  return fminf(x, FLT_MAX);
}

// Order-preserving map of fp32 (no NaN) to uint32. -0.0 maps to +0.0's key: they compare
// equal as floats (torch.topk's threshold and torch.sort's ties), so they must tie here too.
__device__ __forceinline__ uint32_t sortable(float x) {
  const uint32_t b = __float_as_uint(x == 0.0f ? 0.0f : x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The fast intrinsics here are explicit (the build has no --use_fast_math) and safe by range:
// __logf only of E in [2^-24, 16.7] (3 ulp, or 2^-21.4 absolute on [0.5, 2]: inside
// kGumbelMax's margin) and of a softmax sum >= 1; __expf only of x <= 0, terms of a sum that
// holds the max's own 1: its 2 + 1.17|x| ulp of e^x is at most 2 ulp of the sum.
__device__ __forceinline__ float gumbel_from(uint32_t bits) {
  const float e = -log1pf(-philox::uniform(bits));  // accurate where E is small (g large)
  return -__logf(e);
}

// Choice noise of position `row` (= b * N + n): Philox stream 1, shared by both kernels.
__device__ __forceinline__ float choice_gumbel(uint64_t key, uint64_t row) {
  return gumbel_from(philox::draw(key, 0, row, 1).x);
}

struct Stats {
  float m;    // max
  float s;    // sum of exp(x - m)
  int64_t a;  // first index attaining m
};

// Field-wise selects, not a swap of the structs: the swap went through local memory on sm_90.
__device__ __forceinline__ Stats merge(Stats p, Stats q) {
  const bool q_first = q.m > p.m || (q.m == p.m && q.a < p.a);
  // hi has the larger max (or the same max and the lower index)
  Stats hi{q_first ? q.m : p.m, q_first ? q.s : p.s, q_first ? q.a : p.a};
  const float lo_m = q_first ? p.m : q.m, lo_s = q_first ? p.s : q.s;
  if (lo_m > -INFINITY) hi.s += lo_s * __expf(lo_m - hi.m);
  return hi;
}

__device__ __forceinline__ void add(Stats& st, float x, int64_t v) {
  if (x > st.m) {
    st.s = (st.m > -INFINITY ? st.s * __expf(st.m - x) : 0.0f) + 1.0f;
    st.m = x;
    st.a = v;
  } else if (x > -INFINITY) {
    st.s += __expf(x - st.m);
  }
}

struct Best {
  float y;
  int64_t v;
};

__device__ __forceinline__ Best better(Best p, Best q) {
  return (q.y > p.y || (q.y == p.y && q.v < p.v)) ? q : p;
}

__device__ __forceinline__ Stats shfl_stats(Stats st, int off) {
  Stats o;
  o.m = __shfl_xor_sync(0xffffffffu, st.m, off);
  o.s = __shfl_xor_sync(0xffffffffu, st.s, off);
  o.a = __shfl_xor_sync(0xffffffffu, st.a, off);
  return o;
}

__device__ __forceinline__ Best shfl_best(Best b, int off) {
  Best o;
  o.y = __shfl_xor_sync(0xffffffffu, b.y, off);
  o.v = __shfl_xor_sync(0xffffffffu, b.v, off);
  return o;
}

// Block-wide reductions; every thread gets the result. scratch: one entry per warp.
template <int kThreads>
__device__ Stats block_stats(Stats st, Stats* scratch) {
  for (int off = 16; off > 0; off >>= 1) st = merge(st, shfl_stats(st, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = st;
  __syncthreads();
  st = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) st = merge(st, scratch[w]);
  __syncthreads();
  return st;
}

template <int kThreads>
__device__ Best block_best(Best b, Best* scratch) {
  for (int off = 16; off > 0; off >>= 1) b = better(b, shfl_best(b, off));
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = b;
  __syncthreads();
  b = scratch[0];
  for (int w = 1; w < kThreads / 32; ++w) b = better(b, scratch[w]);
  __syncthreads();
  return b;
}

template <int kThreads>
__device__ int64_t block_sum(int64_t x, int64_t* scratch) {
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  x = 0;
  for (int w = 0; w < kThreads / 32; ++w) x += scratch[w];
  __syncthreads();
  return x;
}

struct RadixShared {
  uint32_t hist[256];
  uint32_t digit;
  uint32_t rank;
};

// The k-th largest (1 <= k <= #valid) of the keys key(i) over valid(i), i in [0, n):
// four passes of 8-bit digits, most significant first.
template <typename KeyFn>
__device__ uint32_t radix_kth_largest(KeyFn key, int64_t n, uint32_t k, RadixShared& sh) {
  uint32_t prefix = 0, prefix_mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += blockDim.x) sh.hist[i] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      uint32_t kv;
      if (key(i, &kv) && (kv & prefix_mask) == prefix) atomicAdd(&sh.hist[(kv >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // lane l owns the bins 255 - 8l down to 248 - 8l: lanes in descending digit order
      const int lane = threadIdx.x;
      uint32_t c[8], total = 0;
      for (int j = 0; j < 8; ++j) {
        c[j] = sh.hist[255 - 8 * lane - j];
        total += c[j];
      }
      uint32_t incl = total;
      for (int off = 1; off < 32; off <<= 1) {
        const uint32_t t = __shfl_up_sync(0xffffffffu, incl, off);
        if (lane >= off) incl += t;
      }
      const uint32_t excl = incl - total;
      if (excl < k && k <= incl) {
        uint32_t cum = excl;
        for (int j = 0; j < 8; ++j) {
          if (cum + c[j] >= k) {
            sh.digit = static_cast<uint32_t>(255 - 8 * lane - j);
            sh.rank = k - cum;
            break;
          }
          cum += c[j];
        }
      }
    }
    __syncthreads();
    prefix |= sh.digit << shift;
    prefix_mask |= 255u << shift;
    k = sh.rank;
    __syncthreads();
  }
  return prefix;
}

// alignas(16): without it the struct is only as aligned as T and nvcc splits a load of it into
// kN scalar loads; with it pass 1 is one LDG.E.128 per vector (tests/gates checks the SASS).
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int kN = 16 / sizeof(T);
  T x[kN];
};

struct SampleArgs {
  const void* logits;
  int64_t R, N, V, stride_b, stride_n;
  const bool* mask;
  const bool* kept;  // step, random order: positions that stay masked are not sampled
  float inv_t;  // 0: argmax
  int64_t top_k;
  float choice_temperature;
  bool random_order;
  const int64_t* seed;
  int64_t* tokens;
  float* out;
  bool use_smem, vector_loads;
};

struct SampleShared {
  Stats stats[kSampleThreads / 32];
  Best best[kSampleThreads / 32];
  RadixShared radix;
};

template <typename T>
// At least 4 blocks per SM (the 40 KB of dynamic shared memory at kSmemMaxV allows 5 on
// sm_90): 64 registers, where ptxas's own choice on sm_90 (40) spilled.
__global__ void __launch_bounds__(kSampleThreads, 4) sample_kernel(SampleArgs a) {
  extern __shared__ float srow[];
  __shared__ SampleShared sh;
  const int64_t row = blockIdx.x;
  if (a.mask != nullptr && !a.mask[row]) return;  // known position: logits never read
  if (a.kept != nullptr && a.kept[row]) return;    // stays masked: its sample is not used
  const T* p = static_cast<const T*>(a.logits) + (row / a.N) * a.stride_b + (row % a.N) * a.stride_n;
  const int64_t V = a.V;
  const uint64_t key = static_cast<uint64_t>(*a.seed);

  // pass 1: the only read of the row from global memory
  Stats st{-INFINITY, 0.0f, INT64_MAX};
  if (a.vector_loads) {
    constexpr int kN = Vec16<T>::kN;
    const Vec16<T>* pv = reinterpret_cast<const Vec16<T>*>(p);
    for (int64_t i = threadIdx.x; i < V / kN; i += kSampleThreads) {
      const Vec16<T> vec = pv[i];
      for (int j = 0; j < kN; ++j) {
        const float x = clean(to_float(vec.x[j]));
        if (a.use_smem) srow[i * kN + j] = x;
        add(st, x, i * kN + j);
      }
    }
  } else {
    for (int64_t v = threadIdx.x; v < V; v += kSampleThreads) {
      const float x = clean(to_float(p[v]));
      if (a.use_smem) srow[v] = x;
      add(st, x, v);
    }
  }
  st = block_stats<kSampleThreads>(st, sh.stats);
  const float m = st.m;
  const bool valid = m > -INFINITY;
  auto value = [&](int64_t v) { return a.use_smem ? srow[v] : clean(to_float(p[v])); };

  int64_t tok = st.a;
  if (valid && a.inv_t > 0.0f && V > 1) {
    uint32_t thr = 0;  // every key is >= 0
    if (a.top_k > 0 && a.top_k < V) {
      auto key_of = [&](int64_t v, uint32_t* kv) {
        *kv = sortable(value(v));
        return true;
      };
      thr = radix_kth_largest(key_of, V, static_cast<uint32_t>(a.top_k), sh.radix);
    }
    // pass 2 over the shared copy: Gumbel-max, noise drawn four logits at a time
    Best b{-INFINITY, INT64_MAX};
    for (int64_t g0 = 4 * static_cast<int64_t>(threadIdx.x); g0 < V; g0 += 4 * kSampleThreads) {
      float y0[4];
      bool need = false;
      for (int j = 0; j < 4; ++j) {
        const int64_t v = g0 + j;
        const float x = v < V ? value(v) : -INFINITY;
        const bool keep = v < V && x > -INFINITY && sortable(x) >= thr;
        y0[j] = keep ? (x - m) * a.inv_t : -INFINITY;
        need |= keep && y0[j] + kGumbelMax >= b.y;
      }
      if (!need) continue;
      const philox::U32x4 r = philox::draw(key, static_cast<uint32_t>(g0 / 4),
                                           static_cast<uint64_t>(row), 0);
      const uint32_t bits[4] = {r.x, r.y, r.z, r.w};
      for (int j = 0; j < 4; ++j) {
        if (y0[j] == -INFINITY) continue;
        b = better(b, Best{y0[j] + gumbel_from(bits[j]), g0 + j});
      }
    }
    b = block_best<kSampleThreads>(b, sh.best);
    if (b.v < V) tok = b.v;
  }
  if (threadIdx.x != 0) return;
  const float logp = valid ? (value(tok) - m) - __logf(st.s) : -INFINITY;
  a.tokens[row] = valid ? tok : -1;
  if (a.mask == nullptr) {
    a.out[row] = valid ? __expf(logp) : 0.0f;
    return;
  }
  if (a.random_order) return;  // the re-mask drew the scores itself
  const float g = choice_gumbel(key, static_cast<uint64_t>(row));
  a.out[row] = a.choice_temperature > 0.0f ? logp + a.choice_temperature * g : logp;
}

struct RemaskShared {
  int64_t sums[kRemaskThreads / 32];
  int64_t offsets[kRemaskThreads / 32];
  RadixShared radix;
};

__global__ void __launch_bounds__(kRemaskThreads) remask_kernel(
    const float* score, const int64_t* sampled, const int64_t* tokens, const bool* mask,
    const int64_t* num_masked, int64_t N, bool random_order, const int64_t* seed,
    int64_t* out_tokens, bool* out_mask, bool use_smem) {
  extern __shared__ uint32_t skeys[];
  __shared__ RemaskShared sh;
  const int64_t base = static_cast<int64_t>(blockIdx.x) * N;
  const bool* mk = mask + base;
  const uint64_t key = random_order ? static_cast<uint64_t>(*seed) : 0;
  // inverted keys: the k-th smallest score is the k-th largest inverted key
  auto compute_key = [&](int64_t n) {
    const float s = random_order ? choice_gumbel(key, static_cast<uint64_t>(base + n))
                                 : score[base + n];
    return ~sortable(s);
  };
  int64_t unknown = 0;
  for (int64_t n = threadIdx.x; n < N; n += kRemaskThreads) {
    if (mk[n]) {
      ++unknown;
      if (use_smem) skeys[n] = compute_key(n);
    }
  }
  unknown = block_sum<kRemaskThreads>(unknown, sh.sums);
  int64_t k = num_masked[blockIdx.x];
  k = k < 0 ? 0 : (k > unknown ? unknown : k);
  auto inv_key = [&](int64_t n) { return use_smem ? skeys[n] : compute_key(n); };
  uint32_t t = 0;
  if (k > 0) {
    auto key_of = [&](int64_t n, uint32_t* kv) {
      if (!mk[n]) return false;
      *kv = inv_key(n);
      return true;
    };
    t = radix_kth_largest(key_of, N, static_cast<uint32_t>(k), sh.radix);
  }
  // each thread owns a contiguous chunk so that ties resolve in position order
  const int64_t chunk = (N + kRemaskThreads - 1) / kRemaskThreads;
  const int64_t n0 = threadIdx.x * chunk, n1 = n0 + chunk < N ? n0 + chunk : N;
  int64_t above = 0, equal = 0;
  for (int64_t n = n0; n < n1; ++n) {
    if (k > 0 && mk[n]) {
      const uint32_t kv = inv_key(n);
      above += kv > t;
      equal += kv == t;
    }
  }
  const int64_t n_above = block_sum<kRemaskThreads>(above, sh.sums);
  // exclusive scan of `equal` over threads: warp scan, then the warps' totals
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int64_t incl = equal;
  for (int off = 1; off < 32; off <<= 1) {
    const int64_t x = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += x;
  }
  if (lane == 31) sh.sums[warp] = incl;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t run = 0;
    for (int w = 0; w < kRemaskThreads / 32; ++w) {
      sh.offsets[w] = run;
      run += sh.sums[w];
    }
  }
  __syncthreads();
  int64_t rank = sh.offsets[warp] + incl - equal;  // equal keys before this thread's chunk
  const int64_t take_equal = k - n_above;
  for (int64_t n = n0; n < n1; ++n) {
    bool keep = false;
    if (k > 0 && mk[n]) {
      const uint32_t kv = inv_key(n);
      if (kv > t) {
        keep = true;
      } else if (kv == t) {
        keep = rank < take_equal;
        ++rank;
      }
    }
    out_mask[base + n] = keep;
    // random order: the sampler, launched next, writes the revealed tokens
    out_tokens[base + n] =
        (!random_order && mk[n] && !keep) ? sampled[base + n] : tokens[base + n];
  }
}

template <typename T>
cudaError_t launch_sample(const SampleArgs& a0, cudaStream_t stream) {
  SampleArgs a = a0;
  a.use_smem = a.V <= kSmemMaxV;
  const uintptr_t addr = reinterpret_cast<uintptr_t>(a.logits);
  constexpr int64_t kN = Vec16<T>::kN;
  // every row starts 16-byte aligned and the row is a whole number of vectors
  a.vector_loads = addr % 16 == 0 && a.V % kN == 0 && a.stride_b % kN == 0 &&
                   (a.N == 1 || a.stride_n % kN == 0);
  const size_t smem = a.use_smem ? static_cast<size_t>(a.V) * sizeof(float) : 0;
  sample_kernel<T><<<static_cast<unsigned>(a.R), kSampleThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t maskgit_sample_launch(const MaskgitSampleParams& p, cudaStream_t stream) {
  if (p.R == 0) return cudaSuccess;
  if (p.R > 0x7fffffffLL || p.N < 1 || p.V < 1) return cudaErrorInvalidValue;
  // a subnormal temperature must not make (x - max) * inv_t = 0 * inf = NaN
  const float inv_t = p.temperature > 0.0f ? fminf(1.0f / p.temperature, FLT_MAX) : 0.0f;
  const SampleArgs a{p.logits, p.R, p.N, p.V, p.stride_b, p.stride_n, p.mask, p.kept, inv_t,
                     p.top_k, p.choice_temperature, p.random_order, p.seed, p.tokens, p.out,
                     false, false};
  switch (p.dtype) {
    case Dtype::kFloat32: return launch_sample<float>(a, stream);
    case Dtype::kFloat16: return launch_sample<__half>(a, stream);
    case Dtype::kBFloat16: return launch_sample<__nv_bfloat16>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t maskgit_remask_launch(const MaskgitRemaskParams& p, cudaStream_t stream) {
  if (p.B == 0 || p.N == 0) return cudaSuccess;
  if (p.B > 0x7fffffffLL) return cudaErrorInvalidValue;
  const bool use_smem = p.N <= kSmemMaxN;
  const size_t smem = use_smem ? static_cast<size_t>(p.N) * sizeof(uint32_t) : 0;
  remask_kernel<<<static_cast<unsigned>(p.B), kRemaskThreads, smem, stream>>>(
      p.score, p.sampled, p.tokens, p.mask, p.num_masked, p.N, p.random_order, p.seed,
      p.out_tokens, p.out_mask, use_smem);
  return cudaGetLastError();
}

}  // namespace wmk
