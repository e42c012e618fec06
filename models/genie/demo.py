"""The end-to-end Genie demo on the embedded world: train (pipeline.py), evaluate, play,
and leave a checkpoint, a GIF, a PNG strip and a metrics JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wmkernels.models.genie.config import EVAL_CLIPS, TRAIN_CLIPS, GenieConfig
from wmkernels.models.genie.data import held_out
from wmkernels.models.genie.evaluate import evaluate, reconstruct
from wmkernels.models.genie.media import save_gif, save_grid, save_strip
from wmkernels.models.genie.model import Genie
from wmkernels.models.genie.pipeline import train_genie
from wmkernels.models.genie.play import play


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


@torch.no_grad()
def write_action_grid(model: Genie, clip: torch.Tensor, out: Path, *, name: str = "play",
                      seed: int = 0) -> tuple[Path, Path]:
    """The play picture (Genie's figure): the real clip (1, T, 3, H, W), its tokenizer
    reconstruction, then one row per latent action, held for T-1 steps from the clip's first
    frame; written as out/<name>.png (frames side by side) and out/<name>.gif (a labelled
    column per frame). Returns (png, gif)."""
    T, n = clip.shape[1], model.num_actions
    actions = torch.arange(n, device=clip.device)[:, None].expand(n, T - 1).contiguous()
    g = torch.Generator(device=clip.device).manual_seed(seed)
    held = play(model, clip[:, :1].expand(n, -1, -1, -1, -1), actions, generator=g)
    rows = [clip[0], reconstruct(model, clip)[0], *held]
    labels = ["real", "tokenizer", *(f"action {a}" for a in range(n))]
    return save_grid(rows, labels, out / f"{name}.png", out / f"{name}.gif")


def frame_table(metrics: dict) -> str:
    """The per-frame metrics of `evaluate` as a text table, one line per generated frame."""
    head = (f"  {'t':>2}  {'PSNR dB: inferred':>17} {'random':>7} {'copy':>6} {'recon':>6}"
            f"  {'one blob: inferred':>18} {'random':>6}  {'<= 2 px: inferred':>17} "
            f"{'random':>6}")
    lines = [head]
    for i, t in enumerate(metrics["frame_t"]):
        lines.append(
            f"  {t:2d}  {metrics['frame_psnr_inferred'][i]:17.2f} "
            f"{metrics['frame_psnr_random'][i]:7.2f} {metrics['frame_psnr_copy'][i]:6.2f} "
            f"{metrics['frame_psnr_recon'][i]:6.2f}  "
            f"{metrics['frame_one_blob_inferred'][i]:18.0%} "
            f"{metrics['frame_one_blob_random'][i]:6.0%}  "
            f"{metrics['frame_within_2px_inferred'][i]:17.0%} "
            f"{metrics['frame_within_2px_random'][i]:6.0%}")
    lines.append(f"  agent one blob in the tokenizer's reconstruction: "
                 f"{metrics['one_blob_recon']:.0%}; teacher-forced next-frame token accuracy "
                 f"{metrics['token_accuracy']:.1%}")
    return "\n".join(lines)


def run_demo(cfg: GenieConfig, out: str | Path, *, clips: int = TRAIN_CLIPS,
             eval_clips: int = EVAL_CLIPS, device: str = "cpu",
             say: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Train, evaluate and play; returns the metrics (also written to out/metrics.json) and
    writes the play picture (write_action_grid) for the first held-out clip.

    Action NMI on `eval_clips` held-out clips, PSNR and Δ4PSNR on the first IMAGE_CLIPS
    of them (evaluate): about 30 s of evaluation for the tiny config on a 2-core CPU."""
    if isinstance(eval_clips, bool) or not isinstance(eval_clips, int) or eval_clips < 1:
        raise ValueError(f"eval_clips must be an int >= 1, got {eval_clips!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model = train_genie(cfg, out, clips=clips, device=device, say=say, progress=progress,
                        parallel=None)
    train_seconds = time.perf_counter() - start
    video, actions = held_out(cfg, eval_clips, seed=cfg.train.seed, device=device)
    say("evaluating on held-out clips")
    metrics = evaluate(model, video, actions)
    say("per generated frame t (from the real first frame; actions inferred from the real "
        "clip or random):")
    say(frame_table(metrics))
    png, gif = write_action_grid(model, video[:1], out)
    metrics.update(train_seconds=train_seconds, total_seconds=time.perf_counter() - start,
                   config=cfg.name, device=device, checkpoint=str(out / "genie.safetensors"),
                   gif=str(gif), strip=str(png))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
