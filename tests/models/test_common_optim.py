"""The pipelines' shared optimisation pieces (models.common.optim): the warmup-cosine
learning-rate curve and AdamW's decay groups."""

import math

import pytest
import torch

from wmkernels.models.common import adamw, warmup_cosine, warmup_cosine_lambda


def test_warmup_cosine_curve():
    lr = lambda step, **kw: warmup_cosine(step, warmup=4, total=20, **kw)
    assert [lr(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr(4) == 1.0                                    # the peak, as decay starts
    assert lr(12) == pytest.approx(0.5)                    # half way down the cosine
    assert lr(20, floor=0.1) == pytest.approx(0.1)         # the floor at `total` ...
    assert lr(500, floor=0.1) == lr(20, floor=0.1)         # ... and after it
    assert lr(20) == 0.0
    values = [lr(s, floor=0.1) for s in range(4, 21)]
    assert values == sorted(values, reverse=True)
    # peak scales the curve; the warmup multiplies first, as JEPA's schedule always did
    assert lr(2, peak=3e-4) == 3e-4 * 3 / 4
    assert lr(9, peak=3e-4) == 3e-4 * (0.5 * (1 + math.cos(math.pi * 5 / 16)))
    assert warmup_cosine(0, warmup=0, total=0) == 1.0      # no warmup, nothing to decay
    for bad, match in (({"warmup": -1}, "warmup"), ({"total": -2}, "total"),
                       ({"floor": 1.5}, "floor"), ({"floor": -0.1}, "floor")):
        with pytest.raises(ValueError, match=match):
            warmup_cosine(0, **{"warmup": 2, "total": 5, **bad})


def test_warmup_cosine_lambda_scales_each_group():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}])
    sched = warmup_cosine_lambda(opt, warmup=2, total=6, floor=0.1)
    seen = []
    for _ in range(8):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert seen[0] == [0.5, 0.25] and seen[1] == [1.0, 0.5]
    assert seen[-1] == pytest.approx([0.1, 0.05])


def test_adamw_groups():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4),
                                torch.nn.Linear(4, 2))
    model[2].bias.requires_grad_(False)
    opt = adamw(model.parameters(), lr=1e-3, weight_decay=0.05, betas=(0.9, 0.99))
    decay, rest = opt.param_groups
    assert [p.dim() for p in decay["params"]] == [2, 2] and decay["weight_decay"] == 0.05
    assert [p.dim() for p in rest["params"]] == [1, 1, 1] and rest["weight_decay"] == 0.0
    assert all(p.requires_grad for g in opt.param_groups for p in g["params"])
    assert decay["betas"] == (0.9, 0.99) and decay["lr"] == 1e-3
    # no decay anywhere: nothing to split, one group in the parameters' own order
    plain = adamw(model.parameters(), lr=1e-3, weight_decay=0.0)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["betas"] == (0.9, 0.999)
    assert plain.param_groups[0]["params"] == [p for p in model.parameters() if p.requires_grad]
