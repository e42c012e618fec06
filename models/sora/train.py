"""Training the Sora pipeline on the embedded world, in the papers' order: the video VAE
first (reconstruction + small KL), then the DiT and the text encoder together with the
rectified-flow loss on the frozen VAE's latents (encoded once and cached: the VAE never
runs again during DiT training). Both stages run on the shared `Trainer`
(models/common: progress, atomic safetensors checkpoints, exact resume), each in its own
sub-folder of the run, so an interrupted run continues where it stopped.

Under `torchrun` both stages train data-parallel (DDP): each process takes its equal share
of every global batch and its rows of the batch's random draws (`rank_rows`), so the run
follows the one-process run of the same global batch (up to the order in which the
gradients are summed); rank 0 writes the checkpoints, the model and the metrics."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import torch

from wmkernels.models.common import (
    DistInfo,
    TrainConfig,
    Trainer,
    all_reduce_mean,
    rank_rows,
    wrap_ddp,
)
from wmkernels.models.common.optim import adamw, warmup_cosine_lambda
from wmkernels.models.data import make_clips
from wmkernels.models.sora.config import SoraConfig
from wmkernels.models.sora.pipeline import Sora
from wmkernels.models.sora.text import Tokenizer

Log = Callable[[str], None]


def world_clips(cfg: SoraConfig, n: int, *, split: str) -> dict:
    """`n` clips of the embedded world for `split` ("train" or "eval"; disjoint clip ranges
    of the same seed), video as uint8 (n, T, 3, size, size) to keep memory low."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    start = 0 if split == "train" else 1_000_000
    return make_clips(n, frames=cfg.frames, size=cfg.size, seed=cfg.train.seed,
                      config=cfg.world_config(), start=start,
                      dtype=torch.uint8)


def to_pixels(video_u8: torch.Tensor, device: torch.device | str | None = None
              ) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the VAE's pixel range), on `device`."""
    return video_u8.to(device).float().div_(127.5).sub_(1.0)


def _lr_schedule(optimizer: torch.optim.Optimizer, steps: int):
    # 100 warmup steps whatever the run's length, then cosine decay to a tenth of the peak
    return warmup_cosine_lambda(optimizer, warmup=100, total=steps, floor=0.1)


def _indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """Batch indices as a function of (seed, step) only: a resumed run sees the same data."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, n, (batch,), generator=gen)


def _loop(steps: int, out_dir: str | None, seed: int, progress: bool) -> TrainConfig:
    return TrainConfig(steps=steps, log_every=max(1, steps // 10), out_dir=out_dir, seed=seed,
                      checkpoint_every=max(1, steps // 4), grad_clip=1.0, progress=progress)


def _share(batch: int, dist: DistInfo | None, name: str) -> int:
    """This rank's rows of a global batch of `batch` (all of them in one process)."""
    world = 1 if dist is None else dist.world_size
    if batch % world:
        raise ValueError(f"train.{name} ({batch}) must be divisible by the number of "
                         f"processes ({world})")
    return batch // world


def train_vae(model: Sora, train_video: torch.Tensor, eval_video: torch.Tensor, *,
              steps: int, out_dir: str | None = None, log: Log = print,
              progress: bool = True, dist: DistInfo | None = None) -> dict:
    """Train `model.vae` on uint8 clips (checkpoints and resume in `out_dir` when given).
    dist: the process group from `init_distributed()` under torchrun (DDP; cfg.vae_batch
    is the global batch). Returns {"vae_psnr": held-out PSNR (dB), "vae_time_s"}."""
    cfg = model.cfg.train
    dev = model.latent_scale.device
    rows = _share(cfg.vae_batch, dist, "vae_batch")
    opt = adamw(model.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)

    def loss_fn(vae, x):
        loss, metrics = vae(x, dist=dist)
        return {"loss": loss, "psnr": metrics["psnr"]}

    def batch_fn(step):
        idx = rank_rows(lambda n: _indices(len(train_video), n, cfg.seed, step), rows, dist)
        return to_pixels(train_video[idx], dev)

    t0 = time.time()
    trainer = Trainer(wrap_ddp(model.vae, dist or DistInfo()), opt, loss_fn, batch_fn,
                      _loop(steps, out_dir, cfg.seed, progress),
                      scheduler=_lr_schedule(opt, steps), configs={"sora": model.cfg})
    for rec in trainer.fit():
        log(f"vae step {rec['step']}/{steps} loss {rec['loss']:.4f} train psnr "
            f"{rec['psnr']:.2f} dB")
    model.vae.eval()
    return {"vae_psnr": vae_psnr(model, eval_video), "vae_time_s": time.time() - t0}


@torch.no_grad()
def vae_psnr(model: Sora, video_u8: torch.Tensor, batch: int = 32) -> float:
    """Reconstruction PSNR (dB, pixels in [0, 1]) of the VAE's mean latent, over all clips."""
    se, n = 0.0, 0
    for i in range(0, video_u8.shape[0], batch):
        x = to_pixels(video_u8[i:i + batch], model.latent_scale.device)
        rec = model.vae.decode(model.vae.encode(x)).clamp(-1, 1)
        se += ((rec - x) / 2).pow(2).sum().item()
        n += x.numel()
    return 10 * math.log10(1.0 / (se / n))


