"""The end-to-end Genie demo on the embedded world: train (tokenizer and LAM, then dynamics),
evaluate, play, and leave a checkpoint, a GIF, a PNG strip and a metrics JSON."""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wmkernels.models.common.distributed import DistInfo
from wmkernels.models.common.training import (
    CHECKPOINT_NAME,
    check_resume,
    load_config,
    save_config,
)
from wmkernels.models.genie.config import EVAL_CLIPS, GenieConfig
from wmkernels.models.genie.data import ClipPool, held_out
from wmkernels.models.genie.evaluate import evaluate, reconstruct
from wmkernels.models.genie.media import save_gif, save_grid, save_strip
from wmkernels.models.genie.model import Genie, save_checkpoint
from wmkernels.models.genie.play import play
from wmkernels.models.genie.train import train_dynamics, train_lam, train_tokenizer


def cores_available() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def die_with_parent(parent: int) -> None:
    """End this process when process `parent` ends, however it ends (SIGKILL included): a
    child left behind would train on, unseen. Linux: the kernel sends SIGTERM on the
    parent's exit (PR_SET_PDEATHSIG); elsewhere a daemon thread polls the parent's pid."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGTERM, 0, 0, 0) == 0:   # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:   # the parent died before prctl took effect
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _lam_process(cfg_dict: dict, clips: int, out_dir: str, threads: int, parent: int) -> None:
    """Phase 1b in its own process: the same pool, initial weights and batches as the parent
    would use. The weights go back through out_dir's phase checkpoint, the logged rows
    through out_dir/history.json."""
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent stops this process (terminate), so
    # here it would only add a second traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    cfg = GenieConfig.from_dict(cfg_dict)
    torch.manual_seed(cfg.train.seed)
    pool = ClipPool(cfg, clips, seed=cfg.train.seed)
    rows = train_lam(Genie(cfg), pool.batch, out_dir=out_dir)
    (Path(out_dir) / "history.json").write_text(json.dumps(rows))


def _tokenizer_beside_lam(model: Genie, pool: ClipPool, out: Path, progress: bool):
    """Phase 1 on two CPU processes: the LAM in a spawned child, the tokenizer here.
    Returns both phases' logged rows; the model ends with both trained."""
    lam_dir = out / "lam"
    # spawn: a fork would copy this process's torch threads and state
    child = multiprocessing.get_context("spawn").Process(
        target=_lam_process, name="genie-lam",
        args=(model.cfg.to_dict(), len(pool), str(lam_dir), torch.get_num_threads(),
              os.getpid()))
    child.start()
    try:
        tok_rows = train_tokenizer(model, pool.batch, out_dir=out / "tokenizer",
                                   progress=progress)
        child.join()
    finally:   # an error here must not leave the child training on
        if child.is_alive():
            child.terminate()
            child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"the latent action model's process failed (exit code "
                           f"{child.exitcode}, its traceback is above); rerun to resume, "
                           f"or train with parallel=False")
    train_lam(model, pool.batch, out_dir=lam_dir)   # loads the finished phase
    return tok_rows, json.loads((lam_dir / "history.json").read_text())


def claim_run_folder(out: Path, cfg: GenieConfig, clips: int, write: bool = True) -> None:
    """Rerunning into `out` resumes the run there, so refuse (ValueError) a folder whose
    run.json records other settings (config, seed, step counts, clips) before any work; a
    fresh folder gets this run's run.json (when `write`). A folder of phase checkpoints
    without run.json is left to the phases' own check (Trainer)."""
    run = {"genie": cfg.to_dict(), "data": {"clips": clips}}
    path = out / "run.json"
    if path.is_file():
        check_resume(path, load_config(path), run)
    elif write and not any((out / phase / CHECKPOINT_NAME).is_file()
                           for phase in ("tokenizer", "lam", "dynamics")):
        save_config(path, **run)


