"""Training the Sora pipeline on the embedded world, in the papers' order: the video VAE
first (reconstruction + small KL), then the DiT and the text encoder together with the
rectified-flow loss on the frozen VAE's latents (encoded once and cached: the VAE never
runs again during DiT training)."""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable

import torch
from tqdm import tqdm
from wmkernels.models.data import WorldConfig, make_clips
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
                      config=WorldConfig(num_balls=cfg.world_balls), start=start,
                      dtype=torch.uint8)


def to_pixels(video_u8: torch.Tensor, device: torch.device | str | None = None
              ) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (the VAE's pixel range), on `device`."""
    return video_u8.to(device).float().div_(127.5).sub_(1.0)


def _lr(step: int, total: int, peak: float, warmup: int = 100) -> float:
    """Linear warm-up then cosine decay to 10% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_vae(model: Sora, train_video: torch.Tensor, eval_video: torch.Tensor, *,
              steps: int, log: Log = print, progress: bool = True) -> dict:
    """Train `model.vae` on uint8 clips; returns {"vae_psnr": held-out PSNR (dB), "vae_time_s"}."""
    cfg = model.cfg.train
    vae = model.vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    dev = model.latent_scale.device
    pick = torch.Generator().manual_seed(cfg.seed)           # batch indices (CPU)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)  # posterior noise
    t0 = time.time()
    bar = tqdm(range(steps), desc="vae", disable=not progress, mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, cfg.vae_lr)
        idx = torch.randint(0, train_video.shape[0], (cfg.vae_batch,), generator=pick)
        loss, m = vae.loss(to_pixels(train_video[idx], dev), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        bar.set_postfix(psnr=f"{m['psnr']:.2f}")
        if (step + 1) % max(1, steps // 5) == 0:
            log(f"vae step {step + 1}/{steps} loss {loss.item():.4f} train psnr "
                f"{m['psnr']:.2f} dB ({time.time() - t0:.0f}s)")
    vae.eval()
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
              log: Log = print, progress: bool = True) -> dict:
    """Train the DiT and the text encoder on scaled latents and their captions; returns
    {"dit_loss": mean loss of the last 10% of steps, "dit_time_s"}."""
    cfg = model.cfg.train
    params = list(model.dit.parameters()) + list(model.text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.dit_lr, weight_decay=0.0)
    pick = torch.Generator().manual_seed(cfg.seed + 1)
    gen = torch.Generator(device=latents.device).manual_seed(cfg.seed + 1)
    model.dit.train()
    model.text_encoder.train()
    t0, tail = time.time(), []
    bar = tqdm(range(steps), desc="dit", disable=not progress, mininterval=5)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, cfg.dit_lr)
        idx = torch.randint(0, latents.shape[0], (cfg.dit_batch,), generator=pick)
        prompts = [captions[i] for i in idx.tolist()]
        loss = model.loss(latents[idx.to(latents.device)], prompts, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step >= steps * 0.9:
            tail.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0:
            log(f"dit step {step + 1}/{steps} loss {loss.item():.4f} "
                f"({time.time() - t0:.0f}s)")
    model.dit.eval()
    model.text_encoder.eval()
    return {"dit_loss": sum(tail) / max(1, len(tail)), "dit_time_s": time.time() - t0}


def train(cfg: SoraConfig, out_dir: str, *, log: Log = print, progress: bool = True,
          vae_checkpoint: str | None = None, device: str = "cpu") -> tuple[Sora, dict]:
    """Full training run on `device`. Writes `out_dir/sora.safetensors` (every weight + config +
    vocabulary) and `out_dir/train_metrics.json`. With `vae_checkpoint` (a Sora checkpoint
    of the same config) the trained VAE is reused and its training skipped."""
    cfg.validate()
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    t0 = time.time()
    data = world_clips(cfg, cfg.train.clips, split="train")
    held = world_clips(cfg, cfg.train.eval_clips, split="eval")
    tokenizer = Tokenizer.from_captions(data["caption"], cfg.text.max_tokens)
    model = Sora(cfg, tokenizer).to(device)
    log(f"{cfg.train.clips} training clips rendered in {time.time() - t0:.1f}s; vocabulary "
        f"{len(tokenizer)} words")
    metrics: dict = {}
    if vae_checkpoint is not None:
        model.vae.load_state_dict(Sora.load(vae_checkpoint).vae.state_dict())
        model.vae.eval()
        metrics["vae_psnr"] = vae_psnr(model, held["video"])
        metrics["vae_time_s"] = 0.0
    else:
        metrics.update(train_vae(model, data["video"], held["video"],
                                 steps=cfg.train.vae_steps, log=log, progress=progress))
    log(f"VAE held-out PSNR {metrics['vae_psnr']:.2f} dB")
    latents = encode_latents(model, data["video"])
    model.latent_scale.fill_(1.0 / latents.std().item())
    metrics.update(train_dit(model, latents * model.latent_scale, data["caption"],
                             steps=cfg.train.dit_steps, log=log, progress=progress))
    metrics["train_time_s"] = time.time() - t0
    model.save(os.path.join(out_dir, "sora.safetensors"))
    with open(os.path.join(out_dir, "train_metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return model, metrics


__all__ = ["encode_latents", "to_pixels", "train", "train_dit", "train_vae",
           "vae_psnr", "world_clips"]
