// VQ nearest-codebook lookup and EMA update on the CPU.
//
// Lookup, fp32 (and fp16/bf16 inputs, converted per row block): a fused register-blocked
// micro-kernel (below) computes 4 rows x 16 codes of dot products in vector registers and
// folds them straight into running minima, so no distance is ever stored: extra memory is
// the packed codebook, O(K*D). Rows are split across threads with at::parallel_for.
// Lookup, float64 (for exact tests): rows in chunks of kRows, each chunk one small GEMM
// (kRows x K scratch per thread, never N x K) and a scan for the best code.
// The L2 distance is ||c||^2 - 2 z.c (||z||^2 is the same for every code and cannot change
// the argmin); cosine uses the normalized codebook and maximizes z.c.
// Semantics shared with every backend (wmkernels/reference/vq.py): ties go to the smallest
// index; a pair where z's row or the code holds NaN has a NaN distance, which counts as the
// smallest (like torch.argmin); otherwise a pair holding +-inf is at distance +inf. The
// kernels get this from a cleaned codebook (a non-finite code becomes a zero vector with
// bias NaN or +inf, so inf - inf never happens) and from rows of z flagged while they are
// loaded: such a row gets code 0 (NaN) or the first NaN code (0 if none).
//
// Roofline (vq-tokenizer scaled to N=16384, K=1024, D=32): 1.07 GFLOP against 2 MB of
// input, compute-bound: the bound is the FMA throughput (2 x 8-lane FMA per cycle per core
// with AVX2). Eager cdist + argmin also writes and re-reads a 64 MB distance matrix.
//
// EMA update: per-thread accumulators of counts and sums (K x D each, in fp32 for fp16/bf16
// state), reduced, then the EMA mix, Laplace smoothing and the division, in one call: no
// one-hot matrix. Indices are range-checked before anything is written.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "wmk/vq_checks.h"

