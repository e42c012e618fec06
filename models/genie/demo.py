"""The end-to-end Genie demo on the embedded world: train (tokenizer, then LAM + dynamics),
evaluate, play, and leave a checkpoint, a GIF, a PNG strip and a metrics JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wmkernels.models.common.distributed import DistInfo
from wmkernels.models.genie.config import GenieConfig
from wmkernels.models.genie.data import ClipPool, held_out
from wmkernels.models.genie.evaluate import evaluate
from wmkernels.models.genie.media import save_gif, save_strip
from wmkernels.models.genie.model import Genie, save_checkpoint
from wmkernels.models.genie.play import play
from wmkernels.models.genie.train import train_dynamics, train_tokenizer


def train_genie(cfg: GenieConfig, out: Path, *, clips: int, device: str,
                say: Callable[[str], None] = print, progress: bool = True,
                dist: DistInfo | None = None) -> Genie:
    """Both training phases on `clips` world clips; writes out/genie.safetensors after each
    phase (so a tokenizer-only checkpoint exists as soon as phase 1 ends). Phase checkpoints
    live in out/tokenizer and out/dynamics: rerunning with the same `out` resumes (a
    finished phase is skipped). With `dist` (from `models.common.init_distributed` under
    torchrun) every rank trains its share of each batch (DDP) on dist.device, and rank 0
    reports and writes the files."""
    dist = dist or DistInfo(device=torch.device(device))
    if not dist.is_main:
        say = lambda line: None  # noqa: E731 - one rank reports
    torch.manual_seed(cfg.train.seed)
    pool = ClipPool(cfg, clips, seed=cfg.train.seed, device=dist.device)
    model = Genie(cfg).to(dist.device)
    ckpt = out / "genie.safetensors"

    def report(rows):
        for row in rows:
            keys = [k for k in row if k != "step"]
            say(f"  step {row['step']:5d}  " + "  ".join(f"{k} {row[k]:.4f}" for k in keys))

    say(f"phase 1: video tokenizer, {cfg.train.tokenizer_steps} steps")
    report(train_tokenizer(model, pool.batch, out_dir=out / "tokenizer", progress=progress,
                           dist=dist))
    if dist.is_main:
        save_checkpoint(model, ckpt, {"phase": "tokenizer"})
    say(f"phase 2: latent action model + dynamics, {cfg.train.joint_steps} steps")
    pool.encode(model.tokenizer)
    report(train_dynamics(model, pool.batch, out_dir=out / "dynamics", progress=progress,
                          dist=dist))
    if dist.is_main:
        save_checkpoint(model, ckpt, {"phase": "done"})
    return model.eval()


def write_play(model: Genie, prompt: torch.Tensor, actions: torch.Tensor, out: Path, *,
               name: str = "play", seed: int = 0, reference: torch.Tensor | None = None,
               use_cache: bool = True) -> tuple[Path, Path]:
    """Play `actions` (1, N) from `prompt` (1, Tp, 3, H, W); write out/<name>.gif and a PNG
    strip (generated frames; with `reference` (1, T, 3, H, W), the real clip above them)."""
    g = torch.Generator(device=prompt.device).manual_seed(seed)
    frames = play(model, prompt, actions, generator=g, use_cache=use_cache)[0]
    gif = save_gif(frames, out / f"{name}.gif")
    rows = ([reference[0, :frames.shape[0]]] if reference is not None else []) + [frames]
    return gif, save_strip(rows, out / f"{name}.png")


def run_demo(cfg: GenieConfig, out: str | Path, *, clips: int = 2048, eval_clips: int = 32,
             device: str = "cpu", say: Callable[[str], None] = print,
             progress: bool = True) -> dict:
    """Train, evaluate and play; returns the metrics (also written to out/metrics.json)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = train_genie(cfg, out, clips=clips, device=device, say=say, progress=progress)
    train_seconds = time.perf_counter() - start
    video, actions = held_out(cfg, eval_clips, seed=cfg.train.seed, device=device)
    say("evaluating on held-out clips")
    metrics = evaluate(model, video, actions)
    latent = model.lam.infer_actions(video[:1])
    gif, png = write_play(model, video[:1, :1], latent, out, reference=video[:1])
    metrics.update(train_seconds=train_seconds, total_seconds=time.perf_counter() - start,
                   config=cfg.name, device=device, checkpoint=str(out / "genie.safetensors"),
                   gif=str(gif), strip=str(png))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
