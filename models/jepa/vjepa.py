"""V-JEPA (Bardes et al. 2024): predict the target encoder's features of masked spatio-temporal
regions of a clip from the visible tubelets.

    tubelets        2 x p x p patches (Conv3d), fixed 3-D sin-cos positions
    context encoder ViT over the visible positions of every tubelet; attention through
                    wmkernels (factorized spatial/temporal by default, joint as an option)
    target encoder  EMA of the context encoder over the whole clip, no gradient
    predictor       mask tokens at the masked positions, same attention layout
    loss            L1 to LayerNorm'd target features, averaged over the mask families
                    (multi-block or tube masking, plus our future-prediction family)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels.models.jepa.config import VJEPAConfig
from wmkernels.models.jepa.ema import ema_update_, make_target
from wmkernels.models.jepa.masks import (
    BlockSpec,
    FutureMasks,
    MaskFamilies,
    MultiBlock3DMasks,
    TubeMasks,
    VideoMasks,
)
from wmkernels.models.jepa.predictor import Predictor
from wmkernels.models.jepa.vit import (
    build_encoder,
    feature_std,
    gather_positions,
    image_feature_std,
    layer_norm_targets,
)


def build_video_masks(cfg: VJEPAConfig, grid: tuple[int, int, int]) -> MaskFamilies:
    """The mask collator a `VJEPAConfig` asks for: multi-block 3D or tube masks, then the
    future family when `cfg.future_context` > 0. grid: the encoder's (T', H, W)."""
    if cfg.masking == "multiblock":
        if not cfg.blocks:
            raise ValueError("blocks must hold at least one (num_blocks, scale) family for "
                             "masking='multiblock', got none")
        families = [MultiBlock3DMasks(grid[1:], tuple(BlockSpec(int(n), (float(s),) * 2)
                                                      for n, s in cfg.blocks))]
    elif cfg.masking == "tube":
        families = [TubeMasks(grid[1:], cfg.tube_ratio)]
    else:
        raise ValueError(f"masking must be 'multiblock' or 'tube', got {cfg.masking!r}")
    if not isinstance(cfg.future_context, int) or cfg.future_context < 0:
        raise ValueError(f"future_context must be an int >= 0 (0: no future family), got "
                         f"{cfg.future_context!r}")
    if cfg.future_context:
        families.append(FutureMasks(grid[1:], grid[0], cfg.future_context))
    return MaskFamilies(*families)


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
        self.mask_collator = build_video_masks(cfg, self.encoder.grid)

    def forward(self, clips: torch.Tensor,
                masks: list[VideoMasks]) -> tuple[torch.Tensor, dict]:
        if not masks:
            raise ValueError("masks must hold at least one VideoMasks, got an empty list")
        with torch.no_grad():
            h = layer_norm_targets(self.target_encoder(clips))           # (B, T', S, C)
        losses, ctx_std = [], []
        for m in masks:
            k = m.context_tubelets
            z = self.encoder(clips, keep=m.context, tubelets=k)          # (B, k or T', Nc, C)
            pred = self.predictor(z, m.context, m.target, k)
            target = h if k is None else h[:, k:]
            losses.append(F.l1_loss(pred, gather_positions(target, m.target)))
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
