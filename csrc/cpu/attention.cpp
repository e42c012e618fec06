// Factorized video attention on the CPU: spatial (softmax over the S positions of each
// (b, t, head)) and temporal (softmax over frames of each (b, s, head), causal bottom-right
// aligned), forward and backward, on (B, T, S, H, D) tensors read through their strides.
//
// Spatial: at::parallel_for over (b, t, h). Each task gathers its K and V (S x D, strided
// rows of H*D or 3*H*D elements) into fp32 scratch, then walks blocks of query rows: the
// block's scores are one GEMM (rows x S), softmax in place, and one GEMM with V. Scratch is
// O(rows * S + S * D) per thread; the S x S matrix never exists for large S. The backward
// recomputes each block's probabilities from the saved log-sum-exp (FlashAttention-2 style)
// and accumulates dK, dV in scratch, so it needs no atomics either.
// Roofline (attn-spatial-genie scaled to B1 T4 S256 H4 D64, fp32): 4 * S^2 * D * B*T*H =
// 268 MFLOP forward against 1 MB of q/k/v: compute-bound; the GEMMs run at BLAS speed and
// the exponentials in 8-wide vectors. What eager spends beyond that is its transposing
// copies, small at this size, so this path is at best level with SDPA's own CPU kernel.
//
// Temporal: at::parallel_for over (b, s); each task packs the keys of its position
// (transposed, zero-padded to a multiple of 8 frames; fp32 through 8 x 8 register
// transposes), then runs a register-sized T x T attention per head: a score row is D
// broadcast-FMAs of 8-wide vectors along the key axis, an output row keeps 32 columns in
// registers while the key frames stream past. fp32 reads Q and V and writes O where they lie
// and takes query rows 4 at a time (TemporalFwdF32); one query frame (a KV-cache decode
// step) packs nothing and takes dot products with the key rows in place; the other dtypes
// gather every frame into fp32 (or float64) buffers first. For T = 16 a GEMM call would cost
// more than the math. Roofline (attn-temporal-genie scaled to B1 T16 S256 H4 D64, fp32):
// 4 * T^2 * D * B*S*H = 67 MFLOP (half of it masked when causal) against 4 MB read and
// written, ~16 FLOP/byte: bound by the FMA rate of a core, not by memory; eager adds four
// transposing copies and an SDPA call on 16-frame sequences.
//
// Accumulation is fp32 (float64 for float64 inputs); fp16/bf16 are converted on load.
// Outputs are contiguous (B, T, S, H, D); lse is (B, T, H, S) for spatial and (B, S, H, Tq)
// for temporal, in the accumulation dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "wmk/attention_checks.h"
#include "wmk/simd_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

namespace wmk {
namespace {

// The fp32 cores are built twice, for the baseline x86-64 ISA (so that the extension runs
// anywhere) and for AVX2 + FMA, and the AVX2 build runs where the CPU has it.
#if defined(__x86_64__) && defined(__GNUC__)
#define WMK_AVX2 __attribute__((target("avx2,fma")))
bool has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define WMK_AVX2
bool has_avx2() { return false; }
#endif

// Per-tensor element strides of a (B, T, S, H, D) tensor, D stride being 1.
struct Strides {
  int64_t b, t, s, h;
  explicit Strides(const at::Tensor& x)
      : b(x.stride(0)), t(x.stride(1)), s(x.stride(2)), h(x.stride(3)) {}
};

template <typename acc_t>
at::ScalarType acc_type() {
  return std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat;
}

// ---------------------------------------------------------------------------------------
// Vector helpers on contiguous acc_t arrays, written so that -O3 vectorizes them: no
// reduction is carried across loop iterations except in `dot`, which keeps eight
// independent lanes (vectorizable without reassociating floating point).

template <typename T>
WMK_INLINE T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  T lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += a[i + l] * b[i + l];
  }
  T s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
WMK_INLINE void axpy(T alpha, const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// exp(v) on 8 lanes (wmk/simd_math.h). Inputs are clamped to [-87, 88]: exp(-87) ~ 1.6e-38
// is far below any other term of a softmax.
WMK_INLINE void exp8(v8f& v) {  // in place: no vector passes through the call ABI
  const v8f lo = v8f{} - 87.0f, hi = v8f{} + 88.0f;
  v = v < lo ? lo : v;
  v = v > hi ? hi : v;
  exp_cephes(v);
}

// x[i] = exp(x[i] - shift), 8 lanes at a time (the tail through a padded vector).
WMK_INLINE void exp_shifted(float* x, float shift, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    v8f v;
    std::memcpy(&v, x + i, sizeof(v));
    v -= shift;
    exp8(v);
    std::memcpy(x + i, &v, sizeof(v));
  }
  if (i < n) {
    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::memcpy(tail, x + i, sizeof(float) * (n - i));
    v8f v;
    std::memcpy(&v, tail, sizeof(v));
    v -= shift;
    exp8(v);
    std::memcpy(tail, &v, sizeof(v));
    std::memcpy(x + i, tail, sizeof(float) * (n - i));
  }
}
WMK_INLINE void exp_shifted(double* x, double shift, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i] - shift);
}

// Row i of a causal temporal attention sees key frames [0, last(i)].
WMK_INLINE int64_t last_key(bool causal, int64_t i, int64_t tq, int64_t tk) {
  return causal ? tk - tq + i : tk - 1;
}

// One softmax row without its normalisation: p[0, n) <- exp(p - max) in place, *lse <- its
// log-sum-exp; returns 1 / sum, by which the caller scales the row's output.
template <typename T>
WMK_INLINE T softmax_unnormalized(T* p, int64_t n, T* lse) {
  const T m = *std::max_element(p, p + n);
  exp_shifted(p, m, n);
  T l = 0;
  for (int64_t j = 0; j < n; ++j) l += p[j];
  *lse = m + std::log(l);
  return T(1) / l;
}

// ---------------------------------------------------------------------------------------
// Temporal attention on one (b, s) position, all heads. Frames are gathered into
// contiguous buffers: rows (T, H, D) and, for the operands whose dot products with a query
// row are needed for every key frame, transposed (H, D, Tk), so that a score row is D
// axpys of length Tk (vectorized over key frames) instead of Tk horizontal dot products.

