"""The drop-in integrations against the libraries' own code, in the same run.

- vq-pytorch-train / vq-pytorch-eval: vector-quantize-pytorch's `VectorQuantize` (EMA
  codebook) training step (forward + backward) and eval forward, as shipped ("eager") and
  with `apply_to_vector_quantize_pytorch()` ("wmkernels").
- latte-forward: a diffusers `LatteTransformer3DModel` forward with the stock processor
  ("eager") and with `apply_to_latte` ("wmkernels"), with separate and fused (packed QKV)
  projections.
Rows are skipped, with the reason, when a library is not installed.
"""

from __future__ import annotations

import copy
import importlib.util

import torch

from wmkernels.bench.harness import Case, Skip

# (N tokens as (batch, length), K, D): vq-tokenizer/cpu's N16384 K1024 D32 on CPU
VQ_SHAPES = {"cpu": ("vq-tokenizer/cpu", 16, 1024, 1024, 32),
             "cuda": ("vq-tokenizer", 128, 1024, 1024, 32)}
VQ_QUICK = ("vq-quick", 2, 150, 40, 16)
# (B, T, frames' side in latent pixels, heads, head dim, layers), patch 2
LATTE_SHAPES = {"cpu": ("latte-B2-T8-S256-H4-D32-L2", 2, 8, 32, 4, 32, 2),
                "cuda": ("latte-B2-T16-S1024-H16-D72-L4", 2, 16, 64, 16, 72, 4)}
LATTE_QUICK = ("latte-quick", 1, 3, 8, 2, 8, 1)


def cases(device: str, quick: bool) -> list:
    return _vq_cases(device, quick) + _latte_cases(device, quick)


def _vq_cases(device, quick):
    name, B, L, K, D = VQ_QUICK if quick else VQ_SHAPES[device]
    if importlib.util.find_spec("vector_quantize_pytorch") is None:
        return [Skip("vq-pytorch", name, "eager", "vector-quantize-pytorch not installed")]
    from vector_quantize_pytorch import VectorQuantize

    from wmkernels.integrations import (
        apply_to_vector_quantize_pytorch,
        unapply_from_vector_quantize_pytorch,
    )

    vq = VectorQuantize(dim=D, codebook_size=K, decay=0.99, commitment_weight=0.25).to(device)
    x = torch.randn(B, L, D, device=device, requires_grad=True)

    def train_step():
        q, _, loss = vq.train()(x)
        (q.square().mean() + loss).backward()

    def eval_forward():
        with torch.no_grad():
            vq.eval()(x)

    def patched(fn):
        def run():
            apply_to_vector_quantize_pytorch()
            try:
                fn()
            finally:
                unapply_from_vector_quantize_pytorch()
        return run

    N = B * L
    common = dict(shape=name, dtype="float32", params={"N": N, "K": K, "D": D},
                  flops=2 * N * K * D, bytes=(N + K) * D * 4 + N * 8)
    return [Case(op="vq-pytorch-train", backend="eager", fn=train_step, **common),
            Case(op="vq-pytorch-train", backend="wmkernels", fn=patched(train_step), **common),
            Case(op="vq-pytorch-eval", backend="eager", fn=eval_forward, **common),
            Case(op="vq-pytorch-eval", backend="wmkernels", fn=patched(eval_forward), **common)]


def _latte_cases(device, quick):
    name, B, T, side, H, Dh, layers = LATTE_QUICK if quick else LATTE_SHAPES[device]
    if importlib.util.find_spec("diffusers") is None:
        return [Skip("latte-forward", name, "eager", "diffusers not installed")]
    from diffusers import LatteTransformer3DModel
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    from wmkernels.integrations import apply_to_latte

    model = LatteTransformer3DModel(
        num_attention_heads=H, attention_head_dim=Dh, in_channels=4, out_channels=8,
        num_layers=layers, cross_attention_dim=H * Dh, sample_size=side, patch_size=2,
        norm_type="ada_norm_single", caption_channels=32, video_length=T,
        activation_fn="gelu-approximate", num_embeds_ada_norm=1000).to(device).eval()
    fused = copy.deepcopy(model)
    for module in fused.modules():
        if isinstance(module, Attention):
            module.fuse_projections()
            module.set_processor(FusedAttnProcessor2_0())
    x = torch.randn(B, 4, T, side, side, device=device)
    t = torch.tensor([500] * B, device=device)
    enc = torch.randn(B, 8, 32, device=device)

    def forward(m):
        def run():
            with torch.no_grad():
                m(x, timestep=t, encoder_hidden_states=enc)
        return run

    S = (side // 2) ** 2
    # useful attention flops: spatial and temporal self-attention, QK^T and PV
    flops = layers * 4 * B * H * Dh * (T * S * S + S * T * T)
    common = dict(op="latte-forward", dtype="float32", flops=flops,
                  params={"B": B, "T": T, "S": S, "H": H, "D": Dh, "layers": layers})
    return [Case(backend="eager", shape=name, fn=forward(model), **common),
            Case(backend="wmkernels", shape=name, fn=forward(apply_to_latte(copy.deepcopy(model))),
                 **common),
            Case(backend="eager", shape=name + "-packed", fn=forward(fused), **common),
            Case(backend="wmkernels", shape=name + "-packed",
                 fn=forward(apply_to_latte(copy.deepcopy(fused))), **common)]
