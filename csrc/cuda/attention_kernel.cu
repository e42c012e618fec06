// Factorized video attention forward kernels in plain CUDA (launchers: wmk/attention_kernel.h).
//
// Temporal (softmax over frames of each (b, s, h); T = 1..64 typically, B*S*H ~ 1e5):
// one warp per position. The warp's lanes form G groups of L lanes; a group holds one
// key/value row of D elements as L 16-byte chunks (bf16 D=64: L = 8, G = 4), so the warp
// reads G rows at once with fully coalesced 128-bit loads. Group g takes key frames
// g, g + G, ... with its own online softmax; the groups merge through shuffles at the end.
// Query frames are walked one by one (Tq = 1 in decode); their re-reads of K/V hit L1.
// Memory-bound: at attn-temporal-decode (B8 S1024 H16 D64 Tk16, bf16) it must read
// 268 MB of K/V and 4 MB of q: ~82 us at 3.35 TB/s. Grid = ceil(B*S*H / 4) blocks on
// axis x (limit 2^31 - 1): the glue refuses B*S*H > 4 * (2^31 - 1) (and Tk >= 2^31).
//
// Spatial (softmax over S of each (b, t, h)): a block owns 16 query rows of one (b, t, h)
// (4 warps x 4 rows) and streams 32-row K/V tiles through shared memory in fp32; lane j
// scores key j of the tile (K rows padded by one float: no bank conflicts), the warp
// shares max/sum by shuffles (online softmax), and each lane accumulates D/32 output
// columns. A correct fp32-FMA kernel, not a tensor-core one (its SASS has FFMA and no
// HMMA/HGMMA: bench/static/cuda_kernels.py). attn-spatial-genie is 4*B*T*H*S*S*D = 0.55 TFLOP
// over 1.07 GB of bf16 q/k/v/out (512 FLOP/B): compute-bound. Scalar FFMA caps it at the fp32
// rate, >= 8.2 ms at an H100 SXM's 67 TFLOP/s; each FFMA also needs about one shared-memory
// load (one LDS warp-instruction per clock per SM against four FFMA), so nearer ~33 ms. The
// dense bf16 tensor-core peak (990 TFLOP/s) that the Triton kernel and SDPA use allows ~0.6 ms.
// Estimates, not measurements: this kernel is the portable fallback, not the fast path.
//
// Accumulation is fp32 for every input dtype; non-16-byte-aligned views take a scalar path.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <math.h>

#include "wmk/attention_kernel.h"
#include "wmk/dtype.h"

namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2e = 1.4426950408889634f;

using wmk::AttnView;
using wmk::to_float;

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// VEC consecutive elements to floats: one 16-byte load when VEC * sizeof(T) == 16.
template <typename T, int VEC>
__device__ __forceinline__ void load_chunk(const T* p, float (&dst)[VEC]) {
  if constexpr (VEC * sizeof(T) == 16) {
    const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = to_float(e[i]);
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) dst[i] = to_float(p[i]);
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void store_chunk(T* p, const float (&src)[VEC], float mul) {
  if constexpr (VEC * sizeof(T) == 16) {
    uint4 raw;
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int i = 0; i < VEC; ++i) e[i] = from_float<T>(src[i] * mul);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) p[i] = from_float<T>(src[i] * mul);
  }
}

// ---------------------------------------------------------------------------------------
// Temporal: one warp per (b, s, h). CPL = chunks of VEC elements per lane (D <= L*CPL*VEC).

