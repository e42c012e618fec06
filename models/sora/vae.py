"""Video VAE: compresses clips in space and time, causal in time.

Open-Sora and MAGVIT-v2 compress video with 3-D convolutions that are causal along time: the
first frame is encoded alone (so a single image is a valid one-frame clip), and every later
latent frame summarises the next `time_down` frames. A clip of `T = 1 + time_down * k` frames
becomes `1 + k` latent frames. Each time-halving stage is a causal convolution with stride 2
(output frame j sees input frames <= 2j), and the decoder's time-doubling stage is its mirror
(latent frame 0 -> one frame, every other latent frame -> two frames).

Tensors: pixels (B, T, 3, H, W) float in [-1, 1]; latents (B, T', C, H', W') with
T' = 1 + (T - 1) // time_down, H' = H // space_down. The latent is a diagonal Gaussian
(KL-regularised with a small weight, as in the Stable Diffusion / Open-Sora VAEs) so the
diffusion model gets a smooth latent space; `encode` returns its mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels.models.common.distributed import DistInfo, rank_mean, rank_rows


@dataclass
class VAEConfig:
    """Video VAE sizes. Paper-scale (Open-Sora 1.2): 8x space, 4x time, 4 latent channels,
    128-512 conv channels. Ours (tiny): 4x space, 4x time, 16 latent channels, 16-64."""

    channels: tuple[int, ...] = (16, 32, 64)   # width after each stage; len = space stages + 1
    time_down_stages: int = 2                  # the first stages also halve time: 2**n = 4x
    latent_channels: int = 16
    kl_weight: float = 1e-6
    # Extra reconstruction weight on object pixels (those away from the frame's median,
    # i.e. background, colour). In the embedded world objects cover ~15% of the pixels and
    # carry all the colour; unweighted, the VAE learns their shapes long before their hues.
    foreground_weight: float = 4.0

    @property
    def space_down(self) -> int:
        return 2 ** (len(self.channels) - 1)

    @property
    def time_down(self) -> int:
        return 2 ** self.time_down_stages

    def validate(self) -> None:
        if len(self.channels) < 2:
            raise ValueError(f"VAEConfig.channels needs >= 2 entries, got {self.channels}")
        if not 0 <= self.time_down_stages <= len(self.channels) - 1:
            raise ValueError(f"VAEConfig.time_down_stages must be in [0, {len(self.channels) - 1}]"
                             f", got {self.time_down_stages}")
        if self.foreground_weight < 0:
            raise ValueError(f"VAEConfig.foreground_weight must be >= 0, got "
                             f"{self.foreground_weight}")
        if self.latent_channels < 1:
            raise ValueError(f"VAEConfig.latent_channels must be >= 1, got {self.latent_channels}")


class CausalConv3d(nn.Module):
    """Conv3d over (B, C, T, H, W) padded only on the past side of time (zeros), 'same' in space.
    With time stride 2 the output frame j sees input frames <= 2j."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (3, 3, 3),
                 stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        kt, kh, kw = kernel
        self.time_pad = kt - 1
        self.space_pad = (kw // 2, kw // 2, kh // 2, kh // 2)
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (*self.space_pad, self.time_pad, 0))
        return self.conv(x)


