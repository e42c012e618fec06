"""The embedded 2D platformer world: configuration, physics and rendering.

Everything here is batched over B independent worlds (numpy arrays with a leading B axis),
so the step-by-step simulator (`World`) and the bulk clip generator (`make_clips`) run the
same code. Coordinates are normalized: the screen is the unit square, x to the right and
y *downwards* (image convention), so gravity adds to vy and "up" means smaller y. Rendering
at any `size` samples the scene at pixel centres, which keeps the physics independent of
resolution.

Scene (back to front): background, side walls and floor, one-way platforms (landed on from
above, passed through from below, dropped through with `down`), bouncing balls (constant
speed, reflected by walls, floor and ceiling; they ignore platforms and the agent), and the
agent (a square pushed by the actions, under gravity).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

ACTIONS: tuple[str, ...] = ("noop", "left", "right", "up", "down")
"""Discrete actions; the index is the action id. `up` jumps when standing and, in the air,
keeps a rising jump going (releasing it cuts the jump short, as in most platformers) or
glides down slowly; `down` crouches on the floor, drops through a platform when standing on
one and falls faster in the air. So every action has a visible effect in most states (not
left/right against a wall, nor near the top of a jump), which makes actions identifiable
from frames."""
NOOP, LEFT, RIGHT, UP, DOWN = range(len(ACTIONS))
NUM_ACTIONS = len(ACTIONS)

COLOUR_NAMES: tuple[str, ...] = (
    "red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white",
)
"""Object colours; the index is the colour id used in attributes and captions."""
PALETTE = np.array(
    [
        (230, 40, 40), (40, 200, 60), (50, 90, 240), (240, 220, 40),
        (220, 60, 220), (40, 220, 230), (250, 140, 30), (240, 240, 240),
    ],
    dtype=np.uint8,
)
BACKGROUND = np.array((18, 18, 28), dtype=np.uint8)
SOLID = np.array((110, 110, 125), dtype=np.uint8)  # walls, floor and platforms

DIRECTION_NAMES: tuple[str, ...] = (
    "right", "down-right", "down", "down-left", "left", "up-left", "up", "up-right",
)
"""Ball directions; id k is the angle k * 45 degrees with y pointing down (screen)."""
_DIRECTION_VECTORS = np.stack(
    [np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=-1
)


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the embedded world. Lengths are fractions of the screen width,
    velocities per step, accelerations per step squared.

    Raises:
        ValueError: naming the field, when a value is out of range (checked on creation).
    """

    size: int = 64                    # rendered frames are size x size RGB
    num_balls: int = 2                # bouncing balls per world (0..7)
    num_platforms: int = 2            # one-way platforms per world
    agent_size: float = 0.125         # side of the square agent (8 px at 64)
    agent_speed: float = 0.035        # horizontal speed while left/right is held
    gravity: float = 0.01
    jump_speed: float = 0.075         # initial upward speed of a jump (~0.28 high)
    fast_fall: float = 0.02           # extra downward acceleration for `down` in the air
    jump_cut: float = 0.02            # extra gravity while rising without holding `up`
    glide_speed: float = 0.015        # fall speed cap while holding `up` in the air
    max_fall_speed: float = 0.09      # terminal velocity; below the agent size, so no tunnelling
    ball_radius: float = 0.0625
    ball_speed: tuple[float, float] = (0.02, 0.04)   # uniform range of ball speeds
    wall_width: float = 0.03125
    floor_height: float = 0.0625
    platform_thickness: float = 0.03125
    platform_width: tuple[float, float] = (0.25, 0.45)
    platform_top: tuple[float, float] = (0.45, 0.8)  # y of a platform's top surface
    # Behaviour policy of generated clips: sticky random actions. With probability
    # `sticky` the previous action repeats, otherwise one is drawn from `action_probs`;
    # holding an action for several steps makes its effect visible (a jump needs ~15 steps).
    sticky: float = 0.8
    action_probs: tuple[float, ...] = (0.15, 0.25, 0.25, 0.2, 0.15)
    spawn_on_platform: float = 0.5    # probability that the agent starts on a platform

    def __post_init__(self) -> None:
        def check(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ValueError(
                    f"WorldConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
                )

        check("size", isinstance(self.size, int) and self.size >= 8, "an int >= 8")
        check("num_balls", isinstance(self.num_balls, int)
              and 0 <= self.num_balls <= len(COLOUR_NAMES) - 1, "an int in [0, 7]")
        check("num_platforms", isinstance(self.num_platforms, int) and self.num_platforms >= 0,
              "an int >= 0")
        for name in ("agent_size", "agent_speed", "gravity", "jump_speed", "ball_radius",
                     "wall_width", "floor_height", "platform_thickness", "max_fall_speed"):
            check(name, 0 < getattr(self, name) < 0.5, "a float in (0, 0.5)")
        for name in ("fast_fall", "jump_cut", "glide_speed"):
            check(name, 0 <= getattr(self, name) < 0.5, "a float in [0, 0.5)")
        check("max_fall_speed", self.max_fall_speed < self.agent_size,
              "less than agent_size (else the agent could pass through a platform)")
        for name in ("ball_speed", "platform_width", "platform_top"):
            lo, hi = getattr(self, name)
            check(name, 0 <= lo <= hi < 1, "a (low, high) pair with 0 <= low <= high < 1")
        check("platform_top", self.platform_top[1] < 1 - self.floor_height,
              "tops above the floor")
        inner = 1 - 2 * self.wall_width  # width between the walls
        check("platform_width", self.platform_width[1] <= inner, f"at most {inner} (between walls)")
        check("agent_size", self.agent_size < inner, f"less than {inner} (between walls)")
        check("ball_radius", 2 * self.ball_radius < min(inner, 1 - self.floor_height),
              "a ball that fits between the walls and above the floor")
        check("sticky", 0 <= self.sticky <= 1, "a probability in [0, 1]")
        probs = np.asarray(self.action_probs, dtype=np.float64)
        check("action_probs", probs.shape == (NUM_ACTIONS,) and (probs >= 0).all()
              and probs.sum() > 0, f"{NUM_ACTIONS} non-negative weights with a positive sum")
        check("spawn_on_platform", 0 <= self.spawn_on_platform <= 1, "a probability in [0, 1]")

    def replace(self, **changes) -> WorldConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_overrides(cls, overrides: dict, **fixed) -> WorldConfig:
        """The config a model config's `world` dict describes: `overrides` (possibly read
        back from JSON, so lists stand for tuples), then `fixed`, the fields the model
        config owns (e.g. `size`). Raises ValueError, prefixed "world", when `overrides` is
        not a dict, names an unknown field or holds an out-of-range value."""
        if not isinstance(overrides, dict):
            raise ValueError(f"world must be a dict of WorldConfig fields, got {overrides!r}")
        extra = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if extra:
            raise ValueError(f"world: unknown WorldConfig fields {sorted(extra)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        try:
            return cls(**{**kw, **fixed})
        except ValueError as exc:
            raise ValueError(f"world: {exc}") from None


@dataclass
class WorldState:
    """State of B worlds; every array has leading dimension B. Mutated in place by `step`.

    agent_colour (B,) int64, agent_x/agent_y/agent_vy (B,) float64 (agent centre, vertical
    velocity), on_ground (B,) bool, crouching (B,) bool (drawn half height), platforms
    (B, P, 3) float64 (x0, x1, top), ball_colour (B, K) int64, ball_pos/ball_vel (B, K, 2)
    float64, ball_direction (B, K) int64 (initial direction id), ball_speed (B, K) float64.
    """

    agent_colour: np.ndarray
    agent_x: np.ndarray
    agent_y: np.ndarray
    agent_vy: np.ndarray
    on_ground: np.ndarray
    crouching: np.ndarray
    platforms: np.ndarray
    ball_colour: np.ndarray
    ball_pos: np.ndarray
    ball_vel: np.ndarray
    ball_direction: np.ndarray
    ball_speed: np.ndarray

    @property
    def batch_size(self) -> int:
        return int(self.agent_x.shape[0])

    def copy(self) -> WorldState:
        """A deep copy (for planning: branch from a state without disturbing it)."""
        return WorldState(**{f.name: getattr(self, f.name).copy()
                             for f in dataclasses.fields(self)})

    def index(self, idx) -> WorldState:
        """The sub-batch `idx` (an index array, slice or boolean mask), as a copy."""
        return WorldState(**{f.name: np.array(getattr(self, f.name)[idx])
                             for f in dataclasses.fields(self)})


def _floor_top(cfg: WorldConfig) -> float:
    return 1.0 - cfg.floor_height


def sample_initial_state(cfg: WorldConfig, seeds: list[np.random.Generator]) -> WorldState:
    """Initial states, one per generator (world b is a function of seeds[b] alone)."""
    b, p, k = len(seeds), cfg.num_platforms, cfg.num_balls
    half = cfg.agent_size / 2
    lo_x, hi_x = cfg.wall_width + half, 1 - cfg.wall_width - half
    st = WorldState(
        agent_colour=np.zeros(b, np.int64), agent_x=np.zeros(b), agent_y=np.zeros(b),
        agent_vy=np.zeros(b), on_ground=np.ones(b, bool),
        crouching=np.zeros(b, bool), platforms=np.zeros((b, p, 3)),
        ball_colour=np.zeros((b, k), np.int64), ball_pos=np.zeros((b, k, 2)),
        ball_vel=np.zeros((b, k, 2)), ball_direction=np.zeros((b, k), np.int64),
        ball_speed=np.zeros((b, k)),
    )
    r = cfg.ball_radius
    for i, rng in enumerate(seeds):
        colours = rng.permutation(len(COLOUR_NAMES))[: k + 1]
        st.agent_colour[i], st.ball_colour[i] = colours[0], colours[1:]
        width = rng.uniform(*cfg.platform_width, size=p)
        x0 = rng.uniform(cfg.wall_width, 1 - cfg.wall_width - width)
        st.platforms[i] = np.stack([x0, x0 + width, rng.uniform(*cfg.platform_top, size=p)], -1)
        if p and rng.random() < cfg.spawn_on_platform:
            j = rng.integers(p)
            x0, x1, top = st.platforms[i, j]
            st.agent_x[i] = np.clip(rng.uniform(x0, x1), lo_x, hi_x)
            st.agent_y[i] = top - half
        else:
            st.agent_x[i] = rng.uniform(lo_x, hi_x)
            st.agent_y[i] = _floor_top(cfg) - half
        st.ball_direction[i] = rng.integers(8, size=k)
        st.ball_speed[i] = rng.uniform(*cfg.ball_speed, size=k)
        st.ball_pos[i, :, 0] = rng.uniform(cfg.wall_width + r, 1 - cfg.wall_width - r, size=k)
        st.ball_pos[i, :, 1] = rng.uniform(r, _floor_top(cfg) - r, size=k)
    st.ball_vel = _DIRECTION_VECTORS[st.ball_direction] * st.ball_speed[..., None]
    st.on_ground = _supported(cfg, st)  # it starts standing on the floor or its platform
    return st


def sample_actions(cfg: WorldConfig, rng: np.random.Generator, steps: int) -> np.ndarray:
    """Sticky random behaviour policy: (steps,) int64 action ids.

    The first action is drawn from `cfg.action_probs`; afterwards each step repeats the
    previous action with probability `cfg.sticky` and otherwise draws a fresh one.
    """
    probs = np.asarray(cfg.action_probs, dtype=np.float64)
    fresh = rng.choice(NUM_ACTIONS, size=steps, p=probs / probs.sum())
    keep = rng.random(steps) < cfg.sticky
    out = np.empty(steps, np.int64)
    for t in range(steps):
        out[t] = out[t - 1] if (t > 0 and keep[t]) else fresh[t]
    return out


def _supported(cfg: WorldConfig, st: WorldState) -> np.ndarray:
    """(B,) bool: the agent's bottom rests on the floor or on a platform it overlaps."""
    half = cfg.agent_size / 2
    bottom = st.agent_y + half
    on_floor = np.abs(bottom - _floor_top(cfg)) < 1e-6
    x0, x1, top = (st.platforms[..., i] for i in range(3))
    overlap = (st.agent_x[:, None] + half > x0) & (st.agent_x[:, None] - half < x1)
    on_platform = (overlap & (np.abs(bottom[:, None] - top) < 1e-6)).any(-1)
    return on_floor | on_platform


def step_state(cfg: WorldConfig, st: WorldState, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Advance every world by one step in place.

    Args:
        cfg: the world's configuration.
        st: B worlds, mutated.
        actions: (B,) integer action ids in [0, NUM_ACTIONS).

    Returns:
        Events of this step: "jumped" (B,) bool, "bounced" (B, K) bool.
    """
    half = cfg.agent_size / 2
    b = st.batch_size
    floor_top = _floor_top(cfg)
    was_ground = st.on_ground
    on_platform = was_ground & (np.abs(st.agent_y + half - floor_top) >= 1e-6)

    # Horizontal: actions set the speed directly (no inertia), so the effect of left/right
    # is visible in the very next frame; walls clamp.
    vx = np.where(actions == LEFT, -cfg.agent_speed,
                  np.where(actions == RIGHT, cfg.agent_speed, 0.0))
    st.agent_x = np.clip(st.agent_x + vx, cfg.wall_width + half, 1 - cfg.wall_width - half)

    # Vertical, semi-implicit Euler (velocity first, so an action shows in the next frame):
    # a jump starts only from the ground; in the air, rising without `up` adds `jump_cut`
    # gravity, falling with `up` is capped at `glide_speed`, and `down` adds `fast_fall`;
    # on a platform `down` drops through it. Falls are capped at a terminal velocity.
    airborne = ~was_ground
    up, down = actions == UP, actions == DOWN
    jumped = was_ground & up
    dropping = on_platform & down
    vy = np.where(jumped, -cfg.jump_speed, st.agent_vy)
    extra = np.where(airborne & down, cfg.fast_fall, 0.0)
    extra = extra + np.where(airborne & ~up & (st.agent_vy < 0), cfg.jump_cut, 0.0)
    vy = np.minimum(vy + cfg.gravity + extra, cfg.max_fall_speed)
    vy = np.where(airborne & up, np.minimum(vy, cfg.glide_speed), vy)
    # Dropping starts at the platform's thickness per step: visibly below it at once.
    vy = np.where(dropping, np.maximum(vy, cfg.platform_thickness), vy)
    prev_bottom = st.agent_y + half
    y = st.agent_y + vy
    bottom = y + half

    # One-way platforms: land only when the bottom crosses the top surface going down.
    x0, x1, top = (st.platforms[..., i] for i in range(3))
    overlap = (st.agent_x[:, None] + half > x0) & (st.agent_x[:, None] - half < x1)
    crossing = (prev_bottom[:, None] <= top + 1e-6) & (bottom[:, None] >= top) & (vy[:, None] > 0)
    land = overlap & crossing & ~dropping[:, None]
    land_top = np.where(land, top, np.inf).min(-1) if st.platforms.shape[1] else np.full(b, np.inf)
    landed = np.isfinite(land_top)
    y = np.where(landed, land_top - half, y)
    hit_floor = y + half >= floor_top
    y = np.where(hit_floor, floor_top - half, y)
    grounded = landed | hit_floor
    vy = np.where(grounded, 0.0, vy)
    hit_ceiling = y - half < 0
    y = np.where(hit_ceiling, half, y)
    vy = np.where(hit_ceiling, np.maximum(vy, 0.0), vy)
    st.agent_y, st.agent_vy, st.on_ground = y, vy, grounded
    st.crouching = was_ground & ~on_platform & (actions == DOWN)

    # Balls: constant speed, specular reflection off the box walls / floor / ceiling.
    r = cfg.ball_radius
    lo = np.array([cfg.wall_width + r, r])
    hi = np.array([1 - cfg.wall_width - r, floor_top - r])
    pos = st.ball_pos + st.ball_vel
    below, above = pos < lo, pos > hi
    pos = np.where(below, 2 * lo - pos, np.where(above, 2 * hi - pos, pos))
    st.ball_vel = np.where(below | above, -st.ball_vel, st.ball_vel)
    st.ball_pos = np.clip(pos, lo, hi)
    return {"jumped": jumped, "bounced": (below | above).any(-1)}


def render(cfg: WorldConfig, st: WorldState, agent_xy=None, ball_pos=None,
           crouching=None) -> torch.Tensor:
    """Render B worlds over T time steps as uint8 frames (B, T, 3, size, size).

    Args:
        cfg: configuration (size, object sizes).
        st: the worlds (colours and platforms are taken from it).
        agent_xy: optional (B, T, 2) agent centres; defaults to the state's, with T = 1.
        ball_pos: optional (B, T, K, 2) ball centres; defaults to the state's.
        crouching: optional (B, T) bool; defaults to the state's.

    A pixel belongs to a shape when its centre lies inside it. Each object is tested only
    on its bounding box of pixels, for all worlds and frames at once, and stamped into the
    frames by flat indexing, so the cost scales with object area rather than frame area.
    The work is in numpy: these are many small scattered writes, where threaded kernels
    only add synchronisation.
    """
    if agent_xy is None:
        agent_xy = np.stack([st.agent_x, st.agent_y], -1)[:, None]
    if ball_pos is None:
        ball_pos = st.ball_pos[:, None]
    if crouching is None:
        crouching = st.crouching[:, None]
    b, t = agent_xy.shape[:2]
    s = cfg.size
    video = np.empty((b, t, 3, s, s), np.uint8)
    video[:] = _background(cfg, st)[:, None]
    r = cfg.ball_radius
    for k in range(ball_pos.shape[2]):
        _stamp(video, ball_pos[:, :, k, 0], ball_pos[:, :, k, 1], r, r,
               PALETTE[st.ball_colour[:, k]], disc=True)
    half = cfg.agent_size / 2
    # A crouching agent keeps its feet in place and is drawn half as tall.
    half_y = np.where(crouching, half / 2, half)
    centre_y = agent_xy[..., 1] + np.where(crouching, half / 2, 0.0)
    _stamp(video, agent_xy[..., 0], centre_y, half, half_y, PALETTE[st.agent_colour],
           disc=False)
    return torch.from_numpy(video)


def _stamp(video: np.ndarray, cx: np.ndarray, cy: np.ndarray, half_x, half_y,
           colour: np.ndarray, disc: bool) -> None:
    """Paint an axis-aligned box (or the disc inscribed in it) centred at (cx, cy) (B, T)
    with half sizes half_x, half_y (floats or (B, T)) in `colour` (B, 3) into `video`."""
    b, t, _, s, _ = video.shape
    if b * t == 0:
        return
    hx = np.broadcast_to(np.asarray(half_x, np.float64), (b, t))
    hy = np.broadcast_to(np.asarray(half_y, np.float64), (b, t))
    span = int(np.ceil(2 * max(hx.max(), hy.max()) * s)) + 2
    offsets = np.arange(span)
    # First pixel whose centre (j + 0.5) / s can be inside: j > (c - h) * s - 0.5.
    cols = np.floor((cx - hx) * s - 0.5).astype(np.int64)[..., None] + offsets  # (B, T, span)
    rows = np.floor((cy - hy) * s - 0.5).astype(np.int64)[..., None] + offsets
    dx = (cols + 0.5) / s - cx[..., None]
    dy = (rows + 0.5) / s - cy[..., None]
    if disc:
        inside = dy[..., :, None] ** 2 + dx[..., None, :] ** 2 < (hx ** 2)[..., None, None]
    else:
        inside = ((np.abs(dy) < hy[..., None])[..., :, None]
                  & (np.abs(dx) < hx[..., None])[..., None, :])
    inside &= ((rows >= 0) & (rows < s))[..., :, None] & ((cols >= 0) & (cols < s))[..., None, :]
    bi, ti, yi, xi = np.nonzero(inside)
    pixel = ((bi * t + ti) * 3 * s + rows[bi, ti, yi]) * s + cols[bi, ti, xi]
    flat = (pixel[:, None] + np.arange(3) * (s * s)).reshape(-1)
    video.reshape(-1)[flat] = colour[bi].reshape(-1)


def _background(cfg: WorldConfig, st: WorldState) -> np.ndarray:
    """Static layer (B, 3, s, s) uint8: background, walls, floor, platforms."""
    s = cfg.size
    c = (np.arange(s) + 0.5) / s
    solid = np.zeros((st.batch_size, s, s), bool)
    solid |= ((c < cfg.wall_width) | (c > 1 - cfg.wall_width))[None, None, :]
    solid |= (c > _floor_top(cfg))[None, :, None]
    for j in range(st.platforms.shape[1]):
        x0, x1, top = (st.platforms[:, j, i, None] for i in range(3))
        in_x = (c > x0) & (c < x1)
        in_y = (c > top) & (c < top + cfg.platform_thickness)
        solid |= in_y[:, :, None] & in_x[:, None, :]
    return np.where(solid[:, None], SOLID[None, :, None, None], BACKGROUND[None, :, None, None])


class World:
    """Step-by-step simulator of B embedded worlds (B = 1 by default).

    Usage::

        world = World()                         # WorldConfig() defaults, 64 x 64
        frame = world.reset(seed=3)             # (3, 64, 64) float32 in [0, 1]
        frame = world.step(RIGHT)               # the agent moves right
        frames = World().reset(seed=3, batch_size=8)       # (8, 3, 64, 64)
        frames = world.step(np.array([LEFT] * 8))          # one action per world

    World b of `reset(seed, batch_size)` starts exactly like clip b of
    `make_clips(n, seed=seed)`, so stepping it with that clip's actions reproduces the
    clip frame by frame. `state` (a `WorldState`) can be copied and restored with
    `get_state` / `set_state` to branch futures, e.g. for planning.
    """

    def __init__(self, config: WorldConfig | None = None, size: int | None = None) -> None:
        if config is not None and not isinstance(config, WorldConfig):
            raise TypeError(f"World: config must be a WorldConfig or None, got {type(config)}")
        config = config or WorldConfig()
        self.config = config if size is None else config.replace(size=size)
        self.state: WorldState | None = None
        self._batched = False

    def reset(self, seed: int, batch_size: int | None = None) -> torch.Tensor:
        """Start new worlds from `seed`; returns the first frame(s).

        Args:
            seed: non-negative int; world b is seeded by (seed, b).
            batch_size: None for a single world (unbatched frames) or a positive int.

        Returns:
            float32 frames in [0, 1]: (3, H, W), or (B, 3, H, W) when batch_size is given.
        """
        _check_seed(seed)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"World.reset: batch_size must be a positive int or None, "
                             f"got {batch_size!r}")
        self._batched = batch_size is not None
        n = batch_size or 1
        self.state = sample_initial_state(self.config, [clip_rng(seed, i) for i in range(n)])
        return self.render()

    def step(self, action) -> torch.Tensor:
        """Apply one action per world and return the next frame(s).

        Args:
            action: an action id (int, applied to every world) or a (B,) int array/tensor
                of ids in [0, NUM_ACTIONS).

        Returns:
            float32 frames in [0, 1], shaped like `reset`'s.

        Raises:
            RuntimeError: before `reset`. ValueError: bad action ids or shape.
        """
        st = self._require_state("step")
        actions = np.asarray(action.cpu() if isinstance(action, torch.Tensor) else action)
        if actions.ndim == 0:
            actions = np.full(st.batch_size, int(actions))
        if actions.shape != (st.batch_size,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"World.step: action must be an int or ({st.batch_size},) ints, "
                             f"got {actions.dtype} array of shape {actions.shape}")
        if ((actions < 0) | (actions >= NUM_ACTIONS)).any():
            raise ValueError(f"World.step: action ids must be in [0, {NUM_ACTIONS}), "
                             f"got {actions.tolist()}")
        step_state(self.config, st, actions)
        return self.render()

    def render(self) -> torch.Tensor:
        """The current frame(s), float32 in [0, 1], (3, H, W) or (B, 3, H, W)."""
        frames = render(self.config, self._require_state("render"))[:, 0].float() / 255
        return frames if self._batched else frames[0]

    def get_state(self) -> WorldState:
        """A copy of the current state."""
        return self._require_state("get_state").copy()

    def set_state(self, state: WorldState) -> None:
        """Continue from `state` (copied). Its batch size decides the batch size."""
        if not isinstance(state, WorldState):
            raise TypeError(f"World.set_state: expected a WorldState, got {type(state)}")
        self.state = state.copy()
        self._batched = self._batched or state.batch_size != 1

    def agent_position(self) -> np.ndarray:
        """(B, 2) agent centres (x, y) in screen units, y pointing down."""
        st = self._require_state("agent_position")
        return np.stack([st.agent_x, st.agent_y], -1)

    def _require_state(self, what: str) -> WorldState:
        if self.state is None:
            raise RuntimeError(f"World.{what}: call reset(seed) first")
        return self.state


def clip_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of clip/world `index` under `seed` (independent of batch layout)."""
    return np.random.default_rng([seed, index])


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
