"""The Genie world model: video tokenizer + latent action model + dynamics model, and its
checkpoint format (one safetensors file: the weights, with the config as JSON metadata)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from wmkernels.models.genie.config import GenieConfig
from wmkernels.models.genie.dynamics import DynamicsModel
from wmkernels.models.genie.lam import LatentActionModel
from wmkernels.models.genie.tokenizer import VideoTokenizer


class Genie(nn.Module):
    """The three components of Genie, named as in the paper's Figure 3."""

    def __init__(self, cfg: GenieConfig):
        super().__init__()
        self.cfg = cfg.validate()
        self.tokenizer = VideoTokenizer(cfg.tokenizer, cfg.image_size, cfg.frames)
        self.lam = LatentActionModel(cfg.lam, cfg.image_size, cfg.frames)
        self.dynamics = DynamicsModel(cfg.dynamics, cfg.tokenizer.codebook_size,
                                      cfg.lam.num_actions, cfg.frames, cfg.tokens_per_frame)

    @property
    def num_actions(self) -> int:
        return self.cfg.lam.num_actions


def save_checkpoint(model: Genie, path: str | os.PathLike, extra: dict | None = None) -> None:
    """Write `model`'s weights and config to `path` atomically (temp file + rename), so an
    interrupted run never leaves a truncated checkpoint. `extra`: JSON-able metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"format": "wmkernels.genie/1", "config": json.dumps(model.cfg.to_dict()),
            "extra": json.dumps(extra or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """-> (Genie in eval mode on `device`, extra metadata dict).

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a
    Genie checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != "wmkernels.genie/1":
        raise ValueError(f"{str(path)!r} is not a Genie checkpoint (metadata format "
                         f"{meta.get('format')!r}, expected 'wmkernels.genie/1')")
    model = Genie(GenieConfig.from_dict(json.loads(meta["config"])))
    model.load_state_dict(load_file(str(path)))
    return model.to(device).eval(), json.loads(meta.get("extra", "{}"))
