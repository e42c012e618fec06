"""Spatial-temporal diffusion transformer (Open-Sora STDiT / Latte) over VAE latents.

Latents (B, T, C, H, W) are cut into 1x2x2 patches -> tokens (B, T, S, D), S = (H/2)(W/2),
plus fixed sin-cos positions (2-D over the frame, 1-D over time). Each block is

    x += g1 * SpatialAttention(modulate(LN(x), b1, a1))      within each frame
    x += g2 * TemporalAttention(modulate(LN(x), b2, a2))     across frames, bidirectional
    x += CrossAttention(LN(x), text)                         every token reads the prompt
    x += g3 * MLP(modulate(LN(x), b3, a3))

with QK-norm in every attention. The (shift b, scale a, gate g) triples come from
adaLN-single (PixArt-alpha): one MLP maps the timestep to 9*D numbers shared by all blocks,
and each block adds its own learned table. adaLN-zero (DiT): that MLP's output layer, the
tables, the cross-attention output and the final projection start at zero, so every block
starts as the identity and the model as v = 0.

Self-attention runs through `wmkernels.nn.SpatialAttention` / `TemporalAttention`, i.e. the
`wmkernels.spatial_attention` / `temporal_attention` ops; `wmkernels.use_backend("reference")`
switches every one of them to the eager baseline with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels.models.common import (
    PatchEmbed,
    PatchHead,
    TimestepEmbedder,
    sincos_1d,
    sincos_2d,
)
from wmkernels.nn import SpatialAttention, TemporalAttention


@dataclass
class DiTConfig:
    """DiT sizes. Paper-scale (Open-Sora STDiT-XL/2): 28 blocks, 1152 wide, 16 heads, patch
    1x2x2, T5 text 4096 wide. Ours (tiny): 4 blocks, 128 wide, 4 heads (head dim 32)."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    patch: int = 2
    max_frames: int = 16       # temporal positions available (latent frames)
    # Also feed the mean of the text tokens into the adaLN-single conditioning (added to
    # the timestep embedding), as SD3 does with its pooled text vector. Open-Sora/PixArt
    # read text through cross-attention only; at our scale the global path makes the
    # caption steer every block's modulation from the first steps. False = papers.
    pooled_text: bool = False

    def validate(self) -> None:
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(f"DiTConfig.dim must be a positive multiple of heads, got "
                             f"dim={self.dim}, heads={self.heads}")
        if self.depth < 1 or self.patch < 1 or self.max_frames < 1:
            raise ValueError(f"DiTConfig depth, patch and max_frames must be >= 1, got "
                             f"{self.depth}, {self.patch}, {self.max_frames}")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, with shift/scale (B, D) broadcast over x (B, T, S, D)."""
    return x * (1 + scale[:, None, None]) + shift[:, None, None]


class CrossAttention(nn.Module):
    """Video tokens x (B, T, S, D) attend to text tokens y (B, L, D) with a key mask (B, L);
    QK-norm; output projection zero-initialised (PixArt)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, S, D = x.shape
        L = y.shape[1]
        q = self.q_norm(self.q(x).view(B, T * S, self.heads, self.head_dim)).transpose(1, 2)
        k, v = self.kv(y).view(B, L, 2, self.heads, self.head_dim).unbind(2)
        k, v = self.k_norm(k).transpose(1, 2), v.transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(B, T, S, D))