template <typename T>
struct TemporalTile {
  int64_t tq, tk, tkp, H, D;  // tkp: tk rounded up to a multiple of 8 (zero padded)
  bool causal;
  T scale;
  const T* Q;   // (tq, H, D)
  const T* Kt;  // (H, D, tkp)
  const T* K;   // (tk, H, D), backward only
  const T* V;   // (tk, H, D), forward only
  const T* Vt;  // (H, D, tkp), backward only
  T* sc;        // scratch, 2 * tkp
};

// out[j] = scale * x . m_j for key frames j in [0, jn), with Mt = (D, tkp) the transposed
// frames of one head: D axpys along the key axis.
template <typename T>
WMK_INLINE void row_products(const T* x, const T* Mt, int64_t D, int64_t tkp, int64_t jn,
                             T scale, T* out) {
  std::fill(out, out + jn, T(0));
  for (int64_t d = 0; d < D; ++d) axpy(scale * x[d], Mt + d * tkp, out, jn);
}

// The fp32 version in explicit 8-wide vectors over the zero-padded key axis: chunks of up
// to 32 key frames stay in registers while d runs, and no length-jn remainder loops run.
template <int NV>
WMK_INLINE void row_products_chunk(const float* x, const float* Mt, int64_t D, int64_t tkp,
                                   float scale, float* out) {
  // ILP independent accumulator sets over d hide the FMA latency when NV is small; the
  // loops over them are unrolled so that the accumulators stay in registers (block_scores)
  constexpr int ILP = NV >= 3 ? 1 : 4 / NV;
  v8f acc[ILP][NV];
#pragma GCC unroll 4
  for (int r = 0; r < ILP; ++r) {
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) acc[r][u] = v8f{};
  }
  int64_t d = 0;
  for (; d + ILP <= D; d += ILP) {
#pragma GCC unroll 4
    for (int r = 0; r < ILP; ++r) {
      const float xd = scale * x[d + r];
      const v8f xv = {xd, xd, xd, xd, xd, xd, xd, xd};
      const float* row = Mt + (d + r) * tkp;
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) {
        v8f m;
        std::memcpy(&m, row + 8 * u, sizeof(m));
        acc[r][u] += xv * m;
      }
    }
  }
  for (; d < D; ++d) {
    const float xd = scale * x[d];
    const v8f xv = {xd, xd, xd, xd, xd, xd, xd, xd};
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) {
      v8f m;
      std::memcpy(&m, Mt + d * tkp + 8 * u, sizeof(m));
      acc[0][u] += xv * m;
    }
  }
#pragma GCC unroll 4
  for (int r = 1; r < ILP; ++r) {
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) acc[0][u] += acc[r][u];
  }
  std::memcpy(out, acc[0], sizeof(acc[0]));
}

WMK_INLINE void row_products(const float* x, const float* Mt, int64_t D, int64_t tkp,
                             int64_t jn, float scale, float* out) {
  for (int64_t j0 = 0; j0 < jn; j0 += 32) {
    const int64_t nv = std::min<int64_t>(4, (jn - j0 + 7) / 8);
    const float* m = Mt + j0;
    float* o = out + j0;
    if (nv == 4) row_products_chunk<4>(x, m, D, tkp, scale, o);
    else if (nv == 3) row_products_chunk<3>(x, m, D, tkp, scale, o);
    else if (nv == 2) row_products_chunk<2>(x, m, D, tkp, scale, o);
    else row_products_chunk<1>(x, m, D, tkp, scale, o);
  }
}

// out[d] = sum_{j < jn} p[j] * V[j * ld + d], d < D.
template <typename T>
WMK_INLINE void combine_rows(const T* p, int64_t jn, const T* V, int64_t ld, int64_t D, T* out) {
  std::fill(out, out + D, T(0));
  for (int64_t j = 0; j < jn; ++j) axpy(p[j], V + j * ld, out, D);
}

// fp32: 32 output columns at a time stay in registers while j runs.
WMK_INLINE void combine_rows(const float* p, int64_t jn, const float* V, int64_t ld, int64_t D,
                             float* out) {
  int64_t d0 = 0;
  for (; d0 + 32 <= D; d0 += 32) {
    v8f acc[4] = {v8f{}, v8f{}, v8f{}, v8f{}};
    for (int64_t j = 0; j < jn; ++j) {
      const v8f pv = {p[j], p[j], p[j], p[j], p[j], p[j], p[j], p[j]};
      const float* row = V + j * ld + d0;
      for (int u = 0; u < 4; ++u) {
        v8f m;
        std::memcpy(&m, row + 8 * u, sizeof(m));
        acc[u] += pv * m;
      }
    }
    std::memcpy(out + d0, acc, sizeof(acc));
  }
  if (d0 < D) {
    std::fill(out + d0, out + D, 0.0f);
    for (int64_t j = 0; j < jn; ++j) axpy(p[j], V + j * ld + d0, out + d0, D - d0);
  }
}

template <typename T>
WMK_INLINE void temporal_fwd_core(const TemporalTile<T>& a, T* O, T* lse) {
  const int64_t ld = a.H * a.D;
  for (int64_t h = 0; h < a.H; ++h) {
    for (int64_t i = 0; i < a.tq; ++i) {
      const int64_t jn = last_key(a.causal, i, a.tq, a.tk) + 1;
      T* p = a.sc;
      row_products(a.Q + i * ld + h * a.D, a.Kt + h * a.D * a.tkp, a.D, a.tkp, jn, a.scale, p);
      const T inv = softmax_unnormalized(p, jn, lse + h * a.tq + i);
      T* oi = O + i * ld + h * a.D;
      combine_rows(p, jn, a.V + h * a.D, ld, a.D, oi);
      for (int64_t d = 0; d < a.D; ++d) oi[d] *= inv;
    }
  }
}

