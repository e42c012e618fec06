// VQ nearest-codebook lookup and EMA update in CUDA.
//
// Lookup: a block of 256 threads owns 64 rows of z; codebook tiles of 64 codes stream past
// them through shared memory in chunks of 32 dims. Each thread accumulates a 4 x 4 block of
// dot products in registers (fp32, or fp64 for double inputs), turns them into distances
// bias[k] - scale * dot and keeps a running (min, index) per row; at the end the 16 threads
// that share a row reduce with warp shuffles. No N x K matrix, no one-hot: extra memory is the
// K code norms. Ties: each thread visits its codes in increasing order with a strict `<`, and
// the cross-thread reduction breaks equal distances by the smaller index. NaN distances are
// mapped to -inf, so they count as the smallest, as in torch.argmin.
//
// This kernel uses CUDA-core FMAs for every dtype. Roofline at vq-tokenizer (N=131072,
// K=1024, D=32): 8.6 GFLOP and 16 MB, so compute-bound: an H100's ~60 TFLOP/s of fp32 FMA
// bounds it near 0.15 ms. The low-precision tensor-core path is the Triton kernel.
//
// EMA: counts and sums scattered with atomics into a K x (D + 1) scratch, then one block
// mixes the counts and reduces their total, then a grid-stride pass mixes the sums and
// divides by the Laplace-smoothed counts.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <math.h>

#include "wmk/dtype.h"
#include "wmk/vq_kernel.h"

