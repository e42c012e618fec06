// Every C++ op schema of the `wmk` namespace, in one place. Kernels register their
// implementations per dispatch key in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cu; fake (meta)
// implementations and autograd are registered in Python next to each op (wmkernels/ops).
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(wmk, m) {
  // VQ: z (N, D), codebook (K, D) -> int64 (N,) nearest code; metric "l2" | "cosine".
  m.def("vq_lookup(Tensor z, Tensor codebook, str metric) -> Tensor");
  // VQ: in-place EMA k-means update with Laplace smoothing (see wmkernels/reference/vq.py).
  m.def(
      "vq_ema_update_(Tensor(a!) codebook, Tensor(b!) cluster_size, Tensor(c!) embed_sum, "
      "Tensor z, Tensor indices, float decay, float eps) -> ()");

  // ---- Factorized video attention (wmkernels/ops/attention.py) ----
  // q, k, v: (B, T, S, H, D), any strides with unit stride on D. Forwards return the
  // contiguous output and the log-sum-exp of each query row (fp32; float64 for float64),
  // which the backwards use to recompute probabilities.
  // Spatial: softmax over S per (b, t, h); lse (B, T, H, S).
  m.def("spatial_attention_fwd(Tensor q, Tensor k, Tensor v, float scale) -> (Tensor, Tensor)");
  m.def(
      "spatial_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
      "Tensor lse, float scale) -> (Tensor, Tensor, Tensor)");
  // Temporal: softmax over frames per (b, s, h); q (B, Tq, ...), k/v (B, Tk, ...), Tq <= Tk,
  // causal mask bottom-right aligned (query i sees keys <= Tk - Tq + i); lse (B, S, H, Tq).
  m.def(
      "temporal_attention_fwd(Tensor q, Tensor k, Tensor v, bool causal, float scale) "
      "-> (Tensor, Tensor)");
  m.def(
      "temporal_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
      "Tensor lse, bool causal, float scale) -> (Tensor, Tensor, Tensor)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, mod) {
  mod.def("build_info", [] {
    pybind11::dict info;
#ifdef WMK_WITH_CUDA
    info["cuda"] = true;
#else
    info["cuda"] = false;
#endif
    info["torch"] = TORCH_VERSION;
    info["threads"] = at::get_num_threads();
    return info;
  });
}