// dQ (tq, H, D), dK, dV (tk, H, D) are overwritten.
template <typename T>
WMK_INLINE void temporal_bwd_core(const TemporalTile<T>& a, const T* O, const T* dO, const T* lse,
                              T* dQ, T* dK, T* dV) {
  const int64_t ld = a.H * a.D, D = a.D;
  std::fill(dQ, dQ + a.tq * ld, T(0));
  std::fill(dK, dK + a.tk * ld, T(0));
  std::fill(dV, dV + a.tk * ld, T(0));
  T* p = a.sc;
  T* dp = a.sc + a.tkp;
  for (int64_t h = 0; h < a.H; ++h) {
    const T* kt = a.Kt + h * D * a.tkp;
    const T* vt = a.Vt + h * D * a.tkp;
    for (int64_t i = 0; i < a.tq; ++i) {
      const int64_t off = i * ld + h * D;
      const T* qi = a.Q + off;
      const T* doi = dO + off;
      const int64_t jn = last_key(a.causal, i, a.tq, a.tk) + 1;
      row_products(qi, kt, D, a.tkp, jn, a.scale, p);
      exp_shifted(p, lse[h * a.tq + i], jn);  // probabilities, from the saved log-sum-exp
      row_products(doi, vt, D, a.tkp, jn, T(1), dp);
      const T di = dot(doi, O + off, D);  // rowsum(dO * O) = sum_j P_ij dP_ij
      for (int64_t j = 0; j < jn; ++j) dp[j] = p[j] * (dp[j] - di) * a.scale;  // dS
      combine_rows(dp, jn, a.K + h * D, ld, D, dQ + off);  // dQ_i = sum_j dS_ij k_j
      for (int64_t j = 0; j < jn; ++j) {
        const int64_t kj = j * ld + h * D;
        axpy(p[j], doi, dV + kj, D);
        axpy(dp[j], qi, dK + kj, D);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// The fp32 forward without copies of Q, V or O: they are read and written where they lie
// (a frame's rows are a whole frame apart), only K is packed, transposed and padded. Rows
// of one (b, s, h) go R at a time: R * NV independent accumulators hide the FMA latency (one
// row at a time left a 16-frame score row with 4 chains, the output row with 4) and each
// load of K^T or V serves R rows. Measured at attn-temporal-genie/cpu the copies cost as
// much as the arithmetic (perf: 26% against 32% of the op's time).

struct TemporalFwdF32 {
  int64_t tq, tk, tkp, H, D;
  bool causal;
  float scale;
  const float* Q;  // row (i, h) at Q + i * qt + h * qh
  int64_t qt, qh;
  const float* K;  // row (j, h) at K + j * kt + h * kh: read in place when tq == 1
  int64_t kt, kh;
  const float* Kt;  // (H, D, tkp), packed when tq > 1
  const float* V;  // row (j, h) at V + j * vt + h * vh
  int64_t vt, vh;
  float* O;  // row (i, h) at O + i * ot + h * D
  int64_t ot;
  float* P;  // scratch, 4 * tkp
};

// out[r][j] = scale * x_r . m_j, rows x_r = x + r * xt, for one chunk of 8 * NV key frames.
template <int R, int NV>
WMK_INLINE void block_scores(const float* x, int64_t xt, const float* Mt, int64_t D,
                             int64_t tkp, float scale, float* out) {
  // Fully unrolled, so that acc and m live in registers: left to itself GCC kept NV = 3 as
  // a loop and spilled every accumulator to the stack (perf: 2x slower when Tk > 16).
  v8f acc[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) acc[r][u] = v8f{};
  }
  for (int64_t d = 0; d < D; ++d) {
    v8f m[NV];
#pragma GCC unroll 4
    for (int u = 0; u < NV; ++u) std::memcpy(&m[u], Mt + d * tkp + 8 * u, sizeof(v8f));
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float xd = scale * x[r * xt + d];
      const v8f xv = {xd, xd, xd, xd, xd, xd, xd, xd};
#pragma GCC unroll 4
      for (int u = 0; u < NV; ++u) acc[r][u] += xv * m[u];
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) std::memcpy(out + r * tkp, acc[r], sizeof(acc[r]));
}

// Scores of R = 1, 2 or 4 rows against key frames [0, jn), 32 frames per chunk; at most 8
// accumulators live at once (16 vector registers with AVX2).
template <int R>
WMK_INLINE void rows_scores(const float* x, int64_t xt, const float* Mt, int64_t D, int64_t tkp,
                            int64_t jn, float scale, float* out) {
  for (int64_t j0 = 0; j0 < jn; j0 += 32) {
    const int64_t nv = std::min<int64_t>(4, (jn - j0 + 7) / 8);
    const float* m = Mt + j0;
    float* o = out + j0;
    if (nv <= 2 || R == 1) {
      if (nv == 1) block_scores<R, 1>(x, xt, m, D, tkp, scale, o);
      else if (nv == 2) block_scores<R, 2>(x, xt, m, D, tkp, scale, o);
      else if (nv == 3) block_scores<1, 3>(x, xt, m, D, tkp, scale, o);
      else block_scores<1, 4>(x, xt, m, D, tkp, scale, o);
      continue;
    }
    for (int r = 0; r < R; r += 2) {
      if (nv == 3) block_scores<2, 3>(x + r * xt, xt, m, D, tkp, scale, o + r * tkp);
      else block_scores<2, 4>(x + r * xt, xt, m, D, tkp, scale, o + r * tkp);
    }
  }
}

// o0 = sum_{j < n0} p0[j] v_j and o1 = sum_{j < n1} p1[j] v_j, n0 <= n1, v_j = V + j * vt;
// no row touches a frame beyond its own n, so NaN in a hidden frame stays out of it.
// Each output is written once, already scaled by its row's 1 / l (w0, w1).
WMK_INLINE void combine_pair(const float* p0, const float* p1, int64_t n0, int64_t n1,
                             const float* V, int64_t vt, int64_t D, float w0s, float w1s,
                             float* o0, float* o1) {
  int64_t d0 = 0;
  for (; d0 + 32 <= D; d0 += 32) {
    v8f a0[4] = {v8f{}, v8f{}, v8f{}, v8f{}}, a1[4] = {v8f{}, v8f{}, v8f{}, v8f{}};
    int64_t j = 0;
    for (; j < n0; ++j) {
      const v8f w0 = {p0[j], p0[j], p0[j], p0[j], p0[j], p0[j], p0[j], p0[j]};
      const v8f w1 = {p1[j], p1[j], p1[j], p1[j], p1[j], p1[j], p1[j], p1[j]};
      const float* row = V + j * vt + d0;
      for (int u = 0; u < 4; ++u) {
        v8f m;
        std::memcpy(&m, row + 8 * u, sizeof(m));
        a0[u] += w0 * m;
        a1[u] += w1 * m;
      }
    }
    for (; j < n1; ++j) {
      const v8f w1 = {p1[j], p1[j], p1[j], p1[j], p1[j], p1[j], p1[j], p1[j]};
      const float* row = V + j * vt + d0;
      for (int u = 0; u < 4; ++u) {
        v8f m;
        std::memcpy(&m, row + 8 * u, sizeof(m));
        a1[u] += w1 * m;
      }
    }
    for (int u = 0; u < 4; ++u) {
      const v8f r0 = a0[u] * w0s, r1 = a1[u] * w1s;
      std::memcpy(o0 + d0 + 8 * u, &r0, sizeof(r0));
      std::memcpy(o1 + d0 + 8 * u, &r1, sizeof(r1));
    }
  }
  if (d0 < D) {
    std::fill(o0 + d0, o0 + D, 0.0f);
    std::fill(o1 + d0, o1 + D, 0.0f);
    for (int64_t j = 0; j < n0; ++j) axpy(p0[j], V + j * vt + d0, o0 + d0, D - d0);
    for (int64_t j = 0; j < n1; ++j) axpy(p1[j], V + j * vt + d0, o1 + d0, D - d0);
    for (int64_t d = d0; d < D; ++d) {
      o0[d] *= w0s;
      o1[d] *= w1s;
    }
  }
}

// Rows [i0, i0 + R) of head h: scores, softmax, output and log-sum-exp.
template <int R>
WMK_INLINE void temporal_fwd_rows(const TemporalFwdF32& a, int64_t h, int64_t i0, float* lse) {
  int64_t jn[R];
  for (int r = 0; r < R; ++r) jn[r] = last_key(a.causal, i0 + r, a.tq, a.tk) + 1;
  rows_scores<R>(a.Q + i0 * a.qt + h * a.qh, a.qt, a.Kt + h * a.D * a.tkp, a.D, a.tkp,
                 jn[R - 1], a.scale, a.P);
  float inv[R];
  for (int r = 0; r < R; ++r) {
    inv[r] = softmax_unnormalized(a.P + r * a.tkp, jn[r], lse + h * a.tq + i0 + r);
  }
  const float* v = a.V + h * a.vh;
  float* o = a.O + i0 * a.ot + h * a.D;
  if (R == 1) {
    combine_rows(a.P, jn[0], v, a.vt, a.D, o);
    for (int64_t d = 0; d < a.D; ++d) o[d] *= inv[0];
    return;
  }
  for (int r = 0; r + 1 < R; r += 2) {
    combine_pair(a.P + r * a.tkp, a.P + (r + 1) * a.tkp, jn[r], jn[r + 1], v, a.vt, a.D,
                 inv[r], inv[r + 1], o + r * a.ot, o + (r + 1) * a.ot);
  }
}

// One query frame (a KV-cache decode step): packing K would cost more than the whole
// attention, so scores are dot products with the key rows where they lie, 4 keys at a time
// (4 independent 8-lane accumulators, one load of q per 4 keys).
WMK_INLINE void temporal_decode_f32_core(const TemporalFwdF32& a, float* lse) {
  const int64_t D = a.D, D8 = D / 8 * 8, kt = a.kt;
  float* p = a.P;
  for (int64_t h = 0; h < a.H; ++h) {
    const float* q = a.Q + h * a.qh;
    const float* k = a.K + h * a.kh;
    int64_t j = 0;
    for (; j < a.tk; j += 4) {
      const int64_t nj = std::min<int64_t>(4, a.tk - j);
      v8f acc[4] = {v8f{}, v8f{}, v8f{}, v8f{}};
      for (int64_t d = 0; d < D8; d += 8) {
        v8f qv;
        std::memcpy(&qv, q + d, sizeof(qv));
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) {
          if (u < nj) {
            v8f kv;
            std::memcpy(&kv, k + (j + u) * kt + d, sizeof(kv));
            acc[u] += qv * kv;
          }
        }
      }
      for (int u = 0; u < nj; ++u) {
        float lane[8];
        std::memcpy(lane, &acc[u], sizeof(lane));
        float s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                  ((lane[4] + lane[5]) + (lane[6] + lane[7]));
        for (int64_t d = D8; d < D; ++d) s += q[d] * k[(j + u) * kt + d];
        p[j + u] = a.scale * s;
      }
    }
    const float inv = softmax_unnormalized(p, a.tk, lse + h);
    float* o = a.O + h * D;
    combine_rows(p, a.tk, a.V + h * a.vh, a.vt, D, o);
    for (int64_t d = 0; d < D; ++d) o[d] *= inv;
  }
}

WMK_INLINE void temporal_fwd_f32_core(const TemporalFwdF32& a, float* lse) {
  if (a.tq == 1) return temporal_decode_f32_core(a, lse);
  for (int64_t h = 0; h < a.H; ++h) {
    int64_t i = 0;
    for (; i + 4 <= a.tq; i += 4) temporal_fwd_rows<4>(a, h, i, lse);
    for (; i + 2 <= a.tq; i += 2) temporal_fwd_rows<2>(a, h, i, lse);
    for (; i < a.tq; ++i) temporal_fwd_rows<1>(a, h, i, lse);
  }
}
WMK_AVX2 void temporal_fwd_f32_avx2(const TemporalFwdF32& a, float* lse) {
  temporal_fwd_f32_core(a, lse);
}
void temporal_fwd_f32_base(const TemporalFwdF32& a, float* lse) { temporal_fwd_f32_core(a, lse); }
void temporal_fwd_f32(const TemporalFwdF32& a, float* lse) {
  has_avx2() ? temporal_fwd_f32_avx2(a, lse) : temporal_fwd_f32_base(a, lse);
}

WMK_AVX2 void temporal_fwd_avx2(const TemporalTile<float>& a, float* O, float* lse) {
  temporal_fwd_core(a, O, lse);
}
void temporal_fwd_base(const TemporalTile<float>& a, float* O, float* lse) {
  temporal_fwd_core(a, O, lse);
}
WMK_AVX2 void temporal_bwd_avx2(const TemporalTile<float>& a, const float* O, const float* dO,
                                const float* lse, float* dQ, float* dK, float* dV) {
  temporal_bwd_core(a, O, dO, lse, dQ, dK, dV);
}
void temporal_bwd_base(const TemporalTile<float>& a, const float* O, const float* dO,
                       const float* lse, float* dQ, float* dK, float* dV) {
  temporal_bwd_core(a, O, dO, lse, dQ, dK, dV);
}
void temporal_fwd_any(const TemporalTile<float>& a, float* O, float* lse) {
  has_avx2() ? temporal_fwd_avx2(a, O, lse) : temporal_fwd_base(a, O, lse);
}
void temporal_fwd_any(const TemporalTile<double>& a, double* O, double* lse) {
  temporal_fwd_core(a, O, lse);
}
void temporal_bwd_any(const TemporalTile<float>& a, const float* O, const float* dO,
                      const float* lse, float* dQ, float* dK, float* dV) {
  has_avx2() ? temporal_bwd_avx2(a, O, dO, lse, dQ, dK, dV)
             : temporal_bwd_base(a, O, dO, lse, dQ, dK, dV);
}
void temporal_bwd_any(const TemporalTile<double>& a, const double* O, const double* dO,
                      const double* lse, double* dQ, double* dK, double* dV) {
  temporal_bwd_core(a, O, dO, lse, dQ, dK, dV);
}

// Copy the T frames of position (b, s), all heads, into dst (T, H, D), converting to acc_t.
template <typename scalar_t, typename acc_t>
inline void gather_frames(const scalar_t* x, const Strides& st, int64_t b, int64_t s, int64_t T,
                          int64_t H, int64_t D, acc_t* dst) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = x + b * st.b + t * st.t + s * st.s;
    if (std::is_same<scalar_t, acc_t>::value && st.h == D) {  // heads adjacent: one copy
      std::memcpy(dst + t * H * D, row, sizeof(acc_t) * H * D);
      continue;
    }
    for (int64_t h = 0; h < H; ++h) {
      const scalar_t* src = row + h * st.h;
      acc_t* out = dst + (t * H + h) * D;
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<acc_t>(src[d]);
    }
  }
}

