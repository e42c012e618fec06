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
// 268 MFLOP forward against 3 MB of q/k/v: compute-bound; the GEMMs run at BLAS speed and
// the win over eager is the two transposing copies each way that never happen.
//
// Temporal: at::parallel_for over (b, s); each task gathers every frame of all heads of its
// position (Tq + 2 Tk rows of H*D contiguous elements), then runs a register-sized
// T x T attention per head with vectorized dot products and axpys: for T = 16 a GEMM call
// would cost more than the math. Roofline (attn-temporal-genie scaled to B1 T16 S256 H4
// D64, fp32): 4 * T^2 * D * B*S*H = 67 MFLOP against 16 MB read and written: memory-bound,
// so the time is one pass over q, k, v and out, where eager makes four transposing copies.
//
// Accumulation is fp32 (float64 for float64 inputs); fp16/bf16 are converted on load.
// Outputs are contiguous (B, T, S, H, D); lse is (B, T, H, S) for spatial and (B, S, H, Tq)
// for temporal, in the accumulation dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace wmk {
namespace {

// ---------------------------------------------------------------------------------------
// Checks shared by the four ops (the Python front end validates user input with friendlier
// messages; these guard direct calls of torch.ops.wmk.*).

void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 5 && k.dim() == 5 && v.dim() == 5, op,
              ": q, k, v must be (B, T, S, H, D), got ", q.sizes(), ", ", k.sizes(), ", ",
              v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v must have one shape, got ", k.sizes(),
              " and ", v.sizes());
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3) &&
                  q.size(4) == k.size(4),
              op, ": q and k must share B, S, H, D, got ", q.sizes(), " and ", k.sizes());
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k, v must share a dtype");
  for (const at::Tensor* t : {&q, &k, &v}) {
    TORCH_CHECK(t->size(4) <= 1 || t->stride(4) == 1, op,
                ": q, k, v need a unit stride on the head dim, got strides ", t->strides());
  }
}

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
// Vector helpers on contiguous acc_t arrays. Eight independent lanes let the compiler
// vectorize the reduction without reassociating floating point.

template <typename T>
inline T dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
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
inline void axpy(T alpha, const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Row i of a causal temporal attention sees key frames [0, last(i)].
inline int64_t last_key(bool causal, int64_t i, int64_t tq, int64_t tk) {
  return causal ? tk - tq + i : tk - 1;
}

// ---------------------------------------------------------------------------------------
// Temporal attention cores: one (b, s) position, all heads, on contiguous gathered frames
// laid out (T, H, D) (row stride H*D). `sc` is scratch of at least Tk values.

template <typename T>
inline void temporal_fwd_core(const T* Q, const T* K, const T* V, T* O, T* lse, int64_t tq,
                              int64_t tk, int64_t H, int64_t D, bool causal, T scale, T* sc) {
  const int64_t ld = H * D;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < tq; ++i) {
      const T* qi = Q + i * ld + h * D;
      const int64_t jn = last_key(causal, i, tq, tk) + 1;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < jn; ++j) {
        sc[j] = scale * dot(qi, K + j * ld + h * D, D);
        m = std::max(m, sc[j]);
      }
      T l = 0;
      T* oi = O + i * ld + h * D;
      std::fill(oi, oi + D, T(0));
      for (int64_t j = 0; j < jn; ++j) {
        const T p = std::exp(sc[j] - m);
        l += p;
        axpy(p, V + j * ld + h * D, oi, D);
      }
      const T inv = T(1) / l;
      for (int64_t d = 0; d < D; ++d) oi[d] *= inv;
      lse[h * tq + i] = m + std::log(l);
    }
  }
}

// dQ, dK, dV (same layout as Q, K, V) are overwritten. `sc` holds at least 2 * Tk values.
template <typename T>
inline void temporal_bwd_core(const T* Q, const T* K, const T* V, const T* O, const T* dO,
                              const T* lse, T* dQ, T* dK, T* dV, int64_t tq, int64_t tk,
                              int64_t H, int64_t D, bool causal, T scale, T* sc) {
  const int64_t ld = H * D;
  std::fill(dQ, dQ + tq * ld, T(0));
  std::fill(dK, dK + tk * ld, T(0));
  std::fill(dV, dV + tk * ld, T(0));
  T* p = sc;
  T* ds = sc + tk;
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t i = 0; i < tq; ++i) {
      const int64_t off = i * ld + h * D;
      const T* qi = Q + off;
      const T* doi = dO + off;
      const int64_t jn = last_key(causal, i, tq, tk) + 1;
      const T di = dot(doi, O + off, D);  // rowsum(dO * O) = sum_j P_ij dP_ij
      const T li = lse[h * tq + i];
      for (int64_t j = 0; j < jn; ++j) {
        const int64_t kj = j * ld + h * D;
        p[j] = std::exp(scale * dot(qi, K + kj, D) - li);
        ds[j] = p[j] * (dot(doi, V + kj, D) - di) * scale;
      }
      for (int64_t j = 0; j < jn; ++j) {
        const int64_t kj = j * ld + h * D;
        axpy(p[j], doi, dV + kj, D);
        axpy(ds[j], K + kj, dQ + off, D);
        axpy(ds[j], qi, dK + kj, D);
      }
    }
  }
}