namespace {

constexpr int kRowsPerBlock = 64;
constexpr int kCodesPerTile = 64;
constexpr int kDimChunk = 32;
constexpr int kThreads = 256;  // 16 x 16 threads, each a 4 x 4 micro-tile

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

using wmk::to_float;

template <typename A>
__device__ __forceinline__ bool better(A d, int64_t k, A best, int64_t best_k) {
  return d < best || (d == best && k < best_k);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    vq_lookup_kernel(const T* __restrict__ z, int64_t szn, int64_t szd,
                     const T* __restrict__ codebook, const typename Acc<T>::type* __restrict__ bias,
                     typename Acc<T>::type scale, int64_t N, int64_t K, int64_t D,
                     int64_t* __restrict__ out) {
  using A = typename Acc<T>::type;
  __shared__ A zs[kDimChunk][kRowsPerBlock + 1];
  __shared__ A cs[kDimChunk][kCodesPerTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock;
  const A inf = static_cast<A>(INFINITY);

  A best[4];
  int64_t best_k[4];
  for (int i = 0; i < 4; ++i) { best[i] = inf; best_k[i] = 0; }

  for (int64_t k0 = 0; k0 < K; k0 += kCodesPerTile) {
    A acc[4][4] = {};
    for (int64_t d0 = 0; d0 < D; d0 += kDimChunk) {
      for (int e = threadIdx.x; e < kDimChunk * kRowsPerBlock; e += kThreads) {
        const int r = e / kDimChunk, d = e % kDimChunk;
        const int64_t row = row0 + r, dim = d0 + d;
        zs[d][r] = (row < N && dim < D) ? to_float(z[row * szn + dim * szd]) : A(0);
      }
      for (int e = threadIdx.x; e < kDimChunk * kCodesPerTile; e += kThreads) {
        const int c = e / kDimChunk, d = e % kDimChunk;
        const int64_t code = k0 + c, dim = d0 + d;
        cs[d][c] = (code < K && dim < D) ? to_float(codebook[code * D + dim]) : A(0);
      }
      __syncthreads();
#pragma unroll 8
      for (int d = 0; d < kDimChunk; ++d) {
        A a[4], b[4];
        for (int i = 0; i < 4; ++i) a[i] = zs[d][ty * 4 + i];
        for (int j = 0; j < 4; ++j) b[j] = cs[d][tx * 4 + j];
        for (int i = 0; i < 4; ++i)
          for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
      __syncthreads();
    }
    for (int j = 0; j < 4; ++j) {
      const int64_t code = k0 + tx * 4 + j;
      if (code >= K) break;
      const A bk = bias[code];
      for (int i = 0; i < 4; ++i) {
        A d = bk - scale * acc[i][j];
        if (d != d) d = -inf;
        if (d < best[i]) { best[i] = d; best_k[i] = code; }
      }
    }
  }
  // Reduce over the 16 threads (tx) that share rows: they are 16 consecutive lanes.
  for (int i = 0; i < 4; ++i) {
    A b = best[i];
    int64_t bk = best_k[i];
    for (int off = 8; off > 0; off >>= 1) {
      const A ob = __shfl_xor_sync(0xffffffffu, b, off, 16);
      const int64_t ok = __shfl_xor_sync(0xffffffffu, bk, off, 16);
      if (better(ob, ok, b, bk)) { b = ob; bk = ok; }
    }
    const int64_t row = row0 + ty * 4 + i;
    if (tx == 0 && row < N) out[row] = bk;
  }
}

// A row whose index is outside [0, K) is skipped: the op refuses such indices before the
// launch, and the kernel must still never write outside the scratch.
__global__ void ema_scatter_kernel(const float* __restrict__ z, const int64_t* __restrict__ idx,
                                   int64_t N, int64_t K, int64_t D, float* __restrict__ counts,
                                   float* __restrict__ sums) {
  const int64_t total = N * D;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / D, j = e % D, k = idx[i];
    if (k < 0 || k >= K) continue;
    atomicAdd(&sums[k * D + j], z[e]);
    if (j == 0) atomicAdd(&counts[k], 1.0f);
  }
}

// One block: mix the counts into the EMA and reduce their total into *n.
__global__ void ema_counts_kernel(float* __restrict__ cluster_size,
                                  const float* __restrict__ counts, int64_t K, float decay,
                                  float* __restrict__ n) {
  __shared__ float partial[1024];
  float s = 0.f;
  for (int64_t k = threadIdx.x; k < K; k += blockDim.x) {
    const float c = decay * cluster_size[k] + (1.f - decay) * counts[k];
    cluster_size[k] = c;
    s += c;
  }
  partial[threadIdx.x] = s;
  __syncthreads();
  for (unsigned step = blockDim.x / 2; step > 0; step >>= 1) {
    if (threadIdx.x < step) partial[threadIdx.x] += partial[threadIdx.x + step];
    __syncthreads();
  }
  if (threadIdx.x == 0) *n = partial[0];
}

__global__ void ema_codebook_kernel(float* __restrict__ codebook, float* __restrict__ embed_sum,
                                    const float* __restrict__ cluster_size,
                                    const float* __restrict__ sums, const float* __restrict__ n_ptr,
                                    int64_t K, int64_t D, float decay, float eps) {
  const float n = *n_ptr;
  const int64_t total = K * D;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t k = e / D;
    const float s = decay * embed_sum[e] + (1.f - decay) * sums[e];
    embed_sum[e] = s;
    codebook[e] = s / ((cluster_size[k] + eps) / (n + K * eps) * n);
  }
}

int grid_for(int64_t work, int threads) {
  const int64_t blocks = (work + threads - 1) / threads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

template <typename T>
cudaError_t launch_lookup(const wmk::VqLookupParams& p, cudaStream_t stream) {
  using A = typename Acc<T>::type;
  const int64_t blocks = (p.N + kRowsPerBlock - 1) / kRowsPerBlock;
  if (blocks > 2147483647LL) return cudaErrorInvalidValue;
  vq_lookup_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      static_cast<const T*>(p.z), p.stride_zn, p.stride_zd, static_cast<const T*>(p.codebook),
      static_cast<const A*>(p.bias), static_cast<A>(p.scale), p.N, p.K, p.D, p.out);
  return cudaGetLastError();
}

}  // namespace

namespace wmk {

cudaError_t vq_lookup_launch(const VqLookupParams& p, cudaStream_t stream) {
  if (p.N == 0) return cudaSuccess;
  switch (p.dtype) {
    case Dtype::kFloat32: return launch_lookup<float>(p, stream);
    case Dtype::kFloat16: return launch_lookup<__half>(p, stream);
    case Dtype::kBFloat16: return launch_lookup<__nv_bfloat16>(p, stream);
    case Dtype::kFloat64: return launch_lookup<double>(p, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t vq_ema_update_launch(const VqEmaUpdateParams& p, cudaStream_t stream) {
  const int64_t N = p.N, K = p.K, D = p.D;
  float* counts = p.scratch;
  float* sums = p.scratch + K;
  float* n = p.scratch + K * (D + 1);
  cudaError_t err = cudaMemsetAsync(p.scratch, 0, sizeof(float) * (K * (D + 1) + 1), stream);
  if (err != cudaSuccess) return err;
  ema_scatter_kernel<<<grid_for(N * D, 256), 256, 0, stream>>>(p.z, p.indices, N, K, D, counts,
                                                                sums);
  ema_counts_kernel<<<1, 1024, 0, stream>>>(p.cluster_size, counts, K, p.decay, n);
  ema_codebook_kernel<<<grid_for(K * D, 256), 256, 0, stream>>>(p.codebook, p.embed_sum,
                                                                p.cluster_size, sums, n, K, D,
                                                                p.decay, p.eps);
  return cudaGetLastError();
}

}  // namespace wmk
