"""JEPA configurations. Our tiny CPU values first; the papers' values in the comments.

`CONFIGS[variant][name]` lists the named presets the command line accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wmkernels.models.data import WorldConfig


def tiny_world() -> dict:
    """WorldConfig overrides of the world the tiny configs train and are probed in: the
    agent and the balls at twice the default size, 16 px at 64 px, so 2 x 2 patches of 8.
    Why: a one-patch object is hidden or visible whole under the masks, so nothing about
    its appearance is predictable and the objective drops it (models/jepa/RESULTS.md,
    "Measurements behind the tiny presets")."""
    return {"agent_size": 0.25, "ball_radius": 0.125}


def world_of(cfg) -> WorldConfig:
    """The WorldConfig of a JEPA config: its `world` overrides; an AC config plans in that
    world with `world_balls` balls."""
    fixed = {"num_balls": cfg.world_balls} if hasattr(cfg, "world_balls") else {}
    return WorldConfig.from_overrides(getattr(cfg, "world", None) or {}, **fixed)


@dataclass
class EncoderConfig:
    image_size: int = 64          # I-JEPA 224 / V-JEPA 224
    patch: int = 8                # 14 (ViT-H/14) / 16
    frames: int = 1               # 1 / 16
    tubelet: int = 1              # 1 / 2
    channels: int = 3
    dim: int = 64                 # 1280 (ViT-H) / 1024 (ViT-L)
    depth: int = 3                # 32 / 24
    heads: int = 2                # 16 / 16
    mlp_ratio: float = 4.0
    attention: str = "spatial"    # images: spatial; video: factorized (ours) or joint (paper)


@dataclass
class PredictorConfig:
    dim: int = 64                 # 384 / 384
    depth: int = 2                # 12 / 12
    heads: int = 2                # 12 / 12
    mlp_ratio: float = 4.0


@dataclass
class IJEPAConfig:
    """I-JEPA, tiny: the paper's momentum and learning rate, in a world whose objects span
    2 x 2 patches (`tiny_world`); its probe results are in models/jepa/RESULTS.md."""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    num_targets: int = 4                                  # 4
    target_scale: tuple[float, float] = (0.15, 0.2)       # (0.15, 0.2)
    target_aspect: tuple[float, float] = (0.75, 1.5)      # (0.75, 1.5)
    context_scale: tuple[float, float] = (0.85, 1.0)      # (0.85, 1.0)
    # With 2 x 2-patch objects the paper's 0.996 keeps the target features healthy and
    # probes better than 0.999 (RESULTS.md).
    ema: tuple[float, float] = (0.996, 1.0)               # (0.996, 1.0)
    lr: float = 1e-3                                      # 1e-3 peak, cosine
    weight_decay: float = 0.04                            # 0.04 -> 0.4
    warmup: int = 50                                      # 40 epochs
    batch_size: int = 32                                  # 2048
    # About 6 CPU minutes; longer runs probe lower (RESULTS.md).
    steps: int = 5000                                     # 300 epochs of ImageNet
    world: dict = field(default_factory=tiny_world)       # ImageNet


@dataclass
class VJEPAConfig:
    """V-JEPA, tiny: I-JEPA's momentum and learning rate, one multi-block family of
    I-JEPA-sized blocks and our future family (predict frames 2-3 from frames 0-1), in
    `tiny_world`: without the future family it probed no better than a random encoder
    (models/jepa/RESULTS.md)."""
    encoder: EncoderConfig = field(default_factory=lambda: EncoderConfig(
        frames=4, tubelet=2, attention="factorized"))
    predictor: PredictorConfig = field(default_factory=lambda: PredictorConfig())
    masking: str = "multiblock"   # "multiblock" (paper) or "tube"
    # Multi-block families, (number of blocks, scale of each): one mask per family per
    # batch. The paper's short and long range, ((8, 0.15), (2, 0.7)), probed below the
    # random encoder here; blocks of I-JEPA's size (4 x 0.175) keep appearance.
    blocks: tuple[tuple[int, float], ...] = ((4, 0.175),)  # ((8, 0.15), (2, 0.7))
    tube_ratio: float = 0.9
    # Ours: one more family that predicts the later tubelets from the first
    # `future_context` ones (masks.FutureMasks); 0 leaves it out, as the paper does.
    future_context: int = 1                               # 0
    # I-JEPA's momentum and learning rate: the paper's 0.998 with its peak lr partly
    # collapsed the target features (RESULTS.md).
    ema: tuple[float, float] = (0.996, 1.0)               # (0.998, 1.0)
    lr: float = 1e-3                                      # 6.25e-4 peak
    weight_decay: float = 0.04                            # 0.04 -> 0.4
    warmup: int = 50
    batch_size: int = 16                                  # 3072
    steps: int = 5000                                     # 90k iterations
    world: dict = field(default_factory=tiny_world)       # VideoMix2M


@dataclass
class ACConfig:
    """Action-conditioned predictor on a frozen encoder (V-JEPA 2-AC, our tiny sizes).

    `encoder`, `source` and `world` are filled in from the JEPA checkpoint the encoder comes
    from.
    """
    encoder: EncoderConfig | None = None
    world: dict | None = None     # the encoder's world (with `world_balls` balls here)
    source: str = "vjepa"         # which JEPA variant's target encoder is frozen underneath
    num_actions: int = 5
    frames: int = 5               # context + predicted frames per training clip (paper 8)
    # World steps per predicted step, the action held throughout (action repeat). One world
    # step moves the agent ~2 px, a quarter of a patch: too small a change in the features
    # for a tiny predictor to pick out; four steps move it about a patch.
    action_repeat: int = 4
    # Bouncing balls in the world the predictor learns and plans in. Their motion is
    # action-independent and, from one frame, unpredictable (direction unknown); at this
    # size it drowns the agent's action-dependent change in the loss, so the tiny config
    # learns and plans in the world without balls (the encoder saw them in training).
    world_balls: int = 0
    dim: int = 64                 # 1024
    depth: int = 2                # 24
    heads: int = 2                # 16
    mlp_ratio: float = 4.0
    rollout: int = 2              # autoregressive steps in the rollout loss (paper 2)
    # "l1" in the paper: with L1 the tiny predictor stays at "nothing changes" (the median
    # change of almost every feature is zero); L2 learns the action's effect (RESULTS.md).
    loss: str = "l2"
    lr: float = 1e-3              # 4.25e-4
    weight_decay: float = 0.04
    warmup: int = 50
    batch_size: int = 16          # 256
    steps: int = 1000


CONFIGS = {
    "ijepa": {"tiny": IJEPAConfig},
    "vjepa": {"tiny": VJEPAConfig},
    "ac": {"tiny": ACConfig},
}


def get_config(variant: str, name: str):
    """The named preset of `variant` ("ijepa" | "vjepa" | "ac"). Raises ValueError."""
    if variant not in CONFIGS:
        raise ValueError(f"variant must be one of {tuple(CONFIGS)}, got {variant!r}")
    if name not in CONFIGS[variant]:
        raise ValueError(f"config for {variant} must be one of {tuple(CONFIGS[variant])}, "
                         f"got {name!r}")
    return CONFIGS[variant][name]()