// The same frames transposed, dst (H, D, Tp) with frames T..Tp-1 zero (the padding is
// written once per buffer by the caller and never overwritten).
template <typename scalar_t, typename acc_t>
inline void gather_frames_t(const scalar_t* x, const Strides& st, int64_t b, int64_t s,
                            int64_t T, int64_t Tp, int64_t H, int64_t D, acc_t* dst) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = x + b * st.b + t * st.t + s * st.s;
    for (int64_t h = 0; h < H; ++h) {
      const scalar_t* src = row + h * st.h;
      acc_t* out = dst + h * D * Tp + t;
      for (int64_t d = 0; d < D; ++d) out[d * Tp] = static_cast<acc_t>(src[d]);
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// fp32 with AVX2: 8 frames x 8 columns at a time go through an 8 x 8 register transpose, so
// each store writes 8 frames of one column; the scalar loop above stores one float per
// 64-byte row of K^T (perf: 15% of the fp32 forward at attn-temporal-genie/cpu).
WMK_AVX2 void transpose8(__m256 (&m)[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(m[i], m[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(m[i], m[i + 1]);
  }
  __m256 u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    m[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    m[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
  }
}

WMK_AVX2 void gather_frames_t_avx2(const float* x, const Strides& st, int64_t b, int64_t s,
                                   int64_t T, int64_t Tp, int64_t H, int64_t D, float* dst) {
  const int64_t D8 = D / 8 * 8;
  for (int64_t t0 = 0; t0 < T; t0 += 8) {
    const int nt = static_cast<int>(std::min<int64_t>(8, T - t0));
    for (int64_t h = 0; h < H; ++h) {
      const float* src[8] = {};
      for (int r = 0; r < nt; ++r) src[r] = x + b * st.b + (t0 + r) * st.t + s * st.s + h * st.h;
      float* out = dst + h * D * Tp + t0;  // t0 + 8 <= Tp: padding frames get zeros
      for (int64_t d = 0; d < D8; d += 8) {
        __m256 m[8];
#pragma GCC unroll 8
        for (int r = 0; r < 8; ++r) {
          m[r] = r < nt ? _mm256_loadu_ps(src[r] + d) : _mm256_setzero_ps();
        }
        transpose8(m);
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) _mm256_storeu_ps(out + (d + i) * Tp, m[i]);
      }
      for (int64_t d = D8; d < D; ++d) {
        for (int r = 0; r < nt; ++r) out[d * Tp + r] = src[r][d];
      }
    }
  }
}

inline void gather_frames_t(const float* x, const Strides& st, int64_t b, int64_t s, int64_t T,
                            int64_t Tp, int64_t H, int64_t D, float* dst) {
  if (has_avx2()) return gather_frames_t_avx2(x, st, b, s, T, Tp, H, D, dst);
  gather_frames_t<float, float>(x, st, b, s, T, Tp, H, D, dst);
}
#endif

int64_t pad8(int64_t n) { return (n + 7) / 8 * 8; }

// Prefetch the frames of position (b, s): its rows lie a whole frame apart, a pattern the
// hardware prefetchers follow poorly, so the next position's rows are requested while the
// current one computes.
template <typename scalar_t>
inline void prefetch_frames(const scalar_t* x, const Strides& st, int64_t b, int64_t s,
                            int64_t T, int64_t H, int64_t D) {
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = x + b * st.b + t * st.t + s * st.s;
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t d = 0; d < D; d += kLine) __builtin_prefetch(row + h * st.h + d, 0, 1);
    }
  }
}