// The fp32 cores are cloned for AVX2 + FMA and picked at load time (the extension is built
// for the baseline x86-64 ISA so that it runs anywhere).
__attribute__((target_clones("avx2", "default"))) void temporal_fwd_f32(
    const float* Q, const float* K, const float* V, float* O, float* lse, int64_t tq, int64_t tk,
    int64_t H, int64_t D, bool causal, float scale, float* sc) {
  temporal_fwd_core(Q, K, V, O, lse, tq, tk, H, D, causal, scale, sc);
}

__attribute__((target_clones("avx2", "default"))) void temporal_bwd_f32(
    const float* Q, const float* K, const float* V, const float* O, const float* dO,
    const float* lse, float* dQ, float* dK, float* dV, int64_t tq, int64_t tk, int64_t H,
    int64_t D, bool causal, float scale, float* sc) {
  temporal_bwd_core(Q, K, V, O, dO, lse, dQ, dK, dV, tq, tk, H, D, causal, scale, sc);
}

void temporal_fwd_any(const float* Q, const float* K, const float* V, float* O, float* lse,
                      int64_t tq, int64_t tk, int64_t H, int64_t D, bool causal, float scale,
                      float* sc) {
  temporal_fwd_f32(Q, K, V, O, lse, tq, tk, H, D, causal, scale, sc);
}
void temporal_fwd_any(const double* Q, const double* K, const double* V, double* O, double* lse,
                      int64_t tq, int64_t tk, int64_t H, int64_t D, bool causal, double scale,
                      double* sc) {
  temporal_fwd_core(Q, K, V, O, lse, tq, tk, H, D, causal, scale, sc);
}
void temporal_bwd_any(const float* Q, const float* K, const float* V, const float* O,
                      const float* dO, const float* lse, float* dQ, float* dK, float* dV,
                      int64_t tq, int64_t tk, int64_t H, int64_t D, bool causal, float scale,
                      float* sc) {
  temporal_bwd_f32(Q, K, V, O, dO, lse, dQ, dK, dV, tq, tk, H, D, causal, scale, sc);
}
void temporal_bwd_any(const double* Q, const double* K, const double* V, const double* O,
                      const double* dO, const double* lse, double* dQ, double* dK, double* dV,
                      int64_t tq, int64_t tk, int64_t H, int64_t D, bool causal, double scale,
                      double* sc) {
  temporal_bwd_core(Q, K, V, O, dO, lse, dQ, dK, dV, tq, tk, H, D, causal, scale, sc);
}

