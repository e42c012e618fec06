"""V-JEPA training step: wmkernels attention vs the same model on backend="reference".

One step = target encoder forward (whole clip), context encoder + predictor forward and
backward for every mask family of the config (multi-block and future prediction), AdamW
step, EMA update. Masks are
drawn once beforehand (the collator runs in the data loader, not in the step). The encoder
and predictor use factorized spatial/temporal attention, every call through the public
wmkernels functions, so the two rows differ only in which attention implementation runs.
"""

from __future__ import annotations

import torch

from wmkernels import routing, use_backend
from wmkernels.bench.harness import Case, Skip
from wmkernels.models.jepa.config import EncoderConfig, PredictorConfig, VJEPAConfig
from wmkernels.models.jepa.vjepa import VJEPA

OP = "vjepa_train_step"

# name -> (batch, encoder config, predictor config)
SHAPES = {
    # ViT-B/16 over 16 frames of 224 px (V-JEPA's ViT-L/16 uses the same token grid).
    "vjepa-base": (8, EncoderConfig(image_size=224, patch=16, frames=16, tubelet=2, dim=768,
                                    depth=12, heads=12, attention="factorized"),
                   PredictorConfig(dim=384, depth=6, heads=6)),
    # Our tiny CPU config (models/jepa/config.py).
    "vjepa-tiny/cpu": (8, EncoderConfig(frames=4, tubelet=2, attention="factorized"),
                       PredictorConfig()),
    "vjepa-quick/cpu": (2, EncoderConfig(image_size=32, patch=8, frames=4, tubelet=2, dim=64,
                                         depth=1, heads=2, attention="factorized"),
                        PredictorConfig(dim=64, depth=1, heads=2)),
}


def _step_fn(batch: int, enc: EncoderConfig, pred: PredictorConfig, device: str,
             backend: str | None):
    torch.manual_seed(0)
    cfg = VJEPAConfig(encoder=enc, predictor=pred)
    model = VJEPA(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    clips = torch.randn(batch, enc.frames, enc.channels, enc.image_size, enc.image_size,
                        device=device)
    masks = model.mask_collator(batch, torch.Generator().manual_seed(0))
    for m in masks:
        m.context, m.target = m.context.to(device), m.target.to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with use_backend(backend):
            loss, _ = model(clips, masks)
            loss.backward()
        opt.step()
        model.update_target(0.999)
        return loss

    return step


def cases(device: str, quick: bool) -> list:
    """Rows: "eager" (attention on backend="reference") and "wmk" (the backends wmkernels
    picks on `device`: the results' `ran` column names them), same weights, masks and
    inputs."""
    if quick:
        name = "vjepa-quick/cpu"
    elif device == "cuda":
        name = "vjepa-base"
    else:
        name = "vjepa-tiny/cpu"
    batch, enc, pred = SHAPES[name]
    params = {"batch": batch, "frames": enc.frames, "image_size": enc.image_size,
              "patch": enc.patch, "tubelet": enc.tubelet, "dim": enc.dim, "depth": enc.depth,
              "heads": enc.heads, "predictor_dim": pred.dim, "predictor_depth": pred.depth,
              "attention": enc.attention}
    dtype = "fp32"
    rows: list = [Case(op=OP, shape=name, backend="eager", dtype=dtype,
                       fn=_step_fn(batch, enc, pred, device, "reference"), params=params)]
    best = routing.select("spatial_attention", torch.device(device), None)
    if best == "reference":
        rows.append(Skip(OP, name, f"wmk-{device}",
                         f"no wmkernels attention kernel on {device} yet: the best available "
                         "backend is the reference, which is the eager row"))
    else:
        rows.append(Case(op=OP, shape=name, backend="wmk", dtype=dtype,
                         fn=_step_fn(batch, enc, pred, device, None), params=params))
    return rows
