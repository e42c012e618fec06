"""Latent action model (Genie §2.1): learns, without labels, a small discrete set of actions
that explain how each frame follows from the previous ones.

Encoder: all frames x_1..x_T as pixel patches -> causal ST-transformer; the output at frame
t+1 (which has seen x_1..x_{t+1}) is pooled over space and quantized with a VQ of only
`num_actions` codes -> latent action a_t. Decoder: frames x_1..x_t plus a_t (added to every
patch of frame t) -> causal ST-transformer -> pixels of x_{t+1}. The tiny codebook is the
bottleneck that forces a_t to carry only what the past cannot predict: the agent's move.
The decoder predicts the change from x_t (a residual) through a zero-initialised output
layer, so training starts from "copy the last frame" instead of from noise added to it.
The action codebook is an EMA codebook that restarts codes falling out of use, with a small
commitment weight (see LAMConfig.commitment_weight): the next-frame error is tiny next to
the latents' scale, and a standard 0.25 commitment pulls every latent onto one point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import wmkernels
from wmkernels.models.common import patchify, unpatchify
from wmkernels.models.genie.config import LAMConfig
from wmkernels.models.genie.modules import PositionedSTTransformer


class LatentActionModel(nn.Module):
    """Clips (B, T, 3, H, W) in [0, 1] -> latent actions (B, T-1) in [0, num_actions)."""

    def __init__(self, cfg: LAMConfig, image_size: int, max_frames: int):
        super().__init__()
        self.cfg, self.image_size = cfg, image_size
        spatial = (image_size // cfg.patch) ** 2
        patch_dim = cfg.patch * cfg.patch * 3
        self.enc_embed = nn.Linear(patch_dim, cfg.dim)
        self.encoder = PositionedSTTransformer(cfg.dim, cfg.heads, cfg.enc_layers,
                                               max_frames, spatial)
        self.to_action = nn.Linear(cfg.dim, cfg.code_dim)
        self.vq = wmkernels.nn.VectorQuantizer(
            cfg.code_dim, cfg.num_actions, commitment_weight=cfg.commitment_weight,
            ema_decay=0.9, dead_code_threshold=1.0, kmeans_init=True)
        self.dec_embed = nn.Linear(patch_dim, cfg.dim)
        self.from_action = nn.Linear(cfg.code_dim, cfg.dim)
        self.decoder = PositionedSTTransformer(cfg.dim, cfg.heads, cfg.dec_layers,
                                               max_frames, spatial)
        self.to_pixels = nn.Linear(cfg.dim, patch_dim)
        # zero output = an exact copy of frame t at step 0 (measured on the tiny config with
        # the true actions fed in: 600 steps reach an MSE 43% below copying with this init,
        # 1% below it with the default init, whose random residual must first be unlearned)
        nn.init.zeros_(self.to_pixels.weight)
        nn.init.zeros_(self.to_pixels.bias)

    def _check(self, video: torch.Tensor) -> None:
        if (video.dim() != 5 or video.shape[1] < 2 or video.shape[2] != 3
                or video.shape[3:] != (self.image_size,) * 2):
            raise ValueError(f"video must be (B, T>=2, 3, {self.image_size}, "
                             f"{self.image_size}), got {tuple(video.shape)}")

    def encode(self, video: torch.Tensor):
        """-> (quantized actions (B, T-1, code_dim), indices (B, T-1), vq loss)."""
        self._check(video)
        h = self.encoder(self.enc_embed(patchify(video * 2 - 1, self.cfg.patch)))
        return self.vq(self.to_action(h[:, 1:].mean(dim=2)))

    @torch.no_grad()
    def infer_actions(self, video: torch.Tensor) -> torch.Tensor:
        """Latent action indices (B, T-1) int64 explaining each transition of `video`."""
        return self.encode(video)[1]

    def forward(self, video: torch.Tensor) -> dict:
        """recon of frames 2..T (B, T-1, 3, H, W), actions (B, T-1), loss = MSE + VQ loss."""
        actions, indices, vq_loss = self.encode(video)
        past = patchify(video[:, :-1] * 2 - 1, self.cfg.patch)
        h = self.dec_embed(past) + self.from_action(actions)[:, :, None]
        # residual output: x_{t+1} = x_t + delta, so copying the past is free and the
        # decoder's capacity (and the action's information) goes into what changes
        delta = unpatchify(self.to_pixels(self.decoder(h)), self.cfg.patch, self.image_size,
                           self.image_size)
        recon = video[:, :-1] + delta * 0.5
        recon_loss = F.mse_loss(recon, video[:, 1:])
        return {"recon": recon, "actions": indices, "recon_loss": recon_loss,
                "vq_loss": vq_loss, "loss": recon_loss + vq_loss}
