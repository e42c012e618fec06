"""Action-conditioned world model in representation space (V-JEPA 2-AC, simplified).

A frozen JEPA encoder maps each frame to tokens z_t (B, S, C). The predictor reads the
frames' tokens with the action taken at each frame added as an embedding, and predicts the
next frame's tokens: block-causal over frames (full attention inside a frame, causal
temporal attention across frames, both through wmkernels), so output t depends only on
z_<=t and a_<=t. It is trained with a teacher-forcing L1 loss plus an autoregressive rollout
L1 loss, as in V-JEPA 2-AC.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wmkernels.models.common import sincos_3d
from wmkernels.models.jepa.vit import (
    Block,
    VisionTransformer,
    build_encoder,
    init_weights,
    layer_norm_targets,
)


class FrameEncoder(nn.Module):
    """Per-frame features from a frozen JEPA encoder: frames (B, T, C, H, W) -> (B, T, S, C).

    A video encoder (frames > 1) sees each frame repeated over its whole clip length and its
    tubelet tokens are averaged over time, as V-JEPA 2-AC encodes single frames. Features are
    LayerNorm'd per token (the space the JEPA predictor regresses into). No gradients.
    """

    def __init__(self, encoder: VisionTransformer):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def grid_hw(self) -> tuple[int, int]:
        return self.encoder.grid[1:]

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 5:
            raise ValueError(f"frames must be (B, T, C, H, W), got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        x = frames.flatten(0, 1).unsqueeze(1).expand(-1, self.encoder.frames, -1, -1, -1)
        z = self.encoder(x).mean(dim=1)                         # (B*T, S, C)
        return layer_norm_targets(z).view(b, t, *z.shape[1:])


class ActionConditionedPredictor(nn.Module):
    """Block-causal predictor of the next frame's features from features and actions.

    Args:
        enc_dim: encoder width; grid_hw: encoder's (H, W) token grid; num_actions: size of the
        discrete action set; max_frames: longest sequence it will read.
        dim, depth, heads, mlp_ratio: transformer sizes.

    forward(z, actions): z float (B, T, S, enc_dim), actions int64 (B, T) with the action
    taken at each frame. Returns (B, T, S, enc_dim): output t predicts z_{t+1}, as z_t plus
    a predicted change.
    """

    def __init__(self, *, enc_dim: int, grid_hw: tuple[int, int], num_actions: int,
                 max_frames: int, dim: int = 128, depth: int = 3, heads: int = 4,
                 mlp_ratio: float = 4.0):
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {num_actions!r}")
        self.num_actions, self.max_frames = num_actions, max_frames
        self.embed = nn.Linear(enc_dim, dim)
        self.action_embed = nn.Embedding(num_actions, dim)
        self.register_buffer("pos", sincos_3d(max_frames, *grid_hw, dim), persistent=False)
        self.blocks = nn.ModuleList(Block(dim, heads, "factorized", mlp_ratio=mlp_ratio,
                                          causal_time=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, enc_dim)
        init_weights(self)
        # Unit-scale action embeddings (not the 0.02 of the other weights): the action is the
        # only input that separates futures, and a tiny embedding leaves the predictor to
        # learn the action-independent average first and the action's effect much later.
        nn.init.normal_(self.action_embed.weight, std=1.0)
        # The output is a residual on the current frame's features and starts at zero, so
        # the untrained predictor says "nothing changes" and learning goes to the change.
        nn.init.zeros_(self.out.weight)

    def forward(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b, t, s, _ = z.shape
        if actions.shape != (b, t):
            raise ValueError(f"actions must be ({b}, {t}) to match z, got {tuple(actions.shape)}")
        if t > self.max_frames:
            raise ValueError(f"z has {t} frames, more than max_frames={self.max_frames}")
        if s != self.pos.shape[1]:
            raise ValueError(f"z has {s} tokens per frame, expected {self.pos.shape[1]}")
        x = self.embed(z) + self.pos[:t] + self.action_embed(actions)[:, :, None]
        for block in self.blocks:
            x = block(x)
        return z + self.out(self.norm(x))

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Autoregressive prediction: z0 (B, T0, S, C) observed, actions (B, T0 - 1 + H) for
        every observed and predicted frame; returns the H predicted frames (B, H, S, C)."""
        t0 = z0.shape[1]
        horizon = actions.shape[1] - t0 + 1
        if horizon < 1:
            raise ValueError(f"actions must cover the {t0} observed frames and at least one "
                             f"step, got {actions.shape[1]} actions")
        zs = z0
        for _ in range(horizon):
            nxt = self(zs, actions[:, :zs.shape[1]])[:, -1:]
            zs = torch.cat([zs, nxt], dim=1)
        return zs[:, t0:]

    def loss(self, z: torch.Tensor, actions: torch.Tensor, rollout: int = 2,
             kind: str = "l1") -> tuple[torch.Tensor, dict]:
        """Teacher-forcing + rollout loss on a clip of features z (B, T, S, C) whose frame t
        was followed by actions[:, t] (B, T - 1). kind: "l1" (V-JEPA 2-AC) or "l2".
        Returns (loss, stats)."""
        if kind not in ("l1", "l2"):
            raise ValueError(f"kind must be 'l1' or 'l2', got {kind!r}")
        dist = F.l1_loss if kind == "l1" else F.mse_loss
        t = z.shape[1]
        if actions.shape != (z.shape[0], t - 1):
            raise ValueError(f"actions must be ({z.shape[0]}, {t - 1}) for {t} frames, "
                             f"got {tuple(actions.shape)}")
        tf = dist(self(z[:, :-1], actions), z[:, 1:])
        steps = min(rollout, t - 1)
        ro = dist(self.rollout(z[:, :1], actions[:, :steps]), z[:, 1:1 + steps])
        loss = tf + ro
        return loss, {"loss": float(loss.detach()), "teacher_forcing": float(tf.detach()),
                      "rollout": float(ro.detach())}


class ACWorldModel(nn.Module):
    """Frozen frame encoder + action-conditioned predictor: the model `wmk jepa plan` uses.

    Built from an `ACConfig` whose `encoder` field is set. The encoder's weights come from a
    JEPA checkpoint's target encoder (see `train.train_ac`); only the predictor trains.
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.encoder is None:
            raise ValueError("ACConfig.encoder must be set (the frozen encoder's config)")
        self.cfg = cfg
        self.frame_encoder = FrameEncoder(build_encoder(cfg.encoder))
        self.predictor = ActionConditionedPredictor(
            enc_dim=cfg.encoder.dim, grid_hw=self.frame_encoder.grid_hw,
            num_actions=cfg.num_actions, max_frames=max(cfg.frames, 16), dim=cfg.dim,
            depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio)
