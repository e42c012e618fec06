"""The Genie world model: video tokenizer + latent action model + dynamics model, and its
checkpoint format (one safetensors file: the weights, with the config as JSON metadata and
the weights' checksum, models/common/checkpoint_io.py)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from torch import nn

from wmkernels.models.common.checkpoint_io import load_tensors, save_tensors
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

    def set_sampler(self, **settings) -> None:
        """Decode with other MaskGIT settings (maskgit_steps, temperature,
        choice_temperature); the config, and so a checkpoint saved after, records them."""
        self.dynamics.set_sampler(**settings)
        self.cfg = dataclasses.replace(self.cfg, dynamics=self.dynamics.cfg)


def save_checkpoint(path: str | os.PathLike, model: Genie, *, extra: dict | None = None
                    ) -> Path:
    """Write `model`'s weights and config to `path` atomically and durably (temp file, fsync,
    rename), so an interrupted run never leaves a truncated checkpoint; returns the path.
    `extra`: JSON-able metadata. Path first, as models.common.save_checkpoint takes it."""
    if not isinstance(model, Genie):
        # the order was (model, path) once: say so rather than fail inside the writer
        raise TypeError(f"save_checkpoint(path, model): model must be a Genie, got "
                        f"{type(model).__name__}")
    meta = {"format": "wmkernels.genie/1", "config": json.dumps(model.cfg.to_dict()),
            "extra": json.dumps(extra or {})}
    return save_tensors(path, model.state_dict(), meta)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """-> (Genie in eval mode on `device`, extra metadata dict).

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a
    Genie checkpoint, is truncated or corrupt (its checksum), or whose weights do not fit
    its config.
    """
    def check(meta: dict) -> None:
        if meta.get("format") != "wmkernels.genie/1":
            raise ValueError(f"{str(path)!r} is not a Genie checkpoint (metadata format "
                             f"{meta.get('format')!r}, expected 'wmkernels.genie/1')")

    tensors, meta = load_tensors(path, "checkpoint", check=check)
    try:
        model = Genie(GenieConfig.from_dict(json.loads(meta["config"])))
        model.load_state_dict(tensors)
        extra = json.loads(meta.get("extra", "{}"))
    except (KeyError, TypeError, RuntimeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is a damaged Genie checkpoint: {err}") from None
    return model.to(device).eval(), extra
