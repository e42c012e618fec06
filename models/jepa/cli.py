"""`wmk jepa ...` commands.

    wmk jepa train --variant ijepa|vjepa|ac --config tiny [--steps N] [--out RUN_DIR]
                   [--encoder JEPA_RUN]                 (ac: the frozen encoder's run)
    torchrun --nproc_per_node=N -m wmkernels.cli jepa train --variant ijepa|vjepa ...
                   data-parallel I-JEPA / V-JEPA (gloo on CPU, nccl with --device cuda;
                   --batch-size is the global batch)
    wmk jepa probe --checkpoint PATH [--n-train N] [--n-test N] [--json PATH]
    wmk jepa plan  --checkpoint AC_PATH --start SEED --goal A,A,...   one start/goal pair
    wmk jepa plan  --checkpoint AC_PATH --episodes N [--horizon H]     success rate vs random

`add_jepa_parser(subparsers)` registers them on the package's `wmk` parser; this module also
runs on its own: `python -m wmkernels.models.jepa.cli ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from wmkernels.cli import count, device, writable_dir, writable_file

DEFAULT_OUT = {"ijepa": "runs/jepa/ijepa", "vjepa": "runs/jepa/vjepa", "ac": "runs/jepa/ac"}


def add_jepa_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `jepa` command (train, probe, plan) to an argparse subparsers object."""
    jepa = subparsers.add_parser("jepa", help="I-JEPA / V-JEPA training, probes, planning")
    sub = jepa.add_subparsers(dest="jepa_command", required=True)

    t = sub.add_parser("train", help="train I-JEPA, V-JEPA or the action-conditioned predictor")
    t.add_argument("--variant", choices=("ijepa", "vjepa", "ac"), required=True)
    t.add_argument("--config", default="tiny", help="named preset (default: tiny)")
    t.add_argument("--steps", type=count(1), default=None, help="override the config's steps")
    t.add_argument("--batch-size", type=count(1), default=None)
    t.add_argument("--seed", type=count(0), default=0)
    t.add_argument("--clips", type=count(1), default=None,
                   help="size of the training pool of world clips (default 2000; ac 800)")
    t.add_argument("--out", default=None,
                   help="run directory (checkpoint.safetensors + config.json); an existing "
                        "checkpoint there is resumed. Default runs/jepa/<variant>")
    t.add_argument("--encoder", default=None,
                   help="ac only: JEPA run (or checkpoint) whose target encoder is frozen "
                        "underneath")
    t.add_argument("--attention", choices=("factorized", "joint"), default=None,
                   help="vjepa only: encoder attention layout")
    t.add_argument("--masking", choices=("multiblock", "tube"), default=None,
                   help="vjepa only: mask family")
    t.add_argument("--future-context", type=count(0), default=None, metavar="K",
                   help="vjepa only: tubelets the future-prediction family sees (0: no such "
                        "family, as in the paper; default: the config's)")
    t.add_argument("--device", type=device, default="cpu",
                   help="ijepa/vjepa: where to train (cuda: one GPU per torchrun process)")
    t.set_defaults(func=_train)

    p = sub.add_parser("probe", help="linear + attentive probes vs random encoder and pixels")
    p.add_argument("--checkpoint", required=True, help="an ijepa/vjepa run or checkpoint")
    p.add_argument("--n-train", type=count(1), default=None,
                   help="probe training clips (default 4000, evaluate.PROBE_CLIPS)")
    p.add_argument("--n-test", type=count(1), default=None,
                   help="held-out clips (default 1000)")
    p.add_argument("--epochs", type=count(1), default=None,
                   help="probe training epochs (default: linear 100, attentive 40)")
    p.add_argument("--seed", type=count(0), default=1234)
    p.add_argument("--json", default=None, help="write the report here")
    p.set_defaults(func=_probe)

    q = sub.add_parser("plan", help="CEM planning in representation space")
    q.add_argument("--checkpoint", required=True, help="an ac run or checkpoint")
    q.add_argument("--start", type=count(0), default=None,
                   help="world seed of the start frame")
    q.add_argument("--goal", default=None,
                   help="comma-separated action ids that produce the goal frame from start "
                        "(each held for the model's action_repeat world steps)")
    q.add_argument("--episodes", type=count(1), default=None,
                   help="evaluate the success rate over this many episodes instead")
    q.add_argument("--horizon", type=count(1), default=4)
    q.add_argument("--samples", type=count(1), default=64)
    q.add_argument("--elites", type=count(1), default=None, help="default: samples // 8")
    q.add_argument("--iterations", type=count(1), default=4)
    q.add_argument("--seed", type=count(0), default=4321)
    q.add_argument("--oracle", type=count(0), default=0, metavar="EPISODES",
                   help="with --episodes: also rank every action sequence by the encoded "
                        "real outcome over this many episodes (the representation's bound)")
    q.add_argument("--json", default=None, help="write the report here")
    q.set_defaults(func=_plan)
    return jepa


