"""Genie ablations (models/genie/ablate.py: dynamics and tokenizer settings), the
training-time context noise (dynamics.corrupt_context; its effect on the loss:
test_genie.py's test_dynamics_loss_is_cross_entropy_on_the_masked_tokens) and sampler
settings, on the seconds-long `micro` config."""

import json

import pytest
import torch

import wmkernels.models.genie.ablate as ablate_module
from wmkernels.models.common.training import load_checkpoint as load_phase_checkpoint
from wmkernels.models.genie.ablate import ablate, parse_settings
from wmkernels.models.genie.config import TRAIN_CLIPS, GenieConfig, get_config
from wmkernels.models.genie.dynamics import corrupt_context, random_token_mask
from wmkernels.models.genie.model import load_checkpoint
from wmkernels.models.genie.pipeline import train_genie


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_corrupt_context_rates_sources_and_untouched_tokens():
    g = torch.Generator().manual_seed(0)
    B, T, S, vocab = 64, 5, 400, 50
    # frames hold codes 0..24 only: a replacement must come from the batch's own codes
    tokens = torch.randint(0, vocab // 2, (B, T, S), generator=g)
    mask = random_token_mask((B, T, S), 0.5, 1.0, generator=g)
    out = corrupt_context(tokens, mask, 0.4, generator=g)
    changed = out != tokens
    assert not changed[:, 0].any()                  # the prompt frame stays real
    assert not changed[mask].any()                  # hidden tokens are the model's targets
    assert int(out.max()) < vocab // 2              # replacements are codes of the batch
    # a visible token is replaced with probability U(0, 0.4) (minus same-code draws)
    visible = ~mask[:, 1:]
    rate = float(changed[:, 1:][visible].double().mean())
    assert 0.15 < rate < 0.21, rate
    assert torch.equal(corrupt_context(tokens, mask, 0.0, generator=g), tokens)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_bad_context_noise(value):
    d = get_config("tiny").to_dict()
    d["dynamics"]["context_noise"] = value
    with pytest.raises(ValueError, match="dynamics.context_noise"):
        GenieConfig.from_dict(d)


def test_parse_settings():
    assert parse_settings(["context_noise=0.2", "dim=64", "temperature=0",
                           "tokenizer.stability_weight=1", "train.tokenizer_steps=2400"]) == {
        "context_noise": 0.2, "dim": 64, "temperature": 0.0, "tokenizer.stability_weight": 1.0,
        "train.tokenizer_steps": 2400}
    assert parse_settings(["rope=true"]) == {"rope": True}
    assert parse_settings(["rope=False"]) == {"rope": False}   # not bool("False")
    for bad, match in (["nonsense=1"], "FIELD=VALUE"), (["dim"], "FIELD=VALUE"), (
            ["dim=wide"], "--set dim: expected a int"), (
            ["tokenizer.nonsense=1"], "FIELD=VALUE"), (
            ["tokenizer.codebook_size=1.5"], "--set tokenizer.codebook_size: expected a int"), (
            ["train.lr=1"], "FIELD=VALUE"), (["rope=yes"], "--set rope: expected a bool"):
        with pytest.raises(ValueError, match=match):
            parse_settings(bad)


def test_ablation_without_changes_is_the_pipelines_dynamics_phase(tmp_path):
    """No change: the dynamics trained by ablate equals the one train_genie trained, weight
    for weight, so an ablation differs from the preset by the settings it names only."""
    cfg = get_config("micro")
    model = train_genie(cfg, tmp_path / "run", clips=8, device="cpu", say=lambda line: None,
                        progress=False)
    ckpt = tmp_path / "run" / "genie.safetensors"
    metrics = ablate(ckpt, {}, tmp_path / "same", steps=cfg.train.dynamics_steps, clips=8,
                     eval_clips=2)
    again, extra = load_checkpoint(tmp_path / "same" / "genie.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert extra["ablation"] == {}
    saved = json.loads((tmp_path / "same" / "metrics.json").read_text())
    assert saved["control_delta_psnr"] == metrics["control_delta_psnr"]
    # a change reaches the config the checkpoint records, and the weights
    # (a masking change: it reaches the weights whatever codes the tiny tokenizer emits)
    ablate(ckpt, {"mask_min": 0.75}, tmp_path / "masked", steps=cfg.train.dynamics_steps,
           clips=8, eval_clips=2)
    masked, _ = load_checkpoint(tmp_path / "masked" / "genie.safetensors")
    assert masked.cfg.dynamics.mask_min == 0.75
    assert not torch.equal(masked.dynamics.head.weight, model.dynamics.head.weight)


def test_ablation_of_a_tokenizer_setting_retrains_the_tokenizer_and_keeps_the_lam(tmp_path):
    """A tokenizer change: the tokenizer phase runs again from the run's initial weights
    (with no change it would give the run's tokenizer back), the checkpoint's LAM stays."""
    cfg = get_config("micro")
    model = train_genie(cfg, tmp_path / "run", clips=8, device="cpu", say=lambda line: None,
                        progress=False)
    ckpt = tmp_path / "run" / "genie.safetensors"
    same = {"tokenizer.stability_weight": cfg.tokenizer.stability_weight}
    metrics = ablate(ckpt, same, tmp_path / "same",
                     steps=cfg.train.dynamics_steps, clips=8, eval_clips=2)
    again, _ = load_checkpoint(tmp_path / "same" / "genie.safetensors")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert 0 <= metrics["same_code_if_static"] <= 1 and 0 <= metrics["copy_code_accuracy"] <= 1
    other = {"tokenizer.stability_weight": cfg.tokenizer.stability_weight + 3.0}
    ablate(ckpt, other, tmp_path / "other", steps=cfg.train.dynamics_steps, clips=8,
           eval_clips=2)
    changed, extra = load_checkpoint(tmp_path / "other" / "genie.safetensors")
    assert changed.cfg.tokenizer.stability_weight == cfg.tokenizer.stability_weight + 3.0
    assert extra["ablation"] == other
    assert not torch.equal(changed.tokenizer.to_code.weight, model.tokenizer.to_code.weight)
    for key, value in model.lam.state_dict().items():
        torch.testing.assert_close(changed.lam.state_dict()[key], value, rtol=0, atol=0, msg=key)
    # the tokenizer's step count alone retrains it too, for that many steps
    longer = {"train.tokenizer_steps": cfg.train.tokenizer_steps + 2}
    ablate(ckpt, longer, tmp_path / "longer", steps=cfg.train.dynamics_steps, clips=8,
           eval_clips=2)
    trained, _ = load_checkpoint(tmp_path / "longer" / "genie.safetensors")
    assert trained.cfg.train.tokenizer_steps == cfg.train.tokenizer_steps + 2
    assert not torch.equal(trained.tokenizer.to_code.weight, model.tokenizer.to_code.weight)
    assert trained.cfg.tokenizer == cfg.tokenizer
    phase = load_phase_checkpoint(tmp_path / "longer" / "tokenizer" / "checkpoint.safetensors")
    assert phase["step"] == cfg.train.tokenizer_steps + 2


def test_tokenizer_only_ablation_reads_the_runs_tokenizer_without_a_dynamics(tmp_path):
    """No change: the tokenizer trained alone is the run's (the same reconstruction PSNR on
    the held-out clips); every reconstructed frame t >= 1 is read once; a dynamics setting
    is refused, since no dynamics is trained."""
    from wmkernels.models.genie.data import held_out
    from wmkernels.models.genie.evaluate import tokenizer_psnr

    cfg = get_config("micro")
    model = train_genie(cfg, tmp_path / "run", clips=8, device="cpu", say=lambda line: None,
                        progress=False)
    ckpt = tmp_path / "run" / "genie.safetensors"
    metrics = ablate_module.tokenizer_ablation(ckpt, {}, tmp_path / "same", clips=8,
                                               eval_clips=3)
    video, _ = held_out(cfg, 3, seed=cfg.train.seed)
    assert metrics["tokenizer_psnr"] == tokenizer_psnr(model, video)
    assert 1 <= metrics["codes_in_use"] <= cfg.tokenizer.codebook_size
    frames = 3 * (cfg.frames - 1)
    assert sum(of for _, of in metrics["ball_tint_by_colours"].values()) == frames
    kinds = metrics["agent_breaks"]
    assert kinds["one_blob"] + kinds["none"] <= 1 and all(0 <= x <= 1 for x in kinds.values())
    assert json.loads((tmp_path / "same" / "metrics.json").read_text()) == metrics
    longer = {"train.tokenizer_steps": cfg.train.tokenizer_steps + 2}
    other = ablate_module.tokenizer_ablation(ckpt, longer, tmp_path / "longer", clips=8,
                                             eval_clips=3)
    assert other["tokenizer_psnr"] != metrics["tokenizer_psnr"]
    phase = load_phase_checkpoint(tmp_path / "longer" / "tokenizer" / "checkpoint.safetensors")
    assert phase["step"] == cfg.train.tokenizer_steps + 2
    with pytest.raises(ValueError, match="tokenizer-only ablation takes"):
        ablate_module.tokenizer_ablation(ckpt, {"mask_min": 0.75}, tmp_path / "x", clips=8)


def test_main_tokenizer_only_prints_the_reading(monkeypatch, capsys):
    seen = []

    def record(checkpoint, changes, out, *, clips):
        seen.append((checkpoint, changes, out, clips))
        return {"tokenizer_psnr": 31.61, "codes_in_use": 722, "train_seconds": 887.0,
                "agent_breaks": {"one_blob": 0.957, "none": 0.0, "on_ball": 0.037},
                "ball_tint_by_colours": {"orange/yellow": [136, 1372], "red/blue": [0, 7]}}

    monkeypatch.setattr(ablate_module, "tokenizer_ablation", record)
    ablate_module.main(["ck.safetensors", "--out", "d", "--tokenizer-only",
                        "--set", "train.tokenizer_steps=2400"])
    assert seen == [("ck.safetensors", {"train.tokenizer_steps": 2400}, "d", TRAIN_CLIPS)]
    out = capsys.readouterr().out
    assert "tokenizer PSNR 31.61 dB, 722 codes in use" in out
    assert "one_blob 95.7%" in out and "orange/yellow 136/1372" in out


def test_sampler_settings_of_a_trained_model(tmp_path, capsys):
    """Generation settings are not weights: `Genie.set_sampler` and `wmk genie eval
    --maskgit-steps/--temperature/--choice-temperature` decode a checkpoint under others."""
    from wmkernels.cli import main
    from wmkernels.models.genie.play import play

    cfg = get_config("micro")
    model = train_genie(cfg, tmp_path / "run", clips=8, device="cpu", say=lambda line: None,
                        progress=False)
    model.set_sampler(maskgit_steps=2, temperature=0.0, choice_temperature=0.0)
    assert model.cfg.dynamics.maskgit_steps == model.dynamics.sampler.steps == 2
    prompt = torch.rand(1, 1, 3, cfg.image_size, cfg.image_size)
    actions = torch.tensor([[1, 2, 0]])
    greedy = [play(model, prompt, actions, generator=torch.Generator().manual_seed(s))
              for s in (0, 1)]
    assert torch.equal(*greedy)                     # no randomness left in the decode
    with pytest.raises(ValueError, match="set_sampler takes"):
        model.set_sampler(dim=3)
    ckpt = str(tmp_path / "run" / "genie.safetensors")
    assert main(["genie", "eval", "--checkpoint", ckpt, "--clips", "2", "--seeds", "2",
                 "--no-speed", "--maskgit-steps", "3", "--temperature", "0",
                 "--choice-temperature", "0"]) == 0
    assert "MaskGIT: 3 steps, temperature 0.0, choice temperature 0.0" in capsys.readouterr().out
    assert main(["genie", "eval", "--checkpoint", ckpt, "--temperature", "-1"]) == 2
    assert "--temperature" in capsys.readouterr().err


def test_main_passes_the_training_clips_on(monkeypatch):
    class Called(Exception):
        pass

    def record(checkpoint, changes, out, *, steps, clips):
        raise Called(checkpoint, changes, out, steps, clips)

    monkeypatch.setattr(ablate_module, "ablate", record)
    with pytest.raises(Called) as got:
        ablate_module.main(["ck.safetensors", "--out", "d", "--clips", "512"])
    assert got.value.args == ("ck.safetensors", {}, "d", None, 512)
    with pytest.raises(Called) as got:
        ablate_module.main(["ck.safetensors", "--out", "d", "--set", "clean_frames=0.5"])
    assert got.value.args[1:] == ({"clean_frames": 0.5}, "d", None, TRAIN_CLIPS)
