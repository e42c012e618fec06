"""`wmk sora ...`: train, sample and evaluate the text-to-video pipeline.

`add_sora_parser(subparsers)` adds the `sora` command to an argparse sub-parser set; each
leaf sets `func(args) -> int` (the exit code).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from wmkernels.cli import count, device, finite_float, writable_dir, writable_file

USAGE = """\
    wmk sora train --config tiny [--out runs/sora]
    torchrun --nproc_per_node=N -m wmkernels.cli sora train ...   (data-parallel)
    wmk sora sample --prompt "red ball moves left" [--checkpoint runs/sora/sora.safetensors]
    wmk sora eval [--checkpoint runs/sora/sora.safetensors]
"""
DEFAULT_RUN = os.path.join("runs", "sora")
DEFAULT_CKPT = os.path.join(DEFAULT_RUN, "sora.safetensors")


def add_sora_parser(subparsers) -> argparse.ArgumentParser:
    """Register `sora train|sample|eval` on `subparsers` (from ArgumentParser.add_subparsers)."""
    p = subparsers.add_parser("sora", help="Sora-style text-to-video: train, sample, eval",
                              description="Sora-style text-to-video on the embedded world:\n\n"
                              + USAGE,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="sora_command", required=True)

    t = sub.add_parser("train", help="train VAE, then DiT + text encoder, on the world")
    t.add_argument("--config", default="tiny", help="preset: tiny (CPU) or base (GPU)")
    t.add_argument("--out", default=DEFAULT_RUN, help="run folder (checkpoint, metrics)")
    t.add_argument("--vae-steps", type=count(1), help="override the preset's VAE steps")
    t.add_argument("--dit-steps", type=count(1), help="override the preset's DiT steps")
    t.add_argument("--clips", type=count(1), help="override the number of training clips")
    t.add_argument("--dit-lr", type=finite_float(0, above=True),
                   help="override the preset's DiT learning rate")
    t.add_argument("--dit-batch", type=count(1), help="override the preset's DiT batch size")
    t.add_argument("--vae-checkpoint", help="reuse the VAE of this Sora checkpoint")
    t.add_argument("--threads", type=count(1), help="torch CPU threads")
    t.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="generate a clip from a prompt (GIF + PNG strip)")
    s.add_argument("--prompt", required=True, help='e.g. "red ball moves left"')
    s.add_argument("--checkpoint", default=DEFAULT_CKPT)
    s.add_argument("--guidance", type=finite_float(0),
                   help="CFG scale (default: the config's)")
    s.add_argument("--steps", type=count(1), help="Euler steps (default: the config's, 30)")
    s.add_argument("--seed", type=count(0), default=0)
    s.add_argument("--num", type=count(1), default=1, help="clips to generate (seeds seed..)")
    s.add_argument("--truncate", action="store_true", help="cut over-long prompts instead "
                   "of refusing them")
    s.add_argument("--out", default=os.path.join("outputs", "sora"), help="output folder")
    s.add_argument("--scale", type=count(1), default=4,
                   help="pixel upscale of the saved images")
    s.add_argument("--device", type=device, default="cpu", help="cpu or cuda")
    s.set_defaults(func=_sample)

    e = sub.add_parser("eval", help="VAE PSNR and prompt following (probe accuracy)")
    e.add_argument("--checkpoint", default=DEFAULT_CKPT)
    e.add_argument("--clips", type=count(1), default=128, help="held-out prompts to generate")
    e.add_argument("--probe-clips", type=count(1), default=8192,
                   help="real clips for the probe")
    e.add_argument("--probe-steps", type=count(1), default=2000)
    e.add_argument("--probe", help="probe file: loaded when it exists, else trained and "
                   "written there (the probe depends only on the world, not the model)")
    e.add_argument("--guidance", type=finite_float(0), nargs="+", help="CFG scale(s) (default: the "
                   "config's); with several, each is scored and the first is the headline")
    e.add_argument("--steps", type=count(1), help="Euler steps (default: the config's, 30)")
    e.add_argument("--threads", type=count(1))
    e.add_argument("--device", type=device, default="cpu",
                   help="cpu or cuda (the probe runs on CPU)")
    e.add_argument("--out", help="metrics JSON (default: beside the checkpoint)")
    e.set_defaults(func=_eval)
    return p


def _threads(args) -> None:
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def _train(args) -> int:
    import torch

    from wmkernels.models.common import cleanup, init_distributed
    from wmkernels.models.sora.config import get_config
    from wmkernels.models.sora.train import train

    _threads(args)
    try:
        cfg = get_config(args.config)
    except ValueError as err:
        raise ValueError(f"--config: {err}") from None
    for name in ("vae_steps", "dit_steps", "clips", "dit_lr", "dit_batch"):
        if getattr(args, name) is not None:
            setattr(cfg.train, name, getattr(args, name))
    cfg.validate()
    writable_dir(args.out)
    if args.vae_checkpoint is not None:   # refused now, not after rendering the clips
        source = _load(args.vae_checkpoint, flag="--vae-checkpoint").cfg
        if source.vae != cfg.vae:
            raise ValueError(f"--vae-checkpoint {args.vae_checkpoint!r} holds a VAE of another "
                             f"config ({source.vae}, this run's is {cfg.vae})")
    # One process without torchrun; under torchrun every rank joins the process group.
    dist = init_distributed(device=torch.device(args.device).type)
    try:
        _, metrics = train(cfg, args.out, vae_checkpoint=args.vae_checkpoint,
                           device=args.device, dist=dist)
    finally:
        cleanup(dist)
    if not dist.is_main:
        return 0  # rank 0 reports
    print(json.dumps(metrics, indent=2))
    print(f"checkpoint: {os.path.join(args.out, 'sora.safetensors')}")
    return 0


def _load(path: str, device: str = "cpu", flag: str = "--checkpoint"):
    from wmkernels.models.sora.pipeline import Sora

    if not os.path.exists(path):
        raise ValueError(f"{flag}: no checkpoint at {path!r}; train one with `wmk sora train "
                         "--config tiny` or pass --checkpoint")
    try:
        return Sora.load(path, map_location=device).eval()
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def save_clip(video, path_stem: str, scale: int = 4) -> tuple[str, str]:
    """Write one clip (T, 3, H, W) in [-1, 1] as `<stem>.gif` and a side-by-side
    `<stem>.png` strip (nearest-neighbour upscaled by `scale`); returns both paths."""
    import imageio.v3 as iio
    import numpy as np

    frames = ((video.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    frames = frames.permute(0, 2, 3, 1).numpy()
    frames = frames.repeat(scale, axis=1).repeat(scale, axis=2)
    gif, png = path_stem + ".gif", path_stem + ".png"
    iio.imwrite(gif, list(frames), duration=120, loop=0)
    gap = np.full((frames.shape[1], scale, 3), 255, np.uint8)
    strip = np.concatenate([x for f in frames for x in (f, gap)][:-1], axis=1)
    iio.imwrite(png, strip)
    return gif, png


def _sample(args) -> int:
    import re

    model = _load(args.checkpoint, args.device)
    out = writable_dir(args.out)
    try:
        model.tokenizer.encode([args.prompt], truncate=args.truncate)
    except ValueError as err:
        raise ValueError(f"--prompt: {err}") from None
    unknown = model.tokenizer.unknown_words(args.prompt)
    if unknown:
        print(f"warning: words not in the model's vocabulary are ignored: {unknown}; "
              f"known words: {' '.join(model.tokenizer.vocab[2:])}", file=sys.stderr)
    slug = re.sub(r"[^a-z0-9]+", "_", args.prompt.lower()).strip("_")[:60] or "prompt"
    t0 = time.time()
    for i in range(args.num):
        video = model.sample([args.prompt], guidance=args.guidance, steps=args.steps,
                             seed=args.seed + i, truncate=args.truncate)[0]
        gif, png = save_clip(video, os.path.join(out, f"{slug}_seed{args.seed + i}"),
                             args.scale)
        print(f"wrote {gif} and {png}")
    print(f"{args.num} clip(s) in {time.time() - t0:.1f}s")
    return 0


def _eval(args) -> int:
    import torch

    from wmkernels.models.sora.evaluate import (
        load_probe,
        probe_accuracy,
        prompt_following,
        save_probe,
        train_probe,
    )
    from wmkernels.models.sora.train import to_pixels, vae_psnr, world_clips

    _threads(args)
    model = _load(args.checkpoint, args.device)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)),
                                   "eval_metrics.json")
    writable_file(out, "--out")
    if args.probe and not os.path.isfile(args.probe):
        writable_file(args.probe, "--probe")
    probe = load_probe(args.probe) if args.probe and os.path.isfile(args.probe) else None
    cfg = model.cfg
    t0 = time.time()
    held = world_clips(cfg, max(args.clips, cfg.train.eval_clips), split="eval")
    metrics: dict = {"vae_psnr_db": vae_psnr(model, held["video"])}
    print(f"VAE PSNR (held-out, {len(held['caption'])} clips): {metrics['vae_psnr_db']:.2f} dB")
    if probe is not None:
        print(f"probe: {args.probe}")
    else:
        real = world_clips(cfg, args.probe_clips, split="train")
        probe = train_probe(real["video"], real["attributes"], steps=args.probe_steps,
                            seed=cfg.train.seed)
        if args.probe:
            save_probe(probe, args.probe, cfg.frames, cfg.size)
    metrics["probe_on_real"] = probe_accuracy(probe, to_pixels(held["video"]),
                                              held["attributes"])
    scales = [cfg.train.guidance] if args.guidance is None else args.guidance
    steps = cfg.train.sample_steps if args.steps is None else args.steps
    with torch.no_grad():
        metrics.update(prompt_following(model, probe, held, n=args.clips, guidance=scales[0],
                                        steps=steps))
        if len(scales) > 1:
            sweep = {str(scales[0]): metrics["generated"]}
            for g in scales[1:]:
                sweep[str(g)] = prompt_following(model, probe, held, n=args.clips, guidance=g,
                                                 steps=steps, unconditional=False)["generated"]
            metrics["guidance_sweep"] = sweep
    metrics["eval_time_s"] = time.time() - t0
    rows = [(name, metrics.get(name, {})) for name in ("probe_on_real", "generated",
                                                        "unconditional")]
    rows[1] = (f"generated@{scales[0]:g}", rows[1][1])
    rows += [(f"generated@{float(g):g}", acc)
             for g, acc in list(metrics.get("guidance_sweep", {}).items())[1:]]
    for name, acc in rows:
        print(f"{name:>16}: " + "  ".join(f"{k} {v:.1%}" for k, v in acc.items()))
    with open(out, "w") as f:
        json.dump(metrics, f, indent=2)
    print(f"metrics: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m wmkernels.models.sora.cli ...`), same as `wmk sora`."""
    from wmkernels.cli import main as wmk_main

    return wmk_main(argv)


if __name__ == "__main__":
    sys.exit(main())
