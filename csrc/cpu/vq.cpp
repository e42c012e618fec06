// VQ nearest-codebook lookup and EMA update on the CPU.
//
// Lookup: rows of z are split into chunks of kRows; each chunk's dot products with the whole
// codebook are one small GEMM (kRows x K, stays in L2), followed at once by a fused scan
// for the best code of each row. Scratch is kRows*K per thread: never N*K. The L2 distance
// is ||c||^2 - 2 z.c (||z||^2 is constant per row and cannot change the argmin); cosine
// uses the normalized codebook and maximizes z.c (the norm of z cannot change the argmax).
// Low-precision inputs are computed in fp32, float64 in float64.
// Semantics shared with every backend: ties go to the smallest index; a NaN distance
// counts as the smallest (like torch.argmin), so a row of z holding NaN maps to code 0.
//
// Roofline (vq-tokenizer scaled to N=16384, K=1024, D=32): 1.07 GFLOP of GEMM, 2 MB read;
// compute-bound, so the speed comes from running the GEMM in cache-sized blocks and never
// writing the N x K distances to memory (eager cdist + argmin writes and re-reads 64 MB).
//
// EMA update: per-thread accumulators of counts and sums (K x D each), reduced, then the
// EMA mix, Laplace smoothing and the division, in one call: no one-hot matrix.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace wmk {
namespace {

constexpr int64_t kRows = 64;

// Index of the best (smallest) distance in d[0..K): first NaN if any, else the first minimum.
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

at::Tensor vq_lookup_cpu(const at::Tensor& z, const at::Tensor& codebook, c10::string_view metric) {
  TORCH_CHECK(z.dim() == 2 && codebook.dim() == 2 && z.size(1) == codebook.size(1),
              "vq_lookup: expected z (N, D) and codebook (K, D), got ", z.sizes(), " and ",
              codebook.sizes());
  TORCH_CHECK(metric == "l2" || metric == "cosine", "vq_lookup: metric must be l2 or cosine");
  TORCH_CHECK(codebook.size(0) > 0, "vq_lookup: codebook must have at least one code");
  at::Tensor out = at::empty({z.size(0)}, z.options().dtype(at::kLong));
  if (z.size(0) == 0) return out;
  const auto acc = z.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor cb = codebook.to(acc);
  const bool l2 = metric == "l2";
  if (!l2) cb = cb / cb.norm(2, {1}, true).clamp_min(1e-12);  // F.normalize semantics
  at::Tensor bias = l2 ? (cb * cb).sum(1).contiguous() : at::zeros({cb.size(0)}, cb.options());
  at::Tensor cbT = cb.t().contiguous();
  AT_DISPATCH_FLOATING_TYPES(acc, "vq_lookup_cpu", [&] {
    lookup<scalar_t>(z, cbT, bias, scalar_t(l2 ? 2 : 1), out.data_ptr<int64_t>());
  });
  return out;
}

template <typename T>
void ema_update(at::Tensor& codebook, at::Tensor& cluster_size, at::Tensor& embed_sum,
                const at::Tensor& z, const at::Tensor& idx, double decay, double eps) {
  const int64_t N = z.size(0), D = z.size(1), K = codebook.size(0);
  const int nthreads = at::get_num_threads();
  // acc[t] holds thread t's counts (K) followed by its sums (K x D), in T.
  std::vector<std::vector<T>> acc(nthreads);
  const T* zp = z.data_ptr<T>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  at::parallel_for(0, N, 1024, [&](int64_t begin, int64_t end) {
    auto& a = acc[at::get_thread_num()];
    if (a.empty()) a.assign(K * (D + 1), T(0));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t k = ip[i];
      a[k] += 1;
      T* s = a.data() + K + k * D;
      for (int64_t j = 0; j < D; ++j) s[j] += zp[i * D + j];
    }
  });
  std::vector<T> total(K * (D + 1), T(0));
  for (auto& a : acc) {
    for (size_t j = 0; j < a.size(); ++j) total[j] += a[j];
  }
  T* cs = cluster_size.data_ptr<T>();
  T* es = embed_sum.data_ptr<T>();
  T* cb = codebook.data_ptr<T>();
  const T dec = static_cast<T>(decay), e = static_cast<T>(eps);
  T n = 0;
  for (int64_t k = 0; k < K; ++k) {
    cs[k] = dec * cs[k] + (1 - dec) * total[k];
    n += cs[k];
  }
  for (int64_t k = 0; k < K; ++k) {
    const T smoothed = (cs[k] + e) / (n + K * e) * n;
    for (int64_t j = 0; j < D; ++j) {
      T& s = es[k * D + j];
      s = dec * s + (1 - dec) * total[K + k * D + j];
      cb[k * D + j] = s / smoothed;
    }
  }
}

void vq_ema_update_cpu(at::Tensor codebook, at::Tensor cluster_size, at::Tensor embed_sum,
                       const at::Tensor& z, const at::Tensor& indices, double decay, double eps) {
  TORCH_CHECK(codebook.is_contiguous() && cluster_size.is_contiguous() &&
                  embed_sum.is_contiguous(),
              "vq_ema_update_: codebook, cluster_size and embed_sum must be contiguous");
  TORCH_CHECK(codebook.scalar_type() == cluster_size.scalar_type() &&
                  codebook.scalar_type() == embed_sum.scalar_type(),
              "vq_ema_update_: codebook, cluster_size and embed_sum must share a dtype");
  at::Tensor zc = z.to(codebook.scalar_type()).contiguous();
  at::Tensor ic = indices.contiguous();
  AT_DISPATCH_FLOATING_TYPES(codebook.scalar_type(), "vq_ema_update_cpu", [&] {
    ema_update<scalar_t>(codebook, cluster_size, embed_sum, zc, ic, decay, eps);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(wmk, CPU, m) {
  m.impl("vq_lookup", &vq_lookup_cpu);
  m.impl("vq_ema_update_", &vq_ema_update_cpu);
}

}  // namespace wmk