class DiTBlock(nn.Module):
    """One STDiT block (see module docstring); `table` is this block's adaLN-single offset."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        d, h = cfg.dim, cfg.heads
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.spatial = SpatialAttention(d, h, qk_norm=True)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.temporal = TemporalAttention(d, h, causal=False, qk_norm=True)
        self.norm3 = nn.LayerNorm(d, eps=1e-6)
        self.cross = CrossAttention(d, h)
        self.norm4 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, d))
        self.table = nn.Parameter(torch.zeros(9, d))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, y: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        b1, a1, g1, b2, a2, g2, b3, a3, g3 = (mod + self.table).unbind(1)
        x = x + g1[:, None, None] * self.spatial(modulate(self.norm1(x), b1, a1))
        x = x + g2[:, None, None] * self.temporal(modulate(self.norm2(x), b2, a2))
        x = x + self.cross(self.norm3(x), y, mask)
        return x + g3[:, None, None] * self.mlp(modulate(self.norm4(x), b3, a3))


class DiT(nn.Module):
    """Velocity model v(x_t, t, text).

    forward(x (B, T, C, H, W), t (B,) in [0, 1], text (B, L, text_dim) or None,
            text_mask (B, L) bool or None, drop (B,) bool or None) -> (B, T, C, H, W)

    `text=None` is the unconditional model (every sample gets the learned null caption);
    `drop` replaces the text of the marked samples by the null caption (classifier-free
    guidance training drops 10%). H and W must be multiples of `patch`, T <= max_frames.
    """

    def __init__(self, cfg: DiTConfig, latent_channels: int, text_dim: int, text_tokens: int):
        super().__init__()
        cfg.validate()
        self.cfg, self.channels = cfg, latent_channels
        d, p = cfg.dim, cfg.patch
        self.patch_embed = PatchEmbed(p, latent_channels, d)
        # Rectified-flow t in [0, 1] scaled to DiT's integer-step range [0, 1000].
        self.t_embed = TimestepEmbedder(d, 256, scale=1000.0)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(d, 9 * d))
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d), nn.GELU(approximate="tanh"),
                                       nn.Linear(d, d))
        self.pooled_proj = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d)) \
            if cfg.pooled_text else None
        # PixArt's learned "null caption" for classifier-free guidance.
        self.null_text = nn.Parameter(torch.randn(text_tokens, text_dim) / text_dim ** 0.5)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_table = nn.Parameter(torch.zeros(2, d))
        self.final_mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = PatchHead(d, p, latent_channels)
        for m in (self.t_block[1], self.final_mod[1], self.final.proj):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def _text(self, text, mask, drop, batch: int, dtype, device):
        L = self.null_text.shape[0]
        null = self.null_text.to(dtype)[None].expand(batch, -1, -1)
        full = torch.ones(batch, L, dtype=torch.bool, device=device)
        if text is None:
            return null, full
        if text.dim() != 3 or text.shape[0] != batch or text.shape[1] != L \
                or text.shape[2] != self.null_text.shape[1]:
            raise ValueError(f"text must be (B={batch}, {L}, {self.null_text.shape[1]}), got "
                             f"{tuple(text.shape)}")
        if mask is None or mask.shape != text.shape[:2]:
            raise ValueError(f"text_mask must be (B, {L}) bool with text")
        if drop is not None:
            text = torch.where(drop[:, None, None], null, text)
            mask = mask | drop[:, None]
        return text, mask

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 5 or x.shape[2] != self.channels:
            raise ValueError(f"x must be (B, T, {self.channels}, H, W), got {tuple(x.shape)}")
        B, T, C, H, W = x.shape
        p = self.cfg.patch
        if H % p or W % p or T > self.cfg.max_frames:
            raise ValueError(f"x's H, W must be multiples of patch={p} and T <= max_frames="
                             f"{self.cfg.max_frames}, got T={T}, H={H}, W={W}")
        if t.shape != (B,):
            raise ValueError(f"t must be (B,) = ({B},), got {tuple(t.shape)}")
        tokens = self.patch_embed(x)
        d = self.cfg.dim
        # Open-Sora adds the spatial positions to every frame and the temporal ones on top.
        pos = sincos_2d(H // p, W // p, d).to(tokens)[None, None] \
            + sincos_1d(T, d).to(tokens)[None, :, None]
        tokens = tokens + pos
        c = self.t_embed(t).to(tokens.dtype)
        y, mask = self._text(text, text_mask, drop, B, tokens.dtype, x.device)
        y = self.text_proj(y)
        if self.pooled_proj is not None:
            m = mask[..., None].to(y.dtype)
            c = c + self.pooled_proj((y * m).sum(1) / m.sum(1).clamp(min=1.0))
        mod = self.t_block(c).view(B, 9, d)
        for blk in self.blocks:
            tokens = blk(tokens, mod, y, mask)
        shift, scale = (self.final_mod(c).view(B, 2, d) + self.final_table).unbind(1)
        return self.final(modulate(self.final_norm(tokens), shift, scale), H, W)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

