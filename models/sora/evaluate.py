"""Measuring the pipeline: VAE reconstruction PSNR, and whether generated clips follow their
prompts, read by a probe classifier trained on real clips.

The probe is a small CNN over frames and frame differences that predicts, from pixels
alone, what the world's captions say: the ball's colour and (initial) direction of motion,
the agent's colour and its net horizontal motion. It is trained on real rendered clips
only. We then prompt the model with the captions of held-out clips and score how often the
probe reads the prompted attributes back from the generated clips. The same probe on the
held-out real clips gives the ceiling, and on unconditional samples (no text) the chance
level.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels.models.common.checkpoint_io import load_tensors, save_tensors
from wmkernels.models.data import AGENT_MOTIONS, COLOUR_NAMES, DIRECTION_NAMES
from wmkernels.models.sora.pipeline import Sora
from wmkernels.models.sora.train import to_pixels

# attribute -> number of classes; the first two are the prompted colour and direction.
PROBE_TARGETS = {"ball_colour": len(COLOUR_NAMES), "ball_direction": len(DIRECTION_NAMES),
                 "agent_colour": len(COLOUR_NAMES), "agent_motion": len(AGENT_MOTIONS)}


class Probe(nn.Module):
    """Early-fusion CNN over clips (B, T, 3, H, W) in [-1, 1] -> logits per PROBE_TARGETS entry.

    Every frame and every frame difference (x[t+1] - x[t]) is a 3-channel input plane of one
    2-D CNN whose first two layers keep the full resolution. Motion in the embedded world
    is about one pixel per frame at 32x32: a first layer that strides in space or time (as
    a plain 3-D CNN does) blurs it away, and such a probe reads the ball's direction from
    real clips barely better than half the time, while the ball's centroid in frames 0..2
    gives it ~93% of the time. The last feature map is flattened, not pooled: a direction
    is read from where the ball is in each frame, which global pooling throws away.
    """

    def __init__(self, frames: int, size: int, width: int = 48):
        super().__init__()
        w = width
        planes = 3 * frames + 3 * (frames - 1)
        self.features = nn.Sequential(
            nn.Conv2d(planes, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GELU(),
            nn.Conv2d(w, 2 * w, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2), nn.GELU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, stride=2), nn.GELU(),
            nn.Flatten())
        with torch.no_grad():
            n = self.features(torch.zeros(1, planes, size, size)).shape[1]
        self.hidden = nn.Sequential(nn.Linear(n, 256), nn.GELU())
        self.heads = nn.ModuleDict({k: nn.Linear(256, c) for k, c in PROBE_TARGETS.items()})

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        planes = torch.cat([video, video[:, 1:] - video[:, :-1]], dim=1)
        feats = self.hidden(self.features(planes.flatten(1, 2)))
        return {k: head(feats) for k, head in self.heads.items()}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Pixel noise and a random amount of 3x3 blur per clip, so the probe does not key on
    the exact rendered values and edges that a generated (decoded) clip never has."""
    b, t, c, h, w = x.shape
    blur = F.avg_pool2d(x.reshape(b * t, c, h, w), 3, stride=1, padding=1,
                        count_include_pad=False).view_as(x)
    a = torch.rand(b, 1, 1, 1, 1, generator=gen) * (torch.rand(b, 1, 1, 1, 1, generator=gen)
                                                    < 0.5)
    x = (1 - a) * x + a * blur
    return x + 0.05 * torch.randn(x.shape, generator=gen)


