"""Writing generated frames: an animated GIF and a PNG strip of frames side by side."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch


def to_uint8(frames: torch.Tensor, scale: int = 1) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> (T, H*scale, W*scale, 3) uint8 (nearest upscaling,
    so 32x32 frames stay crisp when viewed)."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be (T, 3, H, W), got {tuple(frames.shape)}")
    x = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    return x.permute(0, 2, 3, 1).numpy()


def save_gif(frames: torch.Tensor, path: str | os.PathLike, *, scale: int = 4,
             fps: float = 4.0) -> Path:
    """Write (T, 3, H, W) frames in [0, 1] as a looping GIF; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(frames, scale), duration=1000 / fps, loop=0)
    return path


def save_strip(rows: list[torch.Tensor], path: str | os.PathLike, *, scale: int = 4,
               gap: int = 2) -> Path:
    """Write a PNG with one row per (T, 3, H, W) tensor, frames side by side, separated by
    `gap` white pixels (rows may have different T; short rows are padded white)."""
    if not rows:
        raise ValueError("rows must hold at least one (T, 3, H, W) tensor")
    imgs = [to_uint8(r, scale) for r in rows]
    h, w = imgs[0].shape[1:3]
    cols = max(i.shape[0] for i in imgs)
    canvas = np.full((len(imgs) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for r, img in enumerate(imgs):
        if img.shape[1:3] != (h, w):
            raise ValueError(f"all rows must have the same frame size, got {img.shape[1:3]} "
                             f"and {(h, w)}")
        for c, frame in enumerate(img):
            canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = frame
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, canvas)
    return path
