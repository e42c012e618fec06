"""A plain training loop: seed control, tqdm progress, periodic evaluation, atomic
safetensors checkpoints and exact resume (model, optimizer, scheduler, step, RNG states).

Checkpoint layout (one directory per run):
    out_dir/checkpoint.safetensors   tensors "model.*", "optimizer.*", "rng.*"; JSON metadata
                                     (step, optimizer structure, scheduler, RNG, configs)
    out_dir/config.json              the run's config dataclasses, human-readable
Both are written to a temporary file first, fsynced and moved into place with os.replace
(models/common/checkpoint_io.py), so a crash mid-write leaves the previous checkpoint intact;
the checkpoint carries a checksum of its tensors, checked on load. Resuming checks that the
run's configs match the saved ones (`check_resume`).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from wmkernels.models.common.checkpoint_io import atomic_write, load_tensors, save_tensors
from wmkernels.models.common.distributed import (
    all_reduce_mean,
    barrier,
    is_main_process,
    rank0_logger,
    unwrap,
)

CHECKPOINT_NAME = "checkpoint.safetensors"
CONFIG_NAME = "config.json"
# Loop settings a resumed run may change: when and how much it logs, evaluates and saves,
# where the folder is, and how far it goes (steps). Any other difference means another run.
RESUMABLE_CHANGES = {"train": ("steps", "log_every", "eval_every", "checkpoint_every",
                               "out_dir", "progress")}


@dataclass
class TrainConfig:
    """Loop settings. Counts are optimizer steps; 0 disables a periodic action.

    steps: total steps. log_every: progress/log interval. eval_every: `eval_fn` interval
    (it also runs after the last step when given). checkpoint_every: save interval (a
    final checkpoint is always written when out_dir is set). out_dir: run directory (None:
    no checkpoints). seed: seeds python/numpy/torch before training. grad_clip: max global
    grad norm (None: off). resume: continue from out_dir's checkpoint when one exists.
    progress: show a tqdm bar (rank 0 only).
    """

    steps: int = 1000
    log_every: int = 50
    eval_every: int = 0
    checkpoint_every: int = 0
    out_dir: str | None = None
    seed: int = 0
    grad_clip: float | None = 1.0
    resume: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "log_every", "eval_every", "checkpoint_every", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name}: expected an int >= 0, got {value!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"TrainConfig.grad_clip: expected None or > 0, got {self.grad_clip!r}")


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's global generator and torch (CPU and every GPU)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed_everything: seed must be an int >= 0, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def config_to_dict(config: Any) -> dict:
    """A dataclass (or a dict) as a JSON-ready dict; tuples become lists."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return json.loads(json.dumps(dataclasses.asdict(config)))
    if isinstance(config, dict):
        return json.loads(json.dumps(config))
    raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")


