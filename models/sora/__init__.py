"""Sora-style text-to-video (Open-Sora STDiT / Latte family) on wmkernels attention.

    Sora             the pipeline: tokenizer, text encoder, DiT, video VAE; sample, save, load
    SoraConfig       configs (`get_config("tiny" | "base")`)
    VideoVAE         causal video VAE (4x or 8x space, 4x time)
    DiT              spatial/temporal diffusion transformer with text cross-attention
    Tokenizer, TextEncoder   the built-in text encoder
    flow             rectified flow: loss, logit-normal timesteps, Euler sampler, CFG
    train, evaluate, cli     training on the embedded world, metrics, `wmk sora ...`
"""

from wmkernels.models.sora.config import SoraConfig, get_config
from wmkernels.models.sora.dit import DiT, DiTConfig
from wmkernels.models.sora.pipeline import Sora
from wmkernels.models.sora.text import TextConfig, TextEncoder, Tokenizer
from wmkernels.models.sora.vae import VAEConfig, VideoVAE

__all__ = ["DiT", "DiTConfig", "Sora", "SoraConfig", "TextConfig", "TextEncoder", "Tokenizer",
           "VAEConfig", "VideoVAE", "get_config"]
