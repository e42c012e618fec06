"""The text-to-video pipeline: tokenizer + text encoder + DiT over the VAE's latents, the
rectified-flow training loss with caption dropout, guided Euler sampling, and safetensors
checkpoints that hold every weight, the config and the vocabulary."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict

import torch
from torch import nn

from wmkernels.models.common.checkpoint_io import load_tensors, save_tensors
from wmkernels.models.common.distributed import DistInfo, rank_rows
from wmkernels.models.sora.config import SoraConfig
from wmkernels.models.sora.dit import DiT
from wmkernels.models.sora.flow import euler_sample, flow_loss, guided
from wmkernels.models.sora.text import TextEncoder, Tokenizer
from wmkernels.models.sora.vae import VideoVAE


class Sora(nn.Module):
    """Text-to-video model. Pixels are (B, T, 3, H, W) float in [-1, 1].

    Attributes: `tokenizer` (Tokenizer), `text_encoder`, `dit`, `vae`, and the buffer
    `latent_scale` (1 / std of the VAE latents of the training set, Stable Diffusion's
    scale factor) that brings latents to unit variance for the flow.
    """

    def __init__(self, cfg: SoraConfig, tokenizer: Tokenizer):
        super().__init__()
        cfg.validate()
        self.cfg, self.tokenizer = cfg, tokenizer
        if tokenizer.max_tokens != cfg.text.max_tokens:
            raise ValueError(f"tokenizer.max_tokens ({tokenizer.max_tokens}) must equal "
                             f"cfg.text.max_tokens ({cfg.text.max_tokens})")
        self.vae = VideoVAE(cfg.vae)
        self.text_encoder = TextEncoder(len(tokenizer), cfg.text)
        self.dit = DiT(cfg.dit, cfg.vae.latent_channels, cfg.text.dim, cfg.text.max_tokens)
        self.register_buffer("latent_scale", torch.ones(()))

    # ---- conditioning -------------------------------------------------------------------
    def encode_text(self, prompts: Sequence[str], *, truncate: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text features (B, L, text_dim) and mask (B, L) of `prompts` (see text.py for the
        rules on empty, long and unknown-word prompts)."""
        ids, mask = self.tokenizer.encode(prompts, truncate=truncate)
        dev = self.latent_scale.device
        ids, mask = ids.to(dev), mask.to(dev)
        return self.text_encoder(ids, mask), mask

    @property
    def latent_frames(self) -> int:
        return self.vae.latent_shape(self.cfg.frames, self.cfg.size, self.cfg.size)[0]

    def latent_shape(self) -> tuple[int, int, int, int]:
        return self.vae.latent_shape(self.cfg.frames, self.cfg.size, self.cfg.size)

    # ---- training -----------------------------------------------------------------------
    def loss(self, latents: torch.Tensor, prompts: Sequence[str],
             generator: torch.Generator | None = None,
             dist: DistInfo | None = None) -> torch.Tensor:
        """Rectified-flow loss on scaled latents (B, T', C, H', W') (already multiplied by
        `latent_scale`) and their captions; each caption is dropped (replaced by the null
        caption) with probability cfg.train.text_dropout, for classifier-free guidance.
        Timesteps are logit-normal(cfg.train.timestep_mean, cfg.train.timestep_std).
        dist: under DDP, the batch is this rank's equal share of the global batch, and its
        random draws are its rows of the global batch's (`rank_rows`)."""
        if len(prompts) != latents.shape[0]:
            raise ValueError(f"got {len(prompts)} prompts for {latents.shape[0]} latents")
        text, mask = self.encode_text(prompts, truncate=True)
        drop = rank_rows(lambda n: torch.rand(n, generator=generator, device=latents.device),
                         latents.shape[0], dist) < self.cfg.train.text_dropout
        return flow_loss(lambda x, t: self.dit(x, t, text, mask, drop), latents,
                         generator=generator, mean=self.cfg.train.timestep_mean,
                         std=self.cfg.train.timestep_std, dist=dist)

    forward = loss   # the training loss is what DDP wraps and calls

    # ---- sampling -----------------------------------------------------------------------
    @torch.no_grad()
    def sample_latents(self, prompts: Sequence[str | None], *, steps: int | None = None,
                       guidance: float | None = None, seed: int = 0,
                       truncate: bool = False) -> torch.Tensor:
        """Scaled latents (B, T', C, H', W') for `prompts` (None = unconditional), from noise
        drawn with torch.Generator().manual_seed(seed): the same seed gives the same clips.
        `guidance` defaults to cfg.train.guidance; 1 is the plain conditional model."""
        if len(prompts) == 0:
            raise ValueError("prompts is empty; give at least one prompt (or None)")
        steps = self.cfg.train.sample_steps if steps is None else steps
        guidance = self.cfg.train.guidance if guidance is None else guidance
        dev = self.latent_scale.device
        gen = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn((len(prompts), *self.latent_shape()), generator=gen).to(dev)
        uncond_rows = [p is None for p in prompts]
        text, mask = self.encode_text(["x" if p is None else p for p in prompts],
                                      truncate=truncate)
        drop = torch.tensor(uncond_rows, device=dev)
        cond = lambda x, t: self.dit(x, t, text, mask, drop)
        uncond = lambda x, t: self.dit(x, t)
        return euler_sample(guided(cond, uncond, guidance), noise, steps)

    @torch.no_grad()
    def sample(self, prompts: Sequence[str | None], **kw) -> torch.Tensor:
        """Videos (B, T, 3, H, W) in [-1, 1] for `prompts`; keywords as `sample_latents`."""
        z = self.sample_latents(prompts, **kw)
        return self.vae.decode(z / self.latent_scale).clamp(-1, 1)

    # ---- checkpoints --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write every weight, the config and the vocabulary to one safetensors file,
        atomically and durably (temporary file, fsync, rename), so a crash never leaves a
        torn checkpoint; the weights' checksum is checked on load."""
        meta = {"config": json.dumps(asdict(self.cfg)), "vocab": json.dumps(self.tokenizer.vocab),
                "format": "wmkernels.sora/1"}
        save_tensors(path, self.state_dict(), meta)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str = "cpu") -> Sora:
        """A model rebuilt from a `save`d checkpoint (config, vocabulary, weights).

        Raises FileNotFoundError for a missing file, ValueError for one that is not a Sora
        checkpoint, is truncated or corrupt, or whose weights do not fit its config."""
        path = os.fspath(path)
        def check(meta: dict) -> None:
            if meta.get("format") != "wmkernels.sora/1":
                raise ValueError(f"{path!r} is not a Sora checkpoint (metadata format "
                                 f"{meta.get('format')!r})")

        state, meta = load_tensors(path, "checkpoint", map_location, check)
        try:
            cfg = SoraConfig.from_dict(json.loads(meta["config"]))
            vocab = json.loads(meta["vocab"])
            model = cls(cfg, Tokenizer(vocab[len(Tokenizer.SPECIALS):], cfg.text.max_tokens))
            model.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path!r} is a damaged Sora checkpoint: {err}") from None
        return model.to(map_location)