def train_probe(video_u8: torch.Tensor, attributes: dict[str, torch.Tensor], *,
                steps: int = 1500, batch: int = 32, seed: int = 0) -> Probe:
    """Fit a Probe on real uint8 clips (N, T, 3, H, W) and their world attributes. Clips
    with a missing label (-1, e.g. a world without balls) are left out of that head's loss.
    Training clips are augmented (`_augment`: noise, blur)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = Probe(video_u8.shape[1], video_u8.shape[-1])
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=0.01)
    warmup = max(1, steps // 20)
    for step in range(steps):
        for g in opt.param_groups:  # warm-up, then linear decay to zero
            g["lr"] = 1e-3 * min((step + 1) / warmup, 1 - step / steps)
        idx = torch.randint(0, video_u8.shape[0], (batch,), generator=gen)
        logits = probe(_augment(to_pixels(video_u8[idx]), gen))
        loss = sum(F.cross_entropy(logits[k], attributes[k][idx], ignore_index=-1)
                   for k in PROBE_TARGETS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return probe.eval()


def save_probe(probe: Probe, path: str, frames: int, size: int) -> None:
    """Write the probe's weights and input size to a safetensors file (atomically, with a
    checksum of the weights)."""
    save_tensors(path, probe.state_dict(), {"frames": str(frames), "size": str(size)})


def load_probe(path: str) -> Probe:
    """A probe written by `save_probe`. Raises FileNotFoundError for a missing file and
    ValueError for one that is not a readable, intact probe file."""
    def check(meta: dict) -> None:
        if "frames" not in meta or "size" not in meta:
            raise ValueError(f"{path!r} is not a probe file (no frames/size metadata)")

    state, meta = load_tensors(path, "probe file", check=check)
    try:
        probe = Probe(int(meta["frames"]), int(meta["size"]))
        probe.load_state_dict(state)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path!r} is not a probe file of this version ({err})") from None
    return probe.eval()


@torch.no_grad()
def probe_accuracy(probe: Probe, video: torch.Tensor, attributes: dict[str, torch.Tensor],
                   batch: int = 64) -> dict[str, float]:
    """Accuracy per PROBE_TARGETS entry, plus "colour_and_direction" (both ball attributes
    right at once), of the probe on float clips in [-1, 1]."""
    preds: dict[str, list[torch.Tensor]] = {k: [] for k in PROBE_TARGETS}
    for i in range(0, video.shape[0], batch):
        out = probe(video[i:i + batch])
        for k in PROBE_TARGETS:
            preds[k].append(out[k].argmax(-1))
    right = {k: torch.cat(preds[k]) == attributes[k][: video.shape[0]] for k in PROBE_TARGETS}
    acc = {k: v.float().mean().item() for k, v in right.items()}
    acc["colour_and_direction"] = (right["ball_colour"] & right["ball_direction"]
                                   ).float().mean().item()
    return acc


@torch.no_grad()
def generate(model: Sora, prompts: list[str | None], *, guidance: float, steps: int,
             seed: int, batch: int = 64) -> torch.Tensor:
    """CPU clips (N, T, 3, H, W) in [-1, 1] for `prompts`, batch by batch, seed per batch."""
    return torch.cat([model.sample(prompts[i:i + batch], guidance=guidance, steps=steps,
                                   seed=seed + i, truncate=True).cpu()
                      for i in range(0, len(prompts), batch)])


def prompt_following(model: Sora, probe: Probe, held: dict, *, n: int, guidance: float,
                     steps: int, seed: int = 0, unconditional: bool = True) -> dict:
    """Probe accuracies on `n` generated clips prompted with held-out captions (and, when
    `unconditional`, on `n` unprompted samples scored against the same labels: chance)."""
    n = min(n, len(held["caption"]))
    labels = {k: held["attributes"][k][:n] for k in PROBE_TARGETS}
    t0 = time.time()
    video = generate(model, held["caption"][:n], guidance=guidance, steps=steps, seed=seed)
    out = {"generated": probe_accuracy(probe, video, labels), "clips": n,
           "guidance": guidance, "steps": steps,
           "sample_s_per_clip": (time.time() - t0) / n}
    if unconditional:
        video = generate(model, [None] * n, guidance=1.0, steps=steps, seed=seed)
        out["unconditional"] = probe_accuracy(probe, video, labels)
    return out
