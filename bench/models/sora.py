"""End-to-end Sora DiT benchmark: one sampler step (guided Euler step: conditional and
unconditional DiT forwards) and one training step (rectified-flow loss, forward + backward),
with the attention ops on wmkernels' best backend vs `backend="reference"` (the eager
rearrange + SDPA baseline), same weights.

Shapes: "sora-base" (GPU): 17 frames at 512x512 -> latents 5 x 8 x 64 x 64 -> 1024 tokens
per frame, the `base` DiT (12 blocks, 384 wide, 6 heads of 64), bf16, batch 2.
"sora-tiny/cpu": the `tiny` CPU config (3 latent frames x 16 tokens, 4 blocks, 128 wide),
fp32, batch 8; "sora-256tok/cpu": the same DiT on 3 x 256 tokens (128x128 clips), batch 1.
Quick: a 1-block model on 2 x 2 x 4 x 4 latents.
"""

from __future__ import annotations

import copy

import torch

from wmkernels import routing, use_backend
from wmkernels.bench.harness import Case, Skip
from wmkernels.models.sora.config import base, tiny
from wmkernels.models.sora.dit import DiT, DiTConfig
from wmkernels.models.sora.flow import euler_sample, flow_loss, guided


def _dit_flops(dit: DiT, batch: int, frames: int, tokens: int, text_tokens: int) -> int:
    """Useful forward flops: 2 per weight per token for the token-wise linears, plus
    4*D per (query, key) pair for each attention (QK^T and PV)."""
    d, depth = dit.cfg.dim, dit.cfg.depth
    block = dit.blocks[0]
    per_token_weights = sum(p.numel() for n, p in block.named_parameters()
                            if n.endswith("weight") and p.dim() == 2 and "kv" not in n)
    n_tok = batch * frames * tokens
    linear = 2 * per_token_weights * n_tok * depth
    attn = 4 * d * n_tok * (tokens + frames + text_tokens) * depth
    text_kv = 2 * 2 * d * d * batch * text_tokens * depth
    return linear + attn + text_kv


def _setups(device: str, quick: bool) -> list[tuple]:
    """(config, batch, latent shape, shape name, dtype) per benchmarked shape."""
    if quick:
        cfg = tiny()
        cfg.dit = DiTConfig(dim=64, depth=1, heads=2, max_frames=4)
        return [(cfg, 2, (2, cfg.vae.latent_channels, 4, 4), "sora-quick", torch.float32)]
    if device == "cuda":
        cfg = base()
        cfg.dit.max_frames = 8
        return [(cfg, 2, (5, cfg.vae.latent_channels, 64, 64), "sora-base", torch.bfloat16)]
    tiny_cfg = tiny()
    return [(tiny_cfg, 8, (3, tiny_cfg.vae.latent_channels, 8, 8), "sora-tiny/cpu",
             torch.float32),
            # the tiny DiT on 128x128 clips' latents: 256 tokens per frame
            (tiny(), 1, (3, tiny_cfg.vae.latent_channels, 32, 32), "sora-256tok/cpu",
             torch.float32)]


def cases(device: str, quick: bool) -> list:
    """Sampler-step and train-step cases for the eager baseline and wmkernels' backend."""
    out: list = []
    for setup in _setups(device, quick):
        out += _cases(device, *setup)
    if device != "cuda":
        out.append(Skip("sora_sample_step", "sora-base", "wmk",
                        "the base shape (1024 tokens per frame) needs a GPU"))
    return out


def _cases(device: str, cfg, batch: int, latent: tuple, shape: str, dtype) -> list:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    eager = DiT(cfg.dit, cfg.vae.latent_channels, cfg.text.dim, cfg.text.max_tokens)
    with torch.no_grad():  # leave adaLN-zero's all-zero start: time a model that computes
        for p in eager.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    eager = eager.to(device=device, dtype=dtype)
    fast = copy.deepcopy(eager)
    chosen = routing.select("spatial_attention", torch.device(device), None)
    L = cfg.text.max_tokens
    x = torch.randn(batch, *latent, generator=gen).to(device=device, dtype=dtype)
    text = torch.randn(batch, L, cfg.text.dim, generator=gen).to(device=device, dtype=dtype)
    mask = torch.ones(batch, L, dtype=torch.bool, device=device)
    mask[:, L // 2:] = False
    T, S = latent[0], (latent[2] // cfg.dit.patch) * (latent[3] // cfg.dit.patch)
    fwd_flops = _dit_flops(eager, batch, T, S, L)
    params = {"batch": batch, "latent": list(latent), "tokens_per_frame": S,
              "dit": {"dim": cfg.dit.dim, "depth": cfg.dit.depth, "heads": cfg.dit.heads}}

    def sample_step(model, backend):
        v = guided(lambda a, t: model(a, t, text, mask), lambda a, t: model(a, t),
                   cfg.train.guidance)

        def step():
            with use_backend(backend):
                return euler_sample(v, x, steps=1)
        return step

    def train_step(model, backend):
        def step():
            model.zero_grad(set_to_none=True)
            with use_backend(backend):
                loss = flow_loss(lambda a, t: model(a, t, text, mask), x,
                                 generator=torch.Generator(device=device).manual_seed(0))
                loss.backward()
            return loss
        return step

    out: list = []
    for op, make, flops in (("sora_sample_step", sample_step, 2 * fwd_flops),
                            ("sora_train_step", train_step, 3 * fwd_flops)):
        dt = str(dtype).replace("torch.", "")
        out.append(Case(op, shape, "eager", dt, make(eager, "reference"), flops=flops,
                        params=params))
        if chosen == "reference":
            out.append(Skip(op, shape, "wmk", f"no wmkernels attention backend beyond the "
                            f"reference runs on {device} here"))
        else:
            out.append(Case(op, shape, "wmk", dt, make(fast, None), flops=flops,
                            params=params))
    return out
