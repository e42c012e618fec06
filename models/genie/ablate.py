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
training time). With `--tokenizer-only` the tokenizer is trained alone and its
reconstruction of the held-out clips is read (tokenizer_ablation), no dynamics:

    python -m wmkernels.models.genie.ablate runs/demo/genie.safetensors --tokenizer-only \\
        --set train.tokenizer_steps=2400 --out runs/ablate/tok2400
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
from wmkernels.models.genie.diagnose import (
    agent_breaks,
    ball_tint_by_colours,
    code_stability,
    frame_breaks,
)
from wmkernels.models.genie.evaluate import evaluate, held_out_colours, reconstruct
from wmkernels.models.genie.metrics import psnr
from wmkernels.models.genie.model import save_checkpoint
from wmkernels.models.genie.pipeline import initial_pool_and_model
from wmkernels.models.genie.train import train_dynamics, train_tokenizer

TOKENIZER = "tokenizer."   # the prefix of a tokenizer setting; a bare FIELD is the dynamics'
TOKENIZER_STEPS = "train.tokenizer_steps"   # the one training setting of the tokenizer alone


def _tokenizer_setting(key: str) -> bool:
    """Whether a parse_settings key changes the tokenizer (so it is retrained)."""
    return key.startswith(TOKENIZER) or key == TOKENIZER_STEPS


_BOOLS = {"true": True, "1": True, "false": False, "0": False}   # bool("false") is True


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
            out[key] = _BOOLS[value.lower()] if kind is bool else kind(value)
        except (KeyError, ValueError):
            raise ValueError(f"--set {key}: expected a {kind.__name__}, got {value!r}") from None
    return out


def _changed(cfg: GenieConfig, changes: dict, *, dynamics_steps: int | None = None
             ) -> GenieConfig:
    """`cfg` with parse_settings' `changes` applied (tokenizer settings, the tokenizer's
    steps, dynamics settings) and, if given, the dynamics' steps; validated."""
    tok = {k[len(TOKENIZER):]: v for k, v in changes.items() if k.startswith(TOKENIZER)}
    dyn = {k: v for k, v in changes.items() if not _tokenizer_setting(k)}
    train = dataclasses.replace(cfg.train, tokenizer_steps=changes.get(
        TOKENIZER_STEPS, cfg.train.tokenizer_steps))
    if dynamics_steps is not None:
        train = dataclasses.replace(train, dynamics_steps=dynamics_steps)
    return dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, **tok),
                               dynamics=dataclasses.replace(cfg.dynamics, **dyn),
                               train=train).validate()


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
    # the tokenizer, before the dynamics
    retrain = any(map(_tokenizer_setting, changes))
    cfg = _changed(cfg, changes, dynamics_steps=steps)
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


# Codes in use are counted on this many held-out clips (the RESULTS tables' "256 clips")
CODE_CLIPS = 256


def tokenizer_ablation(checkpoint: str | Path, changes: dict, out: str | Path, *,
                       clips: int = TRAIN_CLIPS, eval_clips: int = EVAL_CLIPS) -> dict:
    """The tokenizer alone with `changes` (tokenizer settings and train.tokenizer_steps
    only): trained from the run's initial weights on `clips` training clips of
    `checkpoint`'s config and seed, then read on `eval_clips` held-out clips without a
    dynamics: its PSNR, the codes in use (on the first CODE_CLIPS clips), where the agent is
    not one blob in the reconstructed frames t = 1 … T-1 (diagnose.agent_breaks) and which
    colour pairs the ball drawn partly in the agent's colour comes from
    (diagnose.ball_tint_by_colours). A tenth of a full ablation's time: the reconstruction
    bounds what the rollouts can show, so a tokenizer change is read here first. Writes
    out/metrics.json (out/tokenizer holds the trained phase); returns the metrics."""
    bad = [k for k in changes if not _tokenizer_setting(k)]
    if bad:
        raise ValueError(f"a tokenizer-only ablation takes tokenizer settings and "
                         f"{TOKENIZER_STEPS} only, got {bad}")
    _, meta = load_tensors(checkpoint, "checkpoint")
    cfg = _changed(GenieConfig.from_dict(json.loads(meta["config"])), changes)
    pool, model = initial_pool_and_model(cfg, clips, "cpu")  # the demo's initial weights
    out = Path(out)
    start = time.perf_counter()
    train_tokenizer(model, pool.batch, out_dir=out / "tokenizer", progress=False)
    seconds = time.perf_counter() - start
    model.eval()
    video, _ = held_out(cfg, eval_clips, seed=cfg.train.seed)
    with torch.no_grad():
        recon = torch.cat([reconstruct(model, chunk) for chunk in video.split(64)])
        codes = model.tokenizer.encode(video[:CODE_CLIPS])[1]
    agent = held_out_colours(cfg, video)
    ball = held_out_colours(cfg, video, "ball")
    kinds = frame_breaks(recon[:, 1:], agent, ball)
    metrics = {"tokenizer_psnr": float(psnr(recon, video)),
               "codes_in_use": int(codes.unique().numel()),
               "agent_breaks": agent_breaks(kinds),
               "ball_tint_by_colours": ball_tint_by_colours(kinds, agent, ball),
               "changes": changes, "training_clips": clips, "eval_clips": eval_clips,
               "train_seconds": seconds, "threads": torch.get_num_threads()}
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
    p.add_argument("--tokenizer-only", action="store_true",
                   help="train and read the tokenizer alone (tokenizer settings only)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tokenizer_only:
        m = tokenizer_ablation(args.checkpoint, parse_settings(args.set), args.out,
                               clips=args.clips)
        breaks = "  ".join(f"{k} {v:.1%}" for k, v in m["agent_breaks"].items())
        tints = "  ".join(f"{pair} {n}/{of}" for pair, (n, of)
                          in list(m["ball_tint_by_colours"].items())[:4])
        print(f"tokenizer PSNR {m['tokenizer_psnr']:.2f} dB, {m['codes_in_use']} codes in use\n"
              f"reconstructed frames: {breaks}\nball tinted as the agent (agent/ball: "
              f"frames): {tints}\ntraining {m['train_seconds']:.0f} s; wrote "
              f"{args.out}/metrics.json")
        return
    metrics = ablate(args.checkpoint, parse_settings(args.set), args.out, steps=args.steps,
                     clips=args.clips)
    print(format_metrics(metrics))
    print(frame_table(metrics))
    print(f"training {metrics['train_seconds']:.0f} s; wrote {args.out}/metrics.json")


if __name__ == "__main__":
    main()
