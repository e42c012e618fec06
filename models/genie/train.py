"""Genie's training order (paper §2.2): first the video tokenizer alone; then the latent
action model and the dynamics model together — the dynamics on the frozen tokenizer's codes,
conditioned on the LAM's latent actions with a stop-gradient between the two.

Both phases run on the shared `Trainer` (models/common): progress bar, atomic safetensors
checkpoints in `out_dir/tokenizer` and `out_dir/dynamics`, exact resume (rerunning an
interrupted run continues it; a finished phase is skipped) and DDP under `torchrun`.
Batches and masks are functions of the step (and rank), which is what makes resume exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from wmkernels.models.common import TrainConfig as LoopConfig
from wmkernels.models.common import Trainer
from wmkernels.models.common.distributed import DistInfo, get_rank, wrap_ddp
from wmkernels.models.genie.model import Genie

# video (B, T, 3, H, W) in [0, 1], actions (B, T-1)[, the clips' tokenizer codes (B, T, h, w)]
Batch = tuple[torch.Tensor, ...]


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


class TokenizerObjective(nn.Module):
    """Phase 1 as one module (what DDP wraps and the phase checkpoint holds)."""

    def __init__(self, model: Genie):
        super().__init__()
        self.tokenizer = model.tokenizer

    def forward(self, video: torch.Tensor, step: int) -> dict:
        out = self.tokenizer(video)
        return {**{k: out[k] for k in ("loss", "recon_loss", "vq_loss")},
                "codebook_perplexity": self.tokenizer.vq.perplexity}


class JointObjective(nn.Module):
    """Phase 2 as one module: the LAM and the dynamics train, the tokenizer only encodes.

    The tokenizer is kept out of this module's parameters and state (it is frozen and
    checkpointed by phase 1). The dynamics sees the LAM's action *indices*: integers, so no
    gradient flows from the dynamics into the LAM. The MaskGIT mask of each step is drawn
    from a generator seeded by (seed, step, rank).
    """

    def __init__(self, model: Genie, seed: int):
        super().__init__()
        self.lam, self.dynamics, self.seed = model.lam, model.dynamics, seed
        self._frozen = (model.tokenizer,)   # a tuple: not registered as a submodule

    def clip_groups(self) -> list[list[nn.Parameter]]:
        """The LAM and the dynamics clip their gradients each on its own: they share no
        gradient, and clipped together the dynamics' cross-entropy gradients (large early
        on) shrink the LAM's steps. Measured on the tiny config (800 joint steps, trained
        tokenizer, 64 held-out clips): latent/true action NMI 0.36 clipped together, 0.51
        apart; 0.53-0.56 for the LAM trained alone."""
        return [list(self.lam.parameters()), list(self.dynamics.parameters())]

    def forward(self, video: torch.Tensor, step: int,
                tokens: torch.Tensor | None = None) -> dict:
        if tokens is None:   # the batch did not bring its codes (ClipPool.encode)
            tokenizer = self._frozen[0]
            tokenizer.eval()
            with torch.no_grad():
                tokens = tokenizer.encode(video)[1]
        g = torch.Generator(device=video.device)
        g.manual_seed((self.seed * 1_000_003 + step) * 1024 + get_rank())
        lam = self.lam(video)
        dyn = self.dynamics.loss(tokens, lam["actions"].detach(), generator=g)
        return {"loss": lam["loss"] + dyn["loss"], "lam_loss": lam["recon_loss"],
                "lam_vq_loss": lam["vq_loss"], "dynamics_loss": dyn["loss"],
                "dynamics_accuracy": torch.as_tensor(dyn["accuracy"]),
                "action_perplexity": self.lam.vq.perplexity}


def _fit(objective: nn.Module, model: Genie, batches: Callable[[int], Batch], steps: int, *,
         out_dir: str | Path | None, log_every: int | None, progress: bool,
         dist: DistInfo | None,
         clip_groups: list[list[nn.Parameter]] | None = None) -> list[dict]:
    tcfg = model.cfg.train
    opt = _optimizer(objective.parameters(), tcfg.lr, tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, tcfg.warmup, steps))
    loop = LoopConfig(steps=steps, log_every=log_every or tcfg.eval_every,
                      checkpoint_every=max(1, steps // 4), seed=tcfg.seed,
                      grad_clip=tcfg.grad_clip, progress=progress,
                      out_dir=None if out_dir is None else str(out_dir))
    dist = dist or DistInfo()
    wrapped = wrap_ddp(objective, dist)

    def inputs(step):   # the objective's arguments: video, step[, codes]
        video, _, *codes = batches(step)
        return (video, step, *codes)

    trainer = Trainer(wrapped, opt, lambda m, batch: m(*batch), inputs, loop, scheduler=sched,
                      configs={"genie": model.cfg.to_dict()},
                      clip_groups=clip_groups)
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
    """Phase 1: the VQ-VAE on raw clips. `batches(step)` -> (video, true actions); the true
    actions are never used for training. `dist`: the process group from
    `models.common.init_distributed` when running under torchrun (DDP). Returns the
    Trainer's history (one record of averaged metrics every `log_every` steps, default the
    config's eval_every)."""
    steps = model.cfg.train.tokenizer_steps if steps is None else steps
    model.tokenizer.train()
    video_only = lambda step: batches(step)[:2]  # noqa: E731 - codes, if any, are not for it
    return _fit(TokenizerObjective(model), model, video_only, steps, out_dir=out_dir,
                log_every=log_every, progress=progress, dist=dist)


def train_dynamics(model: Genie, batches: Callable[[int], Batch], steps: int | None = None, *,
                   out_dir: str | Path | None = None, log_every: int | None = None,
                   progress: bool = False, dist: DistInfo | None = None) -> list[dict]:
    """Phase 2: LAM and dynamics together, tokenizer frozen (see JointObjective); `dist` as
    for train_tokenizer. A batch may bring its clips' codes as a third element
    (ClipPool.encode); otherwise each batch is encoded here."""
    steps = model.cfg.train.joint_steps if steps is None else steps
    model.tokenizer.eval()
    for p in model.tokenizer.parameters():
        p.requires_grad_(False)
    model.lam.train()
    model.dynamics.train()
    try:
        objective = JointObjective(model, model.cfg.train.seed)
        return _fit(objective, model, batches, steps, out_dir=out_dir, log_every=log_every,
                    progress=progress, dist=dist, clip_groups=objective.clip_groups())
    finally:
        for p in model.tokenizer.parameters():
            p.requires_grad_(True)
