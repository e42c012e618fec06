"""Worker for test_common's DDP test: run under `torchrun --nproc_per_node=2` (gloo, CPU).

Each rank builds the model from its own seed (DDP must broadcast rank 0's weights), trains a
few SGD steps on its DistributedSampler shard through the Trainer, and saves its initial
and final parameters to OUT/rank<r>.pt for the test to compare.
"""

import sys
from pathlib import Path

import torch
from torch.utils.data import TensorDataset
from wmkernels.models.common import (
    TrainConfig,
    Trainer,
    cleanup,
    init_distributed,
    make_loader,
    step_batches,
    unwrap,
    wrap_ddp,
)

STEPS, BATCH, SEED = 3, 4, 0


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def make_data() -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(20, 6, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True).sin())


def loss_fn(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def main(out: Path) -> None:
    info = init_distributed(device="cpu")
    torch.manual_seed(100 + info.rank)  # deliberately different initial weights per rank
    model = make_model()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ddp = wrap_ddp(model, info)
    loader = make_loader(make_data(), BATCH, info, shuffle=True, seed=SEED)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.2)
    config = TrainConfig(steps=STEPS, log_every=1, out_dir=str(out / "run"), grad_clip=None,
                         progress=False)
    trainer = Trainer(ddp, optimizer, loss_fn, step_batches(loader), config)
    trainer.fit()
    torch.save({"initial": initial, "final": unwrap(ddp).state_dict(),
                "world_size": info.world_size, "losses": trainer.losses,
                "history": trainer.history}, out / f"rank{info.rank}.pt")
    cleanup(info)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
