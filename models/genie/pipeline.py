"""A whole Genie training run (`wmk genie train`, the demo's training): the phases in order,
the run folder that makes a rerun resume, and on a CPU the latent action model trained in a
second process beside the tokenizer. The phases themselves are in train.py."""

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
from wmkernels.models.genie.config import GenieConfig
from wmkernels.models.genie.data import ClipPool
from wmkernels.models.genie.model import Genie, save_checkpoint
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
    # spawn: a fork would copy this process's torch threads and state. daemon: should an
    # interrupt escape before the try below, multiprocessing ends the child at exit instead
    # of waiting for it to finish training.
    child = multiprocessing.get_context("spawn").Process(
        target=_lam_process, name="genie-lam", daemon=True,
        args=(model.cfg.to_dict(), len(pool), str(lam_dir), torch.get_num_threads(),
              os.getpid()))
    try:
        child.start()   # inside: a Ctrl-C while it starts must stop the child too
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


def initial_pool_and_model(cfg: GenieConfig, clips: int, device: torch.device | str
                           ) -> tuple[ClipPool, Genie]:
    """The training clips and the untrained model of a run, drawn in this order from the
    run's seed: every weight a run starts from (the dynamics' too, which ablate.py retrains
    alone) follows from the config."""
    torch.manual_seed(cfg.train.seed)
    pool = ClipPool(cfg, clips, seed=cfg.train.seed, device=device)
    return pool, Genie(cfg).to(device)


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
    pool, model = initial_pool_and_model(cfg, clips, dist.device)
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
        save_checkpoint(ckpt, model, extra={"phase": "tokenizer+lam"})
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
        save_checkpoint(ckpt, model, extra={"phase": "done"})
    return model.eval()
