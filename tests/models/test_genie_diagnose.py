"""The rollout diagnostics of models/genie/diagnose.py on inputs with known answers."""

import pytest
import torch

from wmkernels.models.data.world import BACKGROUND, PALETTE
from wmkernels.models.genie import Genie, get_config
from wmkernels.models.genie.diagnose import action_movements, code_stability


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


def test_action_movements_names_how_far_each_action_moves_the_agent(model):
    video = torch.cat([_clip([0, 4, 8, 8]), _clip([8, 4, 4, 4])])   # right, right, stay; left
    actions = torch.tensor([[1, 1, 0], [2, 0, 0]])
    model.lam.infer_actions = lambda v: actions
    out = action_movements(model, video, torch.zeros(2, dtype=torch.long))
    assert out["per_action"] == {0: (3, 0.0, 0.0), 1: (2, 4.0, 0.0), 2: (1, -4.0, 0.0)}
    assert out["within"] == 1.0
    # one action for every move: the mean is +0.67 px, and only the three stays are within 2 px
    model.lam.infer_actions = lambda v: torch.zeros_like(actions)
    assert action_movements(model, video, torch.zeros(2, dtype=torch.long))["within"] == 0.5
