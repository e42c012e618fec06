"""Shared model substrate (wmkernels.models.common): patching, embeddings, ST transformer,
training loop with checkpoints and resume, DDP."""

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from checks import run_two_gloo_processes
from torch.utils.data import DistributedSampler

from wmkernels.models.common import (
    PatchEmbed,
    PatchHead,
    STTransformer,
    TimestepEmbedder,
    TrainConfig,
    Trainer,
    checkpoint_io,
    config_from_dict,
    load_checkpoint,
    load_config,
    make_loader,
    patchify,
    save_checkpoint,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    step_batches,
    timestep_embedding,
    unpatchify,
)
from wmkernels.models.common.distributed import DistInfo, rank_rows


@pytest.fixture(autouse=True)
def _one_thread():
    """These shapes are tiny: a parallel region costs more than the work, and far more when
    the cores are shared with other jobs, so run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- patching


@pytest.mark.parametrize("shape,patch,tubelet", [
    ((2, 3, 3, 8, 12), 4, 1), ((1, 4, 5, 6, 6), 3, 2), ((2, 1, 1, 4, 4), 1, 1),
    ((0, 2, 3, 4, 4), 2, 1),
])
def test_patchify_roundtrip_and_layout(shape, patch, tubelet):
    video = torch.randn(shape, dtype=torch.float64)
    tokens = patchify(video, patch, tubelet)
    b, t, c, h, w = shape
    assert tokens.shape == (b, t // tubelet, (h // patch) * (w // patch),
                            tubelet * patch * patch * c)
    assert torch.equal(unpatchify(tokens, patch, h, w, tubelet), video)
    if b:
        # Token s of frame group g is patch (row s // gw, col s % gw), features (dt, dy, dx, c).
        gw = w // patch
        s = tokens.shape[2] - 1
        py, px = divmod(s, gw)
        block = video[0, :tubelet, :, py * patch:(py + 1) * patch, px * patch:(px + 1) * patch]
        assert torch.equal(tokens[0, 0, s], block.permute(0, 2, 3, 1).reshape(-1))


def test_patchify_accepts_strided_views():
    base = torch.randn(2, 6, 3, 8, 8)
    view = base[:, ::2].transpose(-1, -2)
    assert torch.equal(unpatchify(patchify(view, 2), 2, 8, 8), view)


def test_patch_embed_is_a_strided_conv_and_head_inverts_shapes():
    embed = PatchEmbed(patch=4, in_channels=3, dim=16, tubelet=2).double()
    video = torch.randn(2, 4, 3, 8, 12, dtype=torch.float64)
    conv = torch.nn.Conv3d(3, 16, kernel_size=(2, 4, 4), stride=(2, 4, 4)).double()
    with torch.no_grad():  # Linear weight (dim, (dt, dy, dx, c)) -> Conv3d (dim, c, dt, dy, dx)
        conv.weight.copy_(embed.proj.weight.view(16, 2, 4, 4, 3).permute(0, 4, 1, 2, 3))
        conv.bias.copy_(embed.proj.bias)
    ref = conv(video.transpose(1, 2)).flatten(3).permute(0, 2, 3, 1)  # (B, T', S, dim)
    torch.testing.assert_close(embed(video), ref)
    head = PatchHead(16, patch=4, out_channels=3, tubelet=2).double()
    assert head(embed(video), 8, 12).shape == video.shape


def test_patching_errors():
    with pytest.raises(ValueError, match="multiples of patch"):
        patchify(torch.zeros(1, 1, 3, 6, 8), 4)
    with pytest.raises(ValueError, match="tubelet"):
        patchify(torch.zeros(1, 3, 3, 8, 8), 4, tubelet=2)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        patchify(torch.zeros(3, 8, 8), 4)
    with pytest.raises(ValueError, match="do not fit"):
        unpatchify(torch.zeros(1, 1, 5, 48), 4, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        PatchEmbed(4, 3, 8)(torch.zeros(1, 1, 1, 8, 8))


# ---------------------------------------------------------------- embeddings


def test_sincos_embeddings_shapes_and_values():
    e1 = sincos_1d(7, 16)
    assert e1.shape == (7, 16) and e1.dtype == torch.float32
    assert torch.equal(e1[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    torch.testing.assert_close(e1[3, 0], torch.tensor(3.0).sin())  # highest frequency is 1
    torch.testing.assert_close(sincos_1d(torch.tensor([0.5, 2.0]), 8)[1], sincos_1d(3, 8)[2])
    e2 = sincos_2d(3, 5, 32)
    assert e2.shape == (15, 32)
    assert torch.equal(e2[7, :16], sincos_1d(3, 16)[1]) and torch.equal(e2[7, 16:],
                                                                        sincos_1d(5, 16)[2])
    for dim in (64, 40):
        e3 = sincos_3d(4, 3, 5, dim)
        assert e3.shape == (4, 15, dim) and e3.abs().max() <= 1
        flat = e3.reshape(-1, dim)
        assert torch.cdist(flat, flat).add(torch.eye(60) * 10).min() > 1e-3  # all distinct
    assert torch.equal(e3[1, :, : 2 * (40 // 8)], e3[1, :1, : 2 * (40 // 8)].expand(15, -1))
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_2d(2, 2, 30)
    with pytest.raises(ValueError, match="even"):
        sincos_3d(2, 2, 2, 9)


def test_timestep_embeddings():
    t = torch.tensor([0.0, 0.5, 999.0])
    e = timestep_embedding(t, 10)
    assert e.shape == (3, 10) and torch.equal(e[0], torch.cat([torch.ones(5), torch.zeros(5)]))
    emb = TimestepEmbedder(24, frequency_dim=16, scale=1000.0)
    out = emb(torch.rand(5))
    assert out.shape == (5, 24)
    out.sum().backward()
    assert emb.mlp[0].weight.grad is not None
    with pytest.raises(ValueError, match="1D"):
        timestep_embedding(torch.zeros(2, 2), 8)


# ---------------------------------------------------------------- ST transformer


def test_st_transformer_shapes_and_gradients():
    model = STTransformer(32, depth=2, heads=4, cond_dim=5)
    x, cond = torch.randn(2, 3, 6, 32, requires_grad=True), torch.randn(2, 3, 5)
    out = model(x, cond)
    assert out.shape == x.shape and out.dtype == x.dtype
    out.square().mean().backward()
    assert x.grad is not None and model.cond_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cond"):
        model(x)
    with pytest.raises(ValueError, match=r"\(B, T, 5\)"):
        model(x, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, T, S, 32\)"):
        model(torch.randn(2, 3, 6, 16), cond)


def test_st_transformer_is_causal_in_time():
    model = STTransformer(16, depth=2, heads=2, cond_dim=3).double()
    x, cond = torch.randn(1, 5, 4, 16, dtype=torch.float64), torch.randn(1, 5, 3).double()
    out = model(x, cond)
    x2, cond2 = x.clone(), cond.clone()
    x2[:, 3:] += torch.randn_like(x2[:, 3:])
    cond2[:, 3:] += 1
    out2 = model(x2, cond2)
    torch.testing.assert_close(out2[:, :3], out[:, :3], rtol=0, atol=1e-12)
    assert not torch.allclose(out2[:, 3:], out[:, 3:])
    bidirectional = STTransformer(16, depth=1, heads=2, causal_time=False).double()
    assert not torch.allclose(bidirectional(x2)[:, :3], bidirectional(x)[:, :3])


def test_st_transformer_cached_frames_equal_full_forward():
    model = STTransformer(16, depth=3, heads=2, rope=True, cond_dim=4).double()
    x, cond = torch.randn(2, 5, 3, 16, dtype=torch.float64), torch.randn(2, 5, 4).double()
    full = model(x, cond)
    cache = model.make_cache(2, max_frames=5, tokens_per_frame=3)
    steps = [model(x[:, :2], cond[:, :2], cache=cache)]  # a 2-frame prompt, then one by one
    steps += [model(x[:, t:t + 1], cond[:, t:t + 1], cache=cache) for t in range(2, 5)]
    torch.testing.assert_close(torch.cat(steps, 1), full)
    assert cache.frames == 5
    with pytest.raises(ValueError, match="causal"):
        STTransformer(16, 1, 2, causal_time=False).make_cache(1, 2, 3)


def test_st_transformer_and_patching_compile_without_graph_breaks():
    model = STTransformer(16, depth=2, heads=2, cond_dim=3)
    embed = PatchEmbed(4, 3, 16)
    video, cond = torch.rand(2, 3, 3, 8, 8), torch.randn(2, 3, 3)

    def forward(video, cond):
        return unpatchify(model(embed(video), cond), 1, 2, 2)

    compiled = torch.compile(forward, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(video, cond), forward(video, cond))


# ---------------------------------------------------------------- training loop


@dataclass
class TinyModelConfig:
    width: int = 16
    dropout: float = 0.2
    sizes: tuple = (8, 1)


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.GELU(),
                               torch.nn.Linear(16, 1))


def batch_fn(step: int):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 8, generator=g)
    return x, x.sum(1, keepdim=True).sin()


def loss_fn(model, batch):
    x, y = batch
    return {"loss": torch.nn.functional.mse_loss(model(x), y), "aux": torch.tensor(1.0)}


def make_trainer(model, out_dir, steps, **overrides):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    config = TrainConfig(**{"steps": steps, "log_every": 2, "out_dir": str(out_dir),
                            "seed": 7, "progress": False, **overrides})
    return Trainer(model, optimizer, loss_fn, batch_fn, config, scheduler=scheduler,
                   configs={"model": TinyModelConfig()},
                   eval_fn=lambda m, step: {"mse": loss_fn(m, batch_fn(10_000))["loss"]})


def test_resume_continues_with_identical_losses(tmp_path):
    straight = make_trainer(tiny_model(0), tmp_path / "a", steps=6)
    straight.fit()
    first = make_trainer(tiny_model(0), tmp_path / "b", steps=3)
    first.fit()
    assert first.losses == straight.losses[:3]
    # A fresh process would build a differently initialised model: the checkpoint decides.
    resumed = make_trainer(tiny_model(1), tmp_path / "b", steps=6)
    assert resumed.step == 3
    history = resumed.fit()
    assert resumed.losses == straight.losses[3:]  # bitwise: weights, Adam, LR, dropout RNG
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert [h["step"] for h in history if "loss" in h] == [4, 6]
    assert history[-1]["step"] == 6 and "eval/mse" in history[-1]
    config = load_config(tmp_path / "b" / "config.json")
    assert config["train"]["steps"] == 6 and config["model"] == {"width": 16, "dropout": 0.2,
                                                                 "sizes": [8, 1]}
    assert load_checkpoint(tmp_path / "b" / "checkpoint.safetensors")["step"] == 6


def test_configs_roundtrip_through_json(tmp_path):
    @dataclass
    class Outer:
        inner: TinyModelConfig = field(default_factory=TinyModelConfig)
        name: str = "x"

    cfg = Outer(TinyModelConfig(width=3, sizes=(4, 5)), name="y")
    save_checkpoint(tmp_path / "c.safetensors", tiny_model(0), configs={"model": cfg})
    stored = load_checkpoint(tmp_path / "c.safetensors")["configs"]["model"]
    assert config_from_dict(Outer, stored) == cfg
    assert config_from_dict(TinyModelConfig, {"width": 5}) == TinyModelConfig(width=5)
    with pytest.raises(ValueError, match="no fields"):
        config_from_dict(TinyModelConfig, {"depth": 2})
    with pytest.raises(TypeError, match="dataclass"):
        config_from_dict(dict, {})


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = tiny_model(0)
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, model, step=1)
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_io, "save_file", crash)
    with torch.no_grad():
        model[0].weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.safetensors"]
    restored = tiny_model(3)
    assert load_checkpoint(path, restored)["step"] == 1
    assert torch.equal(restored[0].weight, tiny_model(0)[0].weight)


def test_checkpoint_roundtrip_with_tied_weights_and_errors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight  # tied, as in language-model heads
    save_checkpoint(tmp_path / "c.safetensors", model, extra={"note": "tied"})
    other = torch.nn.Sequential(torch.nn.Embedding(5, 4), torch.nn.Linear(4, 5, bias=False))
    other[1].weight = other[0].weight
    info = load_checkpoint(tmp_path / "c.safetensors", other)
    assert info["extra"] == {"note": "tied"} and torch.equal(other[1].weight, model[0].weight)
    with pytest.raises(ValueError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.safetensors", other)
    with pytest.raises(ValueError, match="optimizer"):
        load_checkpoint(tmp_path / "c.safetensors", other,
                        torch.optim.SGD(other.parameters(), lr=0.1))
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "junk.safetensors", other)
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=-1)


def flip_a_tensor_bit(path: Path) -> None:
    """Flip one bit in the tensor bytes of a safetensors file (past its JSON header)."""
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    data[header + (len(data) - header) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_bit_flipped_or_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, tiny_model(0), step=1)
    good = path.read_bytes()
    flip_a_tensor_bit(path)
    with pytest.raises(ValueError, match="corrupt: its tensors do not match the checksum"):
        load_checkpoint(path, tiny_model(1))
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_checkpoint(path, tiny_model(1))
    path.write_bytes(good)
    assert load_checkpoint(path, tiny_model(1))["step"] == 1


def test_checkpoint_writers_fsync_the_file_and_its_folder_before_and_after_the_rename(
        tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoint_io.os, "fsync", lambda fd: (
        events.append(("fsync", os.path.isdir(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(checkpoint_io.os, "replace", lambda a, b: (
        events.append(("replace", None)), real_replace(a, b))[1])
    save_checkpoint(tmp_path / "c.safetensors", tiny_model(0))
    assert events == [("fsync", False), ("replace", None), ("fsync", True)]


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    make_trainer(tiny_model(0), tmp_path, steps=2).fit()
    with pytest.raises(ValueError, match=r"other settings \(train.seed: saved 7, now 8\)"):
        make_trainer(tiny_model(0), tmp_path, steps=4, seed=8)
    other = TinyModelConfig(width=32)
    with pytest.raises(ValueError, match="model.width: saved 16, now 32"):
        Trainer(tiny_model(0), torch.optim.SGD(tiny_model(0).parameters(), lr=0.1), loss_fn,
                batch_fn, TrainConfig(steps=4, out_dir=str(tmp_path), seed=7, progress=False),
                configs={"model": other})
    # more steps, other logging and checkpoint intervals: the same run, resumed
    assert make_trainer(tiny_model(0), tmp_path, steps=4, checkpoint_every=1).step == 2


def test_trainer_learns_action_conditioned_next_frames_of_the_world(tmp_path):
    from wmkernels.models.data import NUM_ACTIONS, make_clips

    class NextFrame(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = PatchEmbed(4, 3, 32)
            self.body = STTransformer(32, depth=1, heads=2, cond_dim=NUM_ACTIONS + 1)
            self.head = PatchHead(32, 4, 3)
            self.register_buffer("pos", sincos_3d(3, 4, 4, 32))

        def forward(self, video, actions):
            cond = torch.nn.functional.one_hot(actions + 1, NUM_ACTIONS + 1).float()
            tokens = self.embed(video) + self.pos[: video.shape[1]]
            return self.head(self.body(tokens, cond), 16, 16)

    def batch(step):
        clips = make_clips(8, 4, 16, seed=0, start=8 * step)
        return clips["video"], clips["actions"]

    def loss(model, b):
        video, actions = b
        return torch.nn.functional.mse_loss(model(video[:, :-1], actions), video[:, 1:])

    torch.manual_seed(0)
    model = NextFrame()
    trainer = Trainer(model, torch.optim.AdamW(model.parameters(), lr=3e-3), loss, batch,
                      TrainConfig(steps=40, log_every=10, progress=False,
                                  out_dir=str(tmp_path)))
    history = trainer.fit()
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]


def test_non_finite_loss_stops_training(tmp_path):
    trainer = Trainer(tiny_model(0), torch.optim.SGD(tiny_model(0).parameters(), lr=0.1),
                      lambda m, b: torch.tensor(float("nan")), batch_fn,
                      TrainConfig(steps=2, progress=False))
    with pytest.raises(FloatingPointError, match="step 0"):
        trainer.fit()


def test_step_batches_resume_mid_epoch():
    data = torch.utils.data.TensorDataset(torch.arange(9.0))
    loader = make_loader(data, 3, DistInfo(), shuffle=True, seed=1)
    sequential = step_batches(loader)
    seen = [sequential(s)[0] for s in range(7)]  # 3 batches per epoch: crosses two epochs
    jumped = step_batches(loader)
    assert torch.equal(jumped(4)[0], seen[4]) and torch.equal(jumped(5)[0], seen[5])
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:6]))  # reshuffled per epoch
    assert sorted(torch.cat(seen[:3]).tolist()) == sorted(torch.cat(seen[3:6]).tolist())


# ---------------------------------------------------------------- DDP


def test_rank_rows_are_the_ranks_shares_of_the_global_draw():
    draw = lambda n: torch.randn(n, 3, generator=torch.Generator().manual_seed(7))
    full = draw(4)
    shares = [rank_rows(draw, 2, DistInfo(rank=r, world_size=2)) for r in range(2)]
    assert torch.equal(torch.cat(shares), full)
    assert torch.equal(rank_rows(draw, 4, None), full)
    assert torch.equal(rank_rows(draw, 4, DistInfo()), full)


def _load_worker():
    spec = importlib.util.spec_from_file_location(
        "ddp_worker", Path(__file__).with_name("ddp_worker.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_two_gloo_processes_stay_in_sync(tmp_path):
    worker = _load_worker()
    run_two_gloo_processes(Path(worker.__file__), tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["world_size"] == 2
    assert not torch.equal(ranks[0]["initial"]["0.weight"], ranks[1]["initial"]["0.weight"])
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name]), name  # replicas in sync

    # The same steps in one process: DDP averages the two shards' gradients, which for equal
    # shard sizes is the gradient of the mean of the two shard losses.
    torch.manual_seed(100)  # rank 0's initialisation, broadcast by DDP
    model = worker.make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    data = worker.make_data()
    samplers = [DistributedSampler(data, num_replicas=2, rank=r, shuffle=True,
                                   seed=worker.SEED, drop_last=True) for r in range(2)]
    per_epoch = len(samplers[0]) // worker.BATCH
    for step in range(worker.STEPS):
        epoch, offset = divmod(step, per_epoch)
        loss = 0.0
        for sampler in samplers:
            sampler.set_epoch(epoch)
            idx = list(sampler)[offset * worker.BATCH:(offset + 1) * worker.BATCH]
            loss = loss + worker.loss_fn(model, data[idx]) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(ranks[0]["final"][name], value, rtol=1e-5, atol=1e-6)
    logged = ranks[0]["history"][-1]["loss"]  # rank-averaged, as logged
    assert logged == pytest.approx(sum(r["losses"][-1] for r in ranks) / 2, rel=1e-6)
    assert (tmp_path / "run" / "checkpoint.safetensors").is_file()