def _as_tuples(value: Any) -> Any:
    """JSON lists back to (nested) tuples."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def config_from_dict(cls: type, data: dict) -> Any:
    """Rebuild dataclass `cls` from `config_to_dict` output (e.g. a checkpoint's configs):
    lists become tuples (nested ones too) where the field's default is a tuple, nested
    dataclass fields are rebuilt recursively, fields missing from `data` keep their defaults.

    Raises:
        TypeError: cls is not a dataclass. ValueError: `data` has keys cls does not know.
    """
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"config_from_dict: cls must be a dataclass type, got {cls!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"config_from_dict: {cls.__name__} has no fields {unknown}")
    values = {}
    for name, value in data.items():
        f = fields[name]
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = config_from_dict(type(default), value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = _as_tuples(value)
        values[name] = value
    return cls(**values)


def config_differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Where two `config_to_dict` trees differ, as "key.path: saved X, now Y" lines."""
    lines = []
    for key in sorted(set(saved) | set(current), key=str):
        name = f"{prefix}{key}"
        old, new = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if isinstance(old, dict) and isinstance(new, dict):
            lines += config_differences(old, new, f"{name}.")
        elif old != new:
            lines.append(f"{name}: saved {old!r}, now {new!r}")
    return lines


def check_resume(path: str | Path, saved: dict, configs: dict[str, Any]) -> None:
    """Raise ValueError when the configs `saved` in the checkpoint at `path` differ from
    this run's `configs` ({name: dataclass or dict}) beyond RESUMABLE_CHANGES: resuming
    would continue another run's weights under this run's settings."""
    def comparable(configs: dict) -> dict:
        tree = {k: config_to_dict(v) for k, v in configs.items()}
        for name, keys in RESUMABLE_CHANGES.items():
            for key in keys:
                tree.get(name, {}).pop(key, None)
        return tree

    current = comparable(configs)
    stored = comparable({k: v for k, v in saved.items() if k in current})
    diffs = config_differences(stored, current)
    if diffs:
        raise ValueError(f"{str(path)!r} holds a run with other settings ({'; '.join(diffs)}); "
                         "resuming it would mix two runs: use another output folder, or "
                         "the saved settings")


def save_config(path: str | Path, **configs: Any) -> None:
    """Write {name: config_to_dict(config)} as indented JSON at `path`, atomically."""
    text = json.dumps({k: config_to_dict(v) for k, v in configs.items()}, indent=2)
    atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def load_config(path: str | Path) -> dict:
    """The dict `save_config` wrote."""
    return json.loads(Path(path).read_text())


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(keys.astype(np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
            "python": [version, list(internal), gauss_next]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda][: torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos,
                         has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state -> (tensors "optimizer.<param id>.<name>", JSON for the rest)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, per_param in sd["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, model: nn.Module, optimizer=None, *, step: int = 0,
                    scheduler=None, configs: dict[str, Any] | None = None,
                    extra: dict | None = None, rng: bool = True) -> Path:
    """Write a safetensors checkpoint at `path` atomically (temporary file + os.replace).

    Args:
        path: file to write. model: its (unwrapped) state_dict is saved under "model.".
        optimizer, scheduler: saved when given. step: the number of steps taken.
        configs: {name: dataclass or dict} stored in the metadata (and by the Trainer in
            config.json beside the file). extra: any JSON-serialisable dict.
        rng: also save the python/numpy/torch RNG states (exact resume).

    Returns:
        The path written.
    """
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in unwrap(model).state_dict().items():
        value = value.detach().cpu().contiguous()
        # safetensors refuses aliased storage (tied weights): store each alias as a copy.
        if value.numel() and value.untyped_storage().data_ptr() in seen:
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        tensors[f"model.{name}"] = value
    meta: dict[str, Any] = {"step": int(step), "extra": extra or {},
                            "configs": {k: config_to_dict(v) for k, v in (configs or {}).items()}}
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _flatten_optimizer(optimizer)
        tensors.update({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()})
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    if rng:
        rng_tensors, meta["rng"] = _rng_state()
        tensors.update({k: v.cpu().contiguous() for k, v in rng_tensors.items()})
    return save_tensors(path, tensors, {"wmkernels": json.dumps(meta)})


def load_checkpoint(path: str | Path, model: nn.Module | None = None, optimizer=None, *,
                    scheduler=None, restore_rng: bool = True, strict: bool = True,
                    map_location: str | torch.device = "cpu",
                    configs: dict[str, Any] | None = None) -> dict:
    """Load what `save_checkpoint` wrote into the given objects.

    Args:
        path: the checkpoint file. model / optimizer / scheduler: restored when given.
        configs: the resuming run's configs; when given, a checkpoint saved with other
            ones is refused before anything is loaded (`check_resume`).
        restore_rng: restore python/numpy/torch RNG states when the file has them.
        strict: passed to `load_state_dict` of the model.
        map_location: device for model/optimizer tensors before loading.

    Returns:
        {"step": int, "configs": dict, "extra": dict}.

    Raises:
        ValueError: a missing, unreadable, corrupt (checksum) or foreign file, weights that
        do not fit `model`, or an optimizer given but none saved.
    """
    path = Path(path)

    def check(metadata: dict) -> None:
        try:
            meta = json.loads(metadata.get("wmkernels", "null"))
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict) or not {"step", "configs", "extra"} <= set(meta):
            raise ValueError(f"load_checkpoint: {str(path)!r} is not a wmkernels checkpoint")

    try:
        tensors, metadata = load_tensors(path, "checkpoint", map_location, check)
    except FileNotFoundError:
        raise ValueError(f"load_checkpoint: no checkpoint file at {str(path)!r}") from None
    meta = json.loads(metadata["wmkernels"])
    if configs is not None:
        check_resume(path, meta["configs"], configs)
    if model is not None:
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            unwrap(model).load_state_dict(state, strict=strict)
        except RuntimeError as err:
            raise ValueError(f"load_checkpoint: the weights in {str(path)!r} do not fit the "
                             f"model: {err}") from None
    if optimizer is not None:
        if "optimizer" not in meta:
            raise ValueError(f"load_checkpoint: {str(path)!r} holds no optimizer state")
        opt = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
        optimizer.load_state_dict(_unflatten_optimizer(opt, meta["optimizer"]))
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    if restore_rng and "rng" in meta:
        _set_rng_state({k: v.cpu() for k, v in tensors.items() if k.startswith("rng.")},
                       meta["rng"])
    return {"step": meta["step"], "configs": meta["configs"], "extra": meta["extra"]}


class Trainer:
    """Runs `config.steps` optimizer steps of `loss_fn(model, batch_fn(step))`.

    Args:
        model: the module being trained (possibly DDP-wrapped; saved unwrapped).
        optimizer: a torch optimizer over the model's parameters.
        loss_fn: (model, batch) -> scalar loss tensor, or a dict with "loss" and other
            scalars to log.
        batch_fn: step -> batch. Making the batch a function of the step (e.g.
            `make_clips(..., start=step * B)` or `distributed.step_batches(loader)`) is
            what makes a resumed run see the same data as an uninterrupted one.
        config: TrainConfig.
        eval_fn: (unwrapped model, step) -> dict of metrics, run in eval mode without
            gradients every `config.eval_every` steps and after the last one.
        scheduler: LR scheduler stepped after every optimizer step.
        after_step: called with the new step count after every optimizer step (and the
            scheduler's), before that step's logging and checkpoint: e.g. to update an
            average of the weights held inside `model`, so that it is saved and resumed
            with it.
        configs: extra config dataclasses (e.g. {"model": ModelConfig(...)}) saved beside
            the checkpoint in config.json and inside it.

    `fit()` returns the history: one dict per log/eval event. `losses` holds every step's
    loss (this rank's). Only rank 0 writes files; every rank resumes from them.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable, batch_fn: Callable[[int], Any], config: TrainConfig, *,
                 eval_fn: Callable | None = None, scheduler=None,
                 after_step: Callable[[int], None] | None = None,
                 configs: dict[str, Any] | None = None) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"Trainer: config must be a TrainConfig, got {type(config).__name__}")
        self.model, self.optimizer = model, optimizer
        self.loss_fn, self.batch_fn = loss_fn, batch_fn
        self.config, self.eval_fn, self.scheduler = config, eval_fn, scheduler
        self.after_step = after_step
        self.configs = {"train": config, **(configs or {})}
        self.step = 0
        self.losses: list[float] = []
        self.history: list[dict] = []
        self.log = rank0_logger()
        seed_everything(config.seed)
        ckpt = self.checkpoint_path
        if config.resume and ckpt is not None and ckpt.is_file():
            self.step = load_checkpoint(ckpt, model, optimizer, scheduler=scheduler,
                                        configs=self.configs)["step"]
            self.log.info(f"resumed from {ckpt} at step {self.step}")

    @property
    def checkpoint_path(self) -> Path | None:
        """out_dir/checkpoint.safetensors, or None without out_dir."""
        return None if self.config.out_dir is None else Path(self.config.out_dir) / CHECKPOINT_NAME

    def save(self) -> None:
        """Write the checkpoint and config.json (rank 0), then wait for every rank."""
        if self.checkpoint_path is not None and is_main_process():
            save_checkpoint(self.checkpoint_path, self.model, self.optimizer, step=self.step,
                            scheduler=self.scheduler, configs=self.configs)
            save_config(self.checkpoint_path.with_name(CONFIG_NAME), **self.configs)
        barrier()

    def train_step(self, batch) -> dict[str, float]:
        """One optimizer step on `batch`; returns its metrics as floats.

        Raises:
            FloatingPointError: when the loss is NaN or infinite (names the step).
        """
        self.model.train()
        out = self.loss_fn(self.model, batch)
        metrics = dict(out) if isinstance(out, dict) else {"loss": out}
        loss = metrics["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {float(loss)} at step {self.step}")
        loss.backward()
        if self.config.grad_clip is not None:
            metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                                  self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        return {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                for k, v in metrics.items()}

    def evaluate(self) -> dict[str, float]:
        """Run `eval_fn` on the unwrapped model in eval mode without gradients; the record
        (keys prefixed "eval/") is appended to `history` and returned."""
        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            metrics = self.eval_fn(model, self.step)
        model.train(was_training)
        record = {"step": self.step, **{f"eval/{k}": float(v) for k, v in metrics.items()}}
        self.history.append(record)
        self.log.info(" ".join(f"{k}={v:.4g}" for k, v in record.items()))
        return record

    def fit(self) -> list[dict]:
        """Train from the current step to `config.steps`: log, evaluate and checkpoint on
        schedule, save at the end. Returns `history`."""
        cfg = self.config
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress
                                                                    and is_main_process()))
        window: dict[str, list[float]] = {}
        while self.step < cfg.steps:
            metrics = self.train_step(self.batch_fn(self.step))
            self.step += 1
            if self.after_step is not None:
                self.after_step(self.step)
            self.losses.append(metrics["loss"])
            for k, v in metrics.items():
                window.setdefault(k, []).append(v)
            bar.update(1)
            if cfg.log_every and (self.step % cfg.log_every == 0 or self.step == cfg.steps):
                record = {"step": self.step, **{k: all_reduce_mean(sum(v) / len(v))
                                                for k, v in window.items()}}
                self.history.append(record)
                bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "step"})
                window = {}
            if self.eval_fn is not None and (
                    (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.steps):
                self.evaluate()
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save()
        bar.close()
        if self.losses or not (self.checkpoint_path and self.checkpoint_path.is_file()):
            self.save()
        return self.history
