"""The rollout diagnostics of models/genie/diagnose.py on inputs with known answers."""

import json
import math

import pytest
import torch

from wmkernels.models.data.world import BACKGROUND, LEFT, NOOP, PALETTE, RIGHT
from wmkernels.models.genie import Genie, diagnose, evaluate, get_config
from wmkernels.models.genie.data import ClipPool, held_out
from wmkernels.models.genie.diagnose import (
    action_movements,
    agent_breaks,
    ball_in_rollouts,
    ball_tint_by_colours,
    changed_codes,
    code_stability,
    errors_fed_back,
    frame_breaks,
    moves_into_walls,
    training_gap,
)
from wmkernels.models.genie.model import save_checkpoint


@pytest.fixture
def model():
    return Genie(get_config("micro")).eval()     # 16 px frames, patch 4: 4 x 4 patches


def _clip(xs, size=16, colour=0):
    """One clip (1, T, 3, size, size): background with a 4 px square of palette colour
    `colour` whose left edge is at xs[t], top at 4."""
    frames = torch.tensor(BACKGROUND, dtype=torch.float32).view(3, 1, 1) / 255
    frames = frames.expand(len(xs), 3, size, size).clone()
    for t, x in enumerate(xs):
        frames[t, :, 4:8, x:x + 4] = torch.tensor(PALETTE[colour], dtype=torch.float32).view(
            3, 1, 1) / 255
    return frames[None]


def test_code_stability_counts_static_patches_and_their_codes(model):
    video = _clip([0, 4, 4])         # one patch row changes between frames 0 and 1, none after
    codes = torch.zeros(1, 3, 16, dtype=torch.long)
    codes[0, 2, 5] = 7               # a static patch changes code at frame 2
    model.tokenizer.encode = lambda v: (None, codes, None)
    out = code_stability(model, video)
    # 2 of 16 patches change between frames 0 and 1 (the square left x=0 for x=4)
    assert out["static_patches"] == pytest.approx(30 / 32)
    assert out["same_code_if_static"] == pytest.approx(29 / 30)
    assert out["copy_code_accuracy"] == pytest.approx(31 / 32)


def test_changed_codes_splits_teacher_forced_accuracy_and_loss_by_what_changed(
        model, monkeypatch):
    """Codes of one clip of 3 frames x 4 places: 1 code changes at frame 1, 2 at frame 2
    (3 of 8). Logits with `a` on one class and 0 on the other 7: the dynamics predicts every
    unchanged code and one changed code right. A dynamics that copies the past frame gets
    every unchanged code right and every changed one wrong."""
    codes = torch.tensor([[[1, 2, 3, 4], [1, 2, 5, 4], [1, 6, 5, 7]]])
    actions = torch.tensor([[3, 5]])
    model.tokenizer.encode = lambda v: (None, codes, None)
    model.lam.infer_actions = lambda v: actions

    def logits_of(predicted, a=2.0):
        def teacher_forced_logits(m, tokens, acts):
            assert torch.equal(tokens, codes) and torch.equal(acts, actions)
            return a * torch.nn.functional.one_hot(predicted, 8).float()
        return teacher_forced_logits

    predicted = torch.tensor([[[1, 2, 3, 4], [1, 6, 5, 4]]])    # wrong at (1, 2) and (2, 3)
    monkeypatch.setattr(diagnose, "teacher_forced_logits", logits_of(predicted))
    out = changed_codes(model, torch.zeros(1, 3, 3, 16, 16))
    right, wrong = -math.log(math.e ** 2 / (math.e ** 2 + 7)), math.log(math.e ** 2 + 7)
    assert out == pytest.approx({"changed": 0.375, "changed_accuracy": 0.333,
                                 "unchanged_accuracy": 1.0,
                                 "changed_share_of_loss": round(
                                     (right + 2 * wrong) / (6 * right + 2 * wrong), 3)})
    monkeypatch.setattr(diagnose, "teacher_forced_logits", logits_of(codes[:, :-1]))
    out = changed_codes(model, torch.zeros(1, 3, 3, 16, 16))
    assert (out["changed_accuracy"], out["unchanged_accuracy"]) == (0.0, 1.0)
    # nothing changes: no changed accuracy to read, and none of the loss
    codes = codes[:, :1].expand(1, 3, 4)
    monkeypatch.setattr(diagnose, "teacher_forced_logits", logits_of(codes[:, 1:]))
    out = changed_codes(model, torch.zeros(1, 3, 3, 16, 16))
    assert out == {"changed": 0.0, "changed_accuracy": None, "unchanged_accuracy": 1.0,
                   "changed_share_of_loss": 0.0}


