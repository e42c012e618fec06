"""Video tokenizer: the ST-ViViT VQ-VAE of Genie (§2.1). Frames are cut into patches, an
ST-transformer encoder (causal in time, so frame t's codes depend only on frames <= t) maps
each patch to a vector quantized against a codebook, and an ST-transformer decoder maps the
codes back to pixels. Not in the paper: a training term that keeps the latent of a patch
whose pixels did not change from one frame to the next (`stability_loss`), so that the
dynamics sees a code change only where the picture changed, and one that weighs the error of
the pixels that moved more (`moving_pixels`), so that the few pixels of the objects the
dynamics has to move are not drowned by a background that stays put."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import wmkernels
from wmkernels.models.common import patchify, unpatchify
from wmkernels.models.genie.config import TokenizerConfig
from wmkernels.models.genie.modules import PositionedSTTransformer


def static_patches(video: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, T-1, S) bool: True where patch s of frame t+1 has exactly the
    pixels it had in frame t."""
    pixels = patchify(video, patch)
    return (pixels[:, 1:] == pixels[:, :-1]).all(-1)


def moving_pixels(video: torch.Tensor) -> torch.Tensor:
    """(B, T, 3, H, W) -> (B, T, 1, H, W) bool: True where the pixel differs from the same
    pixel in the frame before or the frame after (what moved, and what it uncovered)."""
    changed = (video[:, 1:] != video[:, :-1]).any(2, keepdim=True)     # (B, T-1, 1, H, W)
    moving = torch.zeros_like(video[:, :, :1], dtype=torch.bool)
    moving[:, 1:] |= changed
    moving[:, :-1] |= changed
    return moving


class VideoTokenizer(nn.Module):
    """Video (B, T, 3, H, W) in [0, 1] <-> codes (B, T, S) int64, S = (H/patch)^2."""

    def __init__(self, cfg: TokenizerConfig, image_size: int, max_frames: int):
        super().__init__()
        self.cfg, self.image_size = cfg, image_size
        spatial = (image_size // cfg.patch) ** 2
        patch_dim = cfg.patch * cfg.patch * 3
        self.embed = nn.Linear(patch_dim, cfg.dim)
        self.encoder = PositionedSTTransformer(cfg.dim, cfg.heads, cfg.enc_layers,
                                               max_frames, spatial)
        self.to_code = nn.Linear(cfg.dim, cfg.code_dim)
        # EMA codebook + k-means init + dead-code restarts: the standard recipe that keeps
        # a VQ-VAE's codebook in use (the paper gives no codebook-update details).
        self.vq = wmkernels.nn.VectorQuantizer(
            cfg.code_dim, cfg.codebook_size, commitment_weight=cfg.commitment_weight,
            ema_decay=0.9, dead_code_threshold=cfg.dead_code_threshold, kmeans_init=True)
        self.from_code = nn.Linear(cfg.code_dim, cfg.dim)
        self.decoder = PositionedSTTransformer(cfg.dim, cfg.heads, cfg.dec_layers,
                                               max_frames, spatial)
        self.to_pixels = nn.Linear(cfg.dim, patch_dim)

    def _check(self, video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[2] != 3 or video.shape[3:] != (self.image_size,) * 2:
            raise ValueError(f"video must be (B, T, 3, {self.image_size}, {self.image_size}), "
                             f"got {tuple(video.shape)}")

    def latents(self, video: torch.Tensor) -> torch.Tensor:
        """The encoder's output before quantization, (B, T, S, code_dim)."""
        self._check(video)
        h = self.encoder(self.embed(patchify(video * 2 - 1, self.cfg.patch)))
        return self.to_code(h)

    def encode(self, video: torch.Tensor):
        """-> (quantized (B, T, S, code_dim), indices (B, T, S) int64, vq loss scalar)."""
        return self.vq(self.latents(video))

    def stability_loss(self, video: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Mean squared distance between the latents of a patch in consecutive frames, over
        the patches whose pixels did not change (zero if none): the encoder's attention
        otherwise carries moving objects into the codes of patches that stayed put, and the
        dynamics has to predict those changes too."""
        static = static_patches(video, self.cfg.patch)
        if not static.any():
            return latents.new_zeros(())
        step = (latents[:, 1:] - latents[:, :-1]).pow(2).mean(-1)    # (B, T-1, S)
        return step[static].mean()

    def decode_codes(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, T, S, code_dim) quantized vectors -> (B, T, 3, H, W) (not clamped)."""
        h = self.decoder(self.from_code(quantized))
        size = self.image_size
        return unpatchify(self.to_pixels(h), self.cfg.patch, size, size) * 0.5 + 0.5

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, T, S) code indices -> (B, T, 3, H, W) frames clamped to [0, 1]."""
        codes = F.embedding(indices, self.vq.codebook)
        return self.decode_codes(codes).clamp(0, 1)

    def forward(self, video: torch.Tensor) -> dict:
        """Reconstruction and losses: recon (B, T, 3, H, W), indices, loss = MSE + VQ loss
        + stability_weight x stability loss + motion_weight x the squared error counted at
        the moving pixels only (averaged over all pixels, as the MSE). recon_loss is the
        plain MSE."""
        latents = self.latents(video)
        quantized, indices, vq_loss = self.vq(latents)
        recon = self.decode_codes(quantized)
        error = (recon - video).pow(2)
        recon_loss = error.mean()
        loss = recon_loss + vq_loss
        if self.cfg.motion_weight:
            loss = loss + self.cfg.motion_weight * (error * moving_pixels(video)).mean()
        out = {"recon": recon, "indices": indices, "recon_loss": recon_loss, "vq_loss": vq_loss}
        if self.cfg.stability_weight:
            out["stability_loss"] = self.stability_loss(video, latents)
            loss = loss + self.cfg.stability_weight * out["stability_loss"]
        return {**out, "loss": loss}