// Write src (T, H, D) to frames of position (b, s) of a contiguous (B, T, S, H, D) tensor.
template <typename scalar_t, typename acc_t>
inline void scatter_frames(const acc_t* src, scalar_t* y, int64_t b, int64_t s, int64_t T,
                           int64_t S, int64_t H, int64_t D) {
  const int64_t ld = H * D;
  for (int64_t t = 0; t < T; ++t) {
    scalar_t* row = y + ((b * T + t) * S + s) * ld;
    const acc_t* in = src + t * ld;
    for (int64_t e = 0; e < ld; ++e) row[e] = static_cast<scalar_t>(in[e]);
  }
}

// fp32: Q and V read in place, O written in place (see TemporalFwdF32).
void temporal_fwd_f32_inplace(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              bool causal, float scale, at::Tensor& out, at::Tensor& lse) {
  const int64_t B = q.size(0), tq = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  const int64_t tk = k.size(1);
  const Strides sq(q), sk(k), sv(v);
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  const bool pack = tq > 1;  // one query frame reads K in place (temporal_decode_f32_core)
  at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
    const int64_t tkp = pad8(tk), packed = pack ? H * D * tkp : 0;
    std::vector<float> buf(packed + 4 * tkp);  // zeroed: K's padding frames stay 0
    TemporalFwdF32 a{tq, tk, tkp, H, D, causal, scale, nullptr, sq.t, sq.h, nullptr, sk.t,
                     sk.h, buf.data(), nullptr, sv.t, sv.h, nullptr, S * H * D,
                     buf.data() + packed};
    for (int64_t bs = begin; bs < end; ++bs) {
      const int64_t b = bs / S, s = bs % S;
      a.Q = qp + b * sq.b + s * sq.s;
      a.K = kp + b * sk.b + s * sk.s;
      a.V = vp + b * sv.b + s * sv.s;
      a.O = op + (b * tq * S + s) * H * D;
      // one query frame streams K and V once, in order: the hardware prefetcher suffices
      if (pack && bs + 1 < end) {
        const int64_t nb = (bs + 1) / S, ns = (bs + 1) % S;
        prefetch_frames(qp, sq, nb, ns, tq, H, D);
        prefetch_frames(kp, sk, nb, ns, tk, H, D);
        prefetch_frames(vp, sv, nb, ns, tk, H, D);
      }
      if (pack) gather_frames_t(kp, sk, b, s, tk, tkp, H, D, buf.data());
      temporal_fwd_f32(a, lp + bs * H * tq);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> temporal_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, bool causal,
                                                    double scale) {
  check_qkv("temporal_attention_fwd", q, k, v);
  check_scale("temporal_attention_fwd", scale);
  const int64_t B = q.size(0), tq = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  const int64_t tk = k.size(1);
  TORCH_CHECK(tq <= tk, "temporal_attention_fwd: Tq = ", tq, " > Tk = ", tk);
  at::Tensor out = at::empty({B, tq, S, H, D}, q.options());
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor lse = at::empty({B, S, H, tq}, q.options().dtype(acc));
  if (out.numel() == 0) return {out, lse};
  TORCH_CHECK(tk > 0, "temporal_attention_fwd: k has no frames");
  const Strides sq(q), sk(k), sv(v);
  if (q.scalar_type() == at::kFloat) {
    temporal_fwd_f32_inplace(q, k, v, causal, static_cast<float>(scale), out, lse);
    return {out, lse};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "temporal_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    acc_t* lp = lse.data_ptr<acc_t>();
    const int64_t ld = H * D;
    at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
      const int64_t tkp = pad8(tk);
      std::vector<acc_t> buf((2 * tq + tk) * ld + tkp * ld + 2 * tkp);  // zeroed
      acc_t *Q = buf.data(), *Kt = Q + tq * ld, *V = Kt + tkp * ld, *O = V + tk * ld;
      const TemporalTile<acc_t> tile{tq, tk, tkp, H, D, causal, static_cast<acc_t>(scale), Q,
                                     Kt, nullptr, V, nullptr, O + tq * ld};
      for (int64_t bs = begin; bs < end; ++bs) {
        const int64_t b = bs / S, s = bs % S;
        if (bs + 1 < end) {
          const int64_t nb = (bs + 1) / S, ns = (bs + 1) % S;
          prefetch_frames(qp, sq, nb, ns, tq, H, D);
          prefetch_frames(kp, sk, nb, ns, tk, H, D);
          prefetch_frames(vp, sv, nb, ns, tk, H, D);
        }
        gather_frames(qp, sq, b, s, tq, H, D, Q);
        gather_frames_t(kp, sk, b, s, tk, tkp, H, D, Kt);
        gather_frames(vp, sv, b, s, tk, H, D, V);
        temporal_fwd_any(tile, O, lp + bs * H * tq);
        scatter_frames(O, op, b, s, tq, S, H, D);
      }
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> temporal_bwd_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, bool causal, double scale) {
  check_temporal_bwd(grad, q, k, v, out, lse, scale);
  const int64_t B = q.size(0), tq = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  const int64_t tk = k.size(1);
  at::Tensor dq = at::empty({B, tq, S, H, D}, q.options());
  at::Tensor dk = at::empty({B, tk, S, H, D}, q.options());
  at::Tensor dv = at::empty({B, tk, S, H, D}, q.options());
  if (dk.numel() == 0) return {dq, dk, dv};
  if (dq.numel() == 0) return {dq, dk.zero_(), dv.zero_()};
  at::Tensor g = grad.stride(-1) == 1 ? grad : grad.contiguous();
  at::Tensor o = out.stride(-1) == 1 ? out : out.contiguous();
  at::Tensor l = lse.contiguous();
  const Strides sq(q), sk(k), sv(v), sg(g), so(o);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "temporal_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    TORCH_CHECK(l.scalar_type() == acc_type<acc_t>(), "temporal_attention_bwd: bad lse dtype");
    const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>();
    const scalar_t *vp = v.data_ptr<scalar_t>(), *gp = g.data_ptr<scalar_t>();
    const scalar_t* opp = o.data_ptr<scalar_t>();
    const acc_t* lp = l.data_ptr<acc_t>();
    scalar_t *dqp = dq.data_ptr<scalar_t>(), *dkp = dk.data_ptr<scalar_t>();
    scalar_t* dvp = dv.data_ptr<scalar_t>();
    const int64_t ld = H * D;
    at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
      const int64_t tkp = pad8(tk);
      std::vector<acc_t> buf((4 * tq + 3 * tk + 2 * tkp) * ld + 2 * tkp);  // zeroed
      acc_t *Q = buf.data(), *O = Q + tq * ld, *G = O + tq * ld, *dQ = G + tq * ld;
      acc_t *K = dQ + tq * ld, *Kt = K + tk * ld, *Vt = Kt + tkp * ld, *dK = Vt + tkp * ld;
      acc_t *dV = dK + tk * ld, *sc = dV + tk * ld;
      const TemporalTile<acc_t> tile{tq, tk, tkp, H, D, causal, static_cast<acc_t>(scale), Q,
                                     Kt, K, nullptr, Vt, sc};
      for (int64_t bs = begin; bs < end; ++bs) {
        const int64_t b = bs / S, s = bs % S;
        if (bs + 1 < end) {
          const int64_t nb = (bs + 1) / S, ns = (bs + 1) % S;
          prefetch_frames(qp, sq, nb, ns, tq, H, D);
          prefetch_frames(gp, sg, nb, ns, tq, H, D);
          prefetch_frames(kp, sk, nb, ns, tk, H, D);
          prefetch_frames(vp, sv, nb, ns, tk, H, D);
        }
        gather_frames(qp, sq, b, s, tq, H, D, Q);
        gather_frames(opp, so, b, s, tq, H, D, O);
        gather_frames(gp, sg, b, s, tq, H, D, G);
        gather_frames(kp, sk, b, s, tk, H, D, K);
        gather_frames_t(kp, sk, b, s, tk, tkp, H, D, Kt);
        gather_frames_t(vp, sv, b, s, tk, tkp, H, D, Vt);
        temporal_bwd_any(tile, O, G, lp + bs * H * tq, dQ, dK, dV);
        scatter_frames(dQ, dqp, b, s, tq, S, H, D);
        scatter_frames(dK, dkp, b, s, tk, S, H, D);
        scatter_frames(dV, dvp, b, s, tk, S, H, D);
      }
    });
  });
  return {dq, dk, dv};
}

