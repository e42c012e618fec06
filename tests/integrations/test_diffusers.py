"""`WMKFactorizedAttnProcessor` in a tiny randomly initialised diffusers
`LatteTransformer3DModel` against the stock `AttnProcessor2_0`: the model output and every
gradient within the tolerance rule (float64 stock model as the reference)."""

import copy

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers.models.attention_processor import (  # noqa: E402
    Attention,
    AttnProcessor2_0,
    FusedAttnProcessor2_0,
)

from wmkernels.integrations import WMKFactorizedAttnProcessor, apply_to_latte  # noqa: E402
from wmkernels.integrations import diffusers as integration  # noqa: E402


def _tiny_latte():
    model = diffusers.LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
        num_layers=2, cross_attention_dim=16, sample_size=8, patch_size=2,
        norm_type="ada_norm_single", caption_channels=12, video_length=3,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000)
    with torch.no_grad():  # no zero-initialised layer may hide a path
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def _inputs(dtype):
    x = torch.randn(2, 4, 3, 8, 8, dtype=torch.float64)
    enc = torch.randn(2, 5, 12, dtype=torch.float64)
    return x.to(dtype).requires_grad_(), torch.tensor([10, 500]), enc.to(dtype)


def _run(model, dtype, seed):
    torch.manual_seed(seed)
    x, t, enc = _inputs(dtype)
    out = model.to(dtype)(x, timestep=t, encoder_hidden_states=enc).sample
    (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
    grads = {"output": out.detach(), "input": x.grad}
    grads.update((name, p.grad) for name, p in model.named_parameters() if p.grad is not None)
    return {name: g.double() for name, g in grads.items()}


def _check(new, low, ref64):
    """The tolerance rule over a whole model: its absolute floor scales with each tensor's
    magnitude (gradients reach ~50 here and rounding compounds over 4 attention layers and
    the backward); plus the fp32 relative-RMS bound, 1e-5."""
    assert new.keys() == ref64.keys()
    for name, r in ref64.items():
        bound = 2 * (low[name] - r).abs().max() + 1e-5 * max(1.0, r.abs().max())
        assert (new[name] - r).abs().max() <= bound, name
        assert (new[name] - r).norm() <= 1e-5 * r.norm(), name


@pytest.mark.parametrize("fused", [False, True], ids=["separate-qkv", "packed-qkv"])
def test_latte_forward_and_backward_match_the_stock_processor(fused, monkeypatch):
    calls = {"spatial": 0, "temporal": 0}
    for kind in calls:
        op = getattr(integration, f"{kind}_attention")

        def counted(*args, _op=op, _kind=kind, **kwargs):
            calls[_kind] += 1
            return _op(*args, **kwargs)

        monkeypatch.setattr(integration, f"{kind}_attention", counted)
    model = _tiny_latte()
    if fused:  # packed to_qkv / to_kv projections, run by diffusers' fused processor
        for module in model.modules():
            if isinstance(module, Attention):
                module.fuse_projections()
                module.set_processor(FusedAttnProcessor2_0())
    ref64 = _run(copy.deepcopy(model), torch.float64, 0)
    low = _run(copy.deepcopy(model), torch.float32, 0)
    ours = apply_to_latte(copy.deepcopy(model))
    new = _run(ours, torch.float32, 0)
    assert calls == {"spatial": 2, "temporal": 2}  # every self-attention went through the ops
    _check(new, low, ref64)


def test_cross_attention_keeps_the_stock_processor():
    model = apply_to_latte(_tiny_latte())
    for block in model.transformer_blocks:
        assert isinstance(block.attn1.processor, WMKFactorizedAttnProcessor)
        assert not isinstance(block.attn2.processor, WMKFactorizedAttnProcessor)
    for block in model.temporal_transformer_blocks:
        assert block.attn1.processor.kind == "temporal"
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    for module in attns:
        module.set_processor(AttnProcessor2_0())
    assert all(isinstance(m.processor, AttnProcessor2_0) for m in attns)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        WMKFactorizedAttnProcessor("frames")
    with pytest.raises(TypeError, match="Latte-style"):
        apply_to_latte(torch.nn.Linear(2, 2))
