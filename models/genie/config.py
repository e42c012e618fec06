"""Genie configurations: dataclasses with the paper's values (Bruce et al. 2024, Table/App. of
arXiv 2402.15391) noted beside ours.

`tiny` trains on a 2-core CPU in minutes (the `wmk demo` budget); `base` is a one-GPU size
(the speed target's 64x64, 16 frames, d=512, 12 layers dynamics).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

# Held-out clips the CLI and the demo evaluate on: the action metrics read all of them (one
# LAM pass; NMI on 128 clips is too noisy to compare runs by), tokenizer PSNR and ΔtPSNR,
# which decode pixels and generate, the first IMAGE_CLIPS (evaluate.py).
EVAL_CLIPS = 1024
IMAGE_CLIPS = 128
# World clips rendered for training (the demo's and ablate's default). On 2048 the dynamics
# learns its clips rather than the world within its 4000 steps; on 8192 it does not, and
# its rollouts hold together longer (RESULTS.md, "The preset before: 8192 training clips");
# 16384 measured no better (RESULTS.md, "The preset before: codes for rare patches").
TRAIN_CLIPS = 8192


def _positive(name: str, value, kind=int) -> None:
    if not isinstance(value, kind) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


@dataclass
class TokenizerConfig:
    """ST-ViViT VQ-VAE. Paper: patch 4, 1024 codes of dim 32, d_model 512, 12+20 layers."""

    patch: int = 4                # paper 4
    dim: int = 64                 # paper 512
    heads: int = 2                # paper 8 (head dim 64); ours keeps head dim 32
    enc_layers: int = 2           # paper 12
    dec_layers: int = 2           # paper 20
    codebook_size: int = 1024     # paper 1024 (512 measured lower: RESULTS.md)
    code_dim: int = 32            # paper 32
    commitment_weight: float = 0.25
    # Not in the paper: pulls together the latents of a patch whose pixels did not change
    # between frames (VideoTokenizer.stability_loss), so that it keeps its code. Without it
    # the encoder's attention carried moving objects into the codes of patches that stayed
    # put (74% kept their code; 94% at 4, with the same PSNR) and the dynamics had to
    # predict those changes too (RESULTS.md, "Codes that stay put")
    stability_weight: float = 4.0
    # A code whose EMA usage per batch falls below this is restarted on a batch vector
    # (wmkernels.nn.VectorQuantizer). At 1.0 the codes of rare patches (a ball's corner in
    # one colour) kept being restarted, so those patches shared codes across colours and
    # the decoder painted them from context, often in the agent's colour; at 0.1 half again
    # as many codes stay in use (RESULTS.md, "The preset before: codes for rare patches")
    dead_code_threshold: float = 0.1
    # Not in the paper: the squared error of the pixels that moved (VideoTokenizer.forward)
    # counted this many times more. Off: at 4 with 1800 steps the reconstruction kept the
    # agent whole in 96.7 / 98.9% of frames (seeds 0 / 1; 94.9 / 96.9% with the preset) but
    # its codes were harder to predict and the rollouts no better (RESULTS.md, "The
    # tokenizer's loss on what moved")
    motion_weight: float = 0.0

    def validate(self, image_size: int) -> None:
        for name in ("patch", "dim", "heads", "enc_layers", "dec_layers", "codebook_size",
                     "code_dim"):
            _positive(f"tokenizer.{name}", getattr(self, name))
        for name in ("stability_weight", "dead_code_threshold", "motion_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"tokenizer.{name} must be >= 0, got {getattr(self, name)!r}")
        if image_size % self.patch:
            raise ValueError(f"tokenizer.patch ({self.patch}) must divide image_size "
                             f"({image_size})")
        if self.dim % self.heads:
            raise ValueError(f"tokenizer.dim ({self.dim}) must be divisible by tokenizer.heads "
                             f"({self.heads})")


@dataclass
class LAMConfig:
    """Latent action model. Paper: patch 16, 8 codes of dim 32, d_model 1024, 20+20 layers."""

    # paper 16 (on 160x90 frames). Ours is the tokenizer's patch, and the tiny world's agent
    # moves one patch per step: then "left" is the same operation on the patch grid wherever
    # the agent is (a larger patch made the codes name the agent's position: RESULTS.md).
    patch: int = 4
    dim: int = 64                 # paper 1024
    heads: int = 2                # paper 16
    enc_layers: int = 2           # paper 20
    dec_layers: int = 2           # paper 20
    num_actions: int = 8          # paper 8 (the user's "buttons")
    code_dim: int = 32            # paper 32
    # Paper: not given (VQ-VAE's usual 0.25). Next to the LAM's tiny next-frame MSE, 0.25
    # pulls every latent onto one point; at 0.002 the codes carry what the decoder uses
    # (RESULTS.md).
    commitment_weight: float = 0.002

    def validate(self, image_size: int) -> None:
        for name in ("patch", "dim", "heads", "enc_layers", "dec_layers", "num_actions",
                     "code_dim"):
            _positive(f"lam.{name}", getattr(self, name))
        if image_size % self.patch:
            raise ValueError(f"lam.patch ({self.patch}) must divide image_size ({image_size})")
        if self.dim % self.heads:
            raise ValueError(f"lam.dim ({self.dim}) must be divisible by lam.heads "
                             f"({self.heads})")


@dataclass
class DynamicsConfig:
    """MaskGIT ST-transformer. Paper: d_model 5120, 48 layers (the 10.1B model), mask rate
    U(0.5, 1), 25 MaskGIT steps at temperature 2 with random sampling."""

    # paper 5120. At 64 wide the rollouts fell apart within two frames (the model barely beat
    # copying its past); 128 wide is the step that made the agent follow its actions
    # (models/genie/RESULTS.md, "Rollouts as a viewer sees them")
    dim: int = 128
    heads: int = 4                # paper 36; head dim 32
    layers: int = 3               # paper 48
    mask_min: float = 0.5         # paper 0.5
    mask_max: float = 1.0         # paper 1.0
    # paper 25. 16 or 25 kept the preset's agent whole no more often than 8, at 2-3x the
    # passes a frame (RESULTS.md, "The MaskGIT steps on the preset's dynamics")
    maskgit_steps: int = 8
    # paper 2.0 (random sampling). With argmax tokens the tiny model's rollouts measured a
    # little better than at 0.5, or level, on each of five checkpoints; the choice noise
    # still varies the order tokens are kept in (RESULTS.md, "The preset: 4000 steps,
    # argmax tokens")
    temperature: float = 0.0
    choice_temperature: float = 4.5  # MaskGIT's default annealed choice noise
    # In training, each frame after the first has up to this fraction of its visible tokens
    # replaced by codes from elsewhere in the batch, as a rollout feeds the model its own
    # mistakes. Off: alone 0.1 measured no better than 0 and 0.3 worse; with clean_frames
    # 0.5 it helped on seed 0 and not on seed 1 (RESULTS.md, "Whole past frames")
    context_noise: float = 0.0
    # In training, each frame after the first is shown whole (context, no loss) with this
    # probability. With every frame masked at U(mask_min, mask_max), as in the paper, the
    # only whole frame the model sees is the first, while at generation every past frame is
    # whole; 0.5 made frames generated from the real past hold up over t, but not rollouts
    clean_frames: float = 0.0
    # In training, each frame after the first is replaced (whole, context, no loss) with this
    # probability by the model's own one-pass prediction of it, so that it learns to go on
    # from frames with its own kind of mistakes in them, as a rollout's (scheduled sampling;
    # DynamicsModel.predicted_context). Costs one more forward pass per step
    predicted_frames: float = 0.0
    # Not in the paper: the cross-entropy of a masked code that differs from the code at the
    # same place in the frame before (what moved: 14% of codes, half of them predicted
    # right, the rest 99%) counted this many times more (DynamicsModel.loss). Off: at 2 the
    # rollouts kept the agent whole in fewer frames on seeds 0 and 1 (RESULTS.md, "The
    # dynamics' loss on the codes that changed")
    change_weight: float = 0.0
    # Not in the paper: generation uses an average of the weights over the second half of
    # the training steps (train.DynamicsObjective), a plain mean until 1/(1 - weight_ema)
    # steps are in it, then an exponential moving average of this decay; 0: off, the last
    # step's weights. The last weights still move with the last batches; the average keeps
    # the agent whole in 0.8 / 1.1 / 0.6 points more of the rollouts' frames of seeds
    # 0 / 1 / 2 on 512 held-out clips, within 2 px in 0.6 / 1.7 / 2.1 more, for about 3 s
    # of 2000 updates (RESULTS.md, "The preset before: averaged weights for the dynamics")
    weight_ema: float = 0.998
    # Not in the paper: rotary positions on q and k in both attentions (the row-major patch
    # index within a frame, the frame index in time) beside the learned absolute positions,
    # so that attention tells "the patch beside me" the same way anywhere in the frame. The
    # rollouts keep the agent whole in 96.1 / 96.6 / 97.5% of generated frames on seeds
    # 0 / 1 / 2 (94.4 / 95.5 / 94.8% without); the demo trains 5-6 minutes longer on the
    # 2-core CPU (RESULTS.md, "The preset: rotary positions in the dynamics")
    rope: bool = True

    def validate(self) -> None:
        for name in ("dim", "heads", "layers", "maskgit_steps"):
            _positive(f"dynamics.{name}", getattr(self, name))
        if self.dim % self.heads:
            raise ValueError(f"dynamics.dim ({self.dim}) must be divisible by dynamics.heads "
                             f"({self.heads})")
        if not 0.0 <= self.mask_min <= self.mask_max <= 1.0:
            raise ValueError("need 0 <= dynamics.mask_min <= dynamics.mask_max <= 1, got "
                             f"{self.mask_min}, {self.mask_max}")
        if not 0.0 <= self.clean_frames < 1.0:
            raise ValueError(f"dynamics.clean_frames must be in [0, 1), got "
                             f"{self.clean_frames}")
        if not 0.0 <= self.predicted_frames < 1.0:
            raise ValueError(f"dynamics.predicted_frames must be in [0, 1), got "
                             f"{self.predicted_frames}")
        if not 0.0 <= self.weight_ema < 1.0:
            raise ValueError(f"dynamics.weight_ema must be in [0, 1), got {self.weight_ema}")
        if not 0.0 <= self.context_noise <= 1.0:
            raise ValueError(f"dynamics.context_noise must be in [0, 1], got "
                             f"{self.context_noise}")
        if not self.change_weight >= 0:
            raise ValueError(f"dynamics.change_weight must be >= 0, got {self.change_weight}")
        if self.temperature < 0 or self.choice_temperature < 0:
            raise ValueError("dynamics.temperature and choice_temperature must be >= 0, got "
                             f"{self.temperature}, {self.choice_temperature}")


@dataclass
class GenieTraining:
    """Optimisation for every phase (paper: AdamW, warmup, cosine decay; 16 frames)."""

    batch_size: int = 16
    # The tokenizer and LAM step counts and lr are the smallest that met the quality targets
    # of `wmk demo` on every training seed (RESULTS.md, "Measurements behind the tiny preset").
    tokenizer_steps: int = 1200
    # trains beside the tokenizer (train.py) and takes about as long, so neither waits
    lam_steps: int = 1200
    # on the frozen tokenizer's codes and LAM's actions. 4000 rather than the 2000 that met
    # the first targets: twice the training lifted every rollout metric on all three seeds,
    # for 15-19 more minutes on the slower 2-core machine (RESULTS.md, "Training length")
    dynamics_steps: int = 4000
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    eval_every: int = 200
    seed: int = 0

    def validate(self) -> None:
        for name in ("batch_size", "eval_every"):
            _positive(f"train.{name}", getattr(self, name))
        for name in ("tokenizer_steps", "lam_steps", "dynamics_steps", "warmup"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"train.{name} must be an int >= 0, got {value!r}")
        _positive("train.lr", self.lr, float)


# Settings added after checkpoints were written with their sub-config: a config without one
# trained with the value given here (GenieConfig.from_dict), not with today's default.
_BEFORE_THEY_EXISTED = {
    "tokenizer": {"stability_weight": 0.0, "dead_code_threshold": 1.0, "motion_weight": 0.0},
    "dynamics": {"rope": False},
}


@dataclass
class GenieConfig:
    """Everything a Genie run needs. `image_size` x `image_size` RGB frames, clips of
    `frames` frames (paper: 16 frames at 160x90)."""

    name: str = "tiny"
    image_size: int = 32
    frames: int = 8
    # WorldConfig overrides of the embedded world (models/data). At 32x32 the default agent
    # (4 px, moving ~1 px per step) is too small and slow for a minutes-long run to see its
    # actions; a bigger agent (6 px) moving one 4-px patch per step and one distractor ball
    # keep the task the same kind. The behaviour policy draws a fresh action every step
    # (sticky 0, where the world's default is 0.8): a held action pins the agent to a wall,
    # where left or right look like noop, and a past that predicts the next action leaves
    # the latent action less to say (models/genie/RESULTS.md).
    world: dict = field(default_factory=lambda: {"agent_size": 0.1875, "agent_speed": 0.125,
                                                 "sticky": 0.0, "num_balls": 1})
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    lam: LAMConfig = field(default_factory=LAMConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    train: GenieTraining = field(default_factory=GenieTraining)

    def validate(self) -> GenieConfig:
        """Raise ValueError naming the first bad field; return self."""
        _positive("image_size", self.image_size)
        if not isinstance(self.frames, int) or self.frames < 2:
            raise ValueError(f"frames must be an int >= 2 (a frame and its successor), got "
                             f"{self.frames!r}")
        self.world_config()
        self.tokenizer.validate(self.image_size)
        self.lam.validate(self.image_size)
        self.dynamics.validate()
        self.train.validate()
        return self

    def world_config(self):
        """The embedded world's `WorldConfig` with this config's overrides and image size."""
        from wmkernels.models.data import WorldConfig

        return WorldConfig.from_overrides(self.world, size=self.image_size)

    @property
    def tokens_per_frame(self) -> int:
        return (self.image_size // self.tokenizer.patch) ** 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GenieConfig:
        """Inverse of to_dict; unknown keys raise ValueError. A tokenizer without
        stability_weight, dead_code_threshold or motion_weight (a config from before it
        existed) reads 0, 1 or 0, and a dynamics without rope reads False: what it trained
        with."""
        subs = {"tokenizer": TokenizerConfig, "lam": LAMConfig, "dynamics": DynamicsConfig,
                "train": GenieTraining}
        kwargs = {}
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in d.items():
            if key not in names:
                raise ValueError(f"unknown GenieConfig field {key!r}; expected one of "
                                 f"{sorted(names)}")
            if key in subs:
                value = {**_BEFORE_THEY_EXISTED.get(key, {}), **value}
                sub_names = {f.name for f in dataclasses.fields(subs[key])}
                bad = set(value) - sub_names
                if bad:
                    raise ValueError(f"unknown {key} field(s) {sorted(bad)}; expected a subset "
                                     f"of {sorted(sub_names)}")
                value = subs[key](**value)
            kwargs[key] = value
        return cls(**kwargs).validate()


def _tiny() -> GenieConfig:
    return GenieConfig()


def _micro() -> GenieConfig:
    """Seconds-long smoke-test size (tests and CI), not meant to learn much."""
    return GenieConfig(
        name="micro", image_size=16, frames=5, world={"num_balls": 1},
        tokenizer=TokenizerConfig(patch=4, dim=32, heads=1, enc_layers=1, dec_layers=1,
                                  codebook_size=32, code_dim=8),
        lam=LAMConfig(patch=8, dim=32, heads=1, enc_layers=1, dec_layers=1, code_dim=8),
        dynamics=DynamicsConfig(dim=32, heads=1, layers=1, maskgit_steps=3),
        train=GenieTraining(batch_size=4, tokenizer_steps=3, lam_steps=3, dynamics_steps=3,
                            lr=3e-3, warmup=1, eval_every=2))


def _base() -> GenieConfig:
    """One-GPU size; the dynamics matches the speed target (64x64, 16 frames, d=512,
    12 layers)."""
    return GenieConfig(
        name="base", image_size=64, frames=16, world={},
        tokenizer=TokenizerConfig(patch=4, dim=256, heads=8, enc_layers=4, dec_layers=6,
                                  codebook_size=1024, code_dim=32),
        lam=LAMConfig(patch=16, dim=256, heads=8, enc_layers=4, dec_layers=4),
        dynamics=DynamicsConfig(dim=512, heads=8, layers=12, maskgit_steps=25,
                                temperature=2.0),
        train=GenieTraining(batch_size=32, tokenizer_steps=20000, lam_steps=20000,
                            dynamics_steps=40000, lr=3e-4, warmup=1000, eval_every=2000))


PRESETS = {"micro": _micro, "tiny": _tiny, "base": _base}


def get_config(name: str) -> GenieConfig:
    """A fresh copy of the preset `name` ("micro", "tiny" or "base")."""
    if name not in PRESETS:
        raise ValueError(f"config must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]().validate()