class FrameNorm(nn.GroupNorm):
    """GroupNorm over each frame separately: statistics across time would leak the future
    into the past and break causality."""

    def __init__(self, channels: int):
        super().__init__(math.gcd(channels, 8), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.view(b, t, c, h, w).transpose(1, 2)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> causal conv, twice, with a residual. `kt=1` keeps it per frame,
    which is where the full-resolution blocks stay cheap on a CPU."""

    def __init__(self, cin: int, cout: int, kt: int):
        super().__init__()
        self.norm1 = FrameNorm(cin)
        self.conv1 = CausalConv3d(cin, cout, (kt, 3, 3))
        self.norm2 = FrameNorm(cout)
        self.conv2 = CausalConv3d(cout, cout, (kt, 3, 3))
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve space (stride-2 conv) and optionally time (causal stride-2: T -> 1 + (T-1)//2)."""

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.conv = CausalConv3d(cin, cout, (3 if time else 1, 3, 3),
                                 stride=(2 if time else 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double space (nearest + conv) and optionally time: a causal conv makes two frames per
    latent frame (channels split into two time phases); frame 0 keeps only its second phase,
    so T -> 2T - 1, mirroring Downsample."""

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.time = time
        self.conv = CausalConv3d(cin, cout * (2 if time else 1), (3 if time else 1, 3, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")
        x = self.conv(x)
        if self.time:
            b, c2, t, h, w = x.shape
            x = x.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5)
            x = x.reshape(b, c2 // 2, 2 * t, h, w)[:, :, 1:]
        return x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        self.conv_in = CausalConv3d(3, ch[0], (1, 3, 3))
        blocks = []
        for i in range(len(ch) - 1):
            kt = 1 if i == 0 else 3
            blocks += [ResBlock(ch[i], ch[i], kt), Downsample(ch[i], ch[i + 1],
                                                              time=i < cfg.time_down_stages)]
        self.blocks = nn.Sequential(*blocks)
        self.mid = ResBlock(ch[-1], ch[-1], 3)
        self.norm_out = FrameNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, (1, 3, 3))
        # Start the posterior's log-variance at -10 (std ~0.007): with the default 0, unit
        # noise drowns the small initial means and the decoder first learns blurry, colourless
        # averages (the KL weight is too small to matter either way).
        with torch.no_grad():
            self.conv_out.conv.bias[cfg.latent_channels:].fill_(-10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch = cfg.channels
        n = len(ch) - 1
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[-1], (3, 3, 3))
        self.mid = ResBlock(ch[-1], ch[-1], 3)
        blocks = []
        for i in reversed(range(n)):
            kt = 1 if i == 0 else 3
            blocks += [Upsample(ch[i + 1], ch[i], time=i < cfg.time_down_stages),
                       ResBlock(ch[i], ch[i], kt)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = FrameNorm(ch[0])
        self.conv_out = CausalConv3d(ch[0], 3, (1, 3, 3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VideoVAE(nn.Module):
    """Causal video VAE. Pixels (B, T, 3, H, W) in [-1, 1] <-> latents (B, T', C, H', W')."""

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or VAEConfig()
        self.cfg.validate()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(T', C, H', W') of the latent of a (frames, 3, height, width) clip; raises
        ValueError when the sizes do not fit the compression (see `check_video_shape`)."""
        self.check_video_shape(frames, height, width)
        c = self.cfg
        return (1 + (frames - 1) // c.time_down, c.latent_channels,
                height // c.space_down, width // c.space_down)

    def check_video_shape(self, frames: int, height: int, width: int) -> None:
        c = self.cfg
        if frames < 1 or (frames - 1) % c.time_down:
            raise ValueError(f"frames must be 1 + {c.time_down}*k (the first frame is encoded "
                             f"alone), got {frames}")
        if height % c.space_down or width % c.space_down or height < 1 or width < 1:
            raise ValueError(f"height and width must be positive multiples of {c.space_down}, "
                             f"got {height}x{width}")

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 5 or x.shape[2] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"video must be a (B, T, 3, H, W) tensor, got {shape}")
        self.check_video_shape(x.shape[1], x.shape[3], x.shape[4])

    def encode_dist(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of q(z | x), each (B, T', C, H', W')."""
        self._check(x)
        h = self.encoder(x.transpose(1, 2)).transpose(1, 2)
        mean, logvar = h.chunk(2, dim=2)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent mean (B, T', C, H', W') of pixels (B, T, 3, H, W) in [-1, 1]."""
        return self.encode_dist(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 1 + time_down*(T'-1), 3, H'*s, W'*s), roughly in [-1, 1] (not clamped)."""
        if not isinstance(z, torch.Tensor) or z.dim() != 5 \
                or z.shape[2] != self.cfg.latent_channels:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"latent must be (B, T', {self.cfg.latent_channels}, H', W'), "
                             f"got {shape}")
        return self.decoder(z.transpose(1, 2)).transpose(1, 2)

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None,
             dist: DistInfo | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss: L1 + MSE reconstruction of a posterior sample, each pixel weighted
        1 + foreground_weight * [pixel is off the frame's median colour by > 0.1], plus
        kl_weight * KL to N(0, I) (per element). Returns (loss, {"mse", "kl", "psnr"}).

        dist: under DDP, `x` is this rank's equal share of the global batch; the posterior
        noise and the weights' normaliser are then the global batch's, so the ranks'
        averaged gradients are those of one process on the whole batch."""
        mean, logvar = self.encode_dist(x)
        noise = rank_rows(lambda n: torch.randn((n, *mean.shape[1:]), generator=generator,
                                                device=mean.device, dtype=mean.dtype),
                          mean.shape[0], dist)
        z = mean + torch.exp(0.5 * logvar) * noise
        rec = self.decode(z)
        mse = F.mse_loss(rec, x)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        background = x.flatten(3).median(dim=3).values[..., None, None]   # (B, T, 3, 1, 1)
        fg = ((x - background).abs().amax(dim=2, keepdim=True) > 0.1).to(x.dtype)
        weight = 1.0 + self.cfg.foreground_weight * fg
        err = rec - x
        recon = (weight * (err.abs() + err.pow(2))).mean() / rank_mean(weight.mean(), dist)
        loss = recon + self.cfg.kl_weight * kl
        return loss, {"mse": mse.item(), "kl": kl.item(), "psnr": psnr(rec, x)}

    forward = loss   # the training loss is what DDP wraps and calls


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of pixels in [-1, 1] (rescaled to [0, 1], `pred` clamped), over all elements."""
    p = (pred.detach().clamp(-1, 1) + 1) / 2
    t = (target.detach() + 1) / 2
    mse = F.mse_loss(p.float(), t.float()).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)
