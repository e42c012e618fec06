"""JEPA pipeline: masks, EMA, losses and gradients, probes, planner, checkpoints (tiny, fast)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from checks import run_two_gloo_processes

import wmkernels
from wmkernels.models.jepa.ema import ema_update_, make_target, momentum_at
from wmkernels.models.jepa.masks import (
    BlockSpec,
    FutureMasks,
    MaskFamilies,
    MultiBlock3DMasks,
    MultiBlockMasks,
    TubeMasks,
    sample_blocks,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: on a busy CPU, OpenMP's thread handoffs cost more than the
    # math, so the module runs single-threaded (and restores the setting afterwards).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- masks

def test_blocks_scale_and_aspect():
    grid = (14, 14)
    blocks = sample_blocks(500, 4, grid, (0.15, 0.2), (0.75, 1.5), gen())
    area = blocks.sum(dim=(-1, -2)).float() / (14 * 14)
    # Rounding h and w to whole patches moves the area by at most about one row + column.
    assert area.min() >= 0.15 - 2 * 14 / 196 and area.max() <= 0.2 + 2 * 15 / 196
    h = blocks.any(dim=-1).sum(-1).float()
    w = blocks.any(dim=-2).sum(-1).float()
    assert (h * w == blocks.sum(dim=(-1, -2))).all()          # rectangles
    ratio = h / w
    assert ratio.min() >= 0.5 and ratio.max() <= 2.0
    assert 0.9 < ratio.median() < 1.2                          # log-uniform in (0.75, 1.5)


def test_ijepa_masks_counts_and_disjoint():
    collator = MultiBlockMasks((8, 8))
    m = collator(16, gen())
    b, n_targets, n_tgt = m.targets.shape
    assert (b, n_targets) == (16, 4) and m.context.shape[0] == 16
    assert m.context.shape[1] >= 4 and n_tgt >= 1
    for i in range(b):
        ctx = set(m.context[i].tolist())
        assert len(ctx) == m.context.shape[1]                  # no repeats
        for j in range(n_targets):
            tgt = set(m.targets[i, j].tolist())
            assert len(tgt) == n_tgt and not ctx & tgt         # context never sees a target
    assert m.context.max() < 64 and m.targets.max() < 64
    assert (m.context.diff(dim=-1) > 0).all()                  # sorted


def test_ijepa_masks_deterministic():
    collator = MultiBlockMasks((8, 8))
    a, b, c = collator(8, gen(1)), collator(8, gen(1)), collator(8, gen(2))
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert not (a.context.shape == c.context.shape and torch.equal(a.context, c.context))


def test_vjepa_masks():
    collator = MultiBlock3DMasks((8, 8))
    short, long = collator(12, gen())
    for m in (short, long):
        assert m.context.shape[0] == m.target.shape[0] == 12
        for i in range(12):
            assert not set(m.context[i].tolist()) & set(m.target[i].tolist())
    # Long-range masks (2 x 0.7) hide more than short-range ones (8 x 0.15) on average.
    assert long.target.shape[1] > short.target.shape[1] or long.context.shape[1] < 16
    again = collator(12, gen())
    assert torch.equal(again[0].context, short.context)


def test_tube_masks_exact_ratio():
    (m,) = TubeMasks((6, 6), ratio=0.75)(5, gen())
    assert m.target.shape == (5, 27) and m.context.shape == (5, 9)
    full = torch.cat([m.context, m.target], dim=1).sort(dim=1).values
    assert torch.equal(full, torch.arange(36).expand(5, 36))


def test_future_masks_and_families():
    (m,) = FutureMasks((3, 5), tubelets=4, context_tubelets=3)(2, gen())
    assert m.context_tubelets == 3
    assert torch.equal(m.context, torch.arange(15).expand(2, 15))
    assert torch.equal(m.target, torch.arange(15).expand(2, 15))
    both = MaskFamilies(MultiBlock3DMasks((3, 5), (BlockSpec(2, (0.2, 0.2)),)),
                        FutureMasks((3, 5), tubelets=2))
    block, future = both(4, gen(5))
    assert block.context_tubelets is None and future.context_tubelets == 1
    assert torch.equal(block.target, both(4, gen(5))[0].target)          # seeded
    for k in (0, 4, 1.0):
        with pytest.raises(ValueError, match="context_tubelets"):
            FutureMasks((3, 5), tubelets=4, context_tubelets=k)
    with pytest.raises(ValueError, match="collator"):
        MaskFamilies()


@pytest.mark.parametrize("bad", [
    dict(grid=(0, 4)), dict(grid=(4, 4), target_scale=(0.3, 0.2)),
    dict(grid=(4, 4), num_targets=0)])
def test_ijepa_masks_bad_args(bad):
    with pytest.raises(ValueError):
        MultiBlockMasks(**bad)


def test_video_masks_bad_args():
    with pytest.raises(ValueError, match="specs"):
        MultiBlock3DMasks((4, 4), (BlockSpec(0, (0.1, 0.1)),))
    with pytest.raises(ValueError, match="ratio"):
        TubeMasks((4, 4), ratio=1.0)


# ---------------------------------------------------------------- EMA

def test_momentum_schedule():
    assert momentum_at(0, 100, 0.996) == 0.996
    assert momentum_at(50, 100, 0.996) == pytest.approx(0.998)
    assert momentum_at(100, 100, 0.996) == 1.0 and momentum_at(500, 100, 0.996) == 1.0
    with pytest.raises(ValueError):
        momentum_at(0, 0, 0.996)


def test_ema_update_math():
    online = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.LayerNorm(3))
    target = make_target(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone().double() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(t.double(), 0.9 * b + 0.1 * o.double(), rtol=1e-6,
                                   atol=1e-6)
    ema_update_(target, online, 1.0)                             # momentum 1: frozen
    ema_update_(target, online, 0.0)                             # momentum 0: copy
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        assert torch.equal(t, o)
    with pytest.raises(ValueError):
        ema_update_(target, torch.nn.Linear(5, 3), 0.5)


# ---------------------------------------------------------------- models

from wmkernels.models.common import save_checkpoint  # noqa: E402
from wmkernels.models.jepa.ac import ActionConditionedPredictor, ACWorldModel  # noqa: E402
from wmkernels.models.jepa.config import (  # noqa: E402
    ACConfig,
    EncoderConfig,
    IJEPAConfig,
    PredictorConfig,
    VJEPAConfig,
)
from wmkernels.models.jepa.ijepa import IJEPA  # noqa: E402
from wmkernels.models.jepa.planner import CEMConfig, CEMPlanner  # noqa: E402
from wmkernels.models.jepa.probe import train_probe  # noqa: E402
from wmkernels.models.jepa.train import clip_pool, load_model, train_jepa  # noqa: E402
from wmkernels.models.jepa.vit import (  # noqa: E402
    feature_std,
    image_feature_std,
)
from wmkernels.models.jepa.vjepa import VJEPA  # noqa: E402

TINY_ENC = dict(image_size=32, patch=4, dim=32, depth=1, heads=1)
TINY_PRED = PredictorConfig(dim=32, depth=1, heads=1)


def tiny_ijepa() -> IJEPA:
    return IJEPA(IJEPAConfig(encoder=EncoderConfig(**TINY_ENC), predictor=TINY_PRED))


def tiny_vjepa(attention="factorized", masking="multiblock", future_context=1) -> VJEPA:
    enc = EncoderConfig(**TINY_ENC, frames=4, tubelet=2, attention=attention)
    return VJEPA(VJEPAConfig(encoder=enc, predictor=TINY_PRED, masking=masking,
                             future_context=future_context))


def fit(model, inputs, steps=8):
    """A few steps on one fixed batch with fixed masks; returns the losses."""
    masks = model.mask_collator(inputs.shape[0], gen(3))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(steps):
        loss, stats = model(inputs, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_target(0.99)
        losses.append(stats["loss"])
    return losses


def test_ijepa_loss_decreases_and_target_gets_no_grad():
    model = tiny_ijepa()
    x = torch.randn(4, 3, 32, 32)
    loss, stats = model(x, model.mask_collator(4, gen()))
    loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert stats["target_std"] > 0.05
    losses = fit(tiny_ijepa(), x)
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("attention,masking,future_context", [
    ("factorized", "multiblock", 1), ("joint", "tube", 1), ("factorized", "multiblock", 0)])
def test_vjepa_loss_decreases(attention, masking, future_context):
    model = tiny_vjepa(attention, masking, future_context)
    x = torch.randn(2, 4, 3, 32, 32)
    masks = model.mask_collator(2, gen())
    assert [m.context_tubelets for m in masks][-1] == (1 if future_context else None)
    loss, _ = model(x, masks)
    loss.backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    losses = fit(tiny_vjepa(attention, masking, future_context), x)
    assert losses[-1] < 0.9 * losses[0]


@pytest.mark.parametrize("attention", ["factorized", "joint"])
def test_future_family_sees_the_past_only(attention):
    # The future family's predictions of tubelet 2 (frames 2-3) come from frames 0-1 alone,
    # and its loss compares them with the target encoder's features of tubelet 2.
    model = tiny_vjepa(attention).eval()
    (m,) = FutureMasks((8, 8), tubelets=2)(2, gen())
    x = torch.randn(2, 4, 3, 32, 32)
    y = x.clone()
    y[:, 2:] = torch.randn(2, 2, 3, 32, 32)

    def predict(clips):
        z = model.encoder(clips, keep=m.context, tubelets=1)
        return model.predictor(z, m.context, m.target, 1)

    assert predict(x).shape == (2, 1, 64, 32)
    torch.testing.assert_close(predict(x), predict(y))
    with torch.no_grad():
        h = F.layer_norm(model.target_encoder(x), (32,))[:, 1:]
        loss, _ = model(x, [m])
    torch.testing.assert_close(loss, F.l1_loss(predict(x), h))
    with pytest.raises(ValueError, match="context_tubelets=1"):
        model.predictor(model.encoder(x), m.context, m.target, 1)
    with pytest.raises(ValueError, match="tubelets must be in"):
        model.encoder(x, tubelets=3)


def test_collapse_monitors():
    # Features that depend on the token position only (an encoder ignoring its input):
    # spread over tokens, but no spread over images.
    positional = torch.randn(1, 1, 16, 8).expand(6, 1, 16, 8)
    assert feature_std(positional) > 0.5 and image_feature_std(positional) == 0.0
    z = torch.randn(6, 1, 16, 8)
    assert image_feature_std(z) == pytest.approx(float(z.std(dim=0).mean()))
    assert image_feature_std(z) > 0.5


def test_reference_backend_matches_default():
    model = tiny_vjepa().eval()
    x = torch.randn(2, 4, 3, 32, 32)
    masks = model.mask_collator(2, gen())
    fast, _ = model(x, masks)
    with wmkernels.use_backend("reference"):
        ref, _ = model(x, masks)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)


def test_train_checkpoint_round_trip_and_resume(tmp_path):
    model = tiny_vjepa()
    pool = clip_pool(4, 8, 32, seed=0)
    trained, trainer = train_jepa("vjepa", model.cfg, steps=2, pool=pool, out=tmp_path)
    assert len(trainer.losses) == 2 and trainer.history[-1]["target_std"] > 0
    again, meta = load_model(tmp_path)
    assert meta["variant"] == "vjepa" and meta["step"] == 2
    assert dataclasses.asdict(meta["config"]) == dataclasses.asdict(model.cfg)
    for (k, a), (k2, b) in zip(trained.state_dict().items(), again.state_dict().items(),
                               strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(1, 4, 3, 32, 32)
    torch.testing.assert_close(trained.target_encoder(x), again.target_encoder(x))
    # Asking for more steps in the same directory resumes at step 2.
    _, resumed = train_jepa("vjepa", model.cfg, steps=3, pool=pool, out=tmp_path)
    assert len(resumed.losses) == 1 and load_model(tmp_path)[1]["step"] == 3
    # Another seed or another pool of clips is another run: refused, not mixed in.
    with pytest.raises(ValueError, match="train.seed: saved 0, now 1"):
        train_jepa("vjepa", model.cfg, steps=4, seed=1, pool=pool, out=tmp_path)
    with pytest.raises(ValueError, match="jepa.clips: saved 4, now 5"):
        train_jepa("vjepa", model.cfg, steps=4, pool=clip_pool(5, 8, 32, seed=0), out=tmp_path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        load_model(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError):
        load_model(tmp_path / "missing.safetensors")


def test_world_flows_from_the_jepa_config_to_training_probes_and_planning(tmp_path):
    """The JEPA config's world is the one its clips, its probes and an AC model built on it
    (training clips, planning simulator, success tolerance) use."""
    from wmkernels.models.jepa.config import world_of
    from wmkernels.models.jepa.evaluate import planning_report
    from wmkernels.models.jepa.train import train_ac

    assert world_of(IJEPAConfig()).agent_size == 0.25 == world_of(VJEPAConfig()).agent_size
    assert world_of(ACConfig(world={"agent_size": 0.3}, world_balls=1)).num_balls == 1
    with pytest.raises(ValueError, match="agnt_size"):
        world_of(IJEPAConfig(world={"agnt_size": 0.3}))
    model = tiny_vjepa()
    model.cfg.world = {"agent_size": 0.3, "num_balls": 1}
    train_jepa("vjepa", model.cfg, steps=1, clips=2, out=tmp_path / "v")
    cfg = ACConfig(dim=32, depth=1, heads=1, batch_size=2)
    ac, _ = train_ac(tmp_path / "v", cfg, steps=1, clips=2, out=tmp_path / "ac")
    assert ac.cfg.world == {"agent_size": 0.3, "num_balls": 1}
    loaded, _ = load_model(tmp_path / "ac")
    world = world_of(loaded.cfg)
    assert world.agent_size == 0.3 and world.num_balls == cfg.world_balls
    r = planning_report(loaded, episodes=2, horizon=1, log=None,
                        cem=CEMConfig(horizon=1, samples=4, elites=1, iterations=1))
    assert r["tolerance"] == pytest.approx(0.15)


def test_action_clips_hold_each_action():
    from wmkernels.models.data import World
    from wmkernels.models.jepa.train import action_clips

    clips = action_clips(3, frames=3, size=32, seed=5, repeat=2)
    assert clips["video"].shape == (3, 3, 3, 32, 32) and clips["video"].dtype == torch.uint8
    sim = World(size=32)
    first = sim.reset(seed=5, batch_size=3)
    for _ in range(2):
        frame = sim.step(clips["actions"][:, 0].numpy())
    assert torch.equal(clips["video"][:, 0], first.mul(255).round().to(torch.uint8))
    assert torch.equal(clips["video"][:, 1], frame.mul(255).round().to(torch.uint8))


def test_ac_predictor_is_block_causal():
    pred = ActionConditionedPredictor(enc_dim=8, grid_hw=(2, 2), num_actions=3, max_frames=5,
                                      dim=32, depth=2, heads=1)
    z = torch.randn(2, 5, 4, 8)
    a = torch.randint(3, (2, 5))
    out = pred(z, a)
    z2, a2 = z.clone(), a.clone()
    z2[:, 3:] += 1.0
    a2[:, 3:] = (a2[:, 3:] + 1) % 3
    out2 = pred(z2, a2)
    torch.testing.assert_close(out[:, :3], out2[:, :3])      # the future does not leak
    assert not torch.allclose(out[:, 3:], out2[:, 3:])
    loss, stats = pred.loss(z, a[:, :4], rollout=2)
    loss.backward()
    assert stats["rollout"] > 0 and all(p.grad is not None for p in pred.parameters())
    l2, _ = pred.loss(z, a[:, :4], rollout=1, kind="l2")
    assert l2.item() > 0
    with pytest.raises(ValueError, match="kind"):
        pred.loss(z, a[:, :4], kind="huber")


class _Counter(torch.nn.Module):
    """A stand-in world model: the state counts how often each action was taken."""
    num_actions = 3

    def rollout(self, z0, actions):
        counts = torch.nn.functional.one_hot(actions, 3).float().cumsum(1)
        return counts[:, z0.shape[1] - 1:, None, :]          # (N, H, 1, 3)


def test_cem_finds_the_goal():
    planner = CEMPlanner(_Counter(), CEMConfig(horizon=5, samples=32, elites=4, iterations=5))
    goal = torch.tensor([[0.0, 4.0, 1.0]])                      # four 1s and one 2
    plan, energy = planner.plan(torch.zeros(1, 3), goal, gen())
    assert energy == 0.0 and plan.bincount(minlength=3).tolist() == [0, 4, 1]
    with pytest.raises(ValueError):
        CEMPlanner(_Counter(), CEMConfig(samples=4, elites=8))


def test_probes_read_what_they_should():
    n = 240
    labels = torch.randint(4, (n,))
    where = torch.randint(6, (n,))
    z = torch.randn(n, 6, 8)
    z[torch.arange(n), where, 0] += 4.0                         # a marked "object" token
    z[torch.arange(n), where, 1 + labels] += 4.0                # its class, wherever it is
    attrs = {"cls": labels, "pos": where.float()}
    train = {k: v[:160] for k, v in attrs.items()}
    test = {k: v[160:] for k, v in attrs.items()}
    lin = train_probe("linear", z[:160], train, z[160:], test, epochs=40)
    att = train_probe("attentive", z[:160], train, z[160:], test, epochs=40)
    # Position is linear in the flat tokens; the class of an object that moves is not,
    # but attention can find the object first.
    assert lin["pos"] > 0.5, lin
    assert att["cls"] > 0.8 and att["cls"] > lin["cls"] + 0.2, (lin, att)
    shuffled = train_probe("attentive", z[:160], {k: v[torch.randperm(160)] for k, v in
                                                  train.items()}, z[160:], test, epochs=40)
    assert shuffled["cls"] < 0.5 and shuffled["pos"] < 0.2      # no signal, no score
    with pytest.raises(ValueError):
        train_probe("mlp", z, attrs, z, attrs)


# ---------------------------------------------------------------- end to end on the world

def test_probe_and_planner_end_to_end(tmp_path):
    from wmkernels.models.data import make_clips
    from wmkernels.models.jepa.evaluate import oracle_report, planning_report, probe_report

    model = tiny_ijepa()
    report = probe_report(model.target_encoder, n_train=24, n_test=12, epochs=1, log=None)
    for feature in ("jepa", "random", "pixels"):
        for kind in ("linear", "attentive"):
            scores = report[f"{feature}/{kind}"]
            assert set(scores) == {*report["attributes"], "mean"}
            assert all(0.0 <= v <= 1.0 for v in scores.values())
    # Chance is the commonest held-out value's share, attribute by attribute.
    data = make_clips(36, frames=2, size=model.cfg.encoder.image_size, seed=1234)
    for k in report["attributes"]:
        held = data["attributes"][k][24:]
        assert report["chance"][k] == pytest.approx((held == held.mode().values).float().mean())
    cfg = ACConfig(encoder=model.cfg.encoder, source="ijepa", dim=32, depth=1, heads=1)
    ac = ACWorldModel(cfg)
    save_checkpoint(tmp_path / "ac.safetensors", ac,
                    configs={"model": cfg, "jepa": {"variant": "ac"}})
    ac, _ = load_model(tmp_path / "ac.safetensors")
    r = planning_report(ac, episodes=3, horizon=2, log=None,
                        cem=CEMConfig(horizon=2, samples=8, elites=2, iterations=2))
    assert 0.0 <= r["cem_success"] <= 1.0 and 0.0 <= r["random_success"] <= 1.0
    assert r["episodes"] == 3
    o = oracle_report(ac, episodes=2, horizon=1)
    assert 0.0 <= o["oracle_success"] <= 1.0 and -1.0 <= o["energy_distance_corr"] <= 1.0


def test_probe_leaves_out_attributes_with_one_value():
    """A 16 px agent never moves half its width in 4 frames: agent_motion is constant in
    that world, which any features would 'read' perfectly, so the report leaves it out."""
    from wmkernels.models.data import WorldConfig
    from wmkernels.models.jepa.evaluate import probe_report

    model = tiny_vjepa()
    report = probe_report(model.target_encoder, n_train=16, n_test=8, epochs=1, log=None,
                          probes=("linear",), world=WorldConfig(agent_size=0.25))
    assert report["constant_attributes"] == ["agent_motion"]
    assert "agent_motion" not in report["attributes"]
    assert set(report["jepa/linear"]) == {*report["attributes"], "mean"}


def test_cli_train_probe_plan(tmp_path, capsys):
    from wmkernels.models.jepa.cli import main

    ck = tmp_path / "vjepa"
    assert main(["jepa", "train", "--variant", "vjepa", "--steps", "2", "--batch-size", "2",
                 "--clips", "4", "--out", str(ck)]) == 0
    assert "target feature std" in capsys.readouterr().out
    paper = tmp_path / "paper_masks"
    assert main(["jepa", "train", "--variant", "vjepa", "--future-context", "0", "--steps", "1",
                 "--batch-size", "2", "--clips", "4", "--out", str(paper)]) == 0
    assert load_model(paper)[1]["config"].future_context == 0
    assert main(["jepa", "train", "--variant", "ijepa", "--future-context", "1"]) == 2
    assert "vjepa only" in capsys.readouterr().err
    ac = tmp_path / "ac"
    assert main(["jepa", "train", "--variant", "ac", "--steps", "1", "--batch-size", "2",
                 "--clips", "2", "--encoder", str(ck), "--out", str(ac)]) == 0
    assert main(["jepa", "plan", "--checkpoint", str(ac), "--start", "3", "--goal", "2,2",
                 "--samples", "4", "--iterations", "1"]) == 0
    assert "planned actions" in capsys.readouterr().out
    assert main(["jepa", "plan", "--checkpoint", str(ac), "--start", "3", "--goal", "9"]) == 2
    assert "wmk: error: --goal" in capsys.readouterr().err


def test_ddp_two_gloo_processes_train_in_sync(tmp_path):
    run_two_gloo_processes(Path(__file__).with_name("jepa_ddp_worker.py"), tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["world_size"] == 2 and len(ranks[0]["losses"]) == 3
    # Each rank trains on its own half of the batch (different clips and masks) ...
    assert ranks[0]["losses"] != ranks[1]["losses"]
    # ... while the replicas, the EMA target encoders included, stay identical.
    for name, value in ranks[0]["final"].items():
        assert torch.equal(value, ranks[1]["final"][name]), name
    assert any(k.startswith("target_encoder.") for k in ranks[0]["final"])
    # One log record (steps < log_every): the mean over the steps, then over the ranks.
    logged = ranks[0]["history"][-1]["loss"]
    assert logged == pytest.approx(sum(ranks[0]["losses"] + ranks[1]["losses"]) / 6, rel=1e-5)
    again, meta = load_model(tmp_path / "run")
    assert meta["step"] == 3
    for name, value in again.state_dict().items():
        assert torch.equal(value, ranks[0]["final"][name]), name
