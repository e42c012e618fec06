"""Real videos through the same dataset API: frame folders, GIF and MP4 files (imageio)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".gif", ".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})


@dataclass(frozen=True)
class _Source:
    """One video: a file, or a folder of frame images (sorted by name)."""

    path: Path
    frame_files: tuple[Path, ...] | None  # None for a video file
    num_frames: int
    caption: str


class VideoDataset(Dataset):
    """Clips of real videos, yielding the same items as `SyntheticVideoDataset`.

    `path` may be a video file (GIF, MP4, ... read by imageio; MP4 needs the imageio-ffmpeg
    or av package), a folder of frame images (one video), or a folder whose entries are
    video files and/or frame folders (one video each). Each video is cut into clips of
    `frames` frames taken every `frame_step` frames, clip starts `clip_step` frames apart
    (default: non-overlapping). Frames are centre-cropped to a square (when `crop`), resized
    to `size` x `size` with antialiasing and returned as float32 RGB in [0, 1].

    Items: "video" (T, 3, size, size) float32; "actions" (T-1,) int64 filled with -1 and
    "has_actions" False (real videos carry no actions); "caption" the text of a sidecar
    file `<video>.txt` (or `<folder>.txt`) when present, else ""; "attributes"
    {"video_index", "start_frame"} int64 scalars.

    Raises:
        ValueError: bad arguments, a path with no readable video, or no video long enough
            for one clip. Reading a corrupt file raises ValueError naming the file.
    """

    def __init__(self, path: str | Path, frames: int = 16, size: int = 64,
                 frame_step: int = 1, clip_step: int | None = None, crop: bool = True) -> None:
        for name, value in (("frames", frames), ("size", size), ("frame_step", frame_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VideoDataset: {name} must be an int >= 1, got {value!r}")
        span = (frames - 1) * frame_step + 1
        clip_step = span if clip_step is None else clip_step
        if isinstance(clip_step, bool) or not isinstance(clip_step, int) or clip_step < 1:
            raise ValueError(f"VideoDataset: clip_step must be an int >= 1 or None, "
                             f"got {clip_step!r}")
        self.path = Path(path)
        if not self.path.exists():
            raise ValueError(f"VideoDataset: path {str(self.path)!r} does not exist")
        self.frames, self.size, self.frame_step, self.crop = frames, size, frame_step, crop
        self.sources = _find_sources(self.path)
        if not self.sources:
            raise ValueError(f"VideoDataset: no video files or frame images under "
                             f"{str(self.path)!r} (video: {sorted(VIDEO_SUFFIXES)}, "
                             f"images: {sorted(IMAGE_SUFFIXES)})")
        self.clips = [(v, s) for v, src in enumerate(self.sources)
                      for s in range(0, src.num_frames - span + 1, clip_step)]
        if not self.clips:
            longest = max(src.num_frames for src in self.sources)
            raise ValueError(f"VideoDataset: no video under {str(self.path)!r} is long enough "
                             f"for one clip of {frames} frames every {frame_step} "
                             f"({span} frames needed, longest has {longest})")

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"VideoDataset: index {index} out of range for {len(self)} clips")
        v, start = self.clips[index]
        src = self.sources[v]
        wanted = range(start, start + (self.frames - 1) * self.frame_step + 1, self.frame_step)
        video = _to_tensor(_read_frames(src, wanted), self.size, self.crop)
        return {
            "video": video,
            "actions": torch.full((self.frames - 1,), -1, dtype=torch.int64),
            "has_actions": False,
            "caption": src.caption,
            "attributes": {"video_index": torch.tensor(v), "start_frame": torch.tensor(start)},
        }


def _find_sources(path: Path) -> list[_Source]:
    if path.is_file():
        return [_video_file(path)]
    entries = sorted(path.iterdir())
    images = tuple(p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if images:
        return [_Source(path, images, len(images), _sidecar_caption(path))]
    sources = []
    for p in entries:
        if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(_video_file(p))
        elif p.is_dir():
            frames = tuple(sorted(q for q in p.iterdir()
                                  if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
            if frames:
                sources.append(_Source(p, frames, len(frames), _sidecar_caption(p)))
    return sources


def _sidecar_caption(path: Path) -> str:
    text = path.with_name(path.name + ".txt") if path.is_dir() else path.with_suffix(".txt")
    return text.read_text().strip() if text.is_file() else ""


def _video_file(path: Path) -> _Source:
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"VideoDataset: {str(path)!r} is not a video file "
                         f"(expected one of {sorted(VIDEO_SUFFIXES)})")
    return _Source(path, None, _count_frames(path), _sidecar_caption(path))


def _count_frames(path: Path) -> int:
    import imageio.v3 as iio

    try:
        count = iio.improps(path, index=None, extension=path.suffix).shape[0]
    except Exception as err:  # imageio raises plugin-specific errors; name the file instead
        raise ValueError(f"VideoDataset: cannot read video {str(path)!r}: {err}") from err
    if count is None or count == float("inf") or count < 1:
        # Some plugins do not know the length up front (streams): count by decoding.
        count = sum(1 for _ in iio.imiter(path, extension=path.suffix))
    return int(count)


def _read_frames(src: _Source, wanted: range) -> list[np.ndarray]:
    import imageio.v3 as iio

    try:
        if src.frame_files is not None:
            return [iio.imread(src.frame_files[i]) for i in wanted]
        keep, frames = set(wanted), []
        for i, frame in enumerate(iio.imiter(src.path, extension=src.path.suffix)):
            if i in keep:
                frames.append(frame)
            if i >= wanted[-1]:
                break
    except Exception as err:  # plugin-specific errors; name the file instead
        raise ValueError(f"VideoDataset: cannot read {str(src.path)!r}: {err}") from err
    if len(frames) != len(wanted):
        raise ValueError(f"VideoDataset: {str(src.path)!r} ended after {len(frames)} of the "
                         f"{len(wanted)} requested frames (starting at {wanted[0]})")
    return frames


def _to_tensor(frames: list[np.ndarray], size: int, crop: bool) -> torch.Tensor:
    """HWC/HW uint8 (or float) frames -> (T, 3, size, size) float32 in [0, 1]."""
    out = []
    for f in frames:
        f = np.asarray(f)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, -1)
        if f.shape[-1] == 4:
            f = f[..., :3]   # drop alpha
        elif f.shape[-1] == 1:
            f = np.repeat(f, 3, -1)
        scale = 255.0 if f.dtype == np.uint8 else (65535.0 if f.dtype == np.uint16 else 1.0)
        out.append(torch.from_numpy(f.astype(np.float32) / scale).permute(2, 0, 1))
    shapes = {tuple(x.shape) for x in out}
    if len(shapes) != 1:
        raise ValueError(f"VideoDataset: frames of one video differ in shape: {sorted(shapes)}")
    video = torch.stack(out)
    h, w = video.shape[-2:]
    if crop and h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        video = video[..., top:top + side, left:left + side]
    if video.shape[-2:] != (size, size):
        video = F.interpolate(video, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
    return video.clamp_(0, 1).contiguous()
