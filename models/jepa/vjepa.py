"""V-JEPA (Bardes et al. 2024): predict the target encoder's features of masked spatio-temporal
regions of a clip from the visible tubelets.

    tubelets        2 x p x p patches (Conv3d), fixed 3-D sin-cos positions
    context encoder ViT over the visible positions of every tubelet; attention through
                    wmkernels (factorized spatial/temporal by default, joint as an option)
    target encoder  EMA of the context encoder over the whole clip, no gradient
    predictor       mask tokens at the masked positions, same attention layout
    loss            L1 to LayerNorm'd target features, averaged over the mask families
                    (short-range and long-range multi-block, or tube masking)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels.models.jepa.config import VJEPAConfig
from wmkernels.models.jepa.ema import ema_update_, make_target
from wmkernels.models.jepa.masks import BlockSpec, MultiBlock3DMasks, TubeMasks, VideoMasks
from wmkernels.models.jepa.predictor import Predictor
from wmkernels.models.jepa.vit import (
    build_encoder,
    feature_std,
    gather_positions,
    image_feature_std,
    layer_norm_targets,
)


def build_video_masks(cfg: VJEPAConfig, grid_hw: tuple[int, int]):
    """The mask collator a `VJEPAConfig` asks for (multi-block 3D or tube)."""
    if cfg.masking == "multiblock":
        specs = (BlockSpec(cfg.short_range[0], (cfg.short_range[1],) * 2),
                 BlockSpec(cfg.long_range[0], (cfg.long_range[1],) * 2))
        return MultiBlock3DMasks(grid_hw, specs)
    if cfg.masking == "tube":
        return TubeMasks(grid_hw, cfg.tube_ratio)
    raise ValueError(f"masking must be 'multiblock' or 'tube', got {cfg.masking!r}")


class VJEPA(nn.Module):
    """V-JEPA model. `forward(clips, masks)` returns (loss, stats).

    clips: float (B, frames, C, H, W). masks: list of `VideoMasks` from
    `self.mask_collator(B, generator)`; the loss is their mean.
    stats: {"loss", "target_std", "target_image_std", "context_std"} as floats.
    """

    def __init__(self, cfg: VJEPAConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder)
        self.target_encoder = make_target(self.encoder)
        p = cfg.predictor
        self.predictor = Predictor(enc_dim=cfg.encoder.dim, grid=self.encoder.grid, dim=p.dim,
                                   depth=p.depth, heads=p.heads, mlp_ratio=p.mlp_ratio,
                                   attention=cfg.encoder.attention)
        self.mask_collator = build_video_masks(cfg, self.encoder.grid[1:])

    def forward(self, clips: torch.Tensor,
                masks: list[VideoMasks]) -> tuple[torch.Tensor, dict]:
        if not masks:
            raise ValueError("masks must hold at least one VideoMasks, got an empty list")
        with torch.no_grad():
            h = layer_norm_targets(self.target_encoder(clips))           # (B, T', S, C)
        losses, ctx_std = [], []
        for m in masks:
            z = self.encoder(clips, keep=m.context)                      # (B, T', Nc, C)
            pred = self.predictor(z, m.context, m.target)
            losses.append(F.l1_loss(pred, gather_positions(h, m.target)))
            ctx_std.append(feature_std(z))
        loss = torch.stack(losses).mean()
        stats = {"loss": float(loss.detach()), "target_std": feature_std(h),
                 "target_image_std": image_feature_std(h),
                 "context_std": sum(ctx_std) / len(ctx_std)}
        return loss, stats

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA step of the target encoder toward the context encoder."""
        ema_update_(self.target_encoder, self.encoder, momentum)
