"""VectorQuantizer: a VQ layer on the fused lookup, with EMA codebook, dead-code restart and
k-means init. Argument names follow vector-quantize-pytorch's `VectorQuantize` where they
mean the same thing, so switching is a rename of the import."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels import _checks
from wmkernels.ops.vq import METRICS, vq_ema_update_, vq_lookup, vq_quantize


class VectorQuantizer(nn.Module):
    """Quantize (..., dim) vectors to the nearest of `codebook_size` codes.

    Args:
        dim: vector size D.
        codebook_size: number of codes K.
        metric: "l2" or "cosine".
        commitment_weight: beta of the VQ-VAE commitment loss.
        ema_decay: None -> the codebook is a Parameter trained by the codebook loss;
            a float -> EMA k-means updates in training (VQ-VAE-2), codebook loss dropped.
        dead_code_threshold: in training, codes whose usage (EMA count, or count in the
            batch without EMA) falls below this are replaced by random vectors of the batch.
        kmeans_init: initialize the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations for kmeans_init.
        eps: Laplace smoothing of the EMA counts (> 0).
        backend: passed to the ops (None = automatic).

    forward(x) -> (quantized, indices, loss): quantized like x with straight-through
    gradient, indices int64 x.shape[:-1], loss a scalar. After each forward,
    `self.perplexity` holds exp(entropy) of the batch's code usage (K = all used evenly).

    A training batch holding NaN or inf leaves the codebook untouched (no EMA update, no
    dead-code restart, k-means init postponed) and warns; an empty first batch postpones the
    k-means init silently.

    Raises: TypeError / ValueError for arguments of the wrong type or out of range (dim,
    codebook_size >= 1; metric; commitment_weight, dead_code_threshold >= 0; ema_decay in
    [0, 1] or None; kmeans_iters >= 0; eps > 0; all finite).
    """

    def __init__(self, dim: int, codebook_size: int, *, metric: str = "l2",
                 commitment_weight: float = 0.25, ema_decay: float | None = None,
                 dead_code_threshold: float = 0.0, kmeans_init: bool = False,
                 kmeans_iters: int = 10, eps: float = 1e-5, backend: str | None = None):
        super().__init__()
        _checks.integer("dim", dim, low=1)
        _checks.integer("codebook_size", codebook_size, low=1)
        _checks.choice("metric", metric, METRICS)
        _checks.number("commitment_weight", commitment_weight, low=0.0)
        if ema_decay is not None:
            _checks.number("ema_decay", ema_decay, low=0.0, high=1.0)
        _checks.number("dead_code_threshold", dead_code_threshold, low=0.0)
        _checks.integer("kmeans_iters", kmeans_iters, low=0)
        _checks.number("eps", eps, low=0.0, low_open=True)
        self.dim, self.codebook_size, self.metric = dim, codebook_size, metric
        self.commitment_weight, self.ema_decay, self.eps = commitment_weight, ema_decay, eps
        self.dead_code_threshold, self.kmeans_iters = dead_code_threshold, kmeans_iters
        self.backend = backend
        init = torch.randn(codebook_size, dim) * (dim ** -0.5)
        if ema_decay is None:
            self.codebook = nn.Parameter(init)
        else:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
            self.register_buffer("embed_sum", init.clone())
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        # A Python mirror of `initted`: torch.compile guards on it instead of branching on
        # a tensor (load_state_dict refreshes it).
        self._kmeans_pending = kmeans_init
        self.register_load_state_dict_post_hook(VectorQuantizer._sync_kmeans_pending)
        self.register_buffer("perplexity", torch.tensor(float(codebook_size)))

    def forward(self, x: torch.Tensor):
        if x.shape[-1] != self.dim:
            raise ValueError(f"x's last dim must be {self.dim}, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.dim)
        if self.training and self._kmeans_pending:
            self._kmeans_init(flat.detach())
        codebook = self.codebook.to(x.dtype)
        quantized, indices, loss = vq_quantize(
            x, codebook, metric=self.metric, commitment_weight=self.commitment_weight,
            backend=self.backend)
        if self.ema_decay is not None:
            # the codebook follows the EMA, so only the commitment term trains anything
            z = F.normalize(x, dim=-1) if self.metric == "cosine" else x
            if x.numel():
                loss = self.commitment_weight * F.mse_loss(z, quantized.detach())
        flat_idx = indices.reshape(-1)
        counts = torch.bincount(flat_idx, minlength=self.codebook_size).float()
        with torch.no_grad():
            self._track_usage(counts)
            if self.training:
                self._train_codebook(flat.detach(), flat_idx, counts)
        return quantized, indices, loss

    def _codebook_state(self) -> list[torch.Tensor]:
        extra = [self.cluster_size, self.embed_sum] if self.ema_decay is not None else []
        return [self.codebook, *extra]

    def _train_codebook(self, flat: torch.Tensor, flat_idx: torch.Tensor,
                        counts: torch.Tensor) -> None:
        """EMA update and dead-code restarts, only from a finite batch: one NaN would reach
        the EMA sums (and, through restarts, the codes themselves), after which every vector
        maps to the poisoned code. Compiled graphs keep the old state by a select instead of
        a branch (and cannot warn)."""
        if torch.compiler.is_compiling():
            finite = flat.isfinite().all()
            old = [t.clone() for t in self._codebook_state()]
            self._update_codebook(flat, flat_idx, counts)
            for t, before in zip(self._codebook_state(), old, strict=True):
                # .data: a Parameter codebook may be saved for this step's backward
                t.data.copy_(torch.where(finite, t, before))
            return
        if not bool(flat.isfinite().all()):
            warnings.warn("VectorQuantizer: the training batch holds NaN or inf; the codebook "
                          "is left untouched (no EMA update, no dead-code restart)",
                          RuntimeWarning, stacklevel=3)
            return
        self._update_codebook(flat, flat_idx, counts)

    def _update_codebook(self, flat: torch.Tensor, flat_idx: torch.Tensor,
                         counts: torch.Tensor) -> None:
        if self.ema_decay is not None and flat_idx.numel():
            vq_ema_update_(self.codebook, self.cluster_size, self.embed_sum,
                           flat.to(self.codebook.dtype), flat_idx, decay=self.ema_decay,
                           eps=self.eps, backend=self.backend)
        self._restart_dead_codes(flat, counts)

    @staticmethod
    def _sync_kmeans_pending(module, incompatible_keys) -> None:
        module._kmeans_pending = not bool(module.initted)

    def _track_usage(self, counts: torch.Tensor) -> None:
        total = counts.sum()
        p = counts / total.clamp_min(1)
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        # an empty batch keeps the last value; a select, not a branch, keeps compiled graphs whole
        self.perplexity.copy_(torch.where(total > 0, perplexity, self.perplexity))

    def _restart_dead_codes(self, flat: torch.Tensor, counts: torch.Tensor) -> None:
        if self.dead_code_threshold <= 0 or flat.shape[0] == 0:
            return
        usage = self.cluster_size if self.ema_decay is not None else counts
        if torch.compiler.is_compiling():
            self._restart_dead_codes_fixed_shape(flat, usage < self.dead_code_threshold)
            return
        dead = torch.nonzero(usage < self.dead_code_threshold).flatten()
        if dead.numel() == 0:
            return
        pick = torch.randint(0, flat.shape[0], (dead.numel(),), device=flat.device)
        fresh = flat[pick].to(self.codebook.dtype)
        self.codebook.data[dead] = fresh
        if self.ema_decay is not None:
            # restart the statistics so the next EMA step keeps the new code where it is
            self.cluster_size[dead] = self.dead_code_threshold
            self.embed_sum[dead] = fresh * self.dead_code_threshold

    def _restart_dead_codes_fixed_shape(self, flat: torch.Tensor, dead: torch.Tensor) -> None:
        """The restart with static shapes, for compiled graphs: a candidate vector for every
        code, kept where the code is dead. (Eager keeps the one-draw-per-dead-code stream,
        which seeded training results depend on; compiled RNG differs from eager anyway.)"""
        pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        fresh = flat[pick].to(self.codebook.dtype)
        self.codebook.data.copy_(torch.where(dead[:, None], fresh, self.codebook))
        if self.ema_decay is not None:
            thr = self.dead_code_threshold
            self.cluster_size.copy_(torch.where(dead, thr, self.cluster_size))
            self.embed_sum.copy_(torch.where(dead[:, None], fresh * thr, self.embed_sum))

    @torch.no_grad()
    def _kmeans_init(self, flat: torch.Tensor) -> None:
        """k-means++ seeding, then Lloyd iterations with the fused lookup as the assignment
        step, on the first training batch. An empty batch postpones it (nothing to cluster),
        and so does one holding NaN or inf (with a warning)."""
        if flat.shape[0] == 0:
            return
        if not bool(flat.isfinite().all()):
            warnings.warn("VectorQuantizer: the first training batch holds NaN or inf; the "
                          "k-means init waits for a finite batch", RuntimeWarning, stacklevel=3)
            return
        K = self.codebook_size
        data = flat.to(self.codebook.dtype)
        if self.metric == "cosine":
            data = F.normalize(data, dim=-1)
        centers = self._kmeans_pp(data[torch.randperm(data.shape[0])[:16384]], K)
        for _ in range(self.kmeans_iters):
            idx = vq_lookup(data, centers, metric=self.metric, backend=self.backend)
            counts = torch.bincount(idx, minlength=K).to(data.dtype)
            sums = torch.zeros_like(centers).index_add_(0, idx, data)
            used = counts > 0
            centers[used] = sums[used] / counts[used, None]
        idx = vq_lookup(data, centers, metric=self.metric, backend=self.backend)
        counts = torch.bincount(idx, minlength=K).to(data.dtype)
        self.codebook.data.copy_(centers)
        if self.ema_decay is not None:
            self.cluster_size.copy_(counts)
            self.embed_sum.copy_(centers * counts[:, None])
        self.initted.fill_(True)
        self._kmeans_pending = False

    @staticmethod
    def _kmeans_pp(data: torch.Tensor, K: int) -> torch.Tensor:
        """k-means++ seeds: each new center drawn with probability ~ squared distance to the
        nearest center so far (Arthur & Vassilvitskii 2007)."""
        centers = data.new_empty(K, data.shape[1])
        centers[0] = data[torch.randint(0, data.shape[0], ())]
        nearest = (data - centers[0]).pow(2).sum(1)
        for k in range(1, K):
            total = nearest.sum()
            if total > 0:
                pick = torch.multinomial(nearest / total, 1)[0]
            else:  # fewer distinct points than codes: repeat points
                pick = torch.randint(0, data.shape[0], ())
            centers[k] = data[pick]
            nearest = torch.minimum(nearest, (data - centers[k]).pow(2).sum(1))
        return centers

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, codebook_size={self.codebook_size}, metric={self.metric!r}, "
                f"ema_decay={self.ema_decay}")