// Copy the T frames of position (b, s), all heads, into dst (T, H, D), converting to acc_t.
template <typename scalar_t, typename acc_t>
inline void gather_frames(const scalar_t* x, const Strides& st, int64_t b, int64_t s, int64_t T,
                          int64_t H, int64_t D, acc_t* dst) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* row = x + b * st.b + t * st.t + s * st.s;
    for (int64_t h = 0; h < H; ++h) {
      const scalar_t* src = row + h * st.h;
      acc_t* out = dst + (t * H + h) * D;
      for (int64_t d = 0; d < D; ++d) out[d] = static_cast<acc_t>(src[d]);
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

std::tuple<at::Tensor, at::Tensor> temporal_fwd_cpu(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, bool causal,
                                                    double scale) {
  check_qkv("temporal_attention_fwd", q, k, v);
  const int64_t B = q.size(0), tq = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  const int64_t tk = k.size(1);
  TORCH_CHECK(tq <= tk, "temporal_attention_fwd: Tq = ", tq, " > Tk = ", tk);
  at::Tensor out = at::empty({B, tq, S, H, D}, q.options());
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor lse = at::empty({B, S, H, tq}, q.options().dtype(acc));
  if (out.numel() == 0) return {out, lse};
  TORCH_CHECK(tk > 0, "temporal_attention_fwd: k has no frames");
  const Strides sq(q), sk(k), sv(v);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "temporal_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kp = k.data_ptr<scalar_t>();
    const scalar_t* vp = v.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    acc_t* lp = lse.data_ptr<acc_t>();
    const int64_t ld = H * D;
    at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf((2 * tq + 2 * tk) * ld + tk);
      acc_t *Q = buf.data(), *K = Q + tq * ld, *V = K + tk * ld, *O = V + tk * ld;
      acc_t* sc = O + tq * ld;
      for (int64_t bs = begin; bs < end; ++bs) {
        const int64_t b = bs / S, s = bs % S;
        gather_frames(qp, sq, b, s, tq, H, D, Q);
        gather_frames(kp, sk, b, s, tk, H, D, K);
        gather_frames(vp, sv, b, s, tk, H, D, V);
        temporal_fwd_any(Q, K, V, O, lp + bs * H * tq, tq, tk, H, D, causal,
                         static_cast<acc_t>(scale), sc);
        scatter_frames(O, op, b, s, tq, S, H, D);
      }
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> temporal_bwd_cpu(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, bool causal, double scale) {
  check_qkv("temporal_attention_bwd", q, k, v);
  TORCH_CHECK(grad.sizes() == q.sizes() && out.sizes() == q.sizes(),
              "temporal_attention_bwd: grad_out and out must have q's shape");
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
      std::vector<acc_t> buf((4 * tq + 5 * tk) * ld + 2 * tk);
      acc_t *Q = buf.data(), *O = Q + tq * ld, *G = O + tq * ld, *dQ = G + tq * ld;
      acc_t *K = dQ + tq * ld, *V = K + tk * ld, *dK = V + tk * ld, *dV = dK + tk * ld;
      acc_t* sc = dV + tk * ld;
      for (int64_t bs = begin; bs < end; ++bs) {
        const int64_t b = bs / S, s = bs % S;
        gather_frames(qp, sq, b, s, tq, H, D, Q);
        gather_frames(opp, so, b, s, tq, H, D, O);
        gather_frames(gp, sg, b, s, tq, H, D, G);
        gather_frames(kp, sk, b, s, tk, H, D, K);
        gather_frames(vp, sv, b, s, tk, H, D, V);
        temporal_bwd_any(Q, K, V, O, G, lp + bs * H * tq, dQ, dK, dV, tq, tk, H, D, causal,
                         static_cast<acc_t>(scale), sc);
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

// Rows of one (b, t, h) slice, [r0, r1) of S, into dst (r1 - r0, D) as acc_t.
template <typename scalar_t, typename acc_t>
inline void gather_rows(const scalar_t* x, const Strides& st, int64_t b, int64_t t, int64_t h,
                        int64_t r0, int64_t r1, int64_t D, acc_t* dst) {
  const scalar_t* base = x + b * st.b + t * st.t + h * st.h;
  for (int64_t r = r0; r < r1; ++r) {
    const scalar_t* src = base + r * st.s;
    acc_t* out = dst + (r - r0) * D;
    for (int64_t d = 0; d < D; ++d) out[d] = static_cast<acc_t>(src[d]);
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
          gather_rows(qp, sq, b, t, h, r0, r0 + n, D, Q);
          at::Tensor Pn = blob(P, n, S, acc);
          at::mm_out(Pn, blob(Q, n, D, acc), Kt);
          acc_t* lrow = lp + ((b * T + t) * H + h) * S + r0;
          for (int64_t i = 0; i < n; ++i) {
            acc_t* pi = P + i * S;
            acc_t m = -std::numeric_limits<acc_t>::infinity();
            for (int64_t j = 0; j < S; ++j) m = std::max(m, pi[j]);
            acc_t l = 0;
            for (int64_t j = 0; j < S; ++j) {
              pi[j] = std::exp(sc * (pi[j] - m));
              l += pi[j];
            }
            lrow[i] = sc * m + std::log(l);
            const acc_t inv = acc_t(1) / l;
            for (int64_t j = 0; j < S; ++j) pi[j] *= inv;
          }
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
  check_qkv("spatial_attention_bwd", q, k, v);
  TORCH_CHECK(q.sizes() == k.sizes() && grad.sizes() == q.sizes() && out.sizes() == q.sizes(),
              "spatial_attention_bwd: grad_out, q, k, v and out must have one shape");
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
          gather_rows(qp, sq, b, t, h, r0, r0 + n, D, Q);
          gather_rows(gp, sg, b, t, h, r0, r0 + n, D, G);
          gather_rows(opp, so, b, t, h, r0, r0 + n, D, O);
          at::Tensor Qn = blob(Q, n, D, acc), Gn = blob(G, n, D, acc);
          at::Tensor Pn = blob(P, n, S, acc), dPn = blob(dP, n, S, acc);
          at::mm_out(Pn, Qn, Km.t());
          at::mm_out(dPn, Gn, Vm.t());
          for (int64_t i = 0; i < n; ++i) {
            Di[i] = dot(G + i * D, O + i * D, D);
            acc_t *pi = P + i * S, *dpi = dP + i * S;
            const acc_t li = lrow[r0 + i];
            for (int64_t j = 0; j < S; ++j) {
              pi[j] = std::exp(sc * pi[j] - li);
              dpi[j] = pi[j] * (dpi[j] - Di[i]) * sc;  // dS, scaled for dQ and dK
            }
          }
          dVm.addmm_(Pn.t(), Gn);
          dKm.addmm_(dPn.t(), Qn);
          at::Tensor dQn = blob(dQ, n, D, acc);
          at::mm_out(dQn, dPn, Km);
          for (int64_t i = 0; i < n; ++i) {
            scalar_t* dst = dqp + b * sdst.b + t * sdst.t + (r0 + i) * sdst.s + h * sdst.h;
            for (int64_t d = 0; d < D; ++d) dst[d] = static_cast<scalar_t>(dQ[i * D + d]);
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
