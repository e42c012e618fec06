"""One change, measured: train the dynamics alone on a trained checkpoint's frozen tokenizer
and LAM, with some dynamics settings changed, then evaluate it as the demo does. A change
of a tokenizer setting (`--set tokenizer.FIELD=VALUE`, or its step count
`--set train.tokenizer_steps=N`) retrains the tokenizer first, with the checkpoint's LAM
kept: the LAM learns from pixels alone, so a run with that setting would train the same one.

Every phase starts from the weights `wmk demo` / `wmk genie train` would give it (same
seed, same initialisation order, same batches and masks), so with no change this is the
demo's phase 2, and a row of models/genie/RESULTS.md differs from the preset by the
settings it names only.

    python -m wmkernels.models.genie.ablate runs/demo/genie.safetensors \\
        --set context_noise=0.2 --out runs/ablate/noise0.2

writes OUT/genie.safetensors (then `wmk genie play` / `wmk genie eval` take it) and
OUT/metrics.json (evaluate's metrics, the tokenizer's code stability, the settings and the
training time).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from wmkernels.models.common.checkpoint_io import load_tensors
from wmkernels.models.genie.config import (
    EVAL_CLIPS,
    TRAIN_CLIPS,
    DynamicsConfig,
    GenieConfig,
    GenieTraining,
    TokenizerConfig,
    get_config,
)
from wmkernels.models.genie.data import held_out
from wmkernels.models.genie.diagnose import code_stability
from wmkernels.models.genie.evaluate import evaluate
from wmkernels.models.genie.model import save_checkpoint
from wmkernels.models.genie.pipeline import initial_pool_and_model
from wmkernels.models.genie.train import train_dynamics, train_tokenizer

TOKENIZER = "tokenizer."   # the prefix of a tokenizer setting; a bare FIELD is the dynamics'
TOKENIZER_STEPS = "train.tokenizer_steps"   # the one training setting of the tokenizer alone


def parse_settings(pairs: list[str]) -> dict:
    """["context_noise=0.2", "tokenizer.stability_weight=1"] -> {"context_noise": 0.2,
    "tokenizer.stability_weight": 1.0}, each value converted to the type of that
    DynamicsConfig (bare) or TokenizerConfig ("tokenizer.") field, or of
    GenieTraining.tokenizer_steps ("train.tokenizer_steps")."""
    defaults = {**{f.name: getattr(DynamicsConfig(), f.name)
                   for f in dataclasses.fields(DynamicsConfig)},
                **{TOKENIZER + f.name: getattr(TokenizerConfig(), f.name)
                   for f in dataclasses.fields(TokenizerConfig)},
                TOKENIZER_STEPS: GenieTraining().tokenizer_steps}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"--set expects FIELD=VALUE with FIELD one of {sorted(defaults)}, "
                             f"got {pair!r}")
        kind = type(defaults[key])
        try:
            out[key] = kind(value)
        except ValueError:
            raise ValueError(f"--set {key}: expected a {kind.__name__}, got {value!r}") from None
    return out


def ablate(checkpoint: str | Path, changes: dict, out: str | Path, *, steps: int | None = None,
           clips: int = TRAIN_CLIPS, eval_clips: int = EVAL_CLIPS) -> dict:
    """Train the dynamics of `checkpoint`'s config with `changes` (parse_settings' keys) applied, on
    its tokenizer and LAM, or on a tokenizer retrained first if a change names a tokenizer
    setting or train.tokenizer_steps; evaluate on held-out clips; write out/genie.safetensors
    and out/metrics.json. steps: dynamics steps (default: the preset's, whatever the checkpoint
    was trained with). clips: training clips rendered for it (default the demo's TRAIN_CLIPS;
    the tokenizer and LAM of `checkpoint` keep the clips they were trained on). Returns the
    metrics."""
    tensors, meta = load_tensors(checkpoint, "checkpoint")
    cfg = GenieConfig.from_dict(json.loads(meta["config"]))
    steps = get_config(cfg.name).train.dynamics_steps if steps is None else steps
    tok = {k[len(TOKENIZER):]: v for k, v in changes.items() if k.startswith(TOKENIZER)}
    dyn = {k: v for k, v in changes.items()
           if not k.startswith(TOKENIZER) and k != TOKENIZER_STEPS}
    retrain = bool(tok) or TOKENIZER_STEPS in changes     # the tokenizer, before the dynamics
    train = dataclasses.replace(cfg.train, dynamics_steps=steps, tokenizer_steps=changes.get(
        TOKENIZER_STEPS, cfg.train.tokenizer_steps))
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, **tok),
                              dynamics=dataclasses.replace(cfg.dynamics, **dyn), train=train)
    cfg.validate()
    pool, model = initial_pool_and_model(cfg, clips, "cpu")  # the demo's initial weights
    kept = ("lam.",) if retrain else ("tokenizer.", "lam.")
    frozen = {k: v for k, v in tensors.items() if k.startswith(kept)}
    missing, unexpected = model.load_state_dict(frozen, strict=False)
    if unexpected or not all(k.startswith(("dynamics.", "tokenizer.") if retrain else "dynamics.")
                             for k in missing):
        raise ValueError(f"{str(checkpoint)!r} does not hold this config's tokenizer and LAM")
    out = Path(out)
    start = time.perf_counter()
    if retrain:
        train_tokenizer(model, pool.batch, out_dir=out / "tokenizer", progress=False)
    pool.encode(model.tokenizer, model.lam)
    train_dynamics(model, pool.batch, out_dir=out / "dynamics", progress=False)
    seconds = time.perf_counter() - start
    save_checkpoint(out / "genie.safetensors", model, extra={"phase": "done",
                                                             "ablation": changes})
    video, actions = held_out(cfg, eval_clips, seed=cfg.train.seed)
    metrics = evaluate(model.eval(), video, actions, speed=False)
    metrics.update(code_stability(model, video[:512]), changes=changes, dynamics_steps=steps,
                   training_clips=clips, train_seconds=seconds,
                   threads=torch.get_num_threads())
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    from wmkernels.models.genie.cli import format_metrics
    from wmkernels.models.genie.demo import frame_table

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a trained genie.safetensors (its tokenizer and LAM)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a dynamics setting (FIELD), tokenizer setting (tokenizer.FIELD) or "
                        "the tokenizer's steps (train.tokenizer_steps) to change (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--steps", type=int, help="dynamics steps (default: the preset's)")
    p.add_argument("--clips", type=int, default=TRAIN_CLIPS,
                   help=f"training clips rendered (default: the demo's {TRAIN_CLIPS})")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    metrics = ablate(args.checkpoint, parse_settings(args.set), args.out, steps=args.steps,
                     clips=args.clips)
    print(format_metrics(metrics))
    print(frame_table(metrics))
    print(f"training {metrics['train_seconds']:.0f} s; wrote {args.out}/metrics.json")


if __name__ == "__main__":
    main()
