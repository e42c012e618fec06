"""Genie: shapes, learning, play (determinism, KV cache == recompute), checkpoints, metrics,
config errors and the CLI, all on the seconds-long `micro` config."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from checks import run_two_gloo_processes

import wmkernels
from wmkernels.models.genie.config import GenieConfig, get_config
from wmkernels.models.genie.data import ClipPool
from wmkernels.models.genie.dynamics import corrupt_context, random_token_mask
from wmkernels.models.genie.metrics import delta_psnr, psnr
from wmkernels.models.genie.model import Genie, load_checkpoint, save_checkpoint
from wmkernels.models.genie.play import play, play_tokens
from wmkernels.models.genie.tokenizer import moving_pixels
from wmkernels.models.genie.train import train_dynamics, train_lam, train_tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    """These models are tiny: one intra-op thread avoids OpenMP barriers that dominate (and
    stall badly when the CPU is shared) at this size."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cfg():
    return get_config("micro")


def _video(cfg, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish random clips: a few flat colour blocks that drift, so there is structure
    base = torch.rand(B, 1, 3, 4, 4, generator=g)
    frames = [torch.roll(base, shifts=t, dims=-1) for t in range(cfg.frames)]
    x = torch.cat(frames, 1)
    return torch.nn.functional.interpolate(
        x.flatten(0, 1), size=(cfg.image_size,) * 2, mode="nearest").view(
        B, cfg.frames, 3, cfg.image_size, cfg.image_size)


def test_component_shapes(cfg):
    model = Genie(cfg)
    B, T, S = 3, cfg.frames, cfg.tokens_per_frame
    video = _video(cfg, B)
    tok = model.tokenizer(video)
    assert tok["recon"].shape == video.shape and tok["indices"].shape == (B, T, S)
    assert tok["indices"].dtype == torch.int64 and tok["loss"].dim() == 0
    lam = model.lam(video)
    assert lam["recon"].shape == (B, T - 1, 3, cfg.image_size, cfg.image_size)
    assert lam["actions"].shape == (B, T - 1)
    assert int(lam["actions"].max()) < cfg.lam.num_actions
    logits = model.dynamics(tok["indices"], lam["actions"])
    assert logits.shape == (B, T, S, cfg.tokenizer.codebook_size)
    decoded = model.tokenizer.decode(tok["indices"])
    assert decoded.shape == video.shape and 0 <= decoded.min() and decoded.max() <= 1


def test_random_token_mask_rates():
    g = torch.Generator().manual_seed(0)
    mask = random_token_mask((64, 5, 400), 0.5, 1.0, generator=g)
    assert not mask[:, 0].any()
    rates = mask[:, 1:].float().mean(-1)
    assert rates.min() > 0.4 and rates.max() <= 1.0
    assert abs(float(rates.mean()) - 0.75) < 0.03


def test_random_token_mask_leaves_whole_frames_at_the_clean_frames_rate():
    B, T, S = 256, 5, 400
    g = torch.Generator().manual_seed(1)
    mask = random_token_mask((B, T, S), 0.5, 1.0, clean_frames=0.3, generator=g)
    assert not mask[:, 0].any()
    hidden = mask[:, 1:].sum(-1)
    whole = hidden == 0        # a frame at rate >= 0.5 of 400 tokens is never whole by chance
    assert abs(float(whole.double().mean()) - 0.3) < 0.06     # 1024 frames: std 0.014
    masked_rates = hidden[~whole].double() / S
    assert masked_rates.min() > 0.4 and abs(float(masked_rates.mean()) - 0.75) < 0.03
    # clean_frames = 0 draws nothing more: the masks of runs from before the setting
    same = random_token_mask((B, T, S), 0.5, 1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(same, random_token_mask((B, T, S), 0.5, 1.0, clean_frames=0.0,
                                               generator=torch.Generator().manual_seed(1)))


def test_training_reduces_every_loss(cfg):
    torch.manual_seed(0)
    model = Genie(cfg)
    video = _video(cfg, B=4)
    batches = lambda step: (video, None)
    # the masks are random, so compare the mean of the first and last few steps
    mean = lambda rows, key: sum(r[key] for r in rows) / len(rows)
    tok = train_tokenizer(model, batches, steps=25, log_every=1)
    assert len(tok) == 25
    assert mean(tok[-5:], "recon_loss") < 0.7 * mean(tok[:5], "recon_loss")
    lam = train_lam(model, batches, steps=40, log_every=1)
    assert mean(lam[-5:], "lam_loss") < 0.7 * mean(lam[:5], "lam_loss")
    dyn = train_dynamics(model, batches, steps=40, log_every=1)
    assert mean(dyn[-5:], "loss") < 0.85 * mean(dyn[:5], "loss")


def test_tokenizer_stability_loss_on_static_patches_only(cfg):
    """The stability term is the mean squared step of the latents over exactly the patches
    whose pixels did not change, and the tokenizer's loss adds it at its weight."""
    d = cfg.to_dict()
    d["tokenizer"]["stability_weight"] = 0.5
    cfg = GenieConfig.from_dict(d)
    torch.manual_seed(0)
    tok = Genie(cfg).tokenizer.double()
    video = _video(cfg, B=2).double()
    video[1, 2:] = video[1, 1:2]                    # clip 1 stands still after frame 1
    video[0, 3, :, :4, :4] += 0.25                  # one patch of clip 0 changes at t = 3
    latents = tok.latents(video)
    p = cfg.tokenizer.patch
    patches = video.unfold(3, p, p).unfold(4, p, p)        # (B, T, 3, h, w, p, p)
    static = (patches[:, 1:] == patches[:, :-1]).flatten(-2).all(-1).all(2).flatten(-2)
    assert static[1, 1:].all() and not static[0, 2, 0] and static.float().mean() < 1
    steps = (latents[:, 1:] - latents[:, :-1]).pow(2).mean(-1)
    expected = steps[static].mean()
    torch.testing.assert_close(tok.stability_loss(video, latents), expected)
    assert float(expected.detach()) > 0
    out = tok(video)
    torch.testing.assert_close(out["stability_loss"], expected)
    torch.testing.assert_close(out["loss"], out["recon_loss"] + out["vq_loss"] + 0.5 * expected)
    moving = video.clone()
    moving[:, 1:] += torch.rand_like(moving[:, 1:]) * 1e-3       # nothing stays put
    assert float(tok.stability_loss(moving, tok.latents(moving))) == 0.0
    d["tokenizer"]["stability_weight"] = 0.0
    assert "stability_loss" not in Genie(GenieConfig.from_dict(d)).tokenizer(video.float())
    # a config written before the setting existed trained without the term
    older = get_config("tiny").to_dict()
    del older["tokenizer"]["stability_weight"]
    assert GenieConfig.from_dict(older).tokenizer.stability_weight == 0.0


def test_tokenizer_motion_weight_adds_the_error_of_the_pixels_that_moved(cfg):
    """moving_pixels marks exactly the pixels that differ from the same pixel in the frame
    before or after; the loss adds motion_weight x the squared error counted at those pixels
    only (averaged over all), and the logged recon_loss stays the plain MSE."""
    d = cfg.to_dict()
    d["tokenizer"].update(motion_weight=3.0, stability_weight=0.0)
    cfg = GenieConfig.from_dict(d)
    video = _video(cfg, B=2).double()
    video[1] = video[1, :1]                         # clip 1 stands still
    video[1, 2, 1, 5, 6] = 0.5                      # but for one value of one pixel at t = 2
    moving = moving_pixels(video)
    assert moving.shape == (2, cfg.frames, 1, cfg.image_size, cfg.image_size)
    expected = torch.zeros_like(moving)
    expected[0, 1:] |= (video[0, 1:] != video[0, :-1]).any(1, keepdim=True)
    expected[0, :-1] |= (video[0, 1:] != video[0, :-1]).any(1, keepdim=True)
    expected[1, 1:4, :, 5, 6] = True                # frames 1, 2, 3 differ from a neighbour
    assert torch.equal(moving, expected) and int(moving[1].sum()) == 3
    torch.manual_seed(0)
    tok = Genie(cfg).tokenizer.double()
    out = tok(video)
    error = (out["recon"] - video).pow(2)
    torch.testing.assert_close(out["recon_loss"], error.mean())
    torch.testing.assert_close(out["loss"], out["recon_loss"] + out["vq_loss"]
                               + 3.0 * (error * expected).mean())
    # a config written before the setting existed trained without the term
    older = get_config("tiny").to_dict()
    del older["tokenizer"]["motion_weight"]
    assert GenieConfig.from_dict(older).tokenizer.motion_weight == 0.0


def test_tokenizer_dead_code_threshold_reaches_its_quantizer(cfg):
    """The setting is the VQ layer's restart threshold; a config written before it existed
    reads 1, the threshold it trained with."""
    d = cfg.to_dict()
    d["tokenizer"]["dead_code_threshold"] = 0.25
    assert Genie(GenieConfig.from_dict(d)).tokenizer.vq.dead_code_threshold == 0.25
    del d["tokenizer"]["dead_code_threshold"]
    assert GenieConfig.from_dict(d).tokenizer.dead_code_threshold == 1.0


def test_dynamics_rope_reaches_every_attention_and_older_configs_read_off(cfg):
    """dynamics.rope turns on rotary positions in both attentions of every block of the
    dynamics alone; it adds no weights, so the same weights give other logits with it. A
    config written before the setting existed trained without it."""
    torch.manual_seed(0)
    cfg.dynamics.rope = False
    plain = Genie(cfg).eval()
    cfg.dynamics.rope = True
    rotary = Genie(cfg).eval()
    rotary.load_state_dict(plain.state_dict())   # strict: the same weights, no more
    blocks = rotary.dynamics.transformer.st.blocks
    assert all(b.spatial.rope and b.temporal.rope for b in blocks)
    assert not any(b.spatial.rope for b in plain.dynamics.transformer.st.blocks)
    assert not any(getattr(m, "rope", False) for m in rotary.tokenizer.modules())
    tokens = torch.randint(0, cfg.tokenizer.codebook_size, (2, cfg.frames, cfg.tokens_per_frame))
    actions = torch.randint(0, 8, (2, cfg.frames - 1))
    with torch.no_grad():
        assert not torch.allclose(rotary.dynamics(tokens, actions), plain.dynamics(tokens, actions))
    d = get_config("tiny").to_dict()
    assert GenieConfig.from_dict(d).dynamics.rope
    del d["dynamics"]["rope"]
    assert not GenieConfig.from_dict(d).dynamics.rope


@pytest.mark.parametrize("context_noise, clean_frames, predicted_frames",
                         [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.5, 0.0), (0.0, 0.0, 0.5),
                          (0.5, 0.3, 0.5)])
def test_dynamics_loss_is_cross_entropy_on_the_masked_tokens(cfg, context_noise, clean_frames,
                                                             predicted_frames):
    """The loss applies the head to the masked tokens only; it must equal the cross-entropy
    of the full logits at those tokens. With context noise the model sees corrupted visible
    tokens, while the targets stay the true codes; with clean frames the mask leaves some
    frames whole; with predicted frames some frames are the model's own, whole and without
    loss."""
    d = cfg.to_dict()
    d["dynamics"].update(context_noise=context_noise, clean_frames=clean_frames,
                         predicted_frames=predicted_frames)
    cfg = GenieConfig.from_dict(d)
    torch.manual_seed(0)
    dyn = Genie(cfg).dynamics.double()
    B, T, S = 3, cfg.frames, cfg.tokens_per_frame
    tokens = torch.randint(0, cfg.tokenizer.codebook_size, (B, T, S))
    actions = torch.randint(0, cfg.lam.num_actions, (B, T - 1))
    out = dyn.loss(tokens, actions, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    mask = random_token_mask((B, T, S), dyn.cfg.mask_min, dyn.cfg.mask_max,
                             clean_frames=clean_frames, generator=g)
    assert bool((~mask[:, 1:]).all(-1).any()) == (clean_frames > 0)
    seen = tokens
    if predicted_frames:
        seen, own = dyn.predicted_context(tokens, actions, predicted_frames, generator=g)
        assert own[:, 1:].any() and not own[:, 0].any()
        mask &= ~own[:, :, None]
    if context_noise:
        seen = corrupt_context(tokens, mask, context_noise, generator=g)
        assert not torch.equal(seen, tokens)
    logits = dyn(seen, actions, mask)[mask]
    torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(logits, tokens[mask]))
    assert float(out["accuracy"]) == pytest.approx(
        float((logits.argmax(-1) == tokens[mask]).double().mean()))
    with pytest.raises(ValueError, match="actions"):
        dyn.loss(tokens, actions[:, 1:])


def test_dynamics_change_weight_counts_the_codes_that_changed_more(cfg):
    """With change_weight w a masked target that differs from the code at its place in the
    frame before has its cross-entropy counted 1 + w times, the others once (mean over the
    masked tokens); a code the same as before, or any code of frame 0, is not counted more."""
    d = cfg.to_dict()
    d["dynamics"]["change_weight"] = 3.0
    cfg = GenieConfig.from_dict(d)
    torch.manual_seed(0)
    dyn = Genie(cfg).dynamics.double()
    B, T, S = 3, cfg.frames, cfg.tokens_per_frame
    tokens = torch.randint(0, cfg.tokenizer.codebook_size, (B, T, S))
    tokens[:, 2, : S // 2] = tokens[:, 1, : S // 2]         # half of frame 2 did not change
    actions = torch.randint(0, cfg.lam.num_actions, (B, T - 1))
    out = dyn.loss(tokens, actions, generator=torch.Generator().manual_seed(5))
    mask = random_token_mask((B, T, S), dyn.cfg.mask_min, dyn.cfg.mask_max,
                             generator=torch.Generator().manual_seed(5))
    changed = torch.zeros_like(mask)
    changed[:, 1:] = tokens[:, 1:] != tokens[:, :-1]
    assert not changed[:, 2, : S // 2].any() and changed[:, 2, S // 2:].all()
    ce = torch.nn.functional.cross_entropy(dyn(tokens, actions, mask)[mask], tokens[mask],
                                           reduction="none")
    weight = torch.where(changed[mask], 4.0, 1.0).double()
    torch.testing.assert_close(out["loss"], (ce * weight).mean())
    assert not torch.allclose(out["loss"], ce.mean())
    with pytest.raises(ValueError, match="change_weight"):
        d["dynamics"]["change_weight"] = -1.0
        GenieConfig.from_dict(d)


def test_dynamics_weight_ema_averages_the_second_half_and_resumes_exactly(cfg, tmp_path):
    """With weight_ema d the dynamics leaves train_dynamics with the average of its weights
    after steps N/2 ... N: their plain mean while fewer than 1/(1 - d) are in it, then an
    EMA of d. Training itself is unchanged. The average is part of the phase checkpoint:
    a run stopped mid-phase and started again ends with the uninterrupted run's weights."""
    d = cfg.to_dict()
    d["dynamics"]["weight_ema"] = 0.0
    last_cfg = GenieConfig.from_dict(d)
    d["dynamics"]["weight_ema"] = 0.75
    ema_cfg = GenieConfig.from_dict(d)
    video = _video(cfg, B=4)
    N = 8

    def run(config, out=None, stop_at=None):
        torch.manual_seed(0)
        model = Genie(config)
        seen = {}

        def batches(step):   # called with the weights after `step` steps
            if step == stop_at:
                raise KeyboardInterrupt
            seen[step] = [p.detach().clone() for p in model.dynamics.parameters()]
            return video + 0.01 * step, None

        train_dynamics(model, batches, steps=N, out_dir=out)
        return model, seen

    plain, seen = run(last_cfg)
    averaged, seen_ema = run(ema_cfg)
    for k in range(N):
        for a, b in zip(seen[k], seen_ema[k], strict=True):
            assert torch.equal(a, b)
    # 1/(1 - 0.75) = 4: the mean of the weights after steps 4 to 7, then one EMA step
    # with the last weights (after step 8)
    for i, (last, got) in enumerate(zip(plain.dynamics.parameters(),
                                        averaged.dynamics.parameters(), strict=True)):
        mean = sum(seen[k][i] for k in range(N // 2, N)) / (N // 2)
        torch.testing.assert_close(got, 0.75 * mean + 0.25 * last, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(next(plain.dynamics.parameters()),
                              next(averaged.dynamics.parameters()))

    whole, _ = run(ema_cfg, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(ema_cfg, tmp_path / "b", stop_at=7)   # after the step-6 checkpoint
    resumed, _ = run(ema_cfg, tmp_path / "b")
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    for k, v in averaged.state_dict().items():
        assert torch.equal(v, whole.state_dict()[k]), k
    with pytest.raises(ValueError, match="weight_ema"):
        d["dynamics"]["weight_ema"] = 1.0
        GenieConfig.from_dict(d)


def test_predicted_context_puts_the_models_own_frames_in_place_of_real_ones(cfg):
    """Scheduled sampling's context: frame 0 always real, each later frame replaced at the
    rate by the argmax of the model's logits from one pass in which the replaced frames are
    hidden and the others real; nothing else changes, and no gradient flows."""
    torch.manual_seed(0)
    dyn = Genie(cfg).dynamics.double()
    B, T, S = 64, cfg.frames, cfg.tokens_per_frame
    tokens = torch.randint(0, cfg.tokenizer.codebook_size, (B, T, S))
    actions = torch.randint(0, cfg.lam.num_actions, (B, T - 1))
    seen, own = dyn.predicted_context(tokens, actions, 0.3,
                                      generator=torch.Generator().manual_seed(2))
    assert own.shape == (B, T) and not own[:, 0].any() and not seen.requires_grad
    # 64 * (T - 1) frames drawn at 0.3: the std of the rate is under 0.03
    assert abs(float(own[:, 1:].double().mean()) - 0.3) < 0.1
    hidden = own[:, :, None].expand(B, T, S)
    guess = dyn(tokens, actions, hidden).argmax(-1)
    assert torch.equal(seen[hidden], guess[hidden])
    assert torch.equal(seen[~hidden], tokens[~hidden])
    assert not torch.equal(seen, tokens)
    # the actions reach the prediction: other actions, other frames
    other, _ = dyn.predicted_context(tokens, (actions + 1) % cfg.lam.num_actions, 0.3,
                                     generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other, seen)


def test_encoded_pool_trains_like_encoding_every_batch(cfg):
    """ClipPool.encode stores each clip's codes and latent actions once; the dynamics phase
    on them gives the weights it gives when every batch is encoded as it is drawn."""
    pool = ClipPool(cfg, 6, seed=0)
    torch.manual_seed(0)
    model = Genie(cfg)
    train_tokenizer(model, pool.batch, steps=3)
    train_lam(model, pool.batch, steps=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    train_dynamics(model, pool.batch, steps=3)
    per_batch = model.state_dict()
    model.load_state_dict(state)
    pool.encode(model.tokenizer, model.lam)
    video, actions, codes, latent = pool.batch(7)
    assert torch.equal(codes, model.tokenizer.encode(video)[1])
    assert torch.equal(latent, model.lam.infer_actions(video))
    train_dynamics(model, pool.batch, steps=3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, per_batch[k], msg=k)


def test_interrupted_training_resumes_exactly(cfg, tmp_path):
    """A run killed mid-phase and started again ends with the weights of an uninterrupted
    run: batches, masks and RNG state are functions of the step, restored from the phase
    checkpoint (written every steps/4)."""
    video = _video(cfg, B=4)

    def run(out, stop_at=None):
        torch.manual_seed(0)
        model = Genie(cfg)

        def batches(step):
            if step == stop_at:
                raise KeyboardInterrupt
            return video + 0.01 * step, None

        train_tokenizer(model, batches, steps=4, out_dir=out / "tokenizer")
        train_lam(model, batches, steps=4, out_dir=out / "lam")
        train_dynamics(model, batches, steps=4, out_dir=out / "dynamics")
        return model

    whole = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", stop_at=3)   # phase 1 stops after its step-2 checkpoint
    resumed = run(tmp_path / "b")
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(),
                              strict=True):
        assert torch.equal(a, b), k
    assert (tmp_path / "b" / "dynamics" / "checkpoint.safetensors").is_file()


def test_lam_in_a_second_process_gives_the_weights_of_one_process(cfg, tmp_path):
    """train_genie(parallel=True) trains the LAM in a spawned process beside the tokenizer:
    the tokenizer's and the LAM's weights and buffers must equal the one-process run's. The
    dynamics then trains on twice the threads, so its sums may round differently."""
    from wmkernels.models.genie.pipeline import train_genie

    models = {}
    threads = torch.get_num_threads()
    for parallel in (False, True):
        models[parallel] = train_genie(cfg, tmp_path / str(parallel), clips=8, device="cpu",
                                       say=lambda line: None, progress=False,
                                       parallel=parallel)
        assert torch.get_num_threads() == threads
    assert (tmp_path / "True" / "lam" / "checkpoint.safetensors").is_file()
    for (k, a), (_, b) in zip(models[False].state_dict().items(),
                              models[True].state_dict().items(), strict=True):
        if k.startswith(("tokenizer.", "lam.")):
            assert torch.equal(a, b), k
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=k)
    with pytest.raises(ValueError, match="parallel"):
        train_genie(cfg, tmp_path / "x", clips=8, device="meta", parallel=True)
    # the child's failure is an error of the run, not a hang or a half-trained model
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "lam").write_text("a file where the LAM's folder should be")
    with pytest.raises(RuntimeError, match="latent action model's process failed"):
        train_genie(cfg, tmp_path / "y", clips=8, device="cpu", say=lambda line: None,
                    progress=False, parallel=True)


def test_ddp_two_gloo_processes_stay_in_sync(tmp_path):
    run_two_gloo_processes(Path(__file__).with_name("genie_ddp_worker.py"), tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["world_size"] == 2
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name   # replicas in sync
    loaded, extra = load_checkpoint(tmp_path / "run" / "genie.safetensors")
    assert extra == {"phase": "done"}
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, ranks[0]["state"][name]), name


@pytest.mark.parametrize("rope", [False, True])
def test_play_cache_equals_recompute_and_is_deterministic(cfg, rope):
    torch.manual_seed(0)
    cfg.dynamics.rope = rope   # rotary time positions must count from the cache's length
    model = Genie(cfg).double().eval()
    # sampled tokens, so the cache must keep the generator's stream in step with a
    # recompute; with the preset's argmax an untrained model gives every seed the same frames
    model.set_sampler(temperature=1.0)
    B, S = 2, cfg.tokens_per_frame
    prompt = torch.randint(0, cfg.tokenizer.codebook_size, (B, 2, S))
    prompt_actions = torch.randint(0, 8, (B, 1))
    actions = torch.randint(0, 8, (B, cfg.frames - 2))
    run = lambda cache, seed: play_tokens(model, prompt, prompt_actions, actions,
                                          use_cache=cache,
                                          generator=torch.Generator().manual_seed(seed))
    with wmkernels.use_backend("reference"):
        cached, again, other = run(True, 0), run(True, 0), run(True, 1)
        recomputed = run(False, 0)
    assert cached.shape == (B, cfg.frames, S)
    assert torch.equal(cached[:, :2], prompt)
    assert torch.equal(cached, recomputed)
    assert torch.equal(cached, again)
    assert not torch.equal(cached, other)


def test_play_frames_and_errors(cfg):
    model = Genie(cfg).eval()
    video = _video(cfg, B=1)
    out = play(model, video[:, :1], torch.tensor([[1, 2, 3]]),
               generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 4, 3, cfg.image_size, cfg.image_size)
    with pytest.raises(ValueError, match="actions must lie"):
        play(model, video[:, :1], torch.tensor([[8]]))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        play(model, video[:, :1], torch.zeros(1, cfg.frames, dtype=torch.long))
    with pytest.raises(TypeError, match="int64"):
        play(model, video[:, :1], torch.zeros(1, 2, dtype=torch.int32))
    with pytest.raises(ValueError, match="prompt must be"):
        play(model, video[:, :1, :, :8], torch.zeros(1, 2, dtype=torch.long))


def test_checkpoint_round_trip(cfg, tmp_path):
    model = Genie(cfg).eval()
    path = tmp_path / "g.safetensors"
    assert save_checkpoint(path, model, extra={"phase": "test"}) == path
    with pytest.raises(TypeError, match="model must be a Genie"):
        save_checkpoint(model, path)   # the (model, path) order of old: a clear error
    loaded, extra = load_checkpoint(path)
    assert extra == {"phase": "test"} and loaded.cfg == model.cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    video = _video(cfg, B=1)
    acts = torch.tensor([[0, 5]])
    a = play(model, video[:, :1], acts, generator=torch.Generator().manual_seed(3))
    b = play(loaded, video[:, :1], acts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("change, match", [
    (dict(image_size=30), "patch"),
    (dict(frames=1), "frames"),
    (dict(tokenizer=dict(dim=30, heads=4)), "divisible"),
    (dict(dynamics=dict(mask_min=0.9, mask_max=0.5)), "mask_min"),
    (dict(tokenizer=dict(stability_weight=-0.5)), "tokenizer.stability_weight"),
    (dict(tokenizer=dict(dead_code_threshold=float("nan"))), "tokenizer.dead_code_threshold"),
    (dict(dynamics=dict(clean_frames=1.0)), "dynamics.clean_frames"),
    (dict(dynamics=dict(clean_frames=float("nan"))), "dynamics.clean_frames"),
    (dict(dynamics=dict(predicted_frames=1.0)), "dynamics.predicted_frames"),
    (dict(dynamics=dict(predicted_frames=-0.1)), "dynamics.predicted_frames"),
    (dict(train=dict(lr=0.0)), "train.lr"),
    (dict(nonsense=1), "unknown GenieConfig field"),
])
def test_bad_config_values(change, match):
    d = get_config("tiny").to_dict()
    for key, value in change.items():
        if isinstance(value, dict):
            d[key].update(value)
        else:
            d[key] = value
    with pytest.raises(ValueError, match=match):
        GenieConfig.from_dict(d)
    with pytest.raises(ValueError, match="config must be one of"):
        get_config("huge")


def test_psnr_and_delta_psnr():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    y = (x + 0.1).clamp(0, 1)
    expected = 10 * torch.log10(1 / ((x - y) ** 2).mean())
    assert torch.allclose(psnr(x, y), expected)
    assert float(psnr(x, x)) == pytest.approx(100.0)
    assert delta_psnr(x, x.clone(), y) > 0 > delta_psnr(x, y, x.clone())
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, y[:1])


def test_action_nmi_matches_true_actions_when_latents_are_a_relabelling(cfg, monkeypatch):
    from wmkernels.models.genie.evaluate import action_nmi

    model = Genie(cfg).eval()
    true = torch.randint(0, 5, (16, cfg.frames - 1))
    video = _video(cfg, B=16)
    monkeypatch.setattr(model.lam, "infer_actions", lambda v: (true * 3 + 1) % 8)
    assert action_nmi(model, video, true) == pytest.approx(1.0)
    monkeypatch.setattr(model.lam, "infer_actions", lambda v: torch.zeros_like(true))
    assert action_nmi(model, video, true) == pytest.approx(0.0)


def test_evaluate_reads_actions_on_every_clip_and_pixels_on_the_first(cfg):
    from wmkernels.models.data import action_identifiability
    from wmkernels.models.genie.data import held_out
    from wmkernels.models.genie.evaluate import action_nmi, evaluate, tokenizer_psnr

    model = Genie(cfg).eval()
    video, actions = held_out(cfg, 6, seed=cfg.train.seed)
    m = evaluate(model, video, actions, seeds=(0, 1), speed=False, image_clips=2)
    assert (m["action_clips"], m["image_clips"]) == (6, 2)
    assert m["action_nmi"] == pytest.approx(action_nmi(model, video, actions))
    assert m["tokenizer_psnr"] == pytest.approx(tokenizer_psnr(model, video[:2]))
    # the ceiling is measured on the very clips held_out returned
    assert m["action_nmi_ceiling"] == pytest.approx(action_identifiability(
        6, cfg.frames, seed=cfg.train.seed + 1, config=cfg.world_config())["oracle_nmi"])


def test_cli_train_play_eval_smoke(tmp_path, capsys):
    from wmkernels.cli import main

    out = tmp_path / "run"
    assert main(["genie", "train", "--config", "micro", "--out", str(out), "--clips", "8",
                 "--quiet"]) == 0
    ckpt = out / "genie.safetensors"
    assert ckpt.is_file()
    assert main(["genie", "play", "--checkpoint", str(ckpt), "--actions", "1,1,3,0",
                 "--out", str(out)]) == 0
    assert (out / "play.gif").stat().st_size > 0 and (out / "play.png").stat().st_size > 0
    assert main(["genie", "eval", "--checkpoint", str(ckpt), "--clips", "2", "--seeds", "2",
                 "--json", str(out / "m.json")]) == 0
    metrics = json.loads((out / "m.json").read_text())
    for key in ("tokenizer_psnr", "action_nmi", "control_delta_psnr", "fps_speedup"):
        assert np.isfinite(metrics[key]), key
    assert (metrics["action_clips"], metrics["image_clips"]) == (2, 2)
    printed = capsys.readouterr().out   # the rollout metrics and the per-frame table
    for label in ("inferred actions", "copying the first frame", "agent one blob",
                  "agent within 2 px", "teacher-forced", "PSNR dB: inferred"):
        assert label in printed, label
    frame_rows = [int(line.split()[0]) for line in printed.splitlines()
                  if line.split()[:1] and line.split()[0].isdigit()]
    assert frame_rows == [1, 2, 3, 4]      # micro clips: 5 frames, 4 generated
    # the rollouts on the first clip only, the actions still on both
    assert main(["genie", "eval", "--checkpoint", str(ckpt), "--clips", "2", "--image-clips",
                 "1", "--seeds", "1", "--no-speed", "--json", str(out / "m1.json")]) == 0
    metrics = json.loads((out / "m1.json").read_text())
    assert (metrics["action_clips"], metrics["image_clips"]) == (2, 1)
    assert main(["genie", "play", "--checkpoint", str(ckpt), "--actions", "1,9"]) == 2
    assert "--actions" in capsys.readouterr().err


def test_cli_demo_smoke(tmp_path):
    from wmkernels.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--config", "micro", "--out", str(out), "--clips", "8",
                 "--eval-clips", "2", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"] == "micro" and metrics["fps_wmkernels_cache"] > 0
    for name in ("genie.safetensors", "play.gif", "play.png"):
        assert (out / name).is_file()


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc), without multiprocessing's resource
    tracker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z" and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM", "SIGINT"])
def test_killing_genie_train_ends_its_lam_process(tmp_path, sig):
    """`wmk genie train` trains the LAM in a spawned child: stopped (even by SIGKILL, which
    runs no cleanup), it must not leave the child training on as an orphan."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from wmkernels.models.genie.pipeline import cores_available

    if cores_available() < 2:
        pytest.skip("the LAM trains in its own process only with 2 cores")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def interruptible():
        # an ignored or blocked SIGINT is inherited across exec (a test runner started in
        # the background has it ignored), and Python then never raises KeyboardInterrupt
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    parent = subprocess.Popen(
        [sys.executable, "-m", "wmkernels.cli", "genie", "train", "--config", "micro",
         "--out", str(tmp_path), "--clips", "8", "--tokenizer-steps", "100000",
         "--lam-steps", "100000", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=interruptible)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not children and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            children = _children(parent.pid)
        assert children, "the LAM process never started"
        time.sleep(1)   # let it get into training
        assert all(_alive(pid) for pid in children)
        parent.send_signal(getattr(signal, sig))
        parent.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children), "the LAM process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _real_clips(n=24, frames=8, size=32, seed=3):
    """Rendered world clips (float video in [0, 1]) and each clip's agent colour id."""
    from wmkernels.models.data import WorldConfig, make_clips

    clips = make_clips(n, frames=frames, seed=seed, config=WorldConfig(size=size))
    return clips["video"], clips["attributes"]["agent_colour"]


def _agent_box(video, colour, b, t):
    """Rows and columns the agent covers in frame t of clip b (exact palette colour)."""
    from wmkernels.models.data.world import PALETTE

    rgb = torch.tensor(PALETTE[int(colour[b])], dtype=torch.float32)[:, None, None] / 255
    ys, xs = torch.nonzero((video[b, t] == rgb).all(0), as_tuple=True)
    return ys, xs


@pytest.mark.parametrize("size", [16, 32, 64])
def test_agent_detector_on_real_clips_finds_one_blob_at_the_true_place(size):
    from wmkernels.models.genie.metrics import agent_mask, agent_metrics, centroid

    video, colour = _real_clips(size=size)
    m = agent_metrics(video, video.clone(), colour)
    assert bool(m["one_blob"].all()) and bool((m["centroid_error"] == 0).all())
    # the mask is exactly the agent's box of its palette colour (balls never share it)
    mask = agent_mask(video, colour)
    for b in range(0, video.shape[0], 5):
        ys, xs = _agent_box(video, colour, b, 3)
        assert int(mask[b, 3].sum()) == ys.numel() > 0
        assert centroid(mask[b, 3]).tolist() == pytest.approx(
            [xs.double().mean().item(), ys.double().mean().item()])


def test_count_blobs_and_centroid_known_answers():
    from wmkernels.models.genie.metrics import centroid, count_blobs

    m = torch.zeros(5, 7, 7, dtype=torch.bool)
    m[1, 1, 1] = m[1, 2, 2] = True                  # touching at a corner: one blob
    m[2, 0, 0] = m[2, 0, 2] = True                  # a column apart: two
    m[3, 0:6, 0] = m[3, 5, 0:6] = m[3, 0:6, 5] = True   # a U, labels spread around it: one
    m[4, 0, 0] = m[4, 6, 6] = m[4, 3, 3] = True     # three
    assert count_blobs(m).tolist() == [0, 1, 2, 1, 3]
    assert count_blobs(m.view(5, 1, 7, 7)).shape == (5, 1)
    c = centroid(m)
    assert c[0].isnan().all() and c[2].tolist() == [1.0, 0.0]


def test_frame_metrics_on_copies_erased_split_and_shifted_agents():
    from wmkernels.models.data.world import BACKGROUND
    from wmkernels.models.genie.evaluate import frame_metrics
    from wmkernels.models.genie.metrics import agent_metrics

    video, colour = _real_clips(n=6)
    bg = torch.tensor(BACKGROUND, dtype=torch.float32)[:, None] / 255
    erased, split, shifted = video.clone(), video.clone(), video.clone()
    for b in range(video.shape[0]):
        for t in range(video.shape[1]):
            ys, xs = _agent_box(video, colour, b, t)
            erased[b, t][:, ys, xs] = bg
            split[b, t][:, ys[xs == xs.min() + 1], xs[xs == xs.min() + 1]] = bg
            # the agent moved 3 px up: paint it out, then in 3 rows higher
            shifted[b, t][:, ys, xs] = bg
            shifted[b, t][:, ys - 3, xs] = video[b, t][:, ys, xs]
    assert agent_metrics(erased, video, colour)["blobs"].eq(0).all()
    assert agent_metrics(split, video, colour)["blobs"].eq(2).all()
    err = agent_metrics(shifted, video, colour)["centroid_error"]
    assert torch.allclose(err, torch.full_like(err, 3.0))
    assert agent_metrics(erased, video, colour)["centroid_error"].isinf().all()

    m = frame_metrics(video, colour, [(video.clone(), erased), (video.clone(), shifted)],
                      recon=split)
    T = video.shape[1]
    assert m["frame_t"] == list(range(1, T))
    assert m["frame_psnr_inferred"] == pytest.approx([100.0] * (T - 1))   # identical frames
    assert m["frame_one_blob_inferred"] == [1.0] * (T - 1) and m["one_blob_recon"] == 0.0
    assert m["frame_centroid_inferred"] == [0.0] * (T - 1) and m["within_2px_inferred"] == 1
    # random: one seed shows no agent (a miss), the other's is 3 px off (also a miss)
    assert m["frame_one_blob_random"] == [0.5] * (T - 1) and m["within_2px_random"] == 0
    assert m["centroid_random"] == pytest.approx(3.0)
    from wmkernels.models.genie.metrics import psnr
    assert m["frame_psnr_copy"][1] == pytest.approx(float(psnr(video[:, 2], video[:, 0],
                                                                dims=(1, 2, 3)).mean()))


def test_teacher_forced_logits_match_the_dynamics_on_each_prefix(cfg):
    from wmkernels.models.genie.evaluate import teacher_forced_accuracy, teacher_forced_logits

    torch.manual_seed(0)
    model = Genie(cfg).eval()
    video = _video(cfg, B=3)
    tokens = model.tokenizer.encode(video)[1]
    actions = model.lam.infer_actions(video)
    got = teacher_forced_logits(model, tokens, actions)
    for t in range(1, cfg.frames):   # frame t masked, the real frames before it visible
        mask = torch.zeros_like(tokens[:, :t + 1], dtype=torch.bool)
        mask[:, t] = True
        want = model.dynamics(tokens[:, :t + 1], actions[:, :t], mask)[:, t]
        torch.testing.assert_close(got[:, t - 1], want, rtol=1e-4, atol=1e-4)
    acc = teacher_forced_accuracy(model, video)
    expected = [float((got[:, t - 1].argmax(-1) == tokens[:, t]).double().mean())
                for t in range(1, cfg.frames)]
    assert acc["frame_token_accuracy"] == pytest.approx(expected)
    assert acc["token_accuracy"] == pytest.approx(np.mean(expected))


def test_evaluate_reports_every_frame_metric(cfg):
    from wmkernels.models.genie.data import held_out
    from wmkernels.models.genie.evaluate import evaluate

    model = Genie(cfg).eval()
    video, actions = held_out(cfg, 3, seed=cfg.train.seed)
    m = evaluate(model, video, actions, seeds=(0, 1), speed=False)
    json.dumps(m, allow_nan=False)   # plain JSON: no inf or NaN
    n = cfg.frames - 1
    for kind in ("inferred", "random", "copy", "recon"):
        assert len(m[f"frame_psnr_{kind}"]) == n and np.isfinite(m[f"psnr_{kind}"])
    for kind in ("inferred", "random", "recon"):
        assert len(m[f"frame_one_blob_{kind}"]) == n and 0 <= m[f"one_blob_{kind}"] <= 1
    for kind in ("inferred", "random"):
        assert len(m[f"frame_within_2px_{kind}"]) == n == len(m[f"frame_centroid_{kind}"])
    assert len(m["frame_token_accuracy"]) == n and 0 <= m["token_accuracy"] <= 1
    # Δ4PSNR and the per-frame PSNR come from the same rollouts
    assert m["control_psnr_inferred"] == pytest.approx(m["frame_psnr_inferred"][3])
    with pytest.raises(ValueError, match="agent_colours"):
        evaluate(model, _video(cfg, B=3), actions, speed=False)
    with pytest.raises(ValueError, match="agent_colours"):
        evaluate(model, video, actions, speed=False, agent_colours=torch.zeros(2))


def test_play_picture_rows_are_real_reconstruction_and_each_action(cfg, tmp_path):
    import imageio.v3 as iio

    from wmkernels.models.genie.data import held_out
    from wmkernels.models.genie.demo import write_action_grid
    from wmkernels.models.genie.media import to_uint8

    model = Genie(cfg).eval()
    video, _ = held_out(cfg, 1, seed=cfg.train.seed)
    png, gif = write_action_grid(model, video, tmp_path)
    rows, T, cell = 2 + cfg.lam.num_actions, cfg.frames, cfg.image_size * 4
    image = iio.imread(png)
    label = image.shape[1] - (T * (cell + 2) - 2)     # the label margin
    assert image.shape[0] == rows * (cell + 2) - 2 and 40 <= label <= 4 * cell
    # the first row is the real clip, frame by frame
    for t in range(T):
        x = label + t * (cell + 2)
        assert np.array_equal(image[:cell, x:x + cell], to_uint8(video[0, t:t + 1], 4)[0])
    # every label is drawn, whole: ink in each row's margin, none in its last 4 columns
    for r in range(rows):
        margin = image[r * (cell + 2):r * (cell + 2) + cell, :label]
        assert (margin < 128).any() and (margin[:, -4:] == 255).all()
    frames = iio.imread(gif, index=None)
    assert frames.shape[:3] == (T, rows * (cell + 2) - 2, label + cell)


def test_agent_detector_and_grid_reject_bad_shapes():
    from wmkernels.models.genie.media import labelled_grid
    from wmkernels.models.genie.metrics import agent_mask, agent_metrics

    video, colour = _real_clips(n=2, frames=3, size=16)
    with pytest.raises(ValueError, match="frames must be"):
        agent_mask(video[0], colour)
    with pytest.raises(ValueError, match="colour must be"):
        agent_mask(video, colour[:1])
    with pytest.raises(ValueError, match="same shape"):
        agent_metrics(video, video[:, :2], colour)
    with pytest.raises(ValueError, match="one label per row"):
        labelled_grid([video[0]], ["a", "b"])
    with pytest.raises(ValueError, match="same"):
        labelled_grid([video[0], video[1, :2]], ["a", "b"])


@pytest.mark.parametrize("size", [16, 32, 64])
def test_grid_labels_are_never_clipped(size):
    """The label font grows with the frame height: the margin grows with the widest label."""
    from wmkernels.models.genie.media import labelled_grid

    cell = size * 4
    rows = [torch.zeros(2, 3, size, size), torch.ones(2, 3, size, size)]
    image = labelled_grid(rows, ["tokenizer", "action 7"])
    label = image.shape[1] - (2 * (cell + 2) - 2)
    for r in range(2):
        margin = image[r * (cell + 2):r * (cell + 2) + cell, :label]
        assert (margin < 128).any() and (margin[:, -4:] == 255).all()
