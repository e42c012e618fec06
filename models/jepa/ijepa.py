"""I-JEPA (Assran et al. 2023, arXiv 2301.08243): from one context block of an image, predict
the target encoder's features of four target blocks.

    context encoder (online ViT, visible context patches only)
    target encoder  (EMA of the context encoder, the whole image, no gradient)
    predictor       (narrow ViT: context tokens + mask tokens at one target block's positions)
    loss            smooth-L1 between predictions and LayerNorm'd target features
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels.models.jepa.config import IJEPAConfig
from wmkernels.models.jepa.ema import ema_update_, make_target
from wmkernels.models.jepa.masks import IJEPAMasks, MultiBlockMasks
from wmkernels.models.jepa.predictor import Predictor
from wmkernels.models.jepa.vit import (
    build_encoder,
    feature_std,
    gather_positions,
    image_feature_std,
    layer_norm_targets,
)


class IJEPA(nn.Module):
    """I-JEPA model. `forward(images, masks)` returns (loss, stats).

    images: float (B, C, H, W) or (B, 1, C, H, W) in roughly unit range.
    masks: `IJEPAMasks` from `self.mask_collator(B, generator)`.
    stats: {"loss", "target_std", "target_image_std", "context_std"} as floats (the stds
    are the collapse monitors, see vit.feature_std / vit.image_feature_std).
    """

    def __init__(self, cfg: IJEPAConfig):
        super().__init__()
        if cfg.encoder.frames != 1 or cfg.encoder.tubelet != 1:
            raise ValueError("I-JEPA encodes images: encoder.frames and encoder.tubelet must be "
                             f"1, got {cfg.encoder.frames} and {cfg.encoder.tubelet}")
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder)
        self.target_encoder = make_target(self.encoder)
        p = cfg.predictor
        self.predictor = Predictor(enc_dim=cfg.encoder.dim, grid=self.encoder.grid, dim=p.dim,
                                   depth=p.depth, heads=p.heads, mlp_ratio=p.mlp_ratio,
                                   attention="spatial")
        self.mask_collator = MultiBlockMasks(
            self.encoder.grid[1:], num_targets=cfg.num_targets, target_scale=cfg.target_scale,
            target_aspect=cfg.target_aspect, context_scale=cfg.context_scale)

    def forward(self, images: torch.Tensor, masks: IJEPAMasks) -> tuple[torch.Tensor, dict]:
        if images.dim() == 4:
            images = images.unsqueeze(1)
        b, m, n_tgt = masks.targets.shape
        if masks.context.shape[0] != b or images.shape[0] != b:
            raise ValueError(f"images ({images.shape[0]}), masks.context "
                             f"({masks.context.shape[0]}) and masks.targets ({b}) must share "
                             "the batch size")
        with torch.no_grad():
            h = layer_norm_targets(self.target_encoder(images))          # (B, 1, S, C)
        target_idx = masks.targets.flatten(0, 1)                         # (B*M, Nt)
        target = gather_positions(h.repeat_interleave(m, 0), target_idx)
        z = self.encoder(images, keep=masks.context)                     # (B, 1, Nc, C)
        # One predictor pass per target block, batched: the context is repeated M times.
        pred = self.predictor(z.repeat_interleave(m, 0), masks.context.repeat_interleave(m, 0),
                              target_idx)
        loss = F.smooth_l1_loss(pred, target)
        stats = {"loss": float(loss.detach()), "target_std": feature_std(h),
                 "target_image_std": image_feature_std(h),
                 "context_std": feature_std(z)}
        return loss, stats

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """EMA step of the target encoder toward the context encoder."""
        ema_update_(self.target_encoder, self.encoder, momentum)
