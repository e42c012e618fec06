"""Safetensors files as every checkpoint of the pipelines is written and read.

Written atomically and durably: a temporary file in the same folder, fsync of the file, an
os.replace, fsync of the folder (so the rename itself survives a power loss). The metadata
carries a SHA-256 of the tensors (names, dtypes, shapes and bytes) that `load_tensors`
checks, so a torn, truncated or bit-flipped file is refused by name instead of loading
wrong weights that fail later.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CHECKSUM_KEY = "wmkernels.sha256"


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of `tensors`: every name, dtype, shape and byte, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _fsync_folder(folder: Path) -> None:
    if os.name != "posix":   # Windows cannot open a folder for fsync
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, move it to `path` and
    fsync the folder: readers see the old file or the whole new one, never a torn one.
    Creates the folder when needed; returns `path` as a Path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)   # mkstemp makes it owner-only; a checkpoint is shareable
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> Path:
    """Write `tensors` (moved to CPU, made contiguous) and string `metadata` as a safetensors
    file at `path`, atomically, with their checksum under CHECKSUM_KEY. Returns the path."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {**(metadata or {}), CHECKSUM_KEY: tensor_checksum(tensors)}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_tensors(path: str | os.PathLike, what: str = "checkpoint",
                 device: str | torch.device = "cpu",
                 check: Callable[[dict], None] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors on `device`, metadata) of a safetensors file, its checksum verified.
    `check(metadata)`, when given, runs first: it raises ValueError for a foreign file.

    Raises:
        FileNotFoundError: no file at `path`. ValueError: a folder, a file safetensors
        cannot read (truncated, corrupt, not safetensors) or tensors that do not match
        the checksum stored with them. Each message starts with `what` and the path.
    A file without a checksum (written before they were stored) loads with a warning.
    """
    path = Path(path)
    label = f"{what} {str(path)!r}"
    if not path.exists():
        raise FileNotFoundError(f"{label} does not exist")
    if not path.is_file():
        raise ValueError(f"{label} is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{label} is not a readable safetensors file (truncated or "
                         f"corrupt?): {err}") from None
    if check is not None:
        check(meta)
    expected = meta.get(CHECKSUM_KEY)
    if expected is None:
        warnings.warn(f"{label} carries no tensor checksum (written before checksums were "
                      "stored): loaded unverified", stacklevel=2)
    elif tensor_checksum(tensors) != expected:
        raise ValueError(f"{label} is corrupt: its tensors do not match the checksum saved "
                         "with them")
    if torch.device(device).type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    return tensors, meta
