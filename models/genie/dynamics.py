"""Dynamics model (Genie §2.1): a decoder-only MaskGIT ST-transformer over the tokenizer's
codes. Frame t+1's token embeddings get the latent action a_t added (an additive action
embedding, as in the paper); temporal attention is causal, so frame t's prediction sees
frames <= t only. Trained by masking each frame's tokens at a rate drawn from U(0.5, 1) and
predicting the masked codes (cross-entropy)."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

import wmkernels
from wmkernels.models.genie.config import DynamicsConfig
from wmkernels.models.genie.modules import PositionedSTTransformer


def random_token_mask(shape: tuple[int, int, int], mask_min: float, mask_max: float, *,
                      clean_frames: float = 0.0, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """MaskGIT training mask (B, T, S) bool, True = hidden from the model.

    Every frame but the first draws its own rate r ~ U(mask_min, mask_max) and hides each of
    its tokens with probability r; the first frame is the always-visible context. With
    clean_frames > 0 each frame after the first is instead left whole with that probability
    (context only: it has no masked token, so no loss).
    """
    B, T, S = shape
    rate = torch.empty(B, T, 1, device=device).uniform_(mask_min, mask_max, generator=generator)
    mask = torch.rand(B, T, S, device=device, generator=generator) < rate
    if clean_frames > 0:  # drawn only then, so that 0 keeps the masks of earlier runs
        whole = torch.rand(B, T, 1, device=device, generator=generator) < clean_frames
        mask &= ~whole
    mask[:, 0] = False
    return mask


def corrupt_context(tokens: torch.Tensor, mask: torch.Tensor, rate_max: float, *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """tokens (B, T, S) with each frame after the first drawing a rate r ~ U(0, rate_max)
    and replacing each visible (unmasked) token with probability r by the code at a random
    place of the batch, so that the replacements follow the codes' own frequencies."""
    B, T, S = tokens.shape
    rate = torch.rand(B, T, 1, device=tokens.device, generator=generator) * rate_max
    hit = (torch.rand(B, T, S, device=tokens.device, generator=generator) < rate) & ~mask
    hit[:, 0] = False  # the prompt frame is real at generation time too
    flat = tokens.reshape(-1)
    source = torch.randint(0, flat.numel(), (B, T, S), device=tokens.device,
                           generator=generator)
    return torch.where(hit, flat[source], tokens)