def test_action_movements_names_how_far_each_action_moves_the_agent(model):
    video = torch.cat([_clip([0, 4, 8, 8]), _clip([8, 4, 4, 4])])   # right, right, stay; left
    actions = torch.tensor([[1, 1, 0], [2, 0, 0]])
    model.lam.infer_actions = lambda v: actions
    out = action_movements(model, video, torch.zeros(2, dtype=torch.long))
    assert out["per_action"] == {0: (3, 0.0, 0.0), 1: (2, 4.0, 0.0), 2: (1, -4.0, 0.0)}
    assert out["within"] == 1.0
    assert out["dead_reckoning_within"] == [1.0, 1.0, 1.0]   # each action moves it exactly
    # one action for every move: the mean is +0.67 px, and only the three stays are within 2 px
    model.lam.infer_actions = lambda v: torch.zeros_like(actions)
    out = action_movements(model, video, torch.zeros(2, dtype=torch.long))
    assert out["within"] == 0.5
    # reckoned at x + 0.67 t, the agents are at x + 4 / + 8 / + 8 and x - 4 / - 4 / - 4
    assert out["dead_reckoning_within"] == [0.0, 0.0, 0.0]
    # the first clip's agent gone from frame 2: that frame is left out (a miss would read
    # 0.5 at t = 2), and its later frame is still reckoned from its moves before
    video[0, 2] = video[0, 0, :, :1, :1]
    model.lam.infer_actions = lambda v: actions
    out = action_movements(model, video, torch.zeros(2, dtype=torch.long))
    assert out["dead_reckoning_within"] == [1.0, 1.0, 1.0]


def test_moves_into_walls_splits_presses_by_whether_the_agent_moved(model):
    """Right pressed four times: three moves (two labelled 5, one 6) and one press against
    the right wall (x stays at 12), labelled 0 like a noop; left pressed once, blocked at
    the left wall. The moving codes of right are those of at least 10% of its free
    presses."""
    video = torch.cat([_clip([0, 4, 8, 12, 12]), _clip([0, 0, 4, 4, 4])])
    true = torch.tensor([[RIGHT, RIGHT, RIGHT, RIGHT], [LEFT, RIGHT, NOOP, NOOP]])
    latent = torch.tensor([[5, 5, 6, 0], [0, 5, 0, 0]])
    model.lam.infer_actions = lambda v: latent
    out = moves_into_walls(model, video, true, torch.zeros(2, dtype=torch.long))
    assert out["right"] == {"free": 4, "blocked": 1, "moving_codes": [5, 6],
                            "free_as_moving": 1.0, "blocked_as_moving": 0.0,
                            "blocked_most": [0, 1.0]}
    assert out["left"] == {"free": 0, "blocked": 1, "moving_codes": [], "free_as_moving": None,
                           "blocked_as_moving": 0.0, "blocked_most": [0, 1.0]}
    # a LAM that labels the blocked press 6, the code of one of the four free presses: a
    # moving code at the default share (10%), not at 30%
    latent[0, 3] = 6
    out = moves_into_walls(model, video, true, torch.zeros(2, dtype=torch.long), share=0.3)
    assert out["right"]["moving_codes"] == [5]
    assert out["right"]["free_as_moving"] == 0.75 and out["right"]["blocked_as_moving"] == 0.0
    out = moves_into_walls(model, video, true, torch.zeros(2, dtype=torch.long))
    assert out["right"]["blocked_as_moving"] == 1.0 and out["right"]["blocked_most"] == [6, 1.0]


