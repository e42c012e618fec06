"""Frozen-feature probes: how much of the world's ground truth a representation exposes.

Features are token sets (N, L, C) computed once under no_grad from a frozen encoder (or raw
pixel patches, the baseline). Two probe heads, trained on a train split and scored on a
held-out split, one output per attribute:

- linear: one linear map of the flattened tokens. (I-JEPA's linear probe average-pools the
  tokens first; our attributes include positions, which average pooling of patch tokens
  erases for pixels and encoders alike, so the flat readout is the fair linear baseline.)
- attentive (V-JEPA): a learned query cross-attends over the tokens (with a learned
  position embedding per token), then a linear head.

Attributes are a dict name -> tensor (N,): integer tensors are classes (scored by
accuracy), floating tensors are regressed after standardization (scored by R^2).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

PROBES = ("linear", "attentive")


@torch.no_grad()
def extract_features(fn: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor,
                     batch_size: int = 64) -> torch.Tensor:
    """Apply `fn` (inputs[i:j] -> (j - i, ..., C)) in batches; returns float32 (N, L, C)
    with every non-batch, non-channel axis flattened into L."""
    out = [fn(inputs[i:i + batch_size]) for i in range(0, inputs.shape[0], batch_size)]
    z = torch.cat(out)
    return z.reshape(z.shape[0], -1, z.shape[-1]).float()


def pixel_tokens(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """Raw-pixel baseline features: frames (N, C, H, W) -> patches (N, H*W/p^2, C*p*p)."""
    n, c, h, w = frames.shape
    x = frames.unfold(2, patch, patch).unfold(3, patch, patch)  # (N, C, h, w, p, p)
    return x.permute(0, 2, 3, 1, 4, 5).reshape(n, (h // patch) * (w // patch), -1).float()


def _heads(attributes: dict[str, torch.Tensor], width: int) -> nn.ModuleDict:
    return nn.ModuleDict({
        k: nn.Linear(width, int(v.max()) + 1 if not v.is_floating_point() else 1)
        for k, v in attributes.items()})


class LinearProbe(nn.Module):
    def __init__(self, tokens: int, dim: int, attributes: dict[str, torch.Tensor]):
        super().__init__()
        self.norm = nn.LayerNorm(tokens * dim, elementwise_affine=False)
        self.heads = _heads(attributes, tokens * dim)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.norm(z.flatten(1))
        return {k: h(x) for k, h in self.heads.items()}


class AttentiveProbe(nn.Module):
    def __init__(self, tokens: int, dim: int, attributes: dict[str, torch.Tensor],
                 width: int = 64, heads: int = 4):
        super().__init__()
        self.heads_n = heads
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
        self.pos = nn.Parameter(torch.randn(tokens, width) * 0.02)
        self.query = nn.Parameter(torch.randn(width) * 0.02)
        self.kv = nn.Linear(width, 2 * width)
        self.norm = nn.LayerNorm(width)
        self.heads = _heads(attributes, width)

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        n = z.shape[0]
        x = self.inp(z) + self.pos
        k, v = self.kv(x).unflatten(-1, (2, self.heads_n, -1)).unbind(dim=2)  # (N, L, H, D)
        q = self.query.view(1, self.heads_n, 1, -1).expand(n, -1, -1, -1)
        # One query token: a cross-attention readout, far off any hot path, so plain SDPA.
        out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        x = self.norm(out.reshape(n, -1))
        return {k_: h(x) for k_, h in self.heads.items()}


def _check_attributes(attributes: dict[str, torch.Tensor], n: int, name: str) -> None:
    if not attributes:
        raise ValueError(f"{name} must hold at least one attribute, got none")
    for k, v in attributes.items():
        if not isinstance(v, torch.Tensor) or v.shape != (n,):
            raise ValueError(f"{name}[{k!r}] must be a tensor of shape ({n},), got "
                             f"{getattr(v, 'shape', type(v).__name__)}")


def train_probe(kind: str, z_train: torch.Tensor, attr_train: dict[str, torch.Tensor],
                z_test: torch.Tensor, attr_test: dict[str, torch.Tensor], *,
                epochs: int = 60, lr: float = 3e-3, batch_size: int = 32,
                seed: int = 0) -> dict[str, float]:
    """Fit one probe on (z_train, attr_train) and score it on (z_test, attr_test).

    Args:
        kind: "linear" or "attentive".
        z_train, z_test: float (N, L, C) frozen features.
        attr_train, attr_test: name -> (N,) int64 classes or float targets.

    Returns:
        name -> test score: accuracy for classes, R^2 for float targets.
    """
    if kind not in PROBES:
        raise ValueError(f"kind must be one of {PROBES}, got {kind!r}")
    if z_train.dim() != 3 or z_test.shape[1:] != z_train.shape[1:]:
        raise ValueError(f"z_train and z_test must be (N, L, C) with the same L, C; got "
                         f"{tuple(z_train.shape)} and {tuple(z_test.shape)}")
    _check_attributes(attr_train, z_train.shape[0], "attr_train")
    _check_attributes(attr_test, z_test.shape[0], "attr_test")
    torch.manual_seed(seed)
    # Floating targets are standardized with train statistics so every loss has unit scale.
    stats = {k: (v.float().mean(), v.float().std().clamp_min(1e-6))
             for k, v in attr_train.items() if v.is_floating_point()}
    # Class heads must cover every label seen in either split.
    sizes = {k: torch.cat([v, attr_test[k]]) for k, v in attr_train.items()}
    probe_cls = LinearProbe if kind == "linear" else AttentiveProbe
    probe = probe_cls(z_train.shape[1], z_train.shape[2], sizes)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=1e-3)
    n = z_train.shape[0]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=gen).split(batch_size):
            out = probe(z_train[idx])
            loss = sum(_loss(out[k], v[idx], stats.get(k)) for k, v in attr_train.items())
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        out = probe(z_test)
    return {k: _score(out[k], v, stats.get(k)) for k, v in attr_test.items()}


def _loss(pred, target, stat):
    if stat is None:
        return F.cross_entropy(pred, target)
    return F.mse_loss(pred[:, 0], (target - stat[0]) / stat[1])


def _score(pred, target, stat) -> float:
    if stat is None:
        return float((pred.argmax(-1) == target).float().mean())
    y = (target - stat[0]) / stat[1]
    return float(1.0 - F.mse_loss(pred[:, 0], y) / y.var(unbiased=False).clamp_min(1e-12))
