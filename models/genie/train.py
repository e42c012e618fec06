"""Genie's training order (paper §2.2): first the video tokenizer alone; then the latent
action model and the dynamics model together — the dynamics on the frozen tokenizer's codes,
conditioned on the LAM's latent actions with a stop-gradient between the two."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from wmkernels.models.genie.model import Genie

Batch = tuple[torch.Tensor, torch.Tensor]   # video (B, T, 3, H, W) in [0, 1], actions (B, T-1)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine decay to 0.1 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(params: Iterable[nn.Parameter], lr: float, weight_decay: float):
    params = [p for p in params if p.requires_grad]
    # no weight decay on biases, norms, embeddings' position tables: the usual AdamW split
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.99))


def _run_phase(name: str, modules: list[nn.Module], steps: int, loss_fn: Callable[[int], dict],
               model: Genie, log: Callable[[dict], None] | None, progress: bool) -> list[dict]:
    tcfg = model.cfg.train
    params = [p for m in modules for p in m.parameters()]
    opt = _optimizer(params, tcfg.lr, tcfg.weight_decay)
    history = []
    bar = tqdm(range(steps), desc=name, disable=not progress, leave=False)
    t0 = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = tcfg.lr * lr_factor(step, tcfg.warmup, steps)
        out = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        row = {k: float(v.detach()) for k, v in out.items()
               if torch.is_tensor(v) and v.numel() == 1}
        row.update(phase=name, step=step, seconds=time.perf_counter() - t0)
        history.append(row)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if log is not None and (step % tcfg.eval_every == 0 or step == steps - 1):
            log(row)
    return history


def train_tokenizer(model: Genie, batches: Callable[[int], Batch], steps: int | None = None, *,
                    log: Callable[[dict], None] | None = None,
                    progress: bool = False) -> list[dict]:
    """Phase 1: the VQ-VAE on raw clips. `batches(step)` -> (video, true actions); the true
    actions are never used for training. Returns one metrics dict per step."""
    steps = model.cfg.train.tokenizer_steps if steps is None else steps
    model.tokenizer.train()

    def loss_fn(step):
        out = model.tokenizer(batches(step)[0])
        return {**{k: out[k] for k in ("loss", "recon_loss", "vq_loss")},
                "codebook_perplexity": model.tokenizer.vq.perplexity}

    return _run_phase("tokenizer", [model.tokenizer], steps, loss_fn, model, log, progress)


def train_dynamics(model: Genie, batches: Callable[[int], Batch], steps: int | None = None, *,
                   log: Callable[[dict], None] | None = None, progress: bool = False,
                   generator: torch.Generator | None = None) -> list[dict]:
    """Phase 2: LAM and dynamics together, tokenizer frozen. The dynamics sees the LAM's
    action indices (integers: no gradient flows from the dynamics into the LAM)."""
    steps = model.cfg.train.joint_steps if steps is None else steps
    model.tokenizer.eval()
    model.lam.train()
    model.dynamics.train()

    def loss_fn(step):
        video = batches(step)[0]
        with torch.no_grad():
            tokens = model.tokenizer.encode(video)[1]
        lam = model.lam(video)
        dyn = model.dynamics.loss(tokens, lam["actions"].detach(), generator=generator)
        return {"loss": lam["loss"] + dyn["loss"], "lam_loss": lam["recon_loss"],
                "lam_vq_loss": lam["vq_loss"], "dynamics_loss": dyn["loss"],
                "dynamics_accuracy": torch.as_tensor(dyn["accuracy"]),
                "action_perplexity": model.lam.vq.perplexity}

    return _run_phase("lam+dynamics", [model.lam, model.dynamics], steps, loss_fn, model, log,
                      progress)
