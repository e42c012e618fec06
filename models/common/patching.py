"""Video <-> patch tokens: patchify / unpatchify, PatchEmbed and its inverse head.

Token layout follows the package convention (B, T, S, C): S = (H/p) * (W/p) spatial
positions in row-major order. A token's features are ordered (dt, dy, dx, c): the pixels of
the patch row by row, channels innermost, over `tubelet` consecutive frames (tubelet > 1 is
V-JEPA's 2 x 16 x 16 tubelets; Genie and the DiT use tubelet 1).
"""

from __future__ import annotations

import torch
from torch import nn


def _check_video(video: torch.Tensor, patch: int, tubelet: int, who: str) -> None:
    if not isinstance(video, torch.Tensor) or video.dim() != 5:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"{who}: video must be a (B, T, C, H, W) tensor, got {shape}")
    for name, value in (("patch", patch), ("tubelet", tubelet)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    _, t, _, h, w = video.shape
    if h % patch or w % patch:
        raise ValueError(f"{who}: H and W must be multiples of patch={patch}, got H={h}, W={w}")
    if t % tubelet:
        raise ValueError(f"{who}: T must be a multiple of tubelet={tubelet}, got T={t}")


def patchify(video: torch.Tensor, patch: int, tubelet: int = 1) -> torch.Tensor:
    """(B, T, C, H, W) video -> (B, T/tubelet, S, tubelet*patch*patch*C) tokens.

    Args:
        video: any dtype/device; H, W divisible by `patch`, T by `tubelet`.
        patch: spatial patch side p. tubelet: frames per token.

    Returns:
        A new contiguous tensor, S = (H/p) * (W/p) row-major.

    Raises:
        ValueError: wrong rank, non-divisible sizes, non-positive patch/tubelet.
    """
    _check_video(video, patch, tubelet, "patchify")
    b, t, c, h, w = video.shape
    gh, gw = h // patch, w // patch
    x = video.reshape(b, t // tubelet, tubelet, c, gh, patch, gw, patch)
    # -> (b, t', gh, gw, tubelet, py, px, c)
    x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)
    return x.reshape(b, t // tubelet, gh * gw, tubelet * patch * patch * c)


def unpatchify(tokens: torch.Tensor, patch: int, height: int, width: int,
               tubelet: int = 1) -> torch.Tensor:
    """Inverse of `patchify`: (B, T', S, tubelet*p*p*C) -> (B, T'*tubelet, C, height, width).

    Raises:
        ValueError: when the token shape does not match patch, height, width and tubelet.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 4:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens)
        raise ValueError(f"unpatchify: tokens must be (B, T, S, F), got {shape}")
    for name, value in (("patch", patch), ("tubelet", tubelet), ("height", height),
                        ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"unpatchify: {name} must be a positive int, got {value!r}")
    b, t, s, f = tokens.shape
    if height % patch or width % patch:
        raise ValueError(f"unpatchify: height and width must be multiples of patch={patch}, "
                         f"got {height}x{width}")
    gh, gw = height // patch, width // patch
    if s != gh * gw or f % (tubelet * patch * patch):
        raise ValueError(f"unpatchify: tokens (B, T, S, F) = {tuple(tokens.shape)} do not fit "
                         f"{height}x{width} frames in {patch}x{patch} patches (S = {gh * gw}, "
                         f"F a multiple of {tubelet * patch * patch})")
    c = f // (tubelet * patch * patch)
    x = tokens.reshape(b, t, gh, gw, tubelet, patch, patch, c)
    x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)  # (b, t', tubelet, c, gh, py, gw, px)
    return x.reshape(b, t * tubelet, c, height, width)


class PatchEmbed(nn.Module):
    """Linear patch embedding: (B, T, C, H, W) video -> (B, T/tubelet, S, dim) tokens.

    Equivalent to a Conv3d with kernel = stride = (tubelet, patch, patch), written as
    patchify + Linear so it shares `patchify`'s token layout exactly.
    """

    def __init__(self, patch: int, in_channels: int, dim: int, tubelet: int = 1) -> None:
        super().__init__()
        for name, value in (("patch", patch), ("in_channels", in_channels), ("dim", dim),
                            ("tubelet", tubelet)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PatchEmbed: {name} must be a positive int, got {value!r}")
        self.patch, self.tubelet, self.in_channels = patch, tubelet, in_channels
        self.proj = nn.Linear(tubelet * patch * patch * in_channels, dim)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.dim() == 5 and video.shape[2] != self.in_channels:
            raise ValueError(f"PatchEmbed: expected {self.in_channels} channels, got video "
                             f"of shape {tuple(video.shape)}")
        return self.proj(patchify(video, self.patch, self.tubelet))


class PatchHead(nn.Module):
    """Inverse of `PatchEmbed`: (B, T', S, dim) tokens -> (B, T'*tubelet, C, H, W) video,
    by a Linear to patch pixels followed by `unpatchify`."""

    def __init__(self, dim: int, patch: int, out_channels: int, tubelet: int = 1) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("patch", patch), ("out_channels", out_channels),
                            ("tubelet", tubelet)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PatchHead: {name} must be a positive int, got {value!r}")
        self.patch, self.tubelet = patch, tubelet
        self.proj = nn.Linear(dim, tubelet * patch * patch * out_channels)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return unpatchify(self.proj(tokens), self.patch, height, width, self.tubelet)