def _write_json(path: str | None, report: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2))
        print(f"wrote {path}")


def _load(path: str, flag: str = "--checkpoint"):
    """(model, meta) of a JEPA run or checkpoint; ValueError naming `flag` otherwise."""
    from wmkernels.models.jepa.train import checkpoint_file, load_model

    if not checkpoint_file(path).exists():
        raise ValueError(f"{flag}: no JEPA run or checkpoint at {path!r}")
    try:
        return load_model(path)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None


def _train(args) -> int:
    from wmkernels.models.jepa.config import get_config
    from wmkernels.models.jepa.train import train_ac, train_jepa

    try:
        cfg = get_config(args.variant, args.config)
    except ValueError as err:
        raise ValueError(f"--config: {err}") from None
    if args.batch_size is not None:
        cfg.batch_size = args.batch_size
    if args.variant == "vjepa":
        if args.attention:
            cfg.encoder.attention = args.attention
        if args.masking:
            cfg.masking = args.masking
        if args.future_context is not None:
            cfg.future_context = args.future_context
    elif args.attention or args.masking or args.future_context is not None:
        raise ValueError("--attention, --masking and --future-context apply to --variant "
                         "vjepa only")
    if args.encoder and args.variant != "ac":
        raise ValueError("--encoder applies to --variant ac only")
    if args.variant == "ac" and args.device != "cpu":
        raise ValueError("--variant ac trains on the CPU (--device cpu)")
    if args.variant == "ac" and not args.encoder:
        raise ValueError("--variant ac needs --encoder PATH (an ijepa/vjepa checkpoint)")
    out = writable_dir(args.out or DEFAULT_OUT[args.variant])
    if args.variant == "ac":
        if _load(args.encoder, "--encoder")[1]["variant"] not in ("ijepa", "vjepa"):
            raise ValueError(f"--encoder {args.encoder!r} must be an ijepa or vjepa run")
        _, trainer = train_ac(args.encoder, cfg, steps=args.steps, seed=args.seed,
                              clips=args.clips, out=out, progress=True)
        print(f"final loss {trainer.history[-1]['loss']:.4f}; wrote {out}")
    else:
        from wmkernels.models.common import cleanup, init_distributed

        # One process without torchrun; under torchrun every rank joins the process group.
        dist = init_distributed(device=args.device)
        try:
            _, trainer = train_jepa(args.variant, cfg, steps=args.steps, seed=args.seed,
                                    clips=args.clips, out=out, progress=True, dist=dist)
        finally:
            cleanup(dist)
        if dist.is_main:
            first, last = trainer.history[0], trainer.history[-1]
            print(f"loss {first['loss']:.4f} -> {last['loss']:.4f}; target feature std "
                  f"{first['target_std']:.4f} -> {last['target_std']:.4f}; wrote {out}")
    return 0