template <typename T, int VEC, int CPL>
__global__ void temporal_fwd_kernel(AttnView q, AttnView k, AttnView v, T* out,
                                    float* lse, int64_t npos, int tq, int tk, int64_t S,
                                    int64_t H, int D, int L, int causal, float scale_log2) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  if (warp >= npos) return;  // warp-uniform: every lane of a warp leaves together
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int G = 32 / L, g = lane / L, c0 = lane % L;
  const int chunks = D / VEC;
  const int64_t h = warp % H, s = (warp / H) % S, b = warp / (H * S);
  const T* qp = static_cast<const T*>(q.ptr) + b * q.b + s * q.s + h * q.h;
  const T* kp = static_cast<const T*>(k.ptr) + b * k.b + s * k.s + h * k.h;
  const T* vp = static_cast<const T*>(v.ptr) + b * v.b + s * v.s + h * v.h;

  for (int i = 0; i < tq; ++i) {
    float qr[CPL][VEC], acc[CPL][VEC];
#pragma unroll
    for (int u = 0; u < CPL; ++u) {
      const int c = c0 + u * L;
      if (c < chunks) {
        load_chunk<T, VEC>(qp + i * q.t + c * VEC, qr[u]);
      } else {
#pragma unroll
        for (int e = 0; e < VEC; ++e) qr[u][e] = 0.f;
      }
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[u][e] = 0.f;
    }
    float m = -INFINITY, l = 0.f;
    const int jn = causal ? tk - tq + i + 1 : tk;
    for (int j0 = 0; j0 < jn; j0 += G) {  // same trip count on every lane
      const int j = j0 + g;
      const bool ok = j < jn;
      float part = 0.f;
#pragma unroll
      for (int u = 0; u < CPL; ++u) {
        const int c = c0 + u * L;
        if (ok && c < chunks) {
          float kr[VEC];
          load_chunk<T, VEC>(kp + j * k.t + c * VEC, kr);
#pragma unroll
          for (int e = 0; e < VEC; ++e) part = fmaf(qr[u][e], kr[e], part);
        }
      }
      for (int off = L / 2; off > 0; off >>= 1) part += __shfl_xor_sync(kFull, part, off);
      if (ok) {
        const float sc = part * scale_log2;
        const float m_new = fmaxf(m, sc);
        const float alpha = exp2f(m - m_new);  // m = -inf on the group's first key: 0
        const float p = exp2f(sc - m_new);
        l = l * alpha + p;
#pragma unroll
        for (int u = 0; u < CPL; ++u) {
          const int c = c0 + u * L;
          if (c < chunks) {
            float vr[VEC];
            load_chunk<T, VEC>(vp + j * v.t + c * VEC, vr);
#pragma unroll
            for (int e = 0; e < VEC; ++e) acc[u][e] = fmaf(p, vr[e], acc[u][e] * alpha);
          }
        }
        m = m_new;
      }
    }
    // merge the G groups: lanes with the same chunk index sit L apart
    for (int off = L; off < 32; off <<= 1) {
      const float m_o = __shfl_xor_sync(kFull, m, off);
      const float l_o = __shfl_xor_sync(kFull, l, off);
      const float m_new = fmaxf(m, m_o);
      const float a = m == -INFINITY ? 0.f : exp2f(m - m_new);
      const float a_o = m_o == -INFINITY ? 0.f : exp2f(m_o - m_new);
      l = l * a + l_o * a_o;
#pragma unroll
      for (int u = 0; u < CPL; ++u) {
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float acc_o = __shfl_xor_sync(kFull, acc[u][e], off);
          acc[u][e] = acc[u][e] * a + acc_o * a_o;
        }
      }
      m = m_new;
    }
    if (g == 0) {
      T* orow = out + ((b * tq + i) * S + s) * (H * D) + h * D;
      const float inv = 1.f / l;
#pragma unroll
      for (int u = 0; u < CPL; ++u) {
        const int c = c0 + u * L;
        if (c < chunks) store_chunk<T, VEC>(orow + c * VEC, acc[u], inv);
      }
    }
    if (lane == 0) lse[warp * tq + i] = (m + log2f(l)) * kLn2;
  }
}

int next_pow2(int x) {
  int p = 1;
  while (p < x) p <<= 1;
  return p;
}

bool aligned(const AttnView& x, int vec, int elem) {
  return reinterpret_cast<uintptr_t>(x.ptr) % 16 == 0 && x.b % vec == 0 && x.t % vec == 0 &&
         x.s % vec == 0 && x.h % vec == 0 && static_cast<size_t>(vec * elem) == 16;
}

template <typename T, int VEC, int CPL>
cudaError_t launch_temporal_cpl(AttnView q, AttnView k, AttnView v, void* out,
                                float* lse, int64_t npos, int64_t tq, int64_t tk, int64_t S,
                                int64_t H, int D, int L, int causal, float scale,
                                cudaStream_t stream) {
  constexpr int kThreads = 128, kWarps = kThreads / 32;  // a warp per position
  const int64_t blocks = (npos + kWarps - 1) / kWarps;
  if (blocks > 2147483647LL) return cudaErrorInvalidValue;  // the unsigned cast would wrap
  temporal_fwd_kernel<T, VEC, CPL><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      q, k, v, static_cast<T*>(out), lse, npos, static_cast<int>(tq), static_cast<int>(tk), S,
      H, D, L, causal, scale * kLog2e);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_temporal(AttnView q, AttnView k, AttnView v, void* out,
                            float* lse, int64_t B, int64_t tq, int64_t tk, int64_t S, int64_t H,
                            int64_t D, int causal, float scale, cudaStream_t stream) {
  const int64_t npos = B * S * H;
  const int d = static_cast<int>(D);
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  const bool vec_ok = d % kVec == 0 && aligned(q, kVec, sizeof(T)) &&
                      aligned(k, kVec, sizeof(T)) && aligned(v, kVec, sizeof(T)) &&
                      reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (vec_ok) {
    const int chunks = d / kVec;
    const int L = next_pow2(chunks < 32 ? chunks : 32);
    const int cpl = (chunks + L - 1) / L;  // 1 for 16-bit types, <= 2 for fp32 (D <= 256)
    if (cpl == 1)
      return launch_temporal_cpl<T, kVec, 1>(q, k, v, out, lse, npos, tq, tk, S, H, d, L, causal,
                                             scale, stream);
    return launch_temporal_cpl<T, kVec, 2>(q, k, v, out, lse, npos, tq, tk, S, H, d, L, causal,
                                           scale, stream);
  }
  const int L = next_pow2(d < 32 ? d : 32);
  const int cpl = (d + L - 1) / L;
  if (cpl == 1)
    return launch_temporal_cpl<T, 1, 1>(q, k, v, out, lse, npos, tq, tk, S, H, d, L, causal,
                                        scale, stream);
  if (cpl == 2)
    return launch_temporal_cpl<T, 1, 2>(q, k, v, out, lse, npos, tq, tk, S, H, d, L, causal,
                                        scale, stream);
  if (cpl <= 4)
    return launch_temporal_cpl<T, 1, 4>(q, k, v, out, lse, npos, tq, tk, S, H, d, L, causal,
                                        scale, stream);
  return launch_temporal_cpl<T, 1, 8>(q, k, v, out, lse, npos, tq, tk, S, H, d, L, causal,
                                      scale, stream);
}

