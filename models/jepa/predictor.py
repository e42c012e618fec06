"""The JEPA predictor: a narrow transformer that reads the context encoder's tokens plus one
learned mask token per target position (each carrying that position's fixed embedding) and
regresses the target encoder's features there (I-JEPA sec. 3, V-JEPA sec. 3)."""

from __future__ import annotations

import torch
from torch import nn

from wmkernels.models.common import sincos_3d
from wmkernels.models.jepa.vit import Block, gather_positions, init_weights


class Predictor(nn.Module):
    """Mask-token predictor.

    Args:
        enc_dim: width of the encoder tokens it reads and predicts.
        grid: (T', H, W) token grid of the encoder.
        dim, depth, heads: predictor sizes (paper: 384 wide, 6-12 deep).
        attention: block layout, as in `VisionTransformer`.

    forward(context, context_idx, target_idx, context_tubelets=None): context
    (B, T', Nc, enc_dim) encoder tokens at spatial positions context_idx (B, Nc); target_idx
    (B, Nt) positions to predict in the same tubelets. Returns (B, T', Nt, enc_dim).
    With context_tubelets = k, context holds the first k tubelets only (B, k, Nc, enc_dim) and
    the predictions are for the later ones: (B, T' - k, Nt, enc_dim).
    """

    def __init__(self, *, enc_dim: int, grid: tuple[int, int, int], dim: int = 64,
                 depth: int = 2, heads: int = 2, mlp_ratio: float = 4.0,
                 attention: str = "spatial"):
        super().__init__()
        self.grid = tuple(grid)
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.register_buffer("pos", sincos_3d(*self.grid, dim), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, attention, mlp_ratio=mlp_ratio)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, enc_dim)
        init_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor,
                target_idx: torch.Tensor, context_tubelets: int | None = None) -> torch.Tensor:
        b, t, n_ctx, _ = context.shape
        if context_idx.shape != (b, n_ctx):
            raise ValueError(f"context_idx must be ({b}, {n_ctx}) to match context, "
                             f"got {tuple(context_idx.shape)}")
        if target_idx.dim() != 2 or target_idx.shape[0] != b:
            raise ValueError(f"target_idx must be ({b}, Nt), got {tuple(target_idx.shape)}")
        pos = self.pos.expand(b, *self.pos.shape)
        x = self.embed(context)
        k = context_tubelets
        if k is None:
            # same tubelets: the mask tokens join each tubelet's context along space
            x = torch.cat([x + gather_positions(pos, context_idx),
                           self.mask_token + gather_positions(pos, target_idx)], dim=2)
        else:
            # later tubelets: they follow the context along time. The factorized layout needs
            # a dense grid, so every position of them gets a mask token (targets gathered
            # after).
            if t != k or not 1 <= k < self.grid[0] or n_ctx != self.grid[1] * self.grid[2]:
                raise ValueError(f"with context_tubelets={k!r} the context must be every "
                                 f"position of the first k < {self.grid[0]} tubelets, (B, k, "
                                 f"{self.grid[1] * self.grid[2]}, C); got "
                                 f"{tuple(context.shape)}")
            x = torch.cat([x + gather_positions(pos[:, :k], context_idx),
                           (self.mask_token + pos[:, k:]).to(x.dtype)], dim=1)
        for block in self.blocks:
            x = block(x)
        if k is None:
            return self.out(self.norm(x[:, :, n_ctx:]))
        return gather_positions(self.out(self.norm(x[:, k:])), target_idx)