// ---------------------------------------------------------------------------------------
// Spatial attention.

// Maximum and sum of a row in eight independent lanes (vectorizable, no reassociation).
template <typename T>
WMK_INLINE T row_max(const T* x, int64_t n) {
  T lane[8];
  for (int l = 0; l < 8; ++l) lane[l] = x[0];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] = std::max(lane[l], x[i + l]);
  }
  T m = std::max(std::max(std::max(lane[0], lane[1]), std::max(lane[2], lane[3])),
                 std::max(std::max(lane[4], lane[5]), std::max(lane[6], lane[7])));
  for (; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

template <typename T>
WMK_INLINE T row_sum(const T* x, int64_t n) {
  T lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int l = 0; l < 8; ++l) lane[l] += x[i + l];
  }
  T s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  for (; i < n; ++i) s += x[i];
  return s;
}

// Softmax in place of n rows of S scaled scores; lse[i] gets each row's log-sum-exp.
template <typename T>
WMK_INLINE void softmax_rows(T* P, int64_t n, int64_t S, T* lse) {
  for (int64_t i = 0; i < n; ++i) {
    T* pi = P + i * S;
    const T m = row_max(pi, S);
    exp_shifted(pi, m, S);
    const T l = row_sum(pi, S);
    lse[i] = m + std::log(l);
    const T inv = T(1) / l;
    for (int64_t j = 0; j < S; ++j) pi[j] *= inv;
  }
}

