"""Genie evaluation on held-out clips: tokenizer PSNR, controllability (ΔtPSNR), agreement of
latent with true actions (NMI), what a viewer sees in every generated frame (PSNR against the
real frame and against copying the prompt, whether the agent stays one blob and where it
is, with inferred and with random actions), teacher-forced next-frame token accuracy, and
generation speed (frames/s) with wmkernels and a KV cache against the eager reference
without one."""

from __future__ import annotations

import statistics
import time

import torch

from wmkernels import use_backend
from wmkernels.models.data import action_identifiability, make_clips
from wmkernels.models.genie.config import IMAGE_CLIPS
from wmkernels.models.genie.metrics import (
    agent_metrics,
    delta_psnr,
    normalized_mutual_info,
    psnr,
)
from wmkernels.models.genie.model import Genie
from wmkernels.models.genie.play import _commit, _peek, play


@torch.no_grad()
def tokenizer_psnr(model: Genie, video: torch.Tensor) -> float:
    """PSNR (dB) of encode -> quantize -> decode over clips (B, T, 3, H, W) in [0, 1]."""
    return float(psnr(reconstruct(model, video), video))


@torch.no_grad()
def reconstruct(model: Genie, video: torch.Tensor) -> torch.Tensor:
    """The tokenizer's reconstruction (encode -> quantize -> decode) of clips (B, T, 3, H, W)."""
    return model.tokenizer.decode(model.tokenizer.encode(video)[1])


# The generation seeds every rollout metric averages over (and diagnose reads the same clips)
GENERATION_SEEDS = (0, 1, 2)


@torch.no_grad()
def action_nmi(model: Genie, video: torch.Tensor, true_actions: torch.Tensor) -> float:
    """NMI between the LAM's latent actions and the world's true actions, (B, T-1) each."""
    return _nmi(model.lam.infer_actions(video), true_actions)


def _nmi(latent: torch.Tensor, true_actions: torch.Tensor) -> float:
    return normalized_mutual_info(latent.reshape(-1).cpu().numpy(),
                                  true_actions.reshape(-1).cpu().numpy())


