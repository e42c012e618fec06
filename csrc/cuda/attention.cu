// Torch glue for the factorized attention CUDA kernels: argument checks, device guard,
// current stream. Forwards run the plain-CUDA kernels of attention_kernel.cu on the strided
// views as they come. Backwards recompute the probabilities from the saved log-sum-exp with
// ATen batched GEMMs in fp32, in chunks of query rows (spatial) or batch entries (temporal)
// so the score tensor stays within a fixed budget; they are correct, not tuned (the Triton
// backend has the fused backward kernels).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "wmk/attention_checks.h"
#include "wmk/attention_kernel.h"
#include "wmk/cuda_check.h"
#include "wmk/registration.h"

namespace wmk {
namespace {

// fp32 elements of score scratch per backward chunk (256 MiB).
constexpr int64_t kScoreBudget = int64_t(1) << 26;

AttnView view_of(const at::Tensor& x) {
  return {x.data_ptr(), x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}

// The launch parameters shared by both forwards; the caller sets the sizes and `causal`.
AttentionParams fwd_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           at::Tensor& out, at::Tensor& lse, double scale, Dtype dtype) {
  AttentionParams p{};
  p.q = view_of(q);
  p.k = view_of(k);
  p.v = view_of(v);
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.scale = static_cast<float>(scale);
  p.dtype = dtype;
  return p;
}

void check_qkv_cuda(const char* op, const at::Tensor& q, const at::Tensor& k,
                    const at::Tensor& v) {
  check_qkv(op, q, k, v);
  TORCH_CHECK(q.size(4) <= WMK_ATTN_MAX_HEAD_DIM, op, ": head dim ", q.size(4), " > ",
              WMK_ATTN_MAX_HEAD_DIM);
}

std::tuple<at::Tensor, at::Tensor> temporal_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v, bool causal,
                                                     double scale) {
  check_qkv_cuda("temporal_attention_fwd", q, k, v);
  check_scale("temporal_attention_fwd", scale);
  const int64_t B = q.size(0), tq = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  const int64_t tk = k.size(1);
  TORCH_CHECK(tq <= tk, "temporal_attention_fwd: Tq = ", tq, " > Tk = ", tk);
  // one warp per (b, s, h), four per block on grid axis x (at most 2^31 - 1 blocks); frame
  // indices are 32-bit ints in the kernel. Refused before the output is allocated.
  TORCH_CHECK_VALUE(B * S * H <= int64_t(4) * 2147483647 && tk <= 2147483647,
                    "temporal_attention_fwd: the CUDA kernel needs B*S*H <= 4 * (2^31 - 1) "
                    "and Tk < 2^31, got B*S*H = ", B * S * H, " (B = ", B, ", S = ", S,
                    ", H = ", H, ") and Tk = ", tk);
  const Dtype dtype = dtype_code("temporal_attention_fwd", q.scalar_type(), /*float64=*/false);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = at::empty({B, tq, S, H, D}, q.options());
  at::Tensor lse = at::empty({B, S, H, tq}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, lse};
  AttentionParams p = fwd_params(q, k, v, out, lse, scale, dtype);
  p.B = B, p.Tq = tq, p.Tk = tk, p.S = S, p.H = H, p.D = D;
  p.causal = causal;
  check_launch("temporal_attention_fwd",
               temporal_attention_fwd_launch(p, c10::cuda::getCurrentCUDAStream()));
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> spatial_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                    const at::Tensor& v, double scale) {
  check_qkv_cuda("spatial_attention_fwd", q, k, v);
  check_scale("spatial_attention_fwd", scale);
  TORCH_CHECK(q.sizes() == k.sizes(), "spatial_attention_fwd: q and k must have one shape");
  const int64_t B = q.size(0), T = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  TORCH_CHECK(B * T * H < (int64_t(1) << 31) && S <= int64_t(65535) * 16,
              "spatial_attention_fwd: B*T*H must be < 2^31 and S <= 1048560, got ", q.sizes());
  const Dtype dtype = dtype_code("spatial_attention_fwd", q.scalar_type(), /*float64=*/false);
  const c10::cuda::CUDAGuard guard(q.device());
  at::Tensor out = at::empty({B, T, S, H, D}, q.options());
  at::Tensor lse = at::empty({B, T, H, S}, q.options().dtype(at::kFloat));
  if (out.numel() == 0) return {out, lse};
  AttentionParams p = fwd_params(q, k, v, out, lse, scale, dtype);
  p.B = B, p.Tq = T, p.Tk = T, p.S = S, p.H = H, p.D = D;
  check_launch("spatial_attention_fwd",
               spatial_attention_fwd_launch(p, c10::cuda::getCurrentCUDAStream()));
  return {out, lse};
}

// FlashAttention's backward on one chunk, all (…, L, D) fp32 views: q, g (…, n, D);
// k, v (…, Lk, D); lse, delta (…, n). `causal` >= 0: query row i sees the keys
// j <= causal + i only (< 0: every key). Adds to dk, dv; returns dq.
at::Tensor chunk_bwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                     const at::Tensor& g, const at::Tensor& lse, const at::Tensor& delta,
                     int64_t causal, double scale, at::Tensor& dk, at::Tensor& dv) {
  at::Tensor p = at::exp(at::matmul(q, k.transpose(-1, -2)) * scale - lse.unsqueeze(-1));
  at::Tensor ds = at::matmul(g, v.transpose(-1, -2));
  const int64_t n = q.size(-2), lk = k.size(-2);
  at::Tensor hidden;
  if (causal >= 0) {
    at::Tensor i = at::arange(n, q.options().dtype(at::kLong)).unsqueeze(1);
    at::Tensor j = at::arange(lk, q.options().dtype(at::kLong)).unsqueeze(0);
    hidden = j.gt(i + causal);
    // a select, not a product: NaN or inf in a hidden key or value must not reach row i
    p = p.masked_fill(hidden, 0.0);
  }
  dv.add_(at::matmul(p.transpose(-1, -2), g));
  ds = p * (ds - delta.unsqueeze(-1)) * scale;
  if (causal >= 0) ds = ds.masked_fill(hidden, 0.0);
  dk.add_(at::matmul(ds.transpose(-1, -2), q));
  if (causal < 0) return at::matmul(ds, k);
  // dq row i over its visible keys only (a product with a hidden key's NaN is NaN even
  // at ds = 0): one product per row, n = Tq <= a few dozen frames
  std::vector<at::Tensor> rows;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t seen = std::min(lk, std::max<int64_t>(0, causal + r + 1));
    rows.push_back(at::matmul(ds.narrow(-2, r, 1).narrow(-1, 0, seen), k.narrow(-2, 0, seen)));
  }
  return at::cat(rows, -2);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> spatial_bwd_cuda(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, double scale) {
  check_qkv_cuda("spatial_attention_bwd", q, k, v);
  check_spatial_bwd(grad, q, k, v, out, lse, scale);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), T = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  if (q.numel() == 0) {
    return {at::zeros(q.sizes(), q.options()), at::zeros(k.sizes(), k.options()),
            at::zeros(v.sizes(), v.options())};
  }
  // (B, T, H, S, D) fp32 views; the casts are the copies of this unfused path
  auto heads = [](const at::Tensor& x) { return x.to(at::kFloat).permute({0, 1, 3, 2, 4}); };
  at::Tensor qh = heads(q), kh = heads(k), vh = heads(v), gh = heads(grad);
  at::Tensor delta = (grad.to(at::kFloat) * out.to(at::kFloat)).sum(-1).permute({0, 1, 3, 2});
  at::Tensor lf = lse.to(at::kFloat);
  at::Tensor dq = at::empty({B, T, H, S, D}, q.options().dtype(at::kFloat));
  at::Tensor dk = at::zeros({B, T, H, S, D}, q.options().dtype(at::kFloat));
  at::Tensor dv = at::zeros({B, T, H, S, D}, q.options().dtype(at::kFloat));
  const int64_t rows = std::max<int64_t>(1, kScoreBudget / std::max<int64_t>(1, B * T * H * S));
  for (int64_t r0 = 0; r0 < S; r0 += rows) {
    const int64_t n = std::min(rows, S - r0);
    dq.narrow(3, r0, n).copy_(chunk_bwd(qh.narrow(3, r0, n), kh, vh, gh.narrow(3, r0, n),
                                        lf.narrow(3, r0, n), delta.narrow(3, r0, n),
                                        /*causal=*/-1, scale, dk, dv));
  }
  auto back = [&](const at::Tensor& x) {
    return x.permute({0, 1, 3, 2, 4}).contiguous().to(q.scalar_type());
  };
  return {back(dq), back(dk), back(dv)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> temporal_bwd_cuda(
    const at::Tensor& grad, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse, bool causal, double scale) {
  check_qkv_cuda("temporal_attention_bwd", q, k, v);
  check_temporal_bwd(grad, q, k, v, out, lse, scale);
  const c10::cuda::CUDAGuard guard(q.device());
  const int64_t B = q.size(0), tq = q.size(1), S = q.size(2), H = q.size(3), D = q.size(4);
  const int64_t tk = k.size(1);
  if (k.numel() == 0 || q.numel() == 0) {
    return {at::zeros(q.sizes(), q.options()), at::zeros(k.sizes(), k.options()),
            at::zeros(v.sizes(), v.options())};
  }
  // (B, S, H, T, D) fp32 views
  auto frames = [](const at::Tensor& x) { return x.to(at::kFloat).permute({0, 2, 3, 1, 4}); };
  at::Tensor qh = frames(q), kh = frames(k), vh = frames(v), gh = frames(grad);
  at::Tensor delta = (grad.to(at::kFloat) * out.to(at::kFloat)).sum(-1).permute({0, 2, 3, 1});
  at::Tensor lf = lse.to(at::kFloat);
  at::Tensor dq = at::empty({B, S, H, tq, D}, q.options().dtype(at::kFloat));
  at::Tensor dk = at::zeros({B, S, H, tk, D}, q.options().dtype(at::kFloat));
  at::Tensor dv = at::zeros({B, S, H, tk, D}, q.options().dtype(at::kFloat));
  const int64_t per_b = S * H * tq * tk;
  const int64_t nb = std::max<int64_t>(1, kScoreBudget / std::max<int64_t>(1, per_b));
  for (int64_t b0 = 0; b0 < B; b0 += nb) {
    const int64_t n = std::min(nb, B - b0);
    at::Tensor dkc = dk.narrow(0, b0, n), dvc = dv.narrow(0, b0, n);
    dq.narrow(0, b0, n).copy_(chunk_bwd(qh.narrow(0, b0, n), kh.narrow(0, b0, n),
                                        vh.narrow(0, b0, n), gh.narrow(0, b0, n),
                                        lf.narrow(0, b0, n), delta.narrow(0, b0, n),
                                        causal ? tk - tq : -1, scale, dkc, dvc));
  }
  auto back = [&](const at::Tensor& x) {
    return x.permute({0, 3, 1, 2, 4}).contiguous().to(q.scalar_type());
  };
  return {back(dq), back(dk), back(dv)};
}

}  // namespace

TORCH_LIBRARY_IMPL(WMK_CUDA_LIBRARY, WMK_CUDA_DEVICE, m) {
  m.impl("spatial_attention_fwd", &spatial_fwd_cuda);
  m.impl("spatial_attention_bwd", &spatial_bwd_cuda);
  m.impl("temporal_attention_fwd", &temporal_fwd_cuda);
  m.impl("temporal_attention_bwd", &temporal_bwd_cuda);
}

}  // namespace wmk
