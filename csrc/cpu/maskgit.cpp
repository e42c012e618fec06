// MaskGIT sampling and re-masking on the CPU.
//
// Sampler, per row of logits (rows split across threads): the row is read from memory once,
// converted to fp32 into an L1-resident buffer (NaN -> -inf, +inf -> FLT_MAX) while its max
// and first argmax are found; everything else runs on that buffer:
//   1. s = sum exp(x - max)          confidence = exp(x_tok - max) / s (untempered, full V)
//   2. top-k threshold, when asked   bisection on integer keys, vectorized counts: O(32 V)
//   3. w = exp((x - max) / T) for x >= threshold, and the token by inverse CDF with one
//      Philox uniform per row (exact sampling from softmax(x / T) restricted to the top k).
// Gumbel-max would need a uniform and two logarithms per logit, which costs more on a CPU
// than the whole eager pipeline; the inverse CDF needs one exp per logit (a vectorizable
// polynomial below) and one random number per row. The GPU kernels use Gumbel-max, whose
// argmax is a parallel reduction. Random streams therefore differ per backend; the
// distributions do not.
//
// Re-masking, per batch row: the scores of the unknown positions (log confidence + choice
// temperature * Gumbel, or Gumbel alone for the random order; Philox stream 1) go through
// std::nth_element on (score, index) pairs, so exactly min(k, unknown) lowest stay masked
// with ties to the lower index. Known positions are never read, their logits included; in
// the random order the scores do not depend on the logits, so the selection runs first and
// only the positions revealed by this step are sampled.
//
// Roofline (maskgit-genie scaled to B2 N256 V1024 fp32, 2 MB of logits read once): the
// work per logit is two 8-wide polynomial exps (untempered sum, tempered weights), a
// compare and an add, ~40 flops; at ~10 GB/s per core the read is ~0.2 ms, the arithmetic
// ~1 ms per core, so the kernel is compute-bound (measured ~2.3 ms on one shared core,
// against ~27 ms for eager softmax + multinomial + gather, see the maskgit bench). Inputs
// of every float dtype are computed in fp32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "wmk/maskgit_checks.h"
#include "wmk/maskgit_philox.h"

// The selects of the exp polynomial and the NaN/inf policy are if-converted (and the loops
// vectorized) only when float compares are not assumed to trap; nothing here relies on
// floating-point exceptions.
#pragma GCC optimize("no-trapping-math")

// after the pragma, so that the polynomial is compiled under it as well
#include "wmk/simd_math.h"

namespace wmk {
namespace {

constexpr float kFloatMax = std::numeric_limits<float>::max();
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr uint32_t kSampleStream = 0, kChoiceStream = 1;

// exp(x) for x <= 0, branch-free so that the loops below vectorize (wmk/simd_math.h). Below
// -87 the result is 0, so -inf logits get exactly zero weight.
inline float exp_nonpos(float x) {
  float e = x < -87.0f ? -87.0f : x;
  exp_cephes(e);
  return x < -87.0f ? 0.0f : e;
}

// Sums run in kLanes independent partial sums: without -ffast-math the compiler may not
// reorder a float reduction, but it does vectorize independent lanes.
constexpr int64_t kLanes = 16;

// sum_v exp((x_v - m) * inv_t) over x_v >= thr, weights stored in w.
__attribute__((target_clones("avx2", "default"))) float weights(const float* __restrict__ x,
                                                                 float* __restrict__ w,
                                                                 int64_t V, float m,
                                                                 float inv_t, float thr) {
  float acc[kLanes] = {};
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) {
      const float e = exp_nonpos((x[v + j] - m) * inv_t);
      const float wj = x[v + j] >= thr ? e : 0.0f;
      w[v + j] = wj;
      acc[j] += wj;
    }
  }
  for (; v < V; ++v) {
    w[v] = x[v] >= thr ? exp_nonpos((x[v] - m) * inv_t) : 0.0f;
    acc[0] += w[v];
  }
  float s = 0.0f;
  for (int64_t j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

__attribute__((target_clones("avx2", "default"))) float sum_exp(const float* x, int64_t V,
                                                                 float m) {
  float acc[kLanes] = {};
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += exp_nonpos(x[v + j] - m);
  }
  for (; v < V; ++v) acc[0] += exp_nonpos(x[v] - m);
  float s = 0.0f;
  for (int64_t j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

// Largest value of x[0..V), lane-wise so that it vectorizes (no NaN in x).
__attribute__((target_clones("avx2", "default"))) float row_max(const float* x, int64_t V) {
  float acc[kLanes];
  for (int64_t j = 0; j < kLanes; ++j) acc[j] = kNegInf;
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] = x[v + j] > acc[j] ? x[v + j] : acc[j];
  }
  for (; v < V; ++v) acc[0] = x[v] > acc[0] ? x[v] : acc[0];
  float m = kNegInf;
  for (int64_t j = 0; j < kLanes; ++j) m = acc[j] > m ? acc[j] : m;
  return m;
}

inline float clean(float x) {
  if (x != x) return kNegInf;
  return x > kFloatMax ? kFloatMax : x;
}

template <typename T>
void convert_row(const T* row, int64_t V, float* buf) {
  for (int64_t v = 0; v < V; ++v) buf[v] = clean(static_cast<float>(row[v]));
}

__attribute__((target_clones("avx2", "default"))) void convert_row_f32(const float* row,
                                                                        int64_t V, float* buf) {
  for (int64_t v = 0; v < V; ++v) {
    const float x = row[v];
    buf[v] = x != x ? kNegInf : (x > kFloatMax ? kFloatMax : x);
  }
}

// Row -> fp32 buffer with the NaN/inf policy; returns the first argmax (-1: no finite value).
template <typename T>
int64_t load_row(const T* row, int64_t V, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    convert_row_f32(row, V, buf);
  } else {
    convert_row(row, V, buf);
  }
  const float m = row_max(buf, V);
  if (!(m > kNegInf)) return -1;
  int64_t v = 0;
  while (buf[v] != m) ++v;
  return v;
}

