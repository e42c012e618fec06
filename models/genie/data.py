"""Clips of the embedded world for Genie: a pre-rendered pool to draw training batches from
and held-out clips (a different seed) for evaluation."""

from __future__ import annotations

import torch

from wmkernels.models.common.distributed import get_rank, get_world_size
from wmkernels.models.data import make_clips
from wmkernels.models.genie.config import GenieConfig


class ClipPool:
    """`n` world clips of cfg.frames frames at cfg.image_size, stored as uint8 (4x smaller
    than float), served as float batches in [0, 1] with their true actions.

    batch(step) draws `batch_size` clips with a generator seeded by (seed, step), so a run
    is reproducible and a resumed run sees the same batches. Under torchrun each rank takes
    its own `batch_size` clips of one (seed, step) draw of batch_size x world_size.

    After `encode(tokenizer, lam)` a batch also carries the clips' codes and latent actions:
    the dynamics trains on a frozen tokenizer and LAM, so each clip is encoded once rather
    than every time it is drawn.
    """

    def __init__(self, cfg: GenieConfig, n: int, *, seed: int, start: int = 0,
                 device: str | torch.device = "cpu"):
        if n < 1:
            raise ValueError(f"n (clips in the pool) must be >= 1, got {n}")
        clips = make_clips(n, frames=cfg.frames, size=cfg.image_size, seed=seed, start=start,
                           config=cfg.world_config(), dtype=torch.uint8)
        self.video = clips["video"].to(device)
        self.actions = clips["actions"].to(device)
        self.batch_size, self.seed = cfg.train.batch_size, seed
        self.encoded: tuple[torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def encode(self, tokenizer, lam, chunk: int = 64) -> None:
        """Store every clip's codes (N, T, h, w) under `tokenizer` and latent actions (N, T-1)
        under `lam` (both in eval mode, so their EMA codebooks are untouched); later batches
        return them as third and fourth elements."""
        tokenizer.eval()
        lam.eval()
        codes, actions = [], []
        for i in range(0, len(self), chunk):
            video = self.video[i:i + chunk].float() / 255
            codes.append(tokenizer.encode(video)[1])
            actions.append(lam.infer_actions(video))
        self.encoded = torch.cat(codes), torch.cat(actions)

    def __len__(self) -> int:
        return self.video.shape[0]

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        rank, world = get_rank(), get_world_size()
        idx = torch.randint(0, len(self), (self.batch_size * world,), generator=g)
        idx = idx[rank * self.batch_size:(rank + 1) * self.batch_size].to(self.video.device)
        batch = (self.video[idx].float() / 255, self.actions[idx])
        if self.encoded is None:
            return batch
        return (*batch, *(t[idx] for t in self.encoded))

    def all(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first `n` clips (all by default) as float video and actions."""
        n = len(self) if n is None else n
        return self.video[:n].float() / 255, self.actions[:n]


def held_out(cfg: GenieConfig, n: int, *, seed: int,
             device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`n` evaluation clips from a seed disjoint from training's (training uses `seed`,
    evaluation `seed + 1`): (video (n, T, 3, H, W) float in [0, 1], actions (n, T-1))."""
    clips = make_clips(n, frames=cfg.frames, size=cfg.image_size, seed=seed + 1,
                       config=cfg.world_config())
    return clips["video"].to(device), clips["actions"].to(device)
