"""VQ nearest-codebook lookup, quantization and EMA update, written the way VQ-VAE repos
write them today: `cdist + argmin`, gathers, and per-code counts and sums for the EMA.

These define the semantics the kernels must match:
- `l2`: argmin_k ||z - c_k||^2. `cosine`: argmax_k <z/|z|, c_k/|c_k|>.
- ties go to the smallest index.
- non-finite values (the one policy of every backend), per pair (row of z, code):
  if either holds NaN, the distance is NaN, which counts as the smallest (torch.argmin);
  else if either holds +-inf, the distance is +inf. So a row of `z` holding NaN maps to
  code 0; a code holding NaN is chosen by every row without NaN (the first such code); a code
  holding +-inf is never chosen while a finite code exists; a row of `z` holding +-inf
  (and no NaN) maps to the first NaN code, or to code 0 if no code holds NaN.
- EMA update: a row of `z` holding NaN or inf changes only the statistics and the code
  of its own index (to non-finite values); the other codes are untouched by it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vq_distances(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """(N, D) x (K, D) -> (N, K) distances to minimize, in fp32 (float64 stays float64)."""
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    z, codebook = z.to(dtype), codebook.to(dtype)
    if metric == "l2":
        return torch.cdist(z, codebook)
    return -(F.normalize(z, dim=-1) @ F.normalize(codebook, dim=-1).t())


def vq_lookup(z: torch.Tensor, codebook: torch.Tensor, metric: str = "l2") -> torch.Tensor:
    """Nearest code per row of z (N, D) -> int64 (N,): the eager `cdist(...).argmin(-1)`,
    with the non-finite policy of the module docstring."""
    if z.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=z.device)
    d = vq_distances(z, codebook, metric)
    # cdist's own non-finite results depend on its algorithm (inf - inf in its GEMM form),
    # so the policy is applied explicitly
    inf = z.isinf().any(-1)[:, None] | codebook.isinf().any(-1)[None, :]
    nan = z.isnan().any(-1)[:, None] | codebook.isnan().any(-1)[None, :]
    return d.masked_fill(inf, float("inf")).masked_fill(nan, float("nan")).argmin(-1)


def vq_ema_update_(codebook, cluster_size, embed_sum, z, indices, decay=0.99, eps=1e-5):
    """In-place EMA k-means codebook update with Laplace smoothing (VQ-VAE-2, Sonnet's
    VectorQuantizerEMA without its zero-debiasing), from per-code counts and sums (fp32
    accumulation for fp16/bf16 state; a sum over a one-hot GEMM would spread one NaN row of
    z to every code):

        cluster_size <- decay * cluster_size + (1 - decay) * counts
        embed_sum    <- decay * embed_sum    + (1 - decay) * onehot^T z
        n = sum(cluster_size); smoothed = (cluster_size + eps) / (n + K eps) * n
        codebook     <- embed_sum / smoothed[:, None]
    """
    K = codebook.shape[0]
    acc = torch.float64 if codebook.dtype == torch.float64 else torch.float32
    counts = torch.bincount(indices, minlength=K).to(codebook.dtype)
    z = z.to(codebook.dtype).to(acc)
    sums = z.new_zeros(K, z.shape[1]).index_add_(0, indices, z).to(codebook.dtype)
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + K * eps) * n
    codebook.copy_(embed_sum / smoothed.unsqueeze(1))