def test_errors_fed_back_tells_one_step_frames_from_a_rollout(model, monkeypatch):
    """With a dynamics that copies its last past frame, a frame generated from the real past
    is the real previous frame, and a rollout is the first frame throughout."""
    video = _clip([0, 0, 4, 4])               # the square stays, moves 4 px, stays
    inferred = torch.tensor([[3, 1, 2]])
    model.lam.infer_actions = lambda v: inferred
    calls = []

    def copy_last(model, prompt, actions, *, prompt_actions=None, generator=None):
        calls.append((prompt.shape[1], actions.tolist(), prompt_actions,
                      generator.initial_seed()))
        new = prompt[:, -1:].expand(-1, actions.shape[1], -1, -1, -1)
        return torch.cat([prompt, new], 1)

    monkeypatch.setattr(evaluate, "play", copy_last)
    rollout = video[:, :1].expand(-1, 4, -1, -1, -1)
    out = errors_fed_back(model, video, torch.zeros(1, dtype=torch.long), rollout, seed=2)
    # one step: the real frames 0, 1, 2 against 1, 2, 3; rollout: frame 0 against 1, 2, 3
    assert out["one_step_within_2px"] == [1.0, 0.0, 1.0]
    assert out["rollout_within_2px"] == [1.0, 0.0, 0.0]
    assert out["one_step_one_blob"] == out["rollout_one_blob"] == [1.0, 1.0, 1.0]
    # frame t from the real frames 0..t-1, their actions as prompt actions, a_{t-1} to play,
    # under the generation seed of evaluate.rollouts
    assert [(n, a, s) for n, a, _, s in calls] == [(1, [[3]], 1002), (2, [[1]], 1002),
                                                   (3, [[2]], 1002)]
    assert [p.tolist() for _, _, p, _ in calls] == [[[]], [[3]], [[3, 1]]]


def test_ball_in_rollouts_reads_the_ball_by_its_colour():
    """A rollout that freezes the ball at its first place, one that erases it, and a
    reconstruction that splits it: each read off the ball's colour (palette id 2)."""
    xs = [0, 0, 4, 8]
    video = _clip(xs, colour=2)
    background = video[:, :1, :, :1, :1].expand(-1, 4, -1, 16, 16)
    frozen = video[:, :1].expand(-1, 4, -1, -1, -1)
    split = video.clone()
    for t, x in enumerate(xs):                     # a background column cuts it in two
        split[:, t, :, 4:8, x + 1] = background[:, t, :, 4:8, 0]
    out = ball_in_rollouts(video, split, torch.tensor([2]), [frozen, background])
    assert out["real_one_blob"] == [1.0, 1.0, 1.0]
    assert out["recon_one_blob"] == [0.0, 0.0, 0.0]
    assert out["inferred_one_blob"] == [0.5, 0.5, 0.5]    # frozen: one blob; erased: none
    assert out["inferred_within_2px"] == [0.5, 0.0, 0.0]  # the real ball moves 4 px at t = 2


def test_generate_gives_the_inferred_clips_of_rollouts(model):
    """diagnose reads the balls and the rollout of errors_fed_back from evaluate.generate,
    not from evaluate.rollouts (which also plays random actions): the clips must be the
    same ones evaluate measures."""
    torch.manual_seed(0)
    video = torch.rand(2, model.cfg.frames, 3, 16, 16)
    inferred = model.lam.infer_actions(video)
    pairs = evaluate.rollouts(model, video, seeds=(0, 1))
    for seed, (x_hat, x_rand) in zip((0, 1), pairs, strict=True):
        assert torch.equal(evaluate.generate(model, video[:, :1], inferred, seed), x_hat)
        assert not torch.equal(x_hat, x_rand)


def test_agent_breaks_tells_a_tinted_ball_from_a_broken_agent():
    """Six frames of an agent (palette 0, a 4 px square at x = 0) and a ball (palette 2, a 2 px
    square at x = 12): whole; a pixel of the agent's colour on the ball; one 2 px right of the
    agent; one far from both; both of the last two; no agent at all."""
    video = _clip([0] * 6)
    ball = torch.tensor(PALETTE[2], dtype=torch.float32).view(3, 1, 1) / 255
    red = torch.tensor(PALETTE[0], dtype=torch.float32).view(3, 1, 1) / 255
    video[0, :, :, 12:14, 12:14] = ball
    video[0, 1, :, 14, 14] = red[:, 0, 0]            # touches the ball at a corner
    video[0, 2, :, 5, 5] = red[:, 0, 0]              # one background column from the agent
    video[0, 3, :, 0, 12] = red[:, 0, 0]             # far from the agent and the ball
    video[0, 4, :, 5, 5] = red[:, 0, 0]
    video[0, 4, :, 0, 12] = red[:, 0, 0]
    video[0, 5, :, 4:8, 0:4] = video[0, 5, :, :1, 4:5]   # background where the agent was
    out = agent_breaks(frame_breaks(video, torch.tensor([0]), torch.tensor([2])))
    assert out == pytest.approx({"one_blob": 1 / 6, "none": 1 / 6, "on_ball": 1 / 6,
                                 "beside": 2 / 6, "apart": 2 / 6})
    # the ball's own colour decides "on_ball": read as palette 1 there is no ball
    assert agent_breaks(frame_breaks(video, torch.tensor([0]), torch.tensor([1])))["on_ball"] == 0