// ---------------------------------------------------------------------------------------
// Spatial: a block = 4 warps x 4 query rows of one (b, t, h); 32-key tiles in shared memory.

constexpr int kSpatialWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kSpatialRows = kSpatialWarps * kRowsPerWarp;
constexpr int kKeyTile = 32;

size_t spatial_smem_bytes(int D) {
  return sizeof(float) * (static_cast<size_t>(kKeyTile) * (D + 1) +
                          static_cast<size_t>(kKeyTile) * D +
                          static_cast<size_t>(kSpatialRows) * D);
}

template <typename T, int DPL>
__global__ void spatial_fwd_kernel(AttnView q, AttnView k, AttnView v, T* out,
                                   float* lse, int64_t T_, int64_t S, int64_t H, int D,
                                   float scale_log2) {
  extern __shared__ float smem[];
  const int ldk = D + 1;
  float* Ks = smem;                // kKeyTile x (D + 1)
  float* Vs = Ks + kKeyTile * ldk;  // kKeyTile x D
  float* Qs = Vs + kKeyTile * D;    // kSpatialRows x D
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x & 31);
  const int64_t bth = blockIdx.x;
  const int64_t h = bth % H, t = (bth / H) % T_, b = bth / (H * T_);
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * kSpatialRows;
  const T* qp = static_cast<const T*>(q.ptr) + b * q.b + t * q.t + h * q.h;
  const T* kp = static_cast<const T*>(k.ptr) + b * k.b + t * k.t + h * k.h;
  const T* vp = static_cast<const T*>(v.ptr) + b * v.b + t * v.t + h * v.h;

  for (int e = static_cast<int>(threadIdx.x); e < kSpatialRows * D;
       e += static_cast<int>(blockDim.x)) {
    const int r = e / D, d = e % D;
    const int64_t row = row0 + r;
    Qs[e] = row < S ? to_float(qp[row * q.s + d]) : 0.f;
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DPL];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int u = 0; u < DPL; ++u) acc[r][u] = 0.f;
  }
  for (int64_t j0 = 0; j0 < S; j0 += kKeyTile) {
    __syncthreads();  // the previous tile is consumed (and Qs is written, first time)
    for (int e = static_cast<int>(threadIdx.x); e < kKeyTile * D;
         e += static_cast<int>(blockDim.x)) {
      const int r = e / D, d = e % D;
      const int64_t row = j0 + r;
      const bool ok = row < S;
      Ks[r * ldk + d] = ok ? to_float(kp[row * k.s + d]) : 0.f;
      Vs[r * D + d] = ok ? to_float(vp[row * v.s + d]) : 0.f;
    }
    __syncthreads();
    const bool key_ok = j0 + lane < S;  // lane 0 is always valid: j0 < S
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float* qr = Qs + (warp * kRowsPerWarp + r) * D;
      const float* kr = Ks + lane * ldk;
      float sc = 0.f;
      for (int d = 0; d < D; ++d) sc = fmaf(qr[d], kr[d], sc);
      sc = key_ok ? sc * scale_log2 : -INFINITY;
      float tile_max = sc;
      for (int off = 16; off > 0; off >>= 1)
        tile_max = fmaxf(tile_max, __shfl_xor_sync(kFull, tile_max, off));
      const float m_new = fmaxf(m[r], tile_max);
      const float p = exp2f(sc - m_new);
      const float alpha = exp2f(m[r] - m_new);
      float psum = p;
      for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(kFull, psum, off);
      l[r] = l[r] * alpha + psum;
#pragma unroll
      for (int u = 0; u < DPL; ++u) acc[r][u] *= alpha;
      for (int jj = 0; jj < kKeyTile; ++jj) {
        const float pj = __shfl_sync(kFull, p, jj);
        const float* vr = Vs + jj * D;
#pragma unroll
        for (int u = 0; u < DPL; ++u) {
          const int d = lane + 32 * u;
          if (d < D) acc[r][u] = fmaf(pj, vr[d], acc[r][u]);
        }
      }
      m[r] = m_new;
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + warp * kRowsPerWarp + r;
    if (row >= S) continue;
    const float inv = 1.f / l[r];
    T* orow = out + ((b * T_ + t) * S + row) * (H * D) + h * D;
#pragma unroll
    for (int u = 0; u < DPL; ++u) {
      const int d = lane + 32 * u;
      if (d < D) orow[d] = from_float<T>(acc[r][u] * inv);
    }
    if (lane == 0) lse[bth * S + row] = (m[r] + log2f(l[r])) * kLn2;
  }
}