def train_genie(cfg: GenieConfig, out: Path, *, clips: int, device: str,
                say: Callable[[str], None] = print, progress: bool = True,
                dist: DistInfo | None = None, parallel: bool | None = False) -> Genie:
    """All training phases on `clips` world clips; writes out/genie.safetensors after phase
    1 (tokenizer and LAM) and at the end. Phase checkpoints live in out/tokenizer, out/lam
    and out/dynamics: rerunning with the same `out` resumes (a finished phase is skipped);
    out/run.json records the settings, and a rerun with other ones is refused.

    parallel: True trains the LAM in a spawned second process while this one trains the
    tokenizer (they share nothing); the weights are the same either way. None chooses it
    on a CPU outside torchrun with cores for both processes' threads (what `wmk demo` and
    `wmk genie train` do). A script that passes True or None must guard its entry point
    with `if __name__ == "__main__":`, as every spawned process re-imports it. With `dist`
    (from `models.common.init_distributed` under torchrun) every rank trains its share of
    each batch (DDP) on dist.device, the phases run one after the other, and rank 0
    reports and writes the files."""
    dist = dist or DistInfo(device=torch.device(device))
    if not dist.is_main:
        say = lambda line: None  # one rank reports
    if parallel is None:
        parallel = (dist.device.type == "cpu" and not dist.distributed
                    and cores_available() >= 2 * torch.get_num_threads())
    if parallel and (dist.device.type != "cpu" or dist.distributed):
        raise ValueError("parallel=True trains the LAM in a second CPU process: it needs "
                         "device='cpu' and no torchrun")
    claim_run_folder(out, cfg, clips, write=dist.is_main)
    torch.manual_seed(cfg.train.seed)
    pool = ClipPool(cfg, clips, seed=cfg.train.seed, device=dist.device)
    model = Genie(cfg).to(dist.device)
    ckpt = out / "genie.safetensors"

    def report(rows):
        for row in rows:
            keys = [k for k in row if k != "step"]
            say(f"  step {row['step']:5d}  " + "  ".join(f"{k} {row[k]:.4f}" for k in keys))

    t = cfg.train
    how = "side by side, two processes" if parallel else "one after the other"
    say(f"phase 1: video tokenizer ({t.tokenizer_steps} steps) and latent action model "
        f"({t.lam_steps} steps), {how}")
    if parallel:
        tok_rows, lam_rows = _tokenizer_beside_lam(model, pool, out, progress)
    else:
        tok_rows = train_tokenizer(model, pool.batch, out_dir=out / "tokenizer",
                                   progress=progress, dist=dist)
        lam_rows = train_lam(model, pool.batch, out_dir=out / "lam", progress=progress,
                             dist=dist)
    say("  tokenizer")
    report(tok_rows)
    say("  latent action model")
    report(lam_rows)
    if dist.is_main:
        save_checkpoint(model, ckpt, {"phase": "tokenizer+lam"})
    # Phase 2 is one model: on the cores phase 1 ran two processes on, it runs with the
    # threads of both (tiny dynamics step on a 2-core CPU: 0.29 s on one thread, 0.16 on two)
    threads = torch.get_num_threads()
    phase2_threads = 2 * threads if parallel else threads
    say(f"phase 2: dynamics on the frozen tokenizer and LAM, {t.dynamics_steps} steps"
        + (f", {phase2_threads} threads" if parallel else ""))
    pool.encode(model.tokenizer, model.lam)
    torch.set_num_threads(phase2_threads)
    try:
        report(train_dynamics(model, pool.batch, out_dir=out / "dynamics", progress=progress,
                              dist=dist))
    finally:
        torch.set_num_threads(threads)
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


def run_demo(cfg: GenieConfig, out: str | Path, *, clips: int = 2048, eval_clips: int = EVAL_CLIPS,
             device: str = "cpu", say: Callable[[str], None] = print,
             progress: bool = True) -> dict:
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
