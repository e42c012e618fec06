"""Worker for test_genie's DDP test: run under `torchrun --nproc_per_node=2` (gloo, CPU).

Trains the micro Genie through `train_genie` (the function behind `wmk genie train`) and
saves this rank's final state to OUT/rank<r>.pt for the test to compare.
"""

import sys
from pathlib import Path

import torch

from wmkernels.models.common import cleanup, init_distributed
from wmkernels.models.genie.config import get_config
from wmkernels.models.genie.pipeline import train_genie


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cfg = get_config("micro")
    cfg.train.tokenizer_steps = cfg.train.lam_steps = cfg.train.dynamics_steps = 2
    dist = init_distributed(device="cpu")
    model = train_genie(cfg, out / "run", clips=8, device="cpu", progress=False, dist=dist)
    torch.save({"state": model.state_dict(), "world_size": dist.world_size},
               out / f"rank{dist.rank}.pt")
    cleanup(dist)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