namespace wmk {
namespace {

constexpr int64_t kRows = 64;

// Best code for one row, given its dot products with every code: dist[k] = bias[k] -
// scale * dot[k] (bias = ||c||^2, scale = 2 for l2: ||z||^2 is the same for every code and
// cannot change the argmin; bias = 0, scale = 1 for cosine on the normalized codebook).
// Returns the first NaN distance if there is one (torch.argmin semantics), else the first
// minimum. Two passes over a row held in L1: a branch-free minimum and NaN test that the
// compiler vectorizes, then the first index that attains it.
template <typename T>
int64_t best_index(T* dot, const T* bias, T scale, int64_t K) {
  T m = std::numeric_limits<T>::infinity();
  int any_nan = 0;
  for (int64_t k = 0; k < K; ++k) {
    const T d = bias[k] - scale * dot[k];
    dot[k] = d;
    m = d < m ? d : m;
    any_nan |= d != d;
  }
  for (int64_t k = 0; k < K; ++k) {
    if (any_nan ? dot[k] != dot[k] : dot[k] == m) return k;
  }
  return 0;
}

// The fp32 scan is cloned for AVX2 and picked at load time (the extension is built for the
// baseline x86-64 ISA so that it runs anywhere).
__attribute__((target_clones("avx2", "default"))) int64_t best_index_f32(float* dot,
                                                                         const float* bias,
                                                                         float scale, int64_t K) {
  return best_index(dot, bias, scale, K);
}

int64_t best_of(float* dot, const float* bias, float scale, int64_t K) {
  return best_index_f32(dot, bias, scale, K);
}
int64_t best_of(double* dot, const double* bias, double scale, int64_t K) {
  return best_index(dot, bias, scale, K);
}

template <typename T>
void lookup(const at::Tensor& z, const at::Tensor& cbT, const at::Tensor& bias, T scale,
            int64_t* out) {
  const int64_t N = z.size(0), K = cbT.size(1);
  const T* b = bias.data_ptr<T>();
  at::parallel_for(0, N, kRows, [&](int64_t begin, int64_t end) {
    for (int64_t r0 = begin; r0 < end; r0 += kRows) {
      const int64_t r1 = std::min(end, r0 + kRows);
      at::Tensor dot = at::mm(z.slice(0, r0, r1).to(cbT.scalar_type()), cbT);
      T* d = dot.data_ptr<T>();
      for (int64_t r = 0; r < r1 - r0; ++r) out[r0 + r] = best_of(d + r * K, b, scale, K);
    }
  });
}

// ---------------------------------------------------------------------------------------
// fp32 fused micro-kernel: distances and argmin without writing any dot product to memory.
// The codebook is packed once per call as [K/16 tiles][D][16 codes] (padded codes get bias
// +inf so they never win); each step takes 4 rows of z against one tile, holding the 4 x 16
// dot products in 8 vector registers (8 lanes each), then folds them into per-lane running
// minima. Lanes see their codes in increasing order with a strict `<`, and the final
// 16-way reduction breaks equal distances by the smaller index, so ties go to the smallest
// index. Written with GCC vector extensions and compiled twice (AVX2+FMA, and the baseline
// ISA); the AVX2 build is chosen at run time when the CPU has it.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
constexpr int64_t kTileCodes = 16;
constexpr int64_t kQuad = 4;

struct PackedCodebook {
  std::vector<float> codes;  // tiles * D * 16
  std::vector<float> bias;   // tiles * 16
  int64_t tiles;
};

PackedCodebook pack_codebook(const at::Tensor& cb, const at::Tensor& bias) {
  const int64_t K = cb.size(0), D = cb.size(1);
  PackedCodebook p;
  p.tiles = (K + kTileCodes - 1) / kTileCodes;
  p.codes.assign(p.tiles * D * kTileCodes, 0.f);
  p.bias.assign(p.tiles * kTileCodes, std::numeric_limits<float>::infinity());
  const float* c = cb.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  for (int64_t k = 0; k < K; ++k) {
    const int64_t t = k / kTileCodes, lane = k % kTileCodes;
    p.bias[k] = b[k];
    for (int64_t d = 0; d < D; ++d) p.codes[(t * D + d) * kTileCodes + lane] = c[k * D + d];
  }
  return p;
}

inline v8f load8(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// Best code of each of 4 rows z4 (4 x D, row-major) against the packed codebook.
inline __attribute__((always_inline)) void quad_best(const float* z4, int64_t D,
                                                     const PackedCodebook& cb, float scale,
                                                     int64_t* best_out) {
  const float inf = std::numeric_limits<float>::infinity();
  const v8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
  v8f best[kQuad][2];
  v8i best_k[kQuad][2];
  for (int r = 0; r < kQuad; ++r) {
    for (int h = 0; h < 2; ++h) {
      best[r][h] = inf - (v8f){};
      best_k[r][h] = (v8i){};
    }
  }
  for (int64_t t = 0; t < cb.tiles; ++t) {
    const float* p = cb.codes.data() + t * D * kTileCodes;
    v8f acc[kQuad][2] = {};
    for (int64_t d = 0; d < D; ++d) {
      const v8f c0 = load8(p + d * kTileCodes), c1 = load8(p + d * kTileCodes + 8);
      for (int r = 0; r < kQuad; ++r) {
        const float zr = z4[r * D + d];
        acc[r][0] += zr * c0;
        acc[r][1] += zr * c1;
      }
    }
    for (int h = 0; h < 2; ++h) {
      const v8f b = load8(cb.bias.data() + t * kTileCodes + h * 8);
      const v8i k = lane + static_cast<int32_t>(t * kTileCodes + h * 8);
      for (int r = 0; r < kQuad; ++r) {
        v8f dist = b - scale * acc[r][h];
        dist = dist != dist ? -inf - (v8f){} : dist;  // NaN counts as the smallest
        const v8i take = dist < best[r][h];
        best[r][h] = take ? dist : best[r][h];
        best_k[r][h] = take ? k : best_k[r][h];
      }
    }
  }
  for (int r = 0; r < kQuad; ++r) {
    float bv = inf;
    int64_t bk = 0;
    for (int h = 0; h < 2; ++h) {
      for (int l = 0; l < 8; ++l) {
        const float v = best[r][h][l];
        const int64_t k = best_k[r][h][l];
        if (v < bv || (v == bv && k < bk)) { bv = v; bk = k; }
      }
    }
    best_out[r] = bk;
  }
}

// The code of a row of z holding a non-finite value: 0 if it holds NaN (every distance is
// NaN), else (+-inf: every distance is +inf or NaN) the first NaN code, 0 if none.
inline int64_t nonfinite_row_code(const float* row, int64_t D, int64_t first_nan_code) {
  for (int64_t d = 0; d < D; ++d) {
    if (row[d] != row[d]) return 0;
  }
  return first_nan_code;
}

// Rows [4*q0, 4*q1) of z. No lambdas inside: a lambda would not inherit the target ISA.
template <typename T>
inline __attribute__((always_inline)) void quads(const T* zp, int64_t sn, int64_t sd,
                                                 int64_t N, int64_t D, const PackedCodebook& cb,
                                                 float scale, int64_t first_nan_code,
                                                 int64_t q0, int64_t q1, int64_t* out) {
  std::vector<float> z4(kQuad * D);
  int64_t best[kQuad];
  bool bad[kQuad];
  for (int64_t q = q0; q < q1; ++q) {
    for (int r = 0; r < kQuad; ++r) {
      const int64_t row = q * kQuad + r;
      bool nonfinite = false;
      for (int64_t d = 0; d < D; ++d) {
        const float x = row < N ? static_cast<float>(zp[row * sn + d * sd]) : 0.f;
        z4[r * D + d] = x;
        nonfinite |= !(x - x == 0.f);  // x - x is NaN exactly for NaN and +-inf
      }
      bad[r] = nonfinite;
    }
    quad_best(z4.data(), D, cb, scale, best);
    for (int r = 0; r < kQuad && q * kQuad + r < N; ++r) {
      out[q * kQuad + r] = bad[r] ? nonfinite_row_code(z4.data() + r * D, D, first_nan_code)
                                  : best[r];
    }
  }
}

template <typename T>
__attribute__((target("avx2,fma"))) void quads_avx2(const T* zp, int64_t sn, int64_t sd,
                                                    int64_t N, int64_t D,
                                                    const PackedCodebook& cb, float scale,
                                                    int64_t first_nan_code, int64_t q0,
                                                    int64_t q1, int64_t* out) {
  quads<T>(zp, sn, sd, N, D, cb, scale, first_nan_code, q0, q1, out);
}

template <typename T>
void quads_generic(const T* zp, int64_t sn, int64_t sd, int64_t N, int64_t D,
                   const PackedCodebook& cb, float scale, int64_t first_nan_code, int64_t q0,
                   int64_t q1, int64_t* out) {
  quads<T>(zp, sn, sd, N, D, cb, scale, first_nan_code, q0, q1, out);
}

template <typename T>
void lookup_f32(const at::Tensor& z, const at::Tensor& cb, const at::Tensor& bias, float scale,
                int64_t first_nan_code, int64_t* out) {
  const PackedCodebook packed = pack_codebook(cb, bias);
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const int64_t N = z.size(0), D = z.size(1);
  const T* zp = z.data_ptr<T>();
  const int64_t sn = z.stride(0), sd = z.stride(1);
  at::parallel_for(0, (N + kQuad - 1) / kQuad, 16, [&](int64_t q0, int64_t q1) {
    if (avx2) {
      quads_avx2<T>(zp, sn, sd, N, D, packed, scale, first_nan_code, q0, q1, out);
    } else {
      quads_generic<T>(zp, sn, sd, N, D, packed, scale, first_nan_code, q0, q1, out);
    }
  });
}

at::Tensor vq_lookup_cpu(const at::Tensor& z, const at::Tensor& codebook, c10::string_view metric) {
  check_vq_lookup(z, codebook, metric);
  at::Tensor out = at::empty({z.size(0)}, z.options().dtype(at::kLong));
  if (z.size(0) == 0) return out;
  const auto acc = z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor cb = codebook.to(acc);
  const bool l2 = metric == "l2";
  if (!l2) cb = cb / cb.norm(2, {1}, true).clamp_min(1e-12);  // F.normalize semantics
  at::Tensor bias = l2 ? (cb * cb).sum(1) : at::zeros({cb.size(0)}, cb.options());
  // non-finite codes: a zero vector whose bias carries the distance (NaN, or +inf)
  const at::Tensor has_nan = codebook.isnan().any(1);
  const at::Tensor bad = codebook.isfinite().all(1).logical_not();
  const int64_t first_nan_code = has_nan.to(at::kInt).argmax().item<int64_t>();  // 0 if none
  if (bad.any().item<bool>()) {
    cb = cb.masked_fill(bad.unsqueeze(1), 0);
    bias = bias.masked_fill(bad, std::numeric_limits<double>::infinity())
               .masked_fill(has_nan, std::numeric_limits<double>::quiet_NaN());
  }
  bias = bias.contiguous();
  if (acc == at::kFloat) {
    cb = cb.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "vq_lookup_cpu",
                                    [&] {
      lookup_f32<scalar_t>(z, cb, bias, l2 ? 2.f : 1.f, first_nan_code,
                           out.data_ptr<int64_t>());
    });
    return out;
  }
  // float64 (used to test against exact references): blocked GEMM + scan, then the rows of z
  // holding non-finite values (see the file comment)
  at::Tensor cbT = cb.t().contiguous();
  lookup<double>(z, cbT, bias, l2 ? 2.0 : 1.0, out.data_ptr<int64_t>());
  const at::Tensor row_inf = z.isinf().any(1), row_nan = z.isnan().any(1);
  out.masked_fill_(row_inf, first_nan_code).masked_fill_(row_nan, 0);
  return out;
}

// T: the state's dtype; A: where counts and sums accumulate (fp32 for fp16/bf16 state).
template <typename T>
void ema_update(at::Tensor& codebook, at::Tensor& cluster_size, at::Tensor& embed_sum,
                const at::Tensor& z, const at::Tensor& idx, double decay, double eps) {
  using A = at::opmath_type<T>;
  const int64_t N = z.size(0), D = z.size(1), K = codebook.size(0);
  const int nthreads = at::get_num_threads();
  // acc[t] holds thread t's counts (K) followed by its sums (K x D).
  std::vector<std::vector<A>> acc(nthreads);
  const T* zp = z.data_ptr<T>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
    auto& a = acc[at::get_thread_num()];
    if (a.empty()) a.assign(K * (D + 1), A(0));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t k = ip[i];  // in [0, K): checked before the call
      a[k] += 1;
      A* s = a.data() + K + k * D;
      for (int64_t j = 0; j < D; ++j) s[j] += static_cast<A>(zp[i * D + j]);
    }
  });
  std::vector<A> total(K * (D + 1), A(0));
  for (auto& a : acc) {
    for (size_t j = 0; j < a.size(); ++j) total[j] += a[j];
  }
  T* cs = cluster_size.data_ptr<T>();
  T* es = embed_sum.data_ptr<T>();
  T* cb = codebook.data_ptr<T>();
  const A dec = static_cast<A>(decay), e = static_cast<A>(eps);
  A n = 0;
  for (int64_t k = 0; k < K; ++k) {
    const A c = dec * static_cast<A>(cs[k]) + (1 - dec) * total[k];
    cs[k] = static_cast<T>(c);
    n += c;
  }
  for (int64_t k = 0; k < K; ++k) {
    const A smoothed = (static_cast<A>(cs[k]) + e) / (n + K * e) * n;
    for (int64_t j = 0; j < D; ++j) {
      const A s = dec * static_cast<A>(es[k * D + j]) + (1 - dec) * total[K + k * D + j];
      es[k * D + j] = static_cast<T>(s);
      cb[k * D + j] = static_cast<T>(s / smoothed);
    }
  }
}

void vq_ema_update_cpu(at::Tensor codebook, at::Tensor cluster_size, at::Tensor embed_sum,
                       const at::Tensor& z, const at::Tensor& indices, double decay, double eps) {
  check_vq_ema_update(codebook, cluster_size, embed_sum, z, indices, decay, eps);
  check_vq_indices(indices, codebook.size(0));
  at::Tensor zc = z.to(codebook.scalar_type()).contiguous();
  at::Tensor ic = indices.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, codebook.scalar_type(),
                                  "vq_ema_update_cpu", [&] {
    ema_update<scalar_t>(codebook, cluster_size, embed_sum, zc, ic, decay, eps);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(wmk, CPU, m) {
  m.impl("vq_lookup", &vq_lookup_cpu);
  m.impl("vq_ema_update_", &vq_ema_update_cpu);
}

}  // namespace wmk