// Order-preserving map of a float (no NaN) to int32, and back.
inline int32_t sortable_key(float x) {
  int32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b ^ ((b >> 31) & 0x7fffffff);
}

inline float from_sortable_key(int32_t k) {
  const int32_t b = k ^ ((k >> 31) & 0x7fffffff);
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

__attribute__((target_clones("avx2", "default"))) void to_keys(const float* __restrict__ x,
                                                                int32_t* __restrict__ key,
                                                                int64_t V) {
  for (int64_t v = 0; v < V; ++v) key[v] = sortable_key(x[v]);
}

// #{v : key[v] >= t}, in lanes (vectorized).
__attribute__((target_clones("avx2", "default"))) int64_t count_ge(const int32_t* key,
                                                                    int64_t V, int32_t t) {
  int32_t acc[kLanes] = {};
  int64_t v = 0;
  for (; v + kLanes <= V; v += kLanes) {
    for (int64_t j = 0; j < kLanes; ++j) acc[j] += key[v + j] >= t;
  }
  int64_t n = 0;
  for (; v < V; ++v) n += key[v] >= t;
  for (int64_t j = 0; j < kLanes; ++j) n += acc[j];
  return n;
}

// The k-th largest of x[0..V) (1 <= k < V), exactly: bisection over the 32-bit
// order-preserving keys for the largest t with #(key >= t) >= k. Each of the <= 32 steps is
// one vectorized counting pass over the L1-resident keys; no data-dependent branches.
float kth_largest(const float* x, int64_t V, int64_t k, float* work) {
  static_assert(sizeof(float) == sizeof(int32_t), "keys reuse the float scratch");
  int32_t* key = reinterpret_cast<int32_t*>(work);
  to_keys(x, key, V);
  int64_t lo = std::numeric_limits<int32_t>::min(), hi = std::numeric_limits<int32_t>::max();
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (count_ge(key, V, static_cast<int32_t>(mid)) >= k) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return from_sortable_key(static_cast<int32_t>(lo));
}

struct Sample {
  int64_t token;
  float logp;  // log of the untempered confidence; -inf for a row without a finite logit
};

// Sum of n <= kBlock weights in lanes (vectorized).
__attribute__((target_clones("avx2", "default"))) float block_sum(const float* w, int64_t n) {
  float acc[8] = {};
  int64_t v = 0;
  for (; v + 8 <= n; v += 8) {
    for (int64_t j = 0; j < 8; ++j) acc[j] += w[v + j];
  }
  for (; v < n; ++v) acc[0] += w[v];
  float s = 0.0f;
  for (int64_t j = 0; j < 8; ++j) s += acc[j];
  return s;
}

// Index of the first positive weight whose running sum exceeds target (inverse CDF). Two
// levels, so that the dependent chain of additions is V / kBlock + kBlock long instead of
// V: block sums first (vectorized), then the weights of the block that holds the target.
// Running sums are in double so that rounding cannot skip a small weight. If rounding
// leaves target at or above the total, the last positive weight is taken.
int64_t inverse_cdf(const float* w, int64_t V, double target) {
  constexpr int64_t kBlock = 64;
  double c = 0.0;
  int64_t v0 = 0;
  for (; v0 < V; v0 += kBlock) {
    const double b = block_sum(w + v0, std::min(kBlock, V - v0));
    if (c + b > target) break;
    c += b;
  }
  if (v0 >= V) {
    int64_t v = V - 1;
    while (v > 0 && !(w[v] > 0.0f)) --v;
    return v;
  }
  int64_t last = v0;
  for (int64_t v = v0; v < std::min(v0 + kBlock, V); ++v) {
    if (w[v] > 0.0f) {
      c += w[v];
      last = v;
      if (c > target) return v;
    }
  }
  return last;
}

struct Settings {
  float temperature;
  int64_t top_k;
  uint64_t key;
};

// Samples one row; buf and work hold V floats each (thread-local scratch).
template <typename T>
Sample sample_row(const T* row, int64_t V, uint64_t row_id, const Settings& s, float* buf,
                  float* work) {
  const int64_t arg = load_row(row, V, buf);
  if (arg < 0) return {-1, kNegInf};
  const float m = buf[arg];
  // log p = (x - max) - log(sum): never forms max + log(sum), which rounds at +-FLT_MAX
  const float log_sum = std::log(sum_exp(buf, V, m));
  int64_t tok = arg;
  if (s.temperature > 0.0f && V > 1) {
    float thr = kNegInf;
    if (s.top_k > 0 && s.top_k < V) thr = kth_largest(buf, V, s.top_k, work);
    // a subnormal temperature must not make (x - max) * inv_t = 0 * inf = NaN
    const float inv_t = std::min(1.0f / s.temperature, kFloatMax);
    const float total = weights(buf, work, V, m, inv_t, thr);
    const auto bits = philox::draw(s.key, 0, row_id, kSampleStream);
    tok = inverse_cdf(work, V, philox::uniform53(bits.x, bits.y) * total);
  }
  return {tok, (buf[tok] - m) - log_sum};
}

float gumbel(uint64_t key, uint64_t position) {
  const float u = philox::uniform(philox::draw(key, 0, position, kChoiceStream).x);
  return -std::log(-std::log(u));
}

uint64_t read_key(const at::Tensor& seed) {
  TORCH_CHECK(seed.numel() == 1 && seed.scalar_type() == at::kLong && seed.is_cpu(),
              "maskgit: seed must be a one-element int64 CPU tensor");
  return static_cast<uint64_t>(seed.item<int64_t>());
}

// f(row, buf, work) for every row of a (R, V) view, with V-float scratch buffers per thread.
template <typename F>
void for_rows(const at::Tensor& logits, F&& f) {
  const int64_t V = logits.size(-1);
  at::parallel_for(0, logits.size(0), 16, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(2 * V);
    for (int64_t r = begin; r < end; ++r) f(r, scratch.data(), scratch.data() + V);
  });
}

