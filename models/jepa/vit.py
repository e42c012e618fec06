"""Vision transformer for JEPA: tubelet/patch embedding and fixed 3-D sin-cos positions (from
models/common), and blocks whose attention runs through `wmkernels.spatial_attention` /
`wmkernels.temporal_attention`.

Tokens keep the (B, T, S, C) layout of the package everywhere (T frames or tubelets, S
spatial positions). A masked encoder sees the same visible spatial positions in every frame,
so its input is still a dense (B, T, S_vis, C) grid.

Attention layouts ("attention" argument):
  spatial     attention over S within each frame (images: T = 1, so this is full attention)
  factorized  attention over S within each frame, then over T at each position
  joint       full attention over all T*S tokens: `spatial_attention` on the sequence
              flattened to one frame (B, 1, T*S)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import wmkernels
from wmkernels.models.common import PatchEmbed, sincos_3d

ATTENTION_LAYOUTS = ("spatial", "factorized", "joint")


def gather_positions(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, T, S, C) indexed along S by idx (B, N) -> (B, T, N, C)."""
    b, t, _, c = x.shape
    return x.gather(2, idx[:, None, :, None].expand(b, t, idx.shape[1], c))


class Attention(nn.Module):
    """Multi-head self-attention over one axis of (B, T, S, C) tokens, through wmkernels.

    `axis` is "spatial", "temporal" or "joint" (see module docstring). The backend is
    wmkernels' choice; `wmkernels.use_backend("reference")` gives the eager baseline.
    """

    def __init__(self, dim: int, heads: int, axis: str, *, causal: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if axis not in ("spatial", "temporal", "joint"):
            raise ValueError(f"axis must be 'spatial', 'temporal' or 'joint', got {axis!r}")
        self.heads, self.axis, self.causal = heads, axis, causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, s, c = x.shape
        if self.axis == "joint":
            x = x.reshape(b, 1, t * s, c)
        # q, k, v are strided views of the packed projection: the kernels read them in place.
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).unbind(dim=3)
        if self.axis == "temporal":
            out = wmkernels.temporal_attention(q, k, v, causal=self.causal)
        else:
            out = wmkernels.spatial_attention(q, k, v)
        return self.proj(out.reshape(b, t, s, c))


class Block(nn.Module):
    """Pre-norm transformer block: attention layer(s) of the given layout, then an MLP."""

    def __init__(self, dim: int, heads: int, attention: str, *, mlp_ratio: float = 4.0,
                 causal_time: bool = False):
        super().__init__()
        if attention not in ATTENTION_LAYOUTS:
            raise ValueError(f"attention must be one of {ATTENTION_LAYOUTS}, got {attention!r}")
        axes = {"spatial": ["spatial"], "factorized": ["spatial", "temporal"],
                "joint": ["joint"]}[attention]
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in axes)
        self.attns = nn.ModuleList(Attention(dim, heads, a, causal=causal_time) for a in axes)
        hidden = int(dim * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for norm, attn in zip(self.norms, self.attns, strict=True):
            x = x + attn(norm(x))
        return x + self.mlp(self.norm_mlp(x))


def init_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) linears with zero bias, unit LayerNorms (the ViT recipe)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(nn.Module):
    """ViT encoder over videos (or images as 1-frame videos).

    Args:
        image_size, patch: square frames of image_size pixels, patch x patch patches.
        frames, tubelet: clip length and temporal patch size (images: 1 and 1; V-JEPA: 2).
        channels, dim, depth, heads, mlp_ratio: the usual ViT sizes.
        attention: "spatial" | "factorized" | "joint" (see module docstring).

    forward(x, keep=None, tubelets=None): x float (B, frames, channels, image_size,
    image_size); keep int64 (B, N) spatial positions to encode (the same in every tubelet) or
    None for all; tubelets: encode only the first that many tubelets (None: all).
    Returns (B, tubelets or frames // tubelet, N or S, dim) after a final LayerNorm.
    """

    def __init__(self, *, image_size: int, patch: int, frames: int = 1, tubelet: int = 1,
                 channels: int = 3, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, attention: str = "spatial"):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch ({patch})")
        if frames % tubelet:
            raise ValueError(f"frames ({frames}) must be a multiple of tubelet ({tubelet})")
        self.image_size, self.patch, self.frames, self.tubelet = image_size, patch, frames, tubelet
        self.channels, self.dim = channels, dim
        self.grid = (frames // tubelet, image_size // patch, image_size // patch)
        self.patch_embed = PatchEmbed(patch, channels, dim, tubelet)
        self.register_buffer("pos", sincos_3d(*self.grid, dim), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, attention, mlp_ratio=mlp_ratio)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        init_weights(self)

    @property
    def num_patches(self) -> int:
        return self.grid[1] * self.grid[2]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels (B, frames, C, H, W) -> tokens with positions (B, T', S, dim)."""
        want = (self.frames, self.channels, self.image_size, self.image_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must be (B, {', '.join(map(str, want))}), "
                             f"got {tuple(x.shape)}")
        return self.patch_embed(x) + self.pos

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                tubelets: int | None = None) -> torch.Tensor:
        tokens = self.embed(x)
        if tubelets is not None:
            if not 1 <= tubelets <= self.grid[0]:
                raise ValueError(f"tubelets must be in [1, {self.grid[0]}], got {tubelets!r}")
            tokens = tokens[:, :tubelets]
        if keep is not None:
            tokens = gather_positions(tokens, keep)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


def build_encoder(cfg) -> VisionTransformer:
    """A `VisionTransformer` from an `EncoderConfig` (models/jepa/config.py)."""
    return VisionTransformer(image_size=cfg.image_size, patch=cfg.patch, frames=cfg.frames,
                             tubelet=cfg.tubelet, channels=cfg.channels, dim=cfg.dim,
                             depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
                             attention=cfg.attention)


def layer_norm_targets(z: torch.Tensor) -> torch.Tensor:
    """Per-token LayerNorm without affine parameters: the JEPA regression target."""
    return F.layer_norm(z, z.shape[-1:])


def feature_std(z: torch.Tensor) -> float:
    """Collapse monitor: mean over channels of the std of features across all tokens.

    A collapsed encoder (constant output) gives ~0; healthy features stay well above it.
    """
    flat = z.detach().reshape(-1, z.shape[-1]).float()
    return float(flat.std(dim=0).mean()) if flat.shape[0] > 1 else math.nan


def image_feature_std(z: torch.Tensor) -> float:
    """Content collapse monitor: the std across the batch at each token position and
    channel, averaged. z (B, ...).

    `feature_std` also counts how tokens differ by position, which an encoder that ignores
    its input keeps (positional embeddings); this one is ~0 as soon as the features stop
    depending on the image (NaN for a batch of one).
    """
    z = z.detach().float()
    return float(z.std(dim=0).mean()) if z.shape[0] > 1 else math.nan
