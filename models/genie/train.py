"""Genie's training (paper §2.2): the video tokenizer and the latent action model each learn
from pixels alone; then the dynamics learns on the frozen tokenizer's codes, conditioned on
the frozen LAM's latent actions.

The paper co-trains the LAM with the dynamics. No gradient passes between them (the dynamics
sees action indices), so that is a schedule, not a model choice; ours trains the LAM beside
the tokenizer instead, which lets the two pixel models use two CPU cores at once and gives
the dynamics fixed action labels from its first step (what that bought: RESULTS.md).

Every phase runs on the shared `Trainer` (models/common): progress bar, atomic safetensors
checkpoints in `out_dir/tokenizer`, `out_dir/lam` and `out_dir/dynamics`, exact resume
(rerunning an interrupted run continues it; a finished phase is skipped) and DDP under
`torchrun`.
Batches and masks are functions of the step (and rank), which is what makes resume exact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from wmkernels.models.common import TrainConfig, Trainer
from wmkernels.models.common.distributed import DistInfo, get_rank, wrap_ddp
from wmkernels.models.common.optim import adamw, warmup_cosine_lambda
from wmkernels.models.genie.model import Genie

# video (B, T, 3, H, W) in [0, 1], actions (B, T-1)[, the clips' tokenizer codes (B, T, h, w)]
Batch = tuple[torch.Tensor, ...]


class TokenizerObjective(nn.Module):
    """Phase 1 as one module (what DDP wraps and the phase checkpoint holds)."""

    def __init__(self, model: Genie):
        super().__init__()
        self.tokenizer = model.tokenizer

    def forward(self, video: torch.Tensor, step: int) -> dict:
        out = self.tokenizer(video)
        logged = ("loss", "recon_loss", "vq_loss", "stability_loss")
        return {**{k: out[k] for k in logged if k in out},
                "codebook_perplexity": self.tokenizer.vq.perplexity}


class LAMObjective(nn.Module):
    """The latent action model alone, from pixels (the tokenizer plays no part in it)."""

    def __init__(self, model: Genie):
        super().__init__()
        self.lam = model.lam

    def forward(self, video: torch.Tensor, step: int) -> dict:
        out = self.lam(video)
        return {"loss": out["loss"], "lam_loss": out["recon_loss"], "lam_vq_loss": out["vq_loss"],
                "action_perplexity": self.lam.vq.perplexity}


def _mean_then_ema(decay: float) -> Callable:
    """AveragedModel's multi_avg_fn: the plain mean of the weights while fewer than
    1/(1 - decay) are in it, then an EMA of `decay`, so the first weights averaged weigh no
    more than any later ones. It takes every weight at once, so the count (a tensor on the
    weights' device) is read once a step, not once a weight: on a GPU each read waits."""
    def update(averages: list[torch.Tensor], currents: list[torch.Tensor],
               n: torch.Tensor) -> None:
        keep = min(decay, float(n) / (float(n) + 1))
        for average, current in zip(averages, currents, strict=True):
            average.copy_(average * keep + current * (1 - keep))
    return update


class DynamicsObjective(nn.Module):
    """The dynamics on the frozen tokenizer's codes, conditioned on the frozen LAM's action
    indices. Both frozen models stay out of this module's parameters and state (their own
    phases checkpoint them). The MaskGIT mask of each step is drawn from a generator seeded
    by (seed, step, rank).

    With dynamics.weight_ema, `average` holds the average of the dynamics' weights after
    each step from half of `steps` on (after_step); it is part of this module's state, so
    the phase checkpoint saves and resumes it, and train_dynamics hands it to the model."""

    def __init__(self, model: Genie, seed: int, steps: int):
        super().__init__()
        self.dynamics, self.seed = model.dynamics, seed
        self._frozen = (model.tokenizer, model.lam)   # a tuple: not registered as submodules
        decay = model.cfg.dynamics.weight_ema
        self.average = None if not decay else AveragedModel(
            self.dynamics, multi_avg_fn=_mean_then_ema(decay)).requires_grad_(False)
        # the first half's weights would linger in a slow average: they start from noise
        self.average_from = steps // 2

    def after_step(self, step: int) -> None:
        if self.average is not None and step >= self.average_from:
            self.average.update_parameters(self.dynamics)

    def forward(self, video: torch.Tensor, step: int, tokens: torch.Tensor | None = None,
                actions: torch.Tensor | None = None) -> dict:
        tokenizer, lam = self._frozen
        with torch.no_grad():   # a batch that did not bring them (ClipPool.encode)
            if tokens is None:
                tokenizer.eval()
                tokens = tokenizer.encode(video)[1]
            if actions is None:
                lam.eval()
                actions = lam.infer_actions(video)
        g = torch.Generator(device=video.device)
        g.manual_seed((self.seed * 1_000_003 + step) * 1024 + get_rank())
        dyn = self.dynamics.loss(tokens, actions, generator=g)
        return {"loss": dyn["loss"], "dynamics_accuracy": torch.as_tensor(dyn["accuracy"])}


def _fit(objective: nn.Module, model: Genie, batches: Callable[[int], Batch], steps: int, *,
         out_dir: str | Path | None, log_every: int | None, progress: bool,
         dist: DistInfo | None) -> list[dict]:
    tcfg = model.cfg.train
    opt = adamw(objective.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay,
                betas=(0.9, 0.99))
    sched = warmup_cosine_lambda(opt, warmup=tcfg.warmup, total=steps, floor=0.1)
    loop = TrainConfig(steps=steps, log_every=log_every or tcfg.eval_every,
                      checkpoint_every=max(1, steps // 4), seed=tcfg.seed,
                      grad_clip=tcfg.grad_clip, progress=progress,
                      out_dir=None if out_dir is None else str(out_dir))
    dist = dist or DistInfo()
    wrapped = wrap_ddp(objective, dist)

    def inputs(step):   # the objective's arguments: video, step[, codes, latent actions]
        video, _, *encoded = batches(step)
        return (video, step, *encoded)

    trainer = Trainer(wrapped, opt, lambda m, batch: m(*batch), inputs, loop, scheduler=sched,
                      after_step=getattr(objective, "after_step", None),
                      configs={"genie": model.cfg.to_dict()})
    history = trainer.fit()
    if dist.distributed:
        # EMA codebooks and usage statistics update inside forward from each rank's own
        # batch (the frozen tokenizer's too); DDP re-broadcasts rank 0's buffers before
        # every step, so after the last one make every buffer of the model agree again
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)
    return history


def train_tokenizer(model: Genie, batches: Callable[[int], Batch], steps: int | None = None, *,
                    out_dir: str | Path | None = None, log_every: int | None = None,
                    progress: bool = False, dist: DistInfo | None = None) -> list[dict]:
    """Phase 1a: the VQ-VAE on raw clips. `batches(step)` -> (video, true actions, ...); the
    true actions are never used for training. `dist`: the process group from
    `models.common.init_distributed` when running under torchrun (DDP). Returns the
    Trainer's history (one record of averaged metrics every `log_every` steps, default the
    config's eval_every)."""
    steps = model.cfg.train.tokenizer_steps if steps is None else steps
    model.tokenizer.train()
    video_only = lambda step: batches(step)[:2]  # codes, if any, are not for it
    return _fit(TokenizerObjective(model), model, video_only, steps, out_dir=out_dir,
                log_every=log_every, progress=progress, dist=dist)


def train_lam(model: Genie, batches: Callable[[int], Batch], steps: int | None = None, *,
              out_dir: str | Path | None = None, log_every: int | None = None,
              progress: bool = False, dist: DistInfo | None = None) -> list[dict]:
    """Phase 1b: the latent action model on raw clips (no labels used); arguments as for
    train_tokenizer. It shares nothing with the tokenizer, so the two may train at the same
    time (train_genie, pipeline.py, runs them in two processes on a CPU)."""
    steps = model.cfg.train.lam_steps if steps is None else steps
    model.lam.train()
    video_only = lambda step: batches(step)[:2]
    return _fit(LAMObjective(model), model, video_only, steps, out_dir=out_dir,
                log_every=log_every, progress=progress, dist=dist)


def train_dynamics(model: Genie, batches: Callable[[int], Batch], steps: int | None = None, *,
                   out_dir: str | Path | None = None, log_every: int | None = None,
                   progress: bool = False, dist: DistInfo | None = None) -> list[dict]:
    """Phase 2: the dynamics, tokenizer and LAM frozen (see DynamicsObjective); arguments as
    for train_tokenizer. A batch may bring its clips' codes and latent actions as third and
    fourth elements (ClipPool.encode); otherwise each batch is encoded here. With
    dynamics.weight_ema the model leaves with the averaged weights (DynamicsObjective)."""
    steps = model.cfg.train.dynamics_steps if steps is None else steps
    frozen = [*model.tokenizer.parameters(), *model.lam.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    model.dynamics.train()
    objective = DynamicsObjective(model, model.cfg.train.seed, steps)
    try:
        history = _fit(objective, model, batches, steps, out_dir=out_dir, log_every=log_every,
                       progress=progress, dist=dist)
        if objective.average is not None:   # generation uses the averaged weights
            model.dynamics.load_state_dict(objective.average.module.state_dict())
        return history
    finally:
        for p in frozen:
            p.requires_grad_(True)
