"""Worker for test_sora's DDP test: run under `torchrun --nproc_per_node=2` (gloo, CPU).

Trains a tiny Sora through `train` (the function behind `wmk sora train`) with the process
group, and saves this rank's final weights and its log lines to OUT/rank<r>.pt for the
test to compare with a one-process run of the same global batches.
"""

import sys
from pathlib import Path

import torch

from wmkernels.models.common import cleanup, init_distributed
from wmkernels.models.sora.config import SoraConfig, SoraTraining
from wmkernels.models.sora.dit import DiTConfig
from wmkernels.models.sora.text import TextConfig
from wmkernels.models.sora.train import train
from wmkernels.models.sora.vae import VAEConfig


def make_config() -> SoraConfig:
    """Seconds-long: 3 VAE and 3 DiT steps on global batches of 4 clips."""
    return SoraConfig(frames=5, size=16, world_balls=1, world={"num_platforms": 0},
                      vae=VAEConfig(channels=(8, 16, 16), latent_channels=4),
                      text=TextConfig(dim=32, layers=1, heads=2, max_tokens=24),
                      dit=DiTConfig(dim=64, depth=2, heads=2, max_frames=4, pooled_text=True),
                      train=SoraTraining(clips=16, eval_clips=4, vae_steps=3, dit_steps=3,
                                         vae_batch=4, dit_batch=4, sample_steps=2))


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dist = init_distributed(device="cpu")
    lines = []
    model, metrics = train(make_config(), str(out / "run"), log=lines.append,
                           progress=False, dist=dist)
    torch.save({"state": model.state_dict(), "world_size": dist.world_size, "log": lines,
                "metrics": metrics}, out / f"rank{dist.rank}.pt")
    cleanup(dist)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