std::tuple<at::Tensor, at::Tensor> maskgit_sample_cpu(const at::Tensor& logits,
                                                      double temperature, int64_t top_k,
                                                      const at::Tensor& seed) {
  check_maskgit_sample(logits, temperature, top_k);
  const int64_t R = logits.size(0), V = logits.size(1);
  at::Tensor tokens = at::empty({R}, logits.options().dtype(at::kLong));
  at::Tensor conf = at::empty({R}, logits.options().dtype(at::kFloat));
  if (R == 0) return {tokens, conf};
  const Settings s{static_cast<float>(temperature), top_k, read_key(seed)};
  at::Tensor x = logits.stride(1) == 1 ? logits : logits.contiguous();
  int64_t* tp = tokens.data_ptr<int64_t>();
  float* cp = conf.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "maskgit_sample",
                                  [&] {
    const scalar_t* base = x.const_data_ptr<scalar_t>();
    const int64_t stride = x.stride(0);
    for_rows(x, [&](int64_t r, float* buf, float* work) {
      const Sample smp = sample_row(base + r * stride, V, r, s, buf, work);
      tp[r] = smp.token;
      cp[r] = std::exp(smp.logp);
    });
  });
  return {tokens, conf};
}

// out_mask of one batch row: the k lowest (score, index) of its unknown positions.
void remask_row(const float* score, const bool* mask, int64_t N, int64_t k, bool* out_mask,
                std::vector<std::pair<float, int64_t>>& unknown) {
  unknown.clear();
  for (int64_t n = 0; n < N; ++n) {
    out_mask[n] = false;
    if (mask[n]) unknown.emplace_back(score[n], n);
  }
  const int64_t U = static_cast<int64_t>(unknown.size());
  k = std::min(std::max<int64_t>(k, 0), U);
  if (k > 0 && k < U) std::nth_element(unknown.begin(), unknown.begin() + k, unknown.end());
  for (int64_t i = 0; i < k; ++i) out_mask[unknown[i].second] = true;
}