// Backward of n rows: P <- exp(scores - lse) (the probabilities), dP <- P * (dP - Di) (the
// gradient of the scaled scores).
template <typename T>
WMK_INLINE void dsoftmax_rows(T* P, T* dP, const T* lse, const T* Di, int64_t n, int64_t S) {
  for (int64_t i = 0; i < n; ++i) {
    T *pi = P + i * S, *dpi = dP + i * S;
    exp_shifted(pi, lse[i], S);
    const T di = Di[i];
    for (int64_t j = 0; j < S; ++j) dpi[j] = pi[j] * (dpi[j] - di);
  }
}

WMK_AVX2 void softmax_rows_avx2(float* P, int64_t n, int64_t S, float* lse) {
  softmax_rows(P, n, S, lse);
}
void softmax_rows_base(float* P, int64_t n, int64_t S, float* lse) { softmax_rows(P, n, S, lse); }
WMK_AVX2 void dsoftmax_rows_avx2(float* P, float* dP, const float* lse, const float* Di,
                                 int64_t n, int64_t S) {
  dsoftmax_rows(P, dP, lse, Di, n, S);
}
void dsoftmax_rows_base(float* P, float* dP, const float* lse, const float* Di, int64_t n,
                        int64_t S) {
  dsoftmax_rows(P, dP, lse, Di, n, S);
}
void softmax_rows_any(float* P, int64_t n, int64_t S, float* lse) {
  has_avx2() ? softmax_rows_avx2(P, n, S, lse) : softmax_rows_base(P, n, S, lse);
}
void softmax_rows_any(double* P, int64_t n, int64_t S, double* lse) {
  softmax_rows(P, n, S, lse);
}
void dsoftmax_rows_any(float* P, float* dP, const float* lse, const float* Di, int64_t n,
                       int64_t S) {
  has_avx2() ? dsoftmax_rows_avx2(P, dP, lse, Di, n, S) : dsoftmax_rows_base(P, dP, lse, Di, n, S);
}
void dsoftmax_rows_any(double* P, double* dP, const double* lse, const double* Di, int64_t n,
                       int64_t S) {
  dsoftmax_rows(P, dP, lse, Di, n, S);
}

// Rows of one (b, t, h) slice, [r0, r1) of S, into dst (r1 - r0, D) as acc_t, times mul.
template <typename scalar_t, typename acc_t>
inline void gather_rows(const scalar_t* x, const Strides& st, int64_t b, int64_t t, int64_t h,
                        int64_t r0, int64_t r1, int64_t D, acc_t* dst, acc_t mul = 1) {
  const scalar_t* base = x + b * st.b + t * st.t + h * st.h;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* src = base + r * st.s;
    acc_t* out = dst + (r - r0) * D;
    for (int64_t d = 0; d < D; ++d) out[d] = static_cast<acc_t>(src[d]) * mul;
  }
}

// Query rows per block: the block's score rows (rows x S) stay near 256 KiB.
int64_t query_block(int64_t S) { return std::max<int64_t>(16, std::min<int64_t>(S, 65536 / S)); }

at::Tensor blob(void* p, int64_t rows, int64_t cols, at::ScalarType dt) {
  return at::from_blob(p, {rows, cols}, at::TensorOptions().dtype(dt));
}

