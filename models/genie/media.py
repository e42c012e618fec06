"""Writing generated frames: an animated GIF and a PNG strip of frames side by side, and a
labelled grid (one labelled row per clip) as a PNG and a GIF."""

from __future__ import annotations

import math
import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


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


def _label_font(height: int):
    try:   # a scalable font where Pillow has FreeType, else its fixed bitmap font
        return ImageFont.load_default(size=max(10, height // 7))
    except (TypeError, OSError):
        return ImageFont.load_default()


def labelled_grid(rows: list[torch.Tensor], labels: list[str], *, scale: int = 4,
                  gap: int = 2) -> np.ndarray:
    """One row per (T, 3, H, W) tensor in [0, 1] (all the same T, H, W), frames side by
    side, each row's label written in a white margin on its left, as wide as the widest
    label (the font grows with the frame height, so a fixed margin would clip it); returns
    the image (rows * (H*scale + gap) - gap, margin + T * (W*scale + gap) - gap, 3) uint8."""
    if not rows or len(labels) != len(rows):
        raise ValueError(f"need one label per row and at least one row, got {len(rows)} rows "
                         f"and {len(labels)} labels")
    if len({tuple(r.shape) for r in rows}) != 1:
        raise ValueError(f"all rows must have the same (T, 3, H, W) shape, got "
                         f"{sorted({tuple(r.shape) for r in rows})}")
    imgs = [to_uint8(r, scale) for r in rows]
    cols, h, w = imgs[0].shape[:3]
    font, pad = _label_font(h), 4
    margin = pad + max(math.ceil(font.getlength(label)) for label in labels) + 2 * pad
    canvas = np.full((len(imgs) * (h + gap) - gap, margin + cols * (w + gap) - gap, 3),
                     255, np.uint8)
    for r, img in enumerate(imgs):
        for c, frame in enumerate(img):
            x = margin + c * (w + gap)
            canvas[r * (h + gap):r * (h + gap) + h, x:x + w] = frame
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for r, label in enumerate(labels):
        draw.text((pad, r * (h + gap) + h // 2), label, fill=(0, 0, 0), font=font, anchor="lm")
    return np.asarray(picture)


def save_grid(rows: list[torch.Tensor], labels: list[str], png: str | os.PathLike,
              gif: str | os.PathLike, *, scale: int = 4, fps: float = 4.0) -> tuple[Path, Path]:
    """Write `labelled_grid(rows, labels)` as a PNG (all frames side by side) and as a
    looping GIF whose frame t shows every row's frame t, labelled; returns (png, gif)."""
    png, gif = Path(png), Path(gif)
    for path in (png, gif):
        path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(png, labelled_grid(rows, labels, scale=scale))
    frames = [labelled_grid([r[t:t + 1] for r in rows], labels, scale=scale)
              for t in range(rows[0].shape[0])]
    iio.imwrite(gif, np.stack(frames), duration=1000 / fps, loop=0)
    return png, gif