@torch.no_grad()
def encode_latents(model: Sora, video_u8: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Unscaled VAE mean latents (N, T', C, H', W') of uint8 clips."""
    dev = model.latent_scale.device
    return torch.cat([model.vae.encode(to_pixels(video_u8[i:i + batch], dev))
                      for i in range(0, video_u8.shape[0], batch)])


def train_dit(model: Sora, latents: torch.Tensor, captions: list[str], *, steps: int,
              out_dir: str | None = None, log: Log = print, progress: bool = True,
              dist: DistInfo | None = None) -> dict:
    """Train the DiT and the text encoder on scaled latents and their captions (the VAE is
    frozen: only its cached latents are used). dist: as for `train_vae` (cfg.dit_batch is
    the global batch). Returns {"dit_loss": mean loss of the last 10% of steps (over the
    ranks under DDP), "dit_time_s"}."""
    cfg = model.cfg.train
    rows = _share(cfg.dit_batch, dist, "dit_batch")
    params = list(model.dit.parameters()) + list(model.text_encoder.parameters())
    opt = adamw(params, lr=cfg.dit_lr, weight_decay=0.0)

    def batch_fn(step):
        idx = rank_rows(lambda n: _indices(len(latents), n, cfg.seed + 1, step), rows, dist)
        return latents[idx.to(latents.device)], [captions[i] for i in idx.tolist()]

    t0 = time.time()
    # DDP wraps the whole model (the checkpoint keeps its layout); the frozen VAE must then
    # hold no trainable parameters, or DDP would wait for gradients it never gets
    model.vae.requires_grad_(False)
    try:
        trainer = Trainer(wrap_ddp(model, dist or DistInfo()), opt,
                          lambda m, batch: m(*batch, dist=dist), batch_fn,
                          _loop(steps, out_dir, cfg.seed + 1, progress),
                          scheduler=_lr_schedule(opt, steps), configs={"sora": model.cfg})
        for rec in trainer.fit():
            log(f"dit step {rec['step']}/{steps} loss {rec['loss']:.4f}")
    finally:
        model.vae.requires_grad_(True)
    model.eval()
    tail = trainer.losses[-max(1, steps // 10):]
    return {"dit_loss": all_reduce_mean(sum(tail) / max(1, len(tail))),
            "dit_time_s": time.time() - t0}


def train(cfg: SoraConfig, out_dir: str, *, log: Log = print, progress: bool = True,
          vae_checkpoint: str | None = None, device: str = "cpu",
          dist: DistInfo | None = None) -> tuple[Sora, dict]:
    """Full training run on `device`. Writes `out_dir/sora.safetensors` (every weight +
    config + vocabulary) and `out_dir/train_metrics.json`; stage checkpoints live in
    `out_dir/vae` and `out_dir/dit` (rerunning the same command resumes). With
    `vae_checkpoint` (a Sora checkpoint of the same config) its VAE is reused and VAE
    training skipped. dist: the process group from `init_distributed()` under torchrun:
    every rank trains its share of each global batch on dist.device (which replaces
    `device` when more than one process trains), rank 0 logs and writes the files."""
    cfg.validate()
    if dist is not None and dist.distributed:
        device = dist.device
        if not dist.is_main:
            log, progress = (lambda line: None), False   # one rank reports
        for name in ("vae_batch", "dit_batch"):
            _share(getattr(cfg.train, name), dist, name)   # refused before any work
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    data = world_clips(cfg, cfg.train.clips, split="train")
    held = world_clips(cfg, cfg.train.eval_clips, split="eval")
    tokenizer = Tokenizer.from_captions(data["caption"], cfg.text.max_tokens)
    torch.manual_seed(cfg.train.seed)
    model = Sora(cfg, tokenizer).to(device)
    log(f"{cfg.train.clips} training clips rendered in {time.time() - t0:.1f}s; vocabulary "
        f"{len(tokenizer)} words")
    metrics: dict = {}
    if vae_checkpoint is not None:
        model.vae.load_state_dict(Sora.load(vae_checkpoint).vae.state_dict())
        model.vae.eval()
        metrics.update(vae_psnr=vae_psnr(model, held["video"]), vae_time_s=0.0,
                       vae_checkpoint=os.path.abspath(vae_checkpoint))
    else:
        metrics.update(train_vae(model, data["video"], held["video"],
                                 steps=cfg.train.vae_steps, out_dir=os.path.join(out_dir, "vae"),
                                 log=log, progress=progress, dist=dist))
    log(f"VAE held-out PSNR {metrics['vae_psnr']:.2f} dB")
    latents = encode_latents(model, data["video"])
    model.latent_scale.fill_(1.0 / latents.std().item())
    metrics.update(train_dit(model, latents * model.latent_scale, data["caption"],
                             steps=cfg.train.dit_steps, out_dir=os.path.join(out_dir, "dit"),
                             log=log, progress=progress, dist=dist))
    metrics["train_time_s"] = time.time() - t0
    metrics["config"] = cfg.to_dict()
    if dist is None or dist.is_main:
        model.save(os.path.join(out_dir, "sora.safetensors"))
        with open(os.path.join(out_dir, "train_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return model, metrics
