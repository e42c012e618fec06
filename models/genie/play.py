"""Playing a trained Genie: prompt frame(s) + one latent action per step -> new frames.

Each new frame's codes come from MaskGIT (`wmkernels.maskgit_decode`, through the dynamics
model's `wmkernels.nn.MaskGITSampler`) run over the newest frame only. Temporal attention is
causal, so the keys/values of past frames never change while a frame is decoded: with
`use_cache=True` they are computed once per frame and served from a
`wmkernels.nn.TemporalKVCache`, so every MaskGIT step costs one frame of work instead of the
whole clip. `use_cache=False` recomputes all frames at every step (how public Genie
re-implementations decode); both give the same frames for the same generator.
"""

from __future__ import annotations

import torch

from wmkernels.models.genie.model import Genie


def _check_play_args(model: Genie, prompt: torch.Tensor, actions: torch.Tensor) -> None:
    cfg = model.cfg
    if prompt.dim() != 5 or prompt.shape[2:] != (3, cfg.image_size, cfg.image_size):
        raise ValueError(f"prompt must be (B, Tp, 3, {cfg.image_size}, {cfg.image_size}), got "
                         f"{tuple(prompt.shape)}")
    if actions.dim() != 2 or actions.shape[0] != prompt.shape[0]:
        raise ValueError(f"actions must be (B, N) with B = {prompt.shape[0]}, got "
                         f"{tuple(actions.shape)}")
    if actions.dtype != torch.long:
        raise TypeError(f"actions must be int64, got {actions.dtype}")
    if actions.numel() and (actions.min() < 0 or actions.max() >= model.num_actions):
        raise ValueError(f"actions must lie in [0, {model.num_actions}), got values in "
                         f"[{int(actions.min())}, {int(actions.max())}]")
    total = prompt.shape[1] + actions.shape[1]
    if total > cfg.frames:
        raise ValueError(f"prompt frames + actions = {total} exceeds the model's context of "
                         f"{cfg.frames} frames")


def _new_cache(model: Genie, batch: int):
    return model.dynamics.transformer.make_cache(batch)


def _commit(dyn, tokens: torch.Tensor, frame_actions: torch.Tensor, cache, *,
            start: int) -> None:
    """Store in `cache` the K/V of fully known frames tokens (B, Tn, S), whose per-frame
    action ids are frame_actions (B, Tn), as frames start..start+Tn-1."""
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    dyn.transformer(dyn._embed(tokens, mask, frame_actions), start=start, cache=cache)


def _peek(dyn, tokens, mask, action, t: int, cache) -> torch.Tensor:
    """Logits of the partially decoded frame t; its K/V go to cache slot t and are then
    dropped (the cache is rewound), because they belong to masked inputs and will be
    recomputed from the final tokens."""
    logits = dyn.frame_logits(tokens, mask, action, t, cache)
    cache.truncate(t)
    return logits


@torch.no_grad()
def play_tokens(model: Genie, prompt_tokens: torch.Tensor, prompt_actions: torch.Tensor,
                actions: torch.Tensor, *, use_cache: bool = True,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Token-level generation. prompt_tokens (B, Tp, S) int64, prompt_actions (B, Tp-1)
    (the actions between prompt frames), actions (B, N) -> tokens (B, Tp+N, S)."""
    dyn = model.dynamics
    B, Tp, S = prompt_tokens.shape
    tokens = prompt_tokens
    history = prompt_actions
    cache = _new_cache(model, B) if use_cache else None
    if cache is not None:
        _commit(dyn, tokens, dyn.frame_actions(history), cache, start=0)
    for step in range(actions.shape[1]):
        a = actions[:, step]
        t = tokens.shape[1]
        history = torch.cat([history, a[:, None]], dim=1)
        if cache is None:
            def logits_fn(tok, msk, tokens=tokens, history=history):
                full = torch.cat([tokens, tok[:, None]], dim=1)
                full_mask = torch.zeros_like(full, dtype=torch.bool)
                full_mask[:, -1] = msk
                return dyn(full, history, full_mask)[:, -1]
        else:
            def logits_fn(tok, msk, a=a, t=t):
                return _peek(dyn, tok, msk, a, t, cache)
        start = torch.zeros(B, S, dtype=torch.long, device=tokens.device)
        mask = torch.ones(B, S, dtype=torch.bool, device=tokens.device)
        new = dyn.sampler(logits_fn, start, mask, generator=generator)
        tokens = torch.cat([tokens, new[:, None]], dim=1)
        if cache is not None and step + 1 < actions.shape[1]:
            _commit(dyn, new[:, None], a[:, None], cache, start=t)
    return tokens


@torch.no_grad()
def play(model: Genie, prompt: torch.Tensor, actions: torch.Tensor, *,
         prompt_actions: torch.Tensor | None = None, use_cache: bool = True,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Generate frames from prompt frame(s) and latent actions.

    Args:
        model: a trained Genie (put it in eval mode).
        prompt: (B, Tp, 3, H, W) float frames in [0, 1], Tp >= 1.
        actions: (B, N) int64 latent actions in [0, num_actions), one per new frame.
        prompt_actions: (B, Tp-1) actions between the prompt frames; default: inferred
            from the prompt by the latent action model.
        use_cache: serve past frames' keys/values from a TemporalKVCache.
        generator: torch.Generator for MaskGIT sampling (same state -> same frames).

    Returns:
        (B, Tp+N, 3, H, W) float frames in [0, 1]: the prompt's reconstruction, then the
        generated frames.

    Raises:
        ValueError/TypeError: bad shapes, dtypes, action values, or Tp+N over the context.
    """
    _check_play_args(model, prompt, actions)
    prompt_tokens = model.tokenizer.encode(prompt)[1]
    if prompt_actions is None:
        B = prompt.shape[0]
        prompt_actions = (model.lam.infer_actions(prompt) if prompt.shape[1] > 1 else
                          torch.zeros(B, 0, dtype=torch.long, device=prompt.device))
    tokens = play_tokens(model, prompt_tokens, prompt_actions, actions, use_cache=use_cache,
                         generator=generator)
    return model.tokenizer.decode(tokens)