@torch.no_grad()
def rollouts(model: Genie, video: torch.Tensor, *, seeds: tuple[int, ...] = GENERATION_SEEDS
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per generation seed, the clip generated from the real first frame (B, T, 3, H, W):
    with the latent actions the LAM infers from the real clip, and with uniformly random
    actions. The LAM is causal and MaskGIT decodes frame after frame, so frame t of a
    rollout does not depend on how many frames follow it."""
    prompt = video[:, :1]
    inferred = model.lam.infer_actions(video)
    out = []
    for seed in seeds:
        g = torch.Generator(device=video.device).manual_seed(seed)
        random_actions = torch.randint(0, model.num_actions, inferred.shape, generator=g,
                                       device=video.device)
        out.append((generate(model, prompt, inferred, seed),
                    generate(model, prompt, random_actions, seed)))
    return out


def generate(model: Genie, prompt: torch.Tensor, actions: torch.Tensor, seed: int, *,
             prompt_actions: torch.Tensor | None = None) -> torch.Tensor:
    """`play` under generation seed `seed` (its sampler's generator seeded 1000 + seed): the
    frames of `rollouts` for that seed, and of any diagnostic that must match them."""
    g = torch.Generator(device=prompt.device).manual_seed(1000 + seed)
    return play(model, prompt, actions, prompt_actions=prompt_actions, generator=g)


def _control(video: torch.Tensor, pairs, t: int) -> dict:
    target = video[:, t]
    per_seed, real, rand = [], [], []
    for x_hat, x_rand in pairs:
        per_seed.append(delta_psnr(target, x_hat[:, t], x_rand[:, t]))
        real.append(float(psnr(target, x_hat[:, t], dims=(1, 2, 3)).mean()))
        rand.append(float(psnr(target, x_rand[:, t], dims=(1, 2, 3)).mean()))
    return {"delta_psnr": statistics.fmean(per_seed),
            "delta_psnr_std": statistics.stdev(per_seed) if len(per_seed) > 1 else 0.0,
            "per_seed": per_seed, "psnr_inferred": statistics.fmean(real),
            "psnr_random": statistics.fmean(rand)}


@torch.no_grad()
def controllability(model: Genie, video: torch.Tensor, *, t: int = 4,
                    seeds: tuple[int, ...] = GENERATION_SEEDS) -> dict:
    """ΔtPSNR (Genie §3): prompt = the first frame; x̂_t is generated with the latent actions
    the LAM infers from the real clip, x̂'_t with uniformly random actions, and both are
    compared with the real frame t (t frames after the prompt). One value per generation
    seed; returns {"delta_psnr": mean, "delta_psnr_std": std over seeds, "per_seed": [...],
    "psnr_inferred": mean, "psnr_random": mean}."""
    if video.shape[1] < t + 1:
        raise ValueError(f"controllability at t={t} needs clips of >= {t + 1} frames, got "
                         f"{video.shape[1]}")
    clip = video[:, :t + 1]
    return _control(clip, rollouts(model, clip, seeds=seeds), t)


def held_out_colours(cfg, video: torch.Tensor, thing: str = "agent") -> torch.Tensor:
    """The palette id (B,) of the agent (or with thing="ball", the first ball) in each clip
    of `video`, which must be the first B clips of held_out(cfg, n, seed=cfg.train.seed)
    (they are rendered again and compared)."""
    clips = make_clips(video.shape[0], frames=cfg.frames, size=cfg.image_size,
                       seed=cfg.train.seed + 1, config=cfg.world_config())
    if clips["video"].shape != video.shape or not torch.equal(clips["video"],
                                                              video.float().cpu()):
        raise ValueError(f"{thing}_colours: the clips are not held_out(cfg, n, seed=cfg."
                         f"train.seed), so the {thing}'s colour per clip (B,) must be passed")
    return clips["attributes"][f"{thing}_colour"].to(video.device)


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def frame_metrics(video: torch.Tensor, agent_colours: torch.Tensor, pairs,
                  recon: torch.Tensor) -> dict:
    """What a viewer sees in each generated frame t = 1..T-1 (lists indexed by t - 1, means
    over clips and generation seeds), for the rollouts `pairs` (inferred, random actions)
    of `rollouts`, beside two references: the tokenizer's reconstruction `recon` of the
    real clip (the best a generated frame can look) and the first frame copied forward.

    Keys: frame_psnr_{inferred,random,copy,recon} (dB against the real frame),
    frame_one_blob_{inferred,random,recon} (fraction of frames whose agent is exactly one
    8-connected blob of its colour), frame_centroid_{inferred,random} (mean distance in
    pixels between the generated and the real agent's centroid, over the frames that show
    the agent; None where none does), frame_within_2px_{inferred,random} (fraction of
    frames with the agent within 2 px, a frame without it counting as a miss); and the same
    names without "frame_" for all generated frames together."""
    dims = (2, 3, 4)
    real = video[:, 1:]
    copy = video[:, :1].expand_as(real)
    out: dict = {"frame_t": list(range(1, video.shape[1]))}
    series = {"copy": [copy], "recon": [recon[:, 1:]],
              "inferred": [x[:, 1:] for x, _ in pairs], "random": [x[:, 1:] for _, x in pairs]}
    for name, rolls in series.items():
        p = torch.stack([psnr(real, x, dims=dims) for x in rolls])      # (seeds, B, T-1)
        out[f"frame_psnr_{name}"] = p.mean((0, 1)).tolist()
        out[f"psnr_{name}"] = _mean(p)
        if name == "copy":
            continue
        agent = [agent_metrics(x, real, agent_colours) for x in rolls]
        one = torch.stack([a["one_blob"] for a in agent])
        out[f"frame_one_blob_{name}"] = one.double().mean((0, 1)).tolist()
        out[f"one_blob_{name}"] = _mean(one)
        if name == "recon":
            continue
        err = torch.stack([a["centroid_error"] for a in agent])
        found = err.isfinite()
        within = err <= 2.0
        total = torch.where(found, err, 0).sum((0, 1))
        count = found.sum((0, 1))
        out[f"frame_centroid_{name}"] = [float(s / c) if c else None
                                         for s, c in zip(total, count, strict=True)]
        out[f"centroid_{name}"] = float(total.sum() / count.sum()) if count.sum() else None
        out[f"frame_within_2px_{name}"] = within.double().mean((0, 1)).tolist()
        out[f"within_2px_{name}"] = _mean(within)
    return out


@torch.no_grad()
def teacher_forced_logits(model: Genie, tokens: torch.Tensor,
                          actions: torch.Tensor) -> torch.Tensor:
    """Logits (B, T-1, S, vocab) of frames 1..T-1 of code clips tokens (B, T, S), each frame
    fully masked with the real frames before it and actions (B, T-1) as context. The real
    frames' keys/values are served from a KV cache (causal time: a frame sees only the
    frames before it), so each frame costs two frame passes, not a pass over its prefix."""
    dyn = model.dynamics
    B, T, S = tokens.shape
    cache = dyn.transformer.make_cache(B)
    frame_actions = dyn.frame_actions(actions)
    mask = torch.ones(B, S, dtype=torch.bool, device=tokens.device)
    out = []
    for t in range(1, T):
        _commit(dyn, tokens[:, t - 1:t], frame_actions[:, t - 1:t], cache, start=t - 1)
        out.append(_peek(dyn, tokens[:, t], mask, actions[:, t - 1], t, cache))
    return torch.stack(out, 1)


@torch.no_grad()
def teacher_forced_accuracy(model: Genie, video: torch.Tensor) -> dict:
    """Next-frame token accuracy of the dynamics with the real past: for t = 1..T-1 the real
    frames 0..t-1's tokens and the inferred latent actions go in, frame t is fully masked,
    and the argmax of its logits is compared with its true tokens. High accuracy with poor
    rollouts points at the sampler or at errors feeding back; low accuracy at the model.
    Returns {"token_accuracy": mean over t, "frame_token_accuracy": [per t]}."""
    tokens = model.tokenizer.encode(video)[1]
    logits = teacher_forced_logits(model, tokens, model.lam.infer_actions(video))
    per_t = (logits.argmax(-1) == tokens[:, 1:]).double().mean((0, 2)).tolist()
    return {"token_accuracy": statistics.fmean(per_t), "frame_token_accuracy": per_t}


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
             seeds: tuple[int, ...] = GENERATION_SEEDS, speed: bool = True,
             image_clips: int = IMAGE_CLIPS, agent_colours: torch.Tensor | None = None) -> dict:
    """All Genie metrics on held-out clips (video (B, T, 3, H, W), true actions (B, T-1), the
    clips of `held_out`), plus "action_nmi_ceiling": the best NMI any frame-based labelling
    reaches on the same clips (some actions leave identical frames, e.g. left against a wall).

    The action metrics use every clip: they cost one LAM pass, and NMI on 128 clips is too
    noisy to compare runs by (one LAM read 0.467 on 128 clips and 0.522 on 512). Tokenizer
    PSNR and ΔtPSNR, which decode pixels and generate, use the first `image_clips`, and so
    do the per-frame metrics of `frame_metrics` (one rollout of the whole clip per seed and
    action kind serves both) and `teacher_forced_accuracy`. agent_colours: the agent's
    palette id in each of those clips; by default read from the world, which holds for
    clips of held_out(cfg, n, seed=cfg.train.seed)."""
    model.eval()
    cfg = model.cfg
    ceiling = action_identifiability(video.shape[0], cfg.frames, seed=cfg.train.seed + 1,
                                     config=cfg.world_config())["oracle_nmi"]
    latent = model.lam.infer_actions(video)
    images = video[:image_clips]
    if agent_colours is None:
        agent_colours = held_out_colours(cfg, images)
    elif agent_colours.shape != images.shape[:1]:
        raise ValueError(f"agent_colours must be ({images.shape[0]},) palette ids, one per "
                         f"clip evaluated, got {tuple(agent_colours.shape)}")
    if video.shape[1] < t + 1:
        raise ValueError(f"controllability at t={t} needs clips of >= {t + 1} frames, got "
                         f"{video.shape[1]}")
    recon = reconstruct(model, images)
    out = {"tokenizer_psnr": float(psnr(recon, images)),
           "action_nmi": _nmi(latent, true_actions),
           # ΔtPSNR draws uniformly random actions: codes the LAM never emits were never
           # trained in the dynamics, so read it next to how many codes are in use
           "action_codes_used": int(latent.unique().numel()),
           "action_nmi_ceiling": ceiling, "action_clips": video.shape[0],
           "image_clips": images.shape[0]}
    pairs = rollouts(model, images, seeds=seeds)
    out.update({f"control_{k}": v for k, v in _control(images, pairs, t).items()})
    out.update(frame_metrics(images, agent_colours, pairs, recon))
    out.update(teacher_forced_accuracy(model, images))
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