class DynamicsModel(nn.Module):
    """Logits over the codebook for every token of (B, T, S) code clips, given actions."""

    def __init__(self, cfg: DynamicsConfig, vocab: int, num_actions: int, max_frames: int,
                 spatial: int):
        super().__init__()
        self.cfg, self.vocab, self.num_actions = cfg, vocab, num_actions
        self.mask_id = vocab                        # one extra embedding row: [MASK]
        self.no_action = num_actions                # frame 0 has no incoming action
        self.token_embed = nn.Embedding(vocab + 1, cfg.dim)
        self.action_embed = nn.Embedding(num_actions + 1, cfg.dim)
        self.transformer = PositionedSTTransformer(cfg.dim, cfg.heads, cfg.layers, max_frames,
                                                   spatial, rope=cfg.rope)
        self.head = nn.Linear(cfg.dim, vocab)
        self.set_sampler()

    def set_sampler(self, **settings) -> None:
        """(Re)build the MaskGIT sampler from the config, with `settings` (maskgit_steps,
        temperature, choice_temperature) changed in both: generation settings are not
        weights, so a trained model can be decoded under others."""
        unknown = set(settings) - {"maskgit_steps", "temperature", "choice_temperature"}
        if unknown:
            raise ValueError(f"set_sampler takes maskgit_steps, temperature and "
                             f"choice_temperature, got {sorted(unknown)}")
        cfg = dataclasses.replace(self.cfg, **settings)
        cfg.validate()
        self.cfg = cfg
        self.sampler = wmkernels.nn.MaskGITSampler(
            steps=cfg.maskgit_steps, temperature=cfg.temperature,
            choice_temperature=cfg.choice_temperature)

    def _embed(self, tokens, mask, frame_actions):
        tokens = torch.where(mask, torch.full_like(tokens, self.mask_id), tokens)
        return self.token_embed(tokens) + self.action_embed(frame_actions)[:, :, None]

    def frame_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """(B, T-1) transition actions -> (B, T) per-frame action ids (frame 0: no action)."""
        first = actions.new_full((actions.shape[0], 1), self.no_action)
        return torch.cat([first, actions], dim=1)

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T, S) int64, actions (B, T-1) int64 (a_t leads from frame t to t+1),
        mask (B, T, S) bool or None -> logits (B, T, S, vocab)."""
        self._check(tokens, actions)
        if mask is None:
            mask = torch.zeros_like(tokens, dtype=torch.bool)
        return self.head(self._hidden(tokens, actions, mask))

    def _hidden(self, tokens, actions, mask):
        return self.transformer(self._embed(tokens, mask, self.frame_actions(actions)))

    @staticmethod
    def _check(tokens, actions):
        if tokens.dim() != 3 or actions.shape != (tokens.shape[0], tokens.shape[1] - 1):
            raise ValueError(f"tokens must be (B, T, S) and actions (B, T-1), got "
                             f"{tuple(tokens.shape)} and {tuple(actions.shape)}")

    def frame_logits(self, tokens: torch.Tensor, mask: torch.Tensor, action: torch.Tensor,
                     t: int, cache) -> torch.Tensor:
        """Logits (B, S, vocab) of frame `t` alone, the frames before it served from `cache`.

        tokens (B, S), mask (B, S), action (B,) = a_{t-1} (unused at t = 0).
        """
        if t == 0:
            action = torch.full_like(action, self.no_action)
        frame_action = action[:, None]
        h = self._embed(tokens[:, None], mask[:, None], frame_action)
        return self.head(self.transformer(h, start=t, cache=cache))[:, 0]

    @torch.no_grad()
    def predicted_context(self, tokens: torch.Tensor, actions: torch.Tensor, rate: float, *,
                          generator: torch.Generator | None = None):
        """Scheduled sampling's context: (tokens with each frame after the first replaced,
        with probability `rate`, by this model's own prediction of it, and the (B, T) bool of
        the replaced frames). A replaced frame is predicted whole in one pass (argmax of
        every token), from the real frames before it and the true action, the replaced ones
        among them hidden: the kind of frame a rollout feeds back, one model pass per step
        instead of a rollout's T MaskGIT decodes."""
        B, T, S = tokens.shape
        own = torch.rand(B, T, device=tokens.device, generator=generator) < rate
        own[:, 0] = False
        hidden = own[:, :, None].expand(B, T, S)
        guess = self.head(self._hidden(tokens, actions, hidden)[hidden]).argmax(-1)
        seen = tokens.clone()
        seen[hidden] = guess
        return seen, own

    def loss(self, tokens: torch.Tensor, actions: torch.Tensor, *,
             generator: torch.Generator | None = None) -> dict:
        """MaskGIT loss: cross-entropy on the masked tokens of a random U(min, max) mask.
        The model sees the real codes but for its own predictions of whole frames
        (predicted_frames) and the codes context_noise swaps in; whole frames, real
        (clean_frames) or its own, have no loss. The targets are always the real codes; a
        target that differs from the code at its place in the frame before counts
        1 + change_weight times."""
        self._check(tokens, actions)
        mask = random_token_mask(tuple(tokens.shape), self.cfg.mask_min, self.cfg.mask_max,
                                 clean_frames=self.cfg.clean_frames, generator=generator,
                                 device=tokens.device)
        seen = tokens
        if self.cfg.predicted_frames > 0:  # drawn only then, as clean_frames
            seen, own = self.predicted_context(tokens, actions, self.cfg.predicted_frames,
                                               generator=generator)
            mask &= ~own[:, :, None]
        if self.cfg.context_noise > 0:
            seen = corrupt_context(tokens, mask, self.cfg.context_noise, generator=generator)
        h = self._hidden(seen, actions, mask)
        if not mask.any():
            return {"loss": self.head(h).sum() * 0, "accuracy": 0}
        # the head (dim -> vocab) runs on the masked tokens only: building the full
        # (B, T, S, vocab) logits, indexing them and the index's backward cost ~0.05 s per
        # tiny-config training step on one core
        logits, target = self.head(h[mask]), tokens[mask]
        loss = F.cross_entropy(logits, target, reduction="none")
        if self.cfg.change_weight > 0:
            changed = torch.zeros_like(mask)
            changed[:, 1:] = tokens[:, 1:] != tokens[:, :-1]
            loss = loss * (1 + self.cfg.change_weight * changed[mask])
        loss = loss.mean()
        with torch.no_grad():
            acc = (logits.argmax(-1) == target).float().mean()
        return {"loss": loss, "accuracy": acc}
