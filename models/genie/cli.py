"""`wmk genie train|play|eval` and `wmk demo`: argparse sub-commands, added to the `wmk`
command by `add_genie_parser(subparsers)` and `add_demo_parser(subparsers)`."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from wmkernels.cli import count, device, writable_dir, writable_file
from wmkernels.models.genie.config import EVAL_CLIPS, IMAGE_CLIPS, PRESETS, TRAIN_CLIPS, get_config


def _device(name: str | None) -> str:
    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _load(path: str, device: str):
    """The Genie of checkpoint `path`; errors name --checkpoint."""
    from wmkernels.models.genie.model import load_checkpoint

    try:
        return load_checkpoint(path, device)[0]
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"--checkpoint: {err}") from None


def _config(args) -> object:
    if _device(args.device) == "cpu":
        # These models are small, so intra-op threads gain little; and when other jobs share
        # the CPU, OpenMP barriers wait for descheduled threads (measured on a shared 2-core
        # machine: a tiny-config step cost 7x more CPU time with 2 threads than with 1).
        torch.set_num_threads(args.threads or 1)
    cfg = get_config(args.config)
    if args.tokenizer_steps is not None:
        cfg.train.tokenizer_steps = args.tokenizer_steps
    if args.lam_steps is not None:
        cfg.train.lam_steps = args.lam_steps
    if args.dynamics_steps is not None:
        cfg.train.dynamics_steps = args.dynamics_steps
    if args.seed is not None:
        cfg.train.seed = args.seed
    return cfg.validate()


def parse_actions(text: str, num_actions: int) -> list[int]:
    """"1,1,3,0" -> [1, 1, 3, 0]; ValueError naming --actions for anything else."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--actions must be comma-separated integers, got {text!r}") from None
    if not values or any(not 0 <= v < num_actions for v in values):
        raise ValueError(f"--actions must be a non-empty list of ints in [0, {num_actions}), "
                         f"got {text!r}")
    return values


def play_name(name: str) -> str:
    """--name is a file name stem inside --out: ValueError for a path or an empty name."""
    if not re.fullmatch(r"[\w.-]+", name) or set(name) == {"."}:
        raise ValueError(f"--name must be a file name stem (letters, digits, '_', '-', '.'; "
                         f"no folders), got {name!r}")
    return name


def format_metrics(metrics: dict) -> str:
    """The headline numbers, one per line."""
    lines = []
    names = {
        "tokenizer_psnr": ("tokenizer PSNR (held-out)", "{:.2f} dB"),
        "action_nmi": ("latent/true action NMI", "{:.3f}"),
        "action_nmi_ceiling": ("  ceiling (frame-identifiable)", "{:.3f}"),
        "action_codes_used": ("latent action codes in use", "{:d}"),
        "action_clips": ("  over held-out clips", "{:d}"),
        "control_delta_psnr": ("controllability Δ4PSNR", "{:+.3f} dB"),
        "control_delta_psnr_std": ("  seed-to-seed std", "{:.3f} dB"),
        "image_clips": ("  PSNR and Δ4PSNR over held-out clips", "{:d}"),
        "psnr_inferred": ("generated frames' PSNR, inferred actions", "{:.2f} dB"),
        "psnr_random": ("  random actions", "{:.2f} dB"),
        "psnr_copy": ("  copying the first frame", "{:.2f} dB"),
        "one_blob_inferred": ("agent one blob, inferred actions", "{:.1%}"),
        "one_blob_random": ("  random actions", "{:.1%}"),
        "one_blob_recon": ("  tokenizer's reconstruction", "{:.1%}"),
        "within_2px_inferred": ("agent within 2 px, inferred actions", "{:.1%}"),
        "within_2px_random": ("  random actions", "{:.1%}"),
        "token_accuracy": ("teacher-forced next-frame tokens", "{:.1%}"),
        "fps_wmkernels_cache": ("generation, wmkernels + KV cache", "{:.2f} frames/s"),
        "fps_reference_nocache": ("generation, reference, no cache", "{:.2f} frames/s"),
        "fps_speedup": ("speedup", "{:.2f}x"),
        "train_seconds": ("training time", "{:.0f} s"),
        "total_seconds": ("total time", "{:.0f} s"),
    }
    for key, (label, fmt) in names.items():
        if key in metrics:
            lines.append(f"  {label:42s} {fmt.format(metrics[key])}")
    return "\n".join(lines)


