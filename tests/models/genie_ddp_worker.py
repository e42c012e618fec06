"""Worker for test_genie's DDP test: run under `torchrun --nproc_per_node=2` (gloo, CPU).

Trains the micro Genie through `train_genie` (the function behind `wmk genie train`) and
saves this rank's final state to OUT/rank<r>.pt for the test to compare.
"""

import os
import sys
from pathlib import Path

import torch

from wmkernels.models.genie.config import get_config
from wmkernels.models.genie.demo import train_genie


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cfg = get_config("micro")
    cfg.train.tokenizer_steps, cfg.train.joint_steps = 2, 2
    model = train_genie(cfg, out / "run", clips=8, device="cpu", progress=False)
    torch.save({"state": model.state_dict(), "world_size": int(os.environ["WORLD_SIZE"])},
               out / f"rank{os.environ['RANK']}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