std::tuple<at::Tensor, at::Tensor> spatial_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                   const at::Tensor& v, double scale) {
  check_qkv("spatial_attention_fwd", q, k, v);
  check_scale("spatial_attention_fwd", scale);
  TORCH_CHECK(q.sizes() == k.sizes(), "spatial_attention_fwd: q and k must have one shape");
  const int64_t B = q.size(0), T = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  at::Tensor out = at::empty({B, T, S, H, D}, q.options());
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor lse = at::empty({B, T, H, S}, q.options().dtype(acc));
  if (out.numel() == 0) return {out, lse};
  const Strides sq(q), sk(k), sv(v);
  const int64_t R = query_block(S);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "spatial_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    acc_t* lp = lse.data_ptr<acc_t>();
    const acc_t sc = static_cast<acc_t>(scale);
    at::parallel_for(0, B * T * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(2 * S * D + 2 * R * D + R * S);
      acc_t *K = buf.data(), *V = K + S * D, *Q = V + S * D, *O = Q + R * D, *P = O + R * D;
      at::Tensor Kt = blob(K, S, D, acc).t(), Vt = blob(V, S, D, acc);
      for (int64_t idx = begin; idx < end; ++idx) {
        const int64_t b = idx / (T * H), t = (idx / H) % T, h = idx % H;
        gather_rows(kp, sk, b, t, h, 0, S, D, K);
        gather_rows(vp, sv, b, t, h, 0, S, D, V);
        for (int64_t r0 = 0; r0 < S; r0 += R) {
          const int64_t n = std::min(R, S - r0);
          gather_rows(qp, sq, b, t, h, r0, r0 + n, D, Q, sc);  // scores come out scaled
          at::Tensor Pn = blob(P, n, S, acc);
          at::mm_out(Pn, blob(Q, n, D, acc), Kt);
          softmax_rows_any(P, n, S, lp + ((b * T + t) * H + h) * S + r0);
          at::Tensor On = blob(O, n, D, acc);
          at::mm_out(On, Pn, Vt);
          for (int64_t i = 0; i < n; ++i) {
            scalar_t* dst = op + (((b * T + t) * S + r0 + i) * H + h) * D;
            for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<scalar_t>(O[i * D + d]);
          }
        }
      }
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_bwd_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, double scale) {
  check_spatial_bwd(grad, q, k, v, out, lse, scale);
  const int64_t B = q.size(0), T = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  at::Tensor dq = at::empty({B, T, S, H, D}, q.options());
  at::Tensor dk = at::empty({B, T, S, H, D}, q.options());
  at::Tensor dv = at::empty({B, T, S, H, D}, q.options());
  if (dq.numel() == 0) return {dq, dk, dv};
  at::Tensor g = grad.stride(-1) == 1 ? grad : grad.contiguous();
  at::Tensor o = out.stride(-1) == 1 ? out : out.contiguous();
  at::Tensor l = lse.contiguous();
  const Strides sq(q), sk(k), sv(v), sg(g), so(o), sdst(dq);
  const int64_t R = query_block(S);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "spatial_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc = acc_type<acc_t>();
    TORCH_CHECK(l.scalar_type() == acc, "spatial_attention_bwd: bad lse dtype");
    const scalar_t *qp = q.data_ptr<scalar_t>(), *kp = k.data_ptr<scalar_t>();
    const scalar_t *vp = v.data_ptr<scalar_t>(), *gp = g.data_ptr<scalar_t>();
    const scalar_t* opp = o.data_ptr<scalar_t>();
    const acc_t* lp = l.data_ptr<acc_t>();
    scalar_t *dqp = dq.data_ptr<scalar_t>(), *dkp = dk.data_ptr<scalar_t>();
    scalar_t* dvp = dv.data_ptr<scalar_t>();
    const acc_t sc = static_cast<acc_t>(scale);
    at::parallel_for(0, B * T * H, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(4 * S * D + 4 * R * D + 2 * R * S + R);
      acc_t *K = buf.data(), *V = K + S * D, *dK = V + S * D, *dV = dK + S * D;
      acc_t *Q = dV + S * D, *G = Q + R * D, *O = G + R * D, *dQ = O + R * D;
      acc_t *P = dQ + R * D, *dP = P + R * S, *Di = dP + R * S;
      at::Tensor Km = blob(K, S, D, acc), Vm = blob(V, S, D, acc);
      at::Tensor dKm = blob(dK, S, D, acc), dVm = blob(dV, S, D, acc);
      for (int64_t idx = begin; idx < end; ++idx) {
        const int64_t b = idx / (T * H), t = (idx / H) % T, h = idx % H;
        gather_rows(kp, sk, b, t, h, 0, S, D, K);
        gather_rows(vp, sv, b, t, h, 0, S, D, V);
        dKm.zero_();
        dVm.zero_();
        const acc_t* lrow = lp + ((b * T + t) * H + h) * S;
        for (int64_t r0 = 0; r0 < S; r0 += R) {
          const int64_t n = std::min(R, S - r0);
          gather_rows(qp, sq, b, t, h, r0, r0 + n, D, Q, sc);  // scaled q: scaled scores
          gather_rows(gp, sg, b, t, h, r0, r0 + n, D, G);
          gather_rows(opp, so, b, t, h, r0, r0 + n, D, O);
          at::Tensor Qn = blob(Q, n, D, acc), Gn = blob(G, n, D, acc);
          at::Tensor Pn = blob(P, n, S, acc), dPn = blob(dP, n, S, acc);
          at::mm_out(Pn, Qn, Km.t());
          at::mm_out(dPn, Gn, Vm.t());
          for (int64_t i = 0; i < n; ++i) Di[i] = dot(G + i * D, O + i * D, D);
          dsoftmax_rows_any(P, dP, lrow + r0, Di, n, S);  // dP now holds dS
          // scores = (scale q) k^T: dK = dS^T (scale q), dQ = scale dS k
          dVm.addmm_(Pn.t(), Gn);
          dKm.addmm_(dPn.t(), Qn);
          at::Tensor dQn = blob(dQ, n, D, acc);
          at::mm_out(dQn, dPn, Km);
          for (int64_t i = 0; i < n; ++i) {
            scalar_t* dst = dqp + b * sdst.b + t * sdst.t + (r0 + i) * sdst.s + h * sdst.h;
            for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<scalar_t>(dQ[i * D + d] * sc);
          }
        }
        for (int64_t r = 0; r < S; ++r) {
          const int64_t off = b * sdst.b + t * sdst.t + r * sdst.s + h * sdst.h;
          for (int64_t d = 0; d < D; ++d) {
            dkp[off + d] = static_cast<scalar_t>(dK[r * D + d]);
            dvp[off + d] = static_cast<scalar_t>(dV[r * D + d]);
          }
        }
      }
    });
  });
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(wmk, CPU, m) {
  m.impl("spatial_attention_fwd", &spatial_fwd_cpu);
  m.impl("spatial_attention_bwd", &spatial_bwd_cpu);
  m.impl("temporal_attention_fwd", &temporal_fwd_cpu);
  m.impl("temporal_attention_bwd", &temporal_bwd_cpu);
}

}  // namespace wmk