def _probe(args) -> int:
    from wmkernels.models.jepa.config import world_of
    from wmkernels.models.jepa.evaluate import encoder_from_checkpoint, probe_report

    if args.json:
        writable_file(args.json, "--json")
    model, meta = _load(args.checkpoint)
    if meta["variant"] not in ("ijepa", "vjepa"):
        raise ValueError(f"--checkpoint must be an ijepa or vjepa run, got {meta['variant']!r}")
    # Clip counts not given on the command line keep probe_report's defaults (PROBE_CLIPS).
    counts = {k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test))
              if v is not None}
    report = probe_report(encoder_from_checkpoint(model), **counts, seed=args.seed,
                          epochs=args.epochs, world=world_of(meta["config"]))
    report["checkpoint"] = {"path": args.checkpoint, "variant": meta["variant"],
                            "step": meta["step"]}
    _write_json(args.json, report)
    return 0


def _plan(args) -> int:
    import numpy as np
    import torch

    from wmkernels.models.data import ACTIONS, World
    from wmkernels.models.jepa.config import world_of
    from wmkernels.models.jepa.evaluate import oracle_report, planning_report
    from wmkernels.models.jepa.planner import CEMConfig, CEMPlanner

    if args.json:
        writable_file(args.json, "--json")
    if args.episodes is None and (args.start is None or args.goal is None):
        raise ValueError("give --start SEED and --goal A,A,... (or --episodes N)")
    if args.elites is not None and args.elites > args.samples:
        raise ValueError(f"--elites ({args.elites}) must be <= --samples ({args.samples})")
    model, meta = _load(args.checkpoint)
    if meta["variant"] != "ac":
        raise ValueError(f"--checkpoint must be an ac checkpoint, got {meta['variant']!r}")
    elites = args.elites or max(1, args.samples // 8)
    if args.episodes is not None:
        cem = CEMConfig(horizon=args.horizon, samples=args.samples, elites=elites,
                        iterations=args.iterations)
        report = planning_report(model, episodes=args.episodes, horizon=args.horizon,
                                 seed=args.seed, cem=cem)
        if args.oracle:
            oracle = oracle_report(model, episodes=args.oracle, horizon=args.horizon,
                                   seed=args.seed)
            print(f"oracle (real outcomes, {args.oracle} episodes): success "
                  f"{oracle['oracle_success']:.2f}, energy/distance correlation "
                  f"{oracle['energy_distance_corr']:.2f}")
            report["oracle"] = oracle
        _write_json(args.json, report)
        return 0
    try:
        goal_actions = [int(a) for a in args.goal.split(",")]
    except ValueError:
        raise ValueError(f"--goal must be comma-separated action ids, got {args.goal!r}"
                         ) from None
    if not goal_actions or not all(0 <= a < len(ACTIONS) for a in goal_actions):
        raise ValueError(f"--goal action ids must be in [0, {len(ACTIONS)}), got {args.goal!r}")
    sim = World(world_of(model.cfg), size=model.cfg.encoder.image_size)
    start_frame = sim.reset(seed=args.start)
    start = sim.get_state()
    repeat = model.cfg.action_repeat
    for a in goal_actions:
        for _ in range(repeat):
            goal_frame = sim.step(a)
    goal_pos = sim.agent_position()[0]
    enc = model.frame_encoder
    z0 = enc(start_frame[None, None] * 2 - 1)[0, 0]
    zg = enc(goal_frame[None, None] * 2 - 1)[0, 0]
    cem = CEMConfig(horizon=len(goal_actions), samples=args.samples, elites=elites,
                    iterations=args.iterations)
    plan, energy = CEMPlanner(model.predictor.eval(), cem).plan(
        z0, zg, torch.Generator().manual_seed(args.seed))
    sim.set_state(start)
    for a in plan.tolist():
        for _ in range(repeat):
            sim.step(a)
    dist = float(np.linalg.norm(sim.agent_position()[0] - goal_pos))
    print(f"goal actions:    {[ACTIONS[a] for a in goal_actions]}")
    print(f"planned actions: {[ACTIONS[a] for a in plan.tolist()]} (energy {energy:.4f})")
    print(f"agent ends {dist:.3f} screen widths from the goal position "
          f"({'reached' if dist < sim.config.agent_size / 2 else 'missed'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (`python -m wmkernels.models.jepa.cli ...`), same as `wmk jepa`."""
    from wmkernels.cli import main as wmk_main

    return wmk_main(argv)


if __name__ == "__main__":
    sys.exit(main())
