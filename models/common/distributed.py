"""Distributed data-parallel training under `torchrun` (DDP; gloo on CPU, nccl on GPU).

    torchrun --nproc_per_node=2 -m wmkernels.cli genie train ...

`init_distributed()` reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); without it everything degrades to one process and no process
group, so the same training script runs with and without torchrun.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world_size, local_rank, its device, and whether
    a process group was initialised here (so `cleanup` knows what to destroy)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an int, got {value!r}") from None


def init_distributed(backend: str | None = None, device: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment, if there is one.

    Args:
        backend: "gloo" or "nccl"; default nccl when CUDA is available, else gloo.
        device: "cpu" or "cuda" to force a device type; default cuda when available.

    Returns:
        DistInfo. On CUDA the process's device is cuda:LOCAL_RANK (and made current).
        With WORLD_SIZE unset or 1 no process group is created.

    Raises:
        ValueError: bad backend/device names or environment values.
    """
    if backend not in (None, "gloo", "nccl"):
        raise ValueError(f"init_distributed: backend must be 'gloo', 'nccl' or None, "
                         f"got {backend!r}")
    if device not in (None, "cpu", "cuda"):
        raise ValueError(f"init_distributed: device must be 'cpu', 'cuda' or None, got {device!r}")
    use_cuda = torch.cuda.is_available() if device is None else device == "cuda"
    rank, world = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", rank)
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, initialized=False)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, False)
    backend = backend or ("nccl" if use_cuda else "gloo")
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            device_id=dev if use_cuda else None)
    return DistInfo(rank, world, local_rank, dev, initialized=True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group that `init_distributed` created (no-op otherwise).

    Every rank waits for the others first: a rank that tears gloo down while a peer is
    still finishing its last collective can abort that peer's process at exit."""
    if info.initialized and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0, the process that logs and writes files."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def wrap_ddp(model: nn.Module, info: DistInfo, **ddp_kwargs) -> nn.Module:
    """DDP-wrap `model` (already on info.device) when running distributed; else return it.
    DDP broadcasts rank 0's parameters and buffers at construction, so replicas start equal
    whatever each rank initialised."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or torch.compile) wrapper, for saving and evaluation."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def all_reduce_mean(value: torch.Tensor | float) -> float:
    """Mean of a scalar over ranks (for logging metrics); the value itself without DDP."""
    if get_world_size() == 1:
        return float(value)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / get_world_size()


def rank_rows(draw: Callable[[int], torch.Tensor], rows: int,
              info: DistInfo | None) -> torch.Tensor:
    """This rank's `rows` rows of a random draw made for the whole global batch.

    `draw(n)` draws n rows (noise, timesteps, batch indices). Every rank draws all
    world_size * rows of them, in the same order from generators seeded alike, and keeps
    rows rank * rows onwards: each sample gets the draw a one-process run of the global
    batch gives it, and the ranks' generators stay in step. One process: `draw(rows)`."""
    if info is None or not info.distributed:
        return draw(rows)
    return draw(rows * info.world_size)[info.rank * rows:(info.rank + 1) * rows]


def rank_mean(value: torch.Tensor, info: DistInfo | None) -> torch.Tensor:
    """The mean over ranks of a tensor that carries no gradient (e.g. a loss's normaliser,
    which must be the global batch's for DDP's averaged gradients to be the global
    batch's); `value` itself in one process."""
    if info is None or not info.distributed:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / info.world_size


def make_loader(dataset: Dataset, batch_size: int, info: DistInfo, *, shuffle: bool = True,
                seed: int = 0, drop_last: bool = True, **loader_kwargs) -> DataLoader:
    """DataLoader giving each rank a disjoint shard of `dataset` (batch_size is per rank).

    A DistributedSampler is used even for one process: its order is a function of
    (seed, epoch) alone, which is what lets `step_batches` resume mid-epoch exactly.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"make_loader: batch_size must be a positive int, got {batch_size!r}")
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                 shuffle=shuffle, seed=seed, drop_last=drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                      **loader_kwargs)


def step_batches(loader: DataLoader) -> Callable[[int], object]:
    """Turn a loader into `batch_fn(step)` for `Trainer`: batch number `step` of the endless
    sequence epoch 0, epoch 1, ... (calling `sampler.set_epoch` when it has one).

    Consecutive steps just advance the iterator; any other step (e.g. after resuming)
    restarts the right epoch and skips to the batch, so a resumed run sees the same data.
    """
    per_epoch = len(loader)
    if per_epoch == 0:
        raise ValueError("step_batches: the loader yields no batches (dataset smaller than "
                         "one batch per rank with drop_last?)")
    state = {"next": None, "it": None}

    def batch_fn(step: int):
        if state["next"] != step:
            epoch, offset = divmod(step, per_epoch)
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(epoch)
            state["it"] = iter(loader)
            for _ in range(offset):
                next(state["it"])
        elif step % per_epoch == 0:
            if hasattr(loader.sampler, "set_epoch"):
                loader.sampler.set_epoch(step // per_epoch)
            state["it"] = iter(loader)
        state["next"] = step + 1
        return next(state["it"])

    return batch_fn


def rank0_logger(name: str = "wmkernels.models") -> logging.Logger:
    """A logger that prints INFO on rank 0 and only warnings elsewhere, so N ranks do not
    print every line N times."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    return logger
