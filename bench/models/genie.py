"""Genie generation speed: frames generated per second by `play` (MaskGIT over the newest
frame, `steps` dynamics forwards per frame), same weights, three ways:

- eager:        backend="reference" (rearrange + SDPA attention, softmax/multinomial/sort
                MaskGIT) and no KV cache: every MaskGIT step re-runs all past frames, as
                public Genie re-implementations do.
- eager-cache:  the reference ops with the temporal KV cache (isolates the cache's share).
- wmk-<dev>:    wmkernels' automatic backends with the KV cache (what `wmk genie play` runs).

One call generates frames 1..T-1 from one prompt frame (tokens only; the tokenizer's pixel
decoding is outside the loop being compared). Shapes: "genie-play-base" on GPU (64x64,
16 frames, 256 tokens/frame, d=512, 12 layers, 25 steps: the issue's speed target),
"genie-play/cpu" (the tiny config) on CPU, "genie-play-quick" (micro) for smoke tests.
"""

from __future__ import annotations

import torch

from wmkernels import use_backend
from wmkernels.bench.harness import Case
from wmkernels.models.genie.config import get_config
from wmkernels.models.genie.model import Genie
from wmkernels.models.genie.play import play_tokens


def _model(name: str, device: str) -> Genie:
    torch.manual_seed(0)
    return Genie(get_config(name)).to(device).eval()


def _runner(model: Genie, device: str, backend_name: str | None, use_cache: bool, batch: int):
    cfg = model.cfg
    g = torch.Generator(device=device)
    prompt = torch.randint(0, cfg.tokenizer.codebook_size, (batch, 1, cfg.tokens_per_frame),
                           device=device, generator=g.manual_seed(1))
    none = torch.zeros(batch, 0, dtype=torch.long, device=device)
    actions = torch.randint(0, model.num_actions, (batch, cfg.frames - 1), device=device,
                            generator=g.manual_seed(2))

    def fn():
        with use_backend(backend_name):
            return play_tokens(model, prompt, none, actions, use_cache=use_cache,
                               generator=g.manual_seed(0))
    return fn


def cases(device: str, quick: bool) -> list:
    config, shape, batch = (("micro", "genie-play-quick", 1) if quick else
                            ("base", "genie-play-base", 8) if device == "cuda" else
                            ("tiny", "genie-play/cpu", 1))
    model = _model(config, device)
    cfg = model.cfg
    params = {"config": config, "batch": batch, "frames": cfg.frames - 1,
              "tokens_per_frame": cfg.tokens_per_frame, "dim": cfg.dynamics.dim,
              "layers": cfg.dynamics.layers, "maskgit_steps": cfg.dynamics.maskgit_steps,
              "vocab": cfg.tokenizer.codebook_size}
    common = dict(op="genie_play", shape=shape, dtype="float32", params=params)
    wmk = "wmk"  # the automatic choice; the results' `ran` column names each op's backend
    return [Case(backend="eager", fn=_runner(model, device, "reference", False, batch), **common),
            Case(backend="eager-cache", fn=_runner(model, device, "reference", True, batch),
                 **common),
            Case(backend=wmk, fn=_runner(model, device, None, True, batch), **common)]