void remask(const float* score, const bool* mask, const int64_t* num_masked, int64_t B,
            int64_t N, bool* out_mask) {
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<std::pair<float, int64_t>> unknown;
    unknown.reserve(N);
    for (int64_t b = begin; b < end; ++b) {
      remask_row(score + b * N, mask + b * N, N, num_masked[b], out_mask + b * N, unknown);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> maskgit_step_cpu(
    const at::Tensor& logits, const at::Tensor& tokens, const at::Tensor& mask,
    const at::Tensor& num_masked, double temperature, int64_t top_k, double choice_temperature,
    bool random_order, const at::Tensor& seed) {
  check_maskgit_step(logits, tokens, mask, num_masked, temperature, top_k, choice_temperature);
  const int64_t B = logits.size(0), N = logits.size(1), V = logits.size(2);
  at::Tensor out_tokens = at::empty({B, N}, tokens.options());
  at::Tensor out_mask = at::empty({B, N}, mask.options());
  if (B * N == 0) return {out_tokens, out_mask};
  const Settings s{static_cast<float>(temperature), top_k, read_key(seed)};
  const float ct = static_cast<float>(choice_temperature);
  at::Tensor x = logits.stride(2) == 1 ? logits : logits.contiguous();
  at::Tensor tk = tokens.contiguous(), mk = mask.contiguous(), nm = num_masked.contiguous();
  const bool* mp = mk.const_data_ptr<bool>();
  const int64_t* kp = nm.const_data_ptr<int64_t>();
  bool* omp = out_mask.data_ptr<bool>();
  std::vector<float> score(B * N);
  std::vector<int64_t> sampled(B * N);
  if (random_order) {
    at::parallel_for(0, B * N, 1024, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        if (mp[i]) score[i] = gumbel(s.key, i);
      }
    });
    remask(score.data(), mp, kp, B, N, omp);
  }
  // sample the positions whose token is used: all unknown ones in the confidence order (their
  // scores need it), the revealed ones in the random order; known rows are never read
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "maskgit_step", [&] {
    const scalar_t* base = x.const_data_ptr<scalar_t>();
    const int64_t sb = x.stride(0), sn = x.stride(1);
    at::parallel_for(0, B * N, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> scratch(2 * V);
      for (int64_t i = begin; i < end; ++i) {
        if (!mp[i] || (random_order && omp[i])) continue;
        const int64_t b = i / N, n = i % N;
        const Sample smp = sample_row(base + b * sb + n * sn, V, static_cast<uint64_t>(i), s,
                                      scratch.data(), scratch.data() + V);
        sampled[i] = smp.token;
        if (!random_order) score[i] = ct > 0.0f ? smp.logp + ct * gumbel(s.key, i) : smp.logp;
      }
    });
  });
  if (!random_order) remask(score.data(), mp, kp, B, N, omp);
  const int64_t* tp = tk.const_data_ptr<int64_t>();
  int64_t* otp = out_tokens.data_ptr<int64_t>();
  for (int64_t i = 0; i < B * N; ++i) otp[i] = mp[i] && !omp[i] ? sampled[i] : tp[i];
  return {out_tokens, out_mask};
}

}  // namespace

TORCH_LIBRARY_IMPL(wmk, CPU, m) {
  m.impl("maskgit_sample", &maskgit_sample_cpu);
  m.impl("maskgit_step", &maskgit_step_cpu);
}

}  // namespace wmk
