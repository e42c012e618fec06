"""Worker for test_jepa's DDP test: run under `torchrun --nproc_per_node=2` (gloo, CPU).

Each rank trains the same tiny I-JEPA for a few steps through `train_jepa` with the process
group, and saves its final weights (context encoder, predictor and EMA target encoder) and
its own per-step losses to OUT/rank<r>.pt for the test to compare.
"""

import sys
from pathlib import Path

import torch

from wmkernels.models.common import cleanup, init_distributed
from wmkernels.models.jepa.config import EncoderConfig, IJEPAConfig, PredictorConfig
from wmkernels.models.jepa.train import clip_pool, train_jepa

STEPS, BATCH = 3, 4


def make_config() -> IJEPAConfig:
    return IJEPAConfig(encoder=EncoderConfig(image_size=32, patch=8, dim=16, depth=1, heads=1),
                       predictor=PredictorConfig(dim=16, depth=1, heads=1), batch_size=BATCH,
                       warmup=1, lr=1e-2)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    info = init_distributed(device="cpu")
    pool = clip_pool(6, 8, 32, seed=0)
    model, trainer = train_jepa("ijepa", make_config(), steps=STEPS, pool=pool,
                                out=out / "run", dist=info)
    torch.save({"final": model.state_dict(), "world_size": info.world_size,
                "losses": trainer.losses, "history": trainer.history},
               out / f"rank{info.rank}.pt")
    cleanup(info)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