def test_ball_tint_by_colours_counts_each_colour_pairs_tinted_frames():
    """Three clips of four frames: an orange agent with a yellow ball tinted in two frames,
    a red agent with a blue ball tinted in one, an orange agent with a yellow ball never
    tinted. The pairs add up over clips and come most tinted first; every clip's frames
    count under its pair."""
    video = torch.cat([_clip([0] * 4, colour=c) for c in (6, 0, 6)])
    agents, balls = torch.tensor([6, 0, 6]), torch.tensor([3, 2, 3])
    for b, (agent, ball) in enumerate(zip(agents.tolist(), balls.tolist(), strict=True)):
        video[b, :, :, 12:14, 12:14] = torch.tensor(PALETTE[ball]).view(3, 1, 1) / 255
        tinted = (1, 3) if b == 0 else (2,) if b == 1 else ()
        for t in tinted:     # a pixel of the agent's colour on the ball's corner
            video[b, t, :, 14, 14] = torch.tensor(PALETTE[agent], dtype=torch.float32) / 255
    kinds = frame_breaks(video, agents, balls)
    out = ball_tint_by_colours(kinds, agents, balls)
    assert out == {"orange/yellow": [2, 8], "red/blue": [1, 4]}
    assert list(out) == ["orange/yellow", "red/blue"]
    # the same frames agent_breaks calls "on_ball"
    assert agent_breaks(kinds)["on_ball"] == pytest.approx(3 / 12)


def test_training_gap_reads_the_first_training_clips_and_held_out_ones(model, monkeypatch):
    """Each side's accuracy is read on its own clips: the first training clips of the run's
    seed (those of any larger pool) and the held-out clips of evaluate."""
    seen = []
    monkeypatch.setattr(diagnose, "teacher_forced_accuracy",
                        lambda m, video: seen.append(video) or {"token_accuracy": len(seen)})
    assert training_gap(model, clips=6) == {"training": 1, "held_out": 2}
    seed = model.cfg.train.seed
    assert torch.equal(seen[0], ClipPool(model.cfg, 64, seed=seed).all(6)[0])
    assert torch.equal(seen[1], held_out(model.cfg, 6, seed=seed)[0])
    monkeypatch.undo()
    out = training_gap(model, clips=3)          # the real reading, on the untrained model
    assert all(0.0 <= out[k] <= 1.0 for k in ("training", "held_out"))


def test_main_prints_every_reading(model, tmp_path, capsys):
    """The command a user runs, on an untrained micro checkpoint: one JSON with each
    diagnostic, the agent's breaks read on the reconstruction and on the rollouts."""
    save_checkpoint(tmp_path / "genie.safetensors", model)
    diagnose.main([str(tmp_path / "genie.safetensors"), "--clips", "4"])
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"codes", "teacher_forced_tokens", "changed_codes", "actions", "walls",
                        "errors_fed_back", "first_ball", "ball_tint", "agent_breaks"}
    for frames in ("recon", "rollouts"):
        kinds = out["agent_breaks"][frames]
        assert set(kinds) == {"one_blob", "none", "on_ball", "beside", "apart"}
        assert kinds["one_blob"] + kinds["none"] <= 1
        # each clip's frames t >= 1 count once under its colours (x3 generation seeds)
        per_clip = (model.cfg.frames - 1) * (1 if frames == "recon" else 3)
        tint = out["ball_tint"][frames]
        assert sum(of for _, of in tint.values()) == 4 * per_clip
        assert all(n <= of for n, of in tint.values())
