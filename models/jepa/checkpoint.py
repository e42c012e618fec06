"""JEPA checkpoints: weights in safetensors, the variant and its config in the file's metadata,
written atomically (temporary file + rename) so an interrupted save never leaves a torn file."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from wmkernels.models.jepa import config as C


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(variant: str, d: dict):
    """Rebuild a config dataclass (nested encoder/predictor configs included)."""
    cls = type(C.get_config(variant, "tiny"))
    kwargs = dict(d)
    for f in dataclasses.fields(cls):
        if f.name not in kwargs:
            continue
        v = kwargs[f.name]
        if f.name == "encoder" and isinstance(v, dict):
            kwargs[f.name] = C.EncoderConfig(**_tuples(v))
        elif f.name == "predictor" and isinstance(v, dict):
            kwargs[f.name] = C.PredictorConfig(**_tuples(v))
        elif isinstance(v, list):
            kwargs[f.name] = tuple(v)
    return cls(**kwargs)


def _tuples(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def save_checkpoint(path: str | os.PathLike, model: nn.Module, variant: str, cfg,
                    step: int, extra: dict | None = None) -> Path:
    """Write `model.state_dict()` and {variant, config, step, extra} to `path` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"variant": variant, "config": json.dumps(config_to_dict(cfg)), "step": str(step),
            "extra": json.dumps(extra or {})}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, metadata) of a checkpoint; metadata has variant, config (a config
    dataclass), step (int) and extra (dict). Raises FileNotFoundError / ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"checkpoint {str(path)!r} is not a readable safetensors file: "
                         f"{e}") from e
    if "variant" not in meta or "config" not in meta:
        raise ValueError(f"checkpoint {str(path)!r} has no JEPA metadata (variant, config)")
    variant = meta["variant"]
    return state, {"variant": variant,
                   "config": config_from_dict(variant, json.loads(meta["config"])),
                   "step": int(meta.get("step", 0)),
                   "extra": json.loads(meta.get("extra", "{}"))}