def _say(line: str) -> None:
    print(line, flush=True)  # progress must show promptly when stdout is a file or pipe


def _cmd_train(args) -> int:
    from wmkernels.models.common import cleanup, init_distributed
    from wmkernels.models.genie.data import held_out
    from wmkernels.models.genie.evaluate import action_nmi, tokenizer_psnr
    from wmkernels.models.genie.pipeline import train_genie

    cfg = _config(args)
    device = _device(args.device)
    out = writable_dir(args.out)
    # One process without torchrun; under torchrun every rank joins the process group.
    dist = init_distributed(device=torch.device(device).type)
    try:
        model = train_genie(cfg, out, clips=args.clips, device=device, say=_say,
                            progress=not args.quiet, dist=dist, parallel=None)
    finally:
        cleanup(dist)
    if not dist.is_main:
        return 0  # rank 0 evaluates and reports
    video, actions = held_out(cfg, EVAL_CLIPS, seed=cfg.train.seed, device=device)
    metrics = {"tokenizer_psnr": tokenizer_psnr(model, video[:IMAGE_CLIPS]),
               "action_nmi": action_nmi(model, video, actions)}
    print(format_metrics(metrics))
    print(f"checkpoint: {out / 'genie.safetensors'}")
    return 0


def _cmd_play(args) -> int:
    from wmkernels.models.data import make_clips
    from wmkernels.models.genie.demo import write_play

    device = _device(args.device)
    name = play_name(args.name)
    out = writable_dir(args.out)
    model = _load(args.checkpoint, device)
    values = parse_actions(args.actions, model.num_actions)
    cfg = model.cfg
    if len(values) + 1 > cfg.frames:
        raise ValueError(f"--actions holds {len(values)} actions; this model plays at most "
                         f"{cfg.frames - 1} after the prompt frame")
    prompt = make_clips(1, frames=1, size=cfg.image_size, seed=args.prompt_seed,
                        start=args.prompt_index, config=cfg.world_config())["video"].to(device)
    actions = torch.tensor([values], device=device)
    gif, png = write_play(model, prompt, actions, out, name=name,
                          seed=args.seed, use_cache=not args.no_cache)
    print(f"wrote {gif} and {png}")
    return 0


