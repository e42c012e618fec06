"""Genie evaluation on held-out clips: tokenizer PSNR, controllability (ΔtPSNR), agreement of
latent with true actions (NMI), and generation speed (frames/s) with wmkernels and a KV cache
against the eager reference without one."""

from __future__ import annotations

import statistics
import time

import torch

from wmkernels import use_backend
from wmkernels.models.data import action_identifiability
from wmkernels.models.genie.config import IMAGE_CLIPS
from wmkernels.models.genie.metrics import delta_psnr, normalized_mutual_info, psnr
from wmkernels.models.genie.model import Genie
from wmkernels.models.genie.play import play


@torch.no_grad()
def tokenizer_psnr(model: Genie, video: torch.Tensor) -> float:
    """PSNR (dB) of encode -> quantize -> decode over clips (B, T, 3, H, W) in [0, 1]."""
    recon = model.tokenizer.decode(model.tokenizer.encode(video)[1])
    return float(psnr(recon, video))


@torch.no_grad()
def action_nmi(model: Genie, video: torch.Tensor, true_actions: torch.Tensor) -> float:
    """NMI between the LAM's latent actions and the world's true actions, (B, T-1) each."""
    return _nmi(model.lam.infer_actions(video), true_actions)


def _nmi(latent: torch.Tensor, true_actions: torch.Tensor) -> float:
    return normalized_mutual_info(latent.reshape(-1).cpu().numpy(),
                                  true_actions.reshape(-1).cpu().numpy())


@torch.no_grad()
def controllability(model: Genie, video: torch.Tensor, *, t: int = 4,
                    seeds: tuple[int, ...] = (0, 1, 2)) -> dict:
    """ΔtPSNR (Genie §3): prompt = the first frame; x̂_t is generated with the latent actions
    the LAM infers from the real clip, x̂'_t with uniformly random actions, and both are
    compared with the real frame t (t frames after the prompt). One value per generation
    seed; returns {"delta_psnr": mean, "delta_psnr_std": std over seeds, "per_seed": [...],
    "psnr_inferred": mean, "psnr_random": mean}."""
    if video.shape[1] < t + 1:
        raise ValueError(f"controllability at t={t} needs clips of >= {t + 1} frames, got "
                         f"{video.shape[1]}")
    clip = video[:, :t + 1]
    prompt, target = clip[:, :1], clip[:, t]
    inferred = model.lam.infer_actions(clip)
    per_seed, real, rand = [], [], []
    for seed in seeds:
        g = torch.Generator(device=video.device).manual_seed(seed)
        random_actions = torch.randint(0, model.num_actions, inferred.shape, generator=g,
                                       device=video.device)
        g.manual_seed(1000 + seed)
        x_hat = play(model, prompt, inferred, generator=g)[:, t]
        g.manual_seed(1000 + seed)
        x_rand = play(model, prompt, random_actions, generator=g)[:, t]
        per_seed.append(delta_psnr(target, x_hat, x_rand))
        dims = (1, 2, 3)
        real.append(float(psnr(target, x_hat, dims=dims).mean()))
        rand.append(float(psnr(target, x_rand, dims=dims).mean()))
    return {"delta_psnr": statistics.fmean(per_seed),
            "delta_psnr_std": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
            "per_seed": per_seed, "psnr_inferred": statistics.fmean(real),
            "psnr_random": statistics.fmean(rand)}


@torch.no_grad()
def generation_fps(model: Genie, prompt: torch.Tensor, actions: torch.Tensor, *,
                   backend_name: str | None, use_cache: bool, repeats: int = 1) -> float:
    """Generated frames per second of `play` (tokenizing the prompt and decoding pixels
    included) on `backend_name` (None = wmkernels' automatic choice, "reference" = eager)."""
    g = torch.Generator(device=prompt.device)
    with use_backend(backend_name):
        play(model, prompt, actions, use_cache=use_cache, generator=g.manual_seed(0))  # warmup
        start = time.perf_counter()
        for i in range(repeats):
            play(model, prompt, actions, use_cache=use_cache, generator=g.manual_seed(i))
        if prompt.device.type == "cuda":
            torch.cuda.synchronize(prompt.device)
        seconds = time.perf_counter() - start
    return actions.numel() * repeats / seconds


def evaluate(model: Genie, video: torch.Tensor, true_actions: torch.Tensor, *, t: int = 4,
             seeds: tuple[int, ...] = (0, 1, 2), speed: bool = True,
             image_clips: int = IMAGE_CLIPS) -> dict:
    """All Genie metrics on held-out clips (video (B, T, 3, H, W), true actions (B, T-1), the
    clips of `held_out`), plus "action_nmi_ceiling": the best NMI any frame-based labelling
    reaches on the same clips (some actions leave identical frames, e.g. left against a wall).

    The action metrics use every clip: they cost one LAM pass, and NMI on 128 clips is too
    noisy to compare runs by (one LAM read 0.467 on 128 clips and 0.522 on 512). Tokenizer
    PSNR and ΔtPSNR, which decode pixels and generate, use the first `image_clips`."""
    model.eval()
    cfg = model.cfg
    ceiling = action_identifiability(video.shape[0], cfg.frames, seed=cfg.train.seed + 1,
                                     config=cfg.world_config())["oracle_nmi"]
    latent = model.lam.infer_actions(video)
    images = video[:image_clips]
    out = {"tokenizer_psnr": tokenizer_psnr(model, images),
           "action_nmi": _nmi(latent, true_actions),
           # ΔtPSNR draws uniformly random actions: codes the LAM never emits were never
           # trained in the dynamics, so read it next to how many codes are in use
           "action_codes_used": int(latent.unique().numel()),
           "action_nmi_ceiling": ceiling, "action_clips": video.shape[0],
           "image_clips": images.shape[0]}
    out.update({f"control_{k}": v for k, v in controllability(model, images, t=t,
                                                               seeds=seeds).items()})
    if speed:
        n = video.shape[1] - 1
        prompt = video[:1, :1]
        acts = torch.randint(0, model.num_actions, (1, n), device=video.device,
                             generator=torch.Generator(device=video.device).manual_seed(0))
        fast = generation_fps(model, prompt, acts, backend_name=None, use_cache=True)
        slow = generation_fps(model, prompt, acts, backend_name="reference", use_cache=False)
        out.update(fps_wmkernels_cache=fast, fps_reference_nocache=slow,
                   fps_speedup=fast / slow)
    return out