template <typename T, int DPL>
cudaError_t launch_spatial_dpl(AttnView q, AttnView k, AttnView v, void* out,
                               float* lse, int64_t B, int64_t T_, int64_t S, int64_t H, int D,
                               float scale, cudaStream_t stream) {
  const size_t smem = spatial_smem_bytes(D);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(
        spatial_fwd_kernel<T, DPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
        static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const dim3 grid(static_cast<unsigned>(B * T_ * H),
                  static_cast<unsigned>((S + kSpatialRows - 1) / kSpatialRows));
  spatial_fwd_kernel<T, DPL><<<grid, kSpatialWarps * 32, smem, stream>>>(
      q, k, v, static_cast<T*>(out), lse, T_, S, H, D, scale * kLog2e);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_spatial(AttnView q, AttnView k, AttnView v, void* out,
                           float* lse, int64_t B, int64_t T_, int64_t S, int64_t H, int64_t D,
                           float scale, cudaStream_t stream) {
  const int d = static_cast<int>(D);
  if (d <= 32) return launch_spatial_dpl<T, 1>(q, k, v, out, lse, B, T_, S, H, d, scale, stream);
  if (d <= 64) return launch_spatial_dpl<T, 2>(q, k, v, out, lse, B, T_, S, H, d, scale, stream);
  if (d <= 128) return launch_spatial_dpl<T, 4>(q, k, v, out, lse, B, T_, S, H, d, scale, stream);
  return launch_spatial_dpl<T, 8>(q, k, v, out, lse, B, T_, S, H, d, scale, stream);
}

}  // namespace

namespace wmk {

cudaError_t temporal_attention_fwd_launch(const AttentionParams& p, cudaStream_t stream) {
  if (p.B * p.Tq * p.S * p.H * p.D == 0) return cudaSuccess;
  if (p.Tq > p.Tk || p.Tk > 2147483647LL || p.D > WMK_ATTN_MAX_HEAD_DIM || p.D < 1)
    return cudaErrorInvalidValue;  // frame indices are ints in the kernel
  const int causal = p.causal ? 1 : 0;
  switch (p.dtype) {
    case Dtype::kFloat32:
      return launch_temporal<float>(p.q, p.k, p.v, p.out, p.lse, p.B, p.Tq, p.Tk, p.S, p.H, p.D,
                                    causal, p.scale, stream);
    case Dtype::kFloat16:
      return launch_temporal<__half>(p.q, p.k, p.v, p.out, p.lse, p.B, p.Tq, p.Tk, p.S, p.H,
                                     p.D, causal, p.scale, stream);
    case Dtype::kBFloat16:
      return launch_temporal<__nv_bfloat16>(p.q, p.k, p.v, p.out, p.lse, p.B, p.Tq, p.Tk, p.S,
                                            p.H, p.D, causal, p.scale, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

cudaError_t spatial_attention_fwd_launch(const AttentionParams& p, cudaStream_t stream) {
  if (p.B * p.Tq * p.S * p.H * p.D == 0) return cudaSuccess;
  if (p.Tq != p.Tk || p.D > WMK_ATTN_MAX_HEAD_DIM || p.D < 1) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case Dtype::kFloat32:
      return launch_spatial<float>(p.q, p.k, p.v, p.out, p.lse, p.B, p.Tq, p.S, p.H, p.D,
                                   p.scale, stream);
    case Dtype::kFloat16:
      return launch_spatial<__half>(p.q, p.k, p.v, p.out, p.lse, p.B, p.Tq, p.S, p.H, p.D,
                                    p.scale, stream);
    case Dtype::kBFloat16:
      return launch_spatial<__nv_bfloat16>(p.q, p.k, p.v, p.out, p.lse, p.B, p.Tq, p.S, p.H,
                                           p.D, p.scale, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace wmk