def _cmd_eval(args) -> int:
    from wmkernels.models.genie.data import held_out
    from wmkernels.models.genie.demo import frame_table
    from wmkernels.models.genie.evaluate import evaluate

    device = _device(args.device)
    if args.json:
        writable_file(args.json, "--json")
    model = _load(args.checkpoint, device)
    sampler = {k: v for k, v in (("maskgit_steps", args.maskgit_steps),
                                 ("temperature", args.temperature),
                                 ("choice_temperature", args.choice_temperature))
               if v is not None}
    try:
        model.set_sampler(**sampler)
    except ValueError as err:
        raise ValueError(f"--temperature / --choice-temperature: {err}") from None
    d = model.cfg.dynamics
    print(f"MaskGIT: {d.maskgit_steps} steps, temperature {d.temperature}, choice "
          f"temperature {d.choice_temperature}")
    video, actions = held_out(model.cfg, args.clips, seed=model.cfg.train.seed, device=device)
    metrics = evaluate(model, video, actions, seeds=tuple(range(args.seeds)),
                       speed=not args.no_speed, image_clips=args.image_clips)
    print(format_metrics(metrics))
    print("per generated frame t:")
    print(frame_table(metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
        print(f"wrote {args.json}")
    return 0


def _cmd_demo(args) -> int:
    from wmkernels.models.genie.demo import run_demo

    cfg = _config(args)
    device = _device(args.device)
    writable_dir(args.out)
    print(f"Genie demo: config {cfg.name!r} on {device}, outputs in {args.out}")
    metrics = run_demo(cfg, args.out, clips=args.clips, eval_clips=args.eval_clips,
                       device=device, say=_say, progress=not args.quiet)
    print("results (held-out clips of the embedded world):")
    print(format_metrics(metrics))
    print(f"wrote {metrics['gif']}, {metrics['strip']}, {Path(args.out) / 'metrics.json'}, "
          f"{metrics['checkpoint']}")
    return 0


def _train_options(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--config", default="tiny", choices=sorted(PRESETS),
                   help="model/training preset (default: tiny, minutes on a CPU)")
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    p.add_argument("--clips", type=count(1), default=TRAIN_CLIPS,
                   help=f"training clips rendered (default {TRAIN_CLIPS})")
    p.add_argument("--tokenizer-steps", type=count(0), help="override the tokenizer's steps")
    p.add_argument("--lam-steps", type=count(0),
                   help="override the latent action model's steps")
    p.add_argument("--dynamics-steps", type=count(0), help="override the dynamics' steps")
    p.add_argument("--seed", type=count(0), help="training seed (default: the config's)")
    p.add_argument("--device", type=device, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=count(1), help="CPU threads for torch (default 1: these "
                                               "models are too small to gain from more)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_genie_parser(subparsers) -> argparse.ArgumentParser:
    """Add `genie {train,play,eval}` to an argparse sub-parser collection."""
    genie = subparsers.add_parser("genie", help="Genie world model: train, play, evaluate")
    sub = genie.add_subparsers(dest="genie_command", required=True)

    p = sub.add_parser("train", help="train tokenizer and LAM, then dynamics, on the world")
    _train_options(p, "runs/genie")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("play", help="generate frames from a prompt frame and latent actions")
    p.add_argument("--checkpoint", required=True, help="a genie.safetensors file")
    p.add_argument("--actions", required=True, help="latent actions, e.g. 1,1,3,0")
    p.add_argument("--prompt-seed", type=count(0), default=1, help="world seed of the prompt")
    p.add_argument("--prompt-index", type=count(0), default=0,
                   help="clip index of the prompt")
    p.add_argument("--seed", type=count(0), default=0, help="sampling seed")
    p.add_argument("--out", default="runs/genie", help="output folder")
    p.add_argument("--name", default="play", help="file name stem of the GIF and PNG")
    p.add_argument("--no-cache", action="store_true", help="recompute past frames each step")
    p.add_argument("--device", type=device, help="cpu or cuda (default: cuda when available)")
    p.set_defaults(func=_cmd_play)

    p = sub.add_parser("eval", help="PSNR, controllability, action NMI, frames/s")
    p.add_argument("--checkpoint", required=True, help="a genie.safetensors file")
    p.add_argument("--clips", type=count(1), default=EVAL_CLIPS,
                   help="held-out clips (PSNR and Δ4PSNR on the first --image-clips)")
    p.add_argument("--image-clips", type=count(1), default=IMAGE_CLIPS,
                   help=f"the first clips that are decoded and generated: PSNR, Δ4PSNR and "
                        f"the per-frame rollout metrics (default {IMAGE_CLIPS})")
    p.add_argument("--seeds", type=count(1), default=3, help="generation seeds for Δ4PSNR")
    p.add_argument("--no-speed", action="store_true", help="skip the frames/s measurement")
    p.add_argument("--json", help="also write the metrics to this file")
    p.add_argument("--device", type=device, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--maskgit-steps", type=count(1),
                   help="decode with this many MaskGIT steps (default: the checkpoint's)")
    p.add_argument("--temperature", type=float,
                   help="sampling temperature, 0 = argmax (default: the checkpoint's)")
    p.add_argument("--choice-temperature", type=float,
                   help="MaskGIT's annealed choice noise, 0 = none (default: the "
                        "checkpoint's)")
    p.set_defaults(func=_cmd_eval)
    return genie


def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    """Add `demo`: the whole Genie pipeline on the embedded world in one command."""
    p = subparsers.add_parser("demo", help="train, evaluate and play Genie on the embedded "
                                           "world (tiny: minutes on a CPU; the README gives "
                                           "measured times)")
    _train_options(p, "runs/demo")
    p.add_argument("--eval-clips", type=count(1), default=EVAL_CLIPS,
                   help=f"held-out clips (PSNR and Δ4PSNR on the first {IMAGE_CLIPS})")
    p.set_defaults(func=_cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m wmkernels.models.genie.cli genie train ...`), the
    same as `wmk genie ...` / `wmk demo ...`."""
    from wmkernels.cli import main as wmk_main

    return wmk_main(argv)


if __name__ == "__main__":
    sys.exit(main())
