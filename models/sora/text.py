"""Built-in text encoder: a word tokenizer over the caption vocabulary and a small
transformer trained together with the DiT.

The papers condition on frozen T5 features (Open-Sora, PixArt); a caption world with a few
dozen words needs far less, so the encoder here is learned from scratch with the model.

Prompt rules (the same everywhere: training, `sample`, the CLI):
- words are lower-cased runs of letters/digits; punctuation is ignored;
- a word outside the vocabulary becomes `<unk>` (and `unknown_words` lists them, so callers
  can warn); it is not an error, the model simply gets no information from it;
- an empty prompt (no words) is a ValueError: unconditional sampling is asked for explicitly
  (`prompt=None`), never by accident;
- a prompt longer than `max_tokens` words is a ValueError naming both lengths, unless the
  caller passes `truncate=True`, which keeps the first `max_tokens` words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

_WORD = re.compile(r"[a-z0-9]+")


def words(prompt: str) -> list[str]:
    """The words of a prompt: lower-cased runs of [a-z0-9]."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    return _WORD.findall(prompt.lower())


class Tokenizer:
    """Word-level tokenizer. Ids: 0 = <pad>, 1 = <unk>, then the vocabulary in sorted order."""

    PAD = 0
    UNK = 1
    SPECIALS = ("<pad>", "<unk>")

    def __init__(self, vocab: Sequence[str], max_tokens: int = 24):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        vocab = sorted(set(vocab) - set(self.SPECIALS))
        bad = [w for w in vocab if _WORD.fullmatch(w) is None]
        if bad:
            raise ValueError(f"vocab entries must be lower-case [a-z0-9]+ words, got {bad[:5]}")
        self.vocab = list(self.SPECIALS) + vocab
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_tokens = max_tokens

    @classmethod
    def from_captions(cls, captions: Iterable[str], max_tokens: int = 24) -> Tokenizer:
        """A tokenizer whose vocabulary is every word appearing in `captions`."""
        vocab: set[str] = set()
        for c in captions:
            vocab.update(words(c))
        if not vocab:
            raise ValueError("captions hold no words; cannot build a vocabulary")
        return cls(sorted(vocab), max_tokens)

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown_words(self, prompt: str) -> list[str]:
        """Words of `prompt` that are not in the vocabulary (they encode as <unk>)."""
        return [w for w in words(prompt) if w not in self.index]

    def encode(self, prompts: Sequence[str], *, truncate: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, max_tokens) int64, right-padded with <pad>, and mask (B, max_tokens)
        bool (True = a real token).

        Raises:
            TypeError: `prompts` is a bare str or holds a non-str.
            ValueError: a prompt has no words, or more than `max_tokens` words and
                `truncate` is False.
        """
        if isinstance(prompts, str):
            raise TypeError("prompts must be a sequence of str, got a single str; wrap it in "
                            "a list")
        ids = torch.full((len(prompts), self.max_tokens), self.PAD, dtype=torch.long)
        for i, p in enumerate(prompts):
            ws = words(p)
            if not ws:
                raise ValueError(f"prompt {i} ({p!r}) has no words; give a caption such as "
                                 "'red ball moves left' (for unconditional sampling pass "
                                 "prompt=None)")
            if len(ws) > self.max_tokens:
                if not truncate:
                    raise ValueError(f"prompt {i} has {len(ws)} words, more than max_tokens = "
                                     f"{self.max_tokens}; shorten it or pass truncate=True")
                ws = ws[: self.max_tokens]
            ids[i, : len(ws)] = torch.tensor([self.index.get(w, self.UNK) for w in ws])
        return ids, ids != self.PAD


@dataclass
class TextConfig:
    """Text encoder sizes. Paper-scale: frozen T5-XXL (4096 wide, 120 tokens). Ours: a
    2-layer, 128-wide transformer over <= 24 words, trained with the DiT."""

    dim: int = 128
    layers: int = 2
    heads: int = 4
    max_tokens: int = 24


class TextEncoder(nn.Module):
    """Token embedding + learned positions + pre-norm transformer encoder + final LayerNorm.

    forward(ids (B, L) int64, mask (B, L) bool) -> features (B, L, dim); padded positions
    are ignored as keys and zeroed in the output.
    """

    def __init__(self, vocab_size: int, cfg: TextConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or TextConfig()
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (<pad>, <unk>, a word), got {vocab_size}")
        self.embed = nn.Embedding(vocab_size, cfg.dim, padding_idx=Tokenizer.PAD)
        self.pos = nn.Parameter(torch.randn(cfg.max_tokens, cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 4 * cfg.dim, dropout=0.0,
                                           activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape != mask.shape or ids.shape[1] > self.cfg.max_tokens:
            raise ValueError(f"ids and mask must both be (B, L<={self.cfg.max_tokens}), got "
                             f"{tuple(ids.shape)} and {tuple(mask.shape)}")
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        x = self.layers(x, src_key_padding_mask=~mask)
        return self.norm(x) * mask.unsqueeze(-1)
