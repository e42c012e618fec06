"""The embedded world and the video dataset API (wmkernels.models.data)."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wmkernels.models.data import (
    ACTIONS,
    AGENT_MOTIONS,
    ATTRIBUTE_NAMES,
    COLOUR_NAMES,
    DIRECTION_NAMES,
    DOWN,
    LEFT,
    NOOP,
    NUM_ACTIONS,
    RIGHT,
    UP,
    SyntheticVideoDataset,
    VideoDataset,
    World,
    WorldConfig,
    action_identifiability,
    collate_clips,
    make_clips,
    normalized_mutual_info,
    split_batch,
)
from wmkernels.models.data.world import PALETTE

CFG = WorldConfig()
HALF = CFG.agent_size / 2
FLOOR_Y = 1 - CFG.floor_height - HALF  # agent centre when standing on the floor


def agent_pixels(video_u8: torch.Tensor, colour_id: int) -> torch.Tensor:
    """(T, 2) centroid (x, y) in pixels of the agent's colour in (T, 3, H, W) uint8 frames."""
    colour = torch.from_numpy(PALETTE[colour_id])[:, None, None]
    mask = (video_u8 == colour).all(1)  # (T, H, W)
    ys, xs = torch.meshgrid(torch.arange(mask.shape[1]), torch.arange(mask.shape[2]),
                            indexing="ij")
    count = mask.sum((1, 2)).clamp(min=1)
    return torch.stack([(mask * xs).sum((1, 2)) / count, (mask * ys).sum((1, 2)) / count], -1)


def world_on_floor(x: float = 0.5, **overrides) -> World:
    """A single world with its agent standing on the floor at x, no platforms or balls."""
    world = World(WorldConfig(num_platforms=0, num_balls=0, **overrides))
    world.reset(seed=0)
    st = world.get_state()
    st.agent_x[:], st.agent_y[:], st.agent_vy[:], st.on_ground[:] = x, FLOOR_Y, 0.0, True
    world.set_state(st)
    return world


@pytest.fixture(autouse=True)
def _one_thread():
    """These shapes are tiny: a parallel region costs more than the work, and far more when
    the cores are shared with other jobs, so run single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- determinism and layout


def test_same_seed_same_clips_and_different_seed_differs():
    a, b = make_clips(6, 8, 32, seed=11), make_clips(6, 8, 32, seed=11)
    c = make_clips(6, 8, 32, seed=12)
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["actions"], b["actions"])
    assert a["caption"] == b["caption"]
    assert not torch.equal(a["video"], c["video"])


def test_clip_depends_only_on_seed_and_index():
    whole = make_clips(5, 6, 32, seed=3)
    part = make_clips(2, 6, 32, seed=3, start=3)
    assert torch.equal(whole["video"][3:], part["video"])
    assert whole["caption"][3:] == part["caption"]
    ds = SyntheticVideoDataset(5, frames=6, size=32, seed=3)
    for i in (0, 4, -1):
        item = ds[i]
        assert torch.equal(item["video"], whole["video"][i])
        assert torch.equal(item["actions"], whole["actions"][i])
        assert item["caption"] == whole["caption"][i]


def test_simulator_reproduces_generated_clips():
    clips = make_clips(4, 10, 32, seed=5)
    world = World(size=32)
    frames = [world.reset(seed=5, batch_size=4)]
    for t in range(9):
        frames.append(world.step(clips["actions"][:, t]))
    assert torch.equal(torch.stack(frames, 1), clips["video"])
    single = World(size=32).reset(seed=5)
    assert single.shape == (3, 32, 32) and torch.equal(single, clips["video"][0, 0])


# ---------------------------------------------------------------- shapes, dtypes, ranges


@pytest.mark.parametrize("n,frames,size", [(3, 16, 64), (2, 5, 48), (1, 1, 17), (0, 4, 32)])
def test_clip_shapes_dtypes_ranges(n, frames, size):
    out = make_clips(n, frames, size, seed=1)
    assert out["video"].shape == (n, frames, 3, size, size)
    assert out["video"].dtype == torch.float32
    if n:
        assert out["video"].min() >= 0 and out["video"].max() <= 1
        assert out["video"].max() > 0.5  # objects are drawn, not an empty screen
    assert out["actions"].shape == (n, frames - 1) and out["actions"].dtype == torch.int64
    assert ((out["actions"] >= 0) & (out["actions"] < NUM_ACTIONS)).all()
    assert out["has_actions"].dtype == torch.bool and out["has_actions"].all()
    assert len(out["caption"]) == n and all(isinstance(c, str) for c in out["caption"])
    assert set(out["attributes"]) == set(ATTRIBUTE_NAMES)
    for v in out["attributes"].values():
        assert v.shape == (n,) and v.dtype == torch.int64
    u8 = make_clips(n, frames, size, seed=1, dtype=torch.uint8)
    assert u8["video"].dtype == torch.uint8
    assert torch.equal(u8["video"].float() / 255, out["video"])


def test_dataset_items_and_loader_batches():
    ds = SyntheticVideoDataset(10, frames=4, size=32, seed=2)
    item = ds[7]
    assert item["video"].shape == (4, 3, 32, 32) and item["actions"].shape == (3,)
    assert item["has_actions"] is True
    assert all(v.dtype == torch.int64 and v.dim() == 0 for v in item["attributes"].values())
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate_clips))
    assert [b["video"].shape[0] for b in batches] == [4, 4, 2]
    ref = make_clips(10, 4, 32, seed=2)
    assert torch.equal(torch.cat([b["video"] for b in batches]), ref["video"])
    assert torch.equal(torch.cat([b["attributes"]["agent_colour"] for b in batches]),
                       ref["attributes"]["agent_colour"])
    # Shuffled (non-contiguous) index lists render the same items.
    shuffled = ds.__getitems__([9, 2, 3, 0])
    assert torch.equal(shuffled[0]["video"], ref["video"][9])
    assert torch.equal(shuffled[2]["video"], ref["video"][3])
    roundtrip = collate_clips(split_batch(ref))
    assert torch.equal(roundtrip["video"], ref["video"]) and roundtrip["caption"] == ref["caption"]
    with pytest.raises(IndexError):
        ds[10]


def test_few_thousand_clips_generate_quickly():
    # Bulk generation is the training data path; this only has to finish (no timing assert).
    out = make_clips(1000, 16, 64, seed=0, dtype=torch.uint8)
    assert out["video"].shape == (1000, 16, 3, 64, 64)
    assert len(set(out["caption"])) > 100


# ---------------------------------------------------------------- dynamics


@pytest.mark.parametrize("action,sign", [(LEFT, -1), (RIGHT, 1), (NOOP, 0), (DOWN, 0)])
def test_horizontal_actions_move_the_agent(action, sign):
    world = world_on_floor(0.5)
    before = agent_pixels((world.render() * 255).round().byte()[None],
                          int(world.state.agent_colour[0]))
    for _ in range(4):
        frame = world.step(action)
    x, y = world.agent_position()[0]
    assert x == pytest.approx(0.5 + sign * 4 * CFG.agent_speed)
    assert y == pytest.approx(FLOOR_Y)  # still standing
    after = agent_pixels((frame * 255).round().byte()[None], int(world.state.agent_colour[0]))
    shift = float(after[0, 0] - before[0, 0])
    assert shift == pytest.approx(sign * 4 * CFG.agent_speed * CFG.size, abs=1.0)


def test_down_crouches_on_the_floor():
    world = world_on_floor(0.5)
    colour = torch.from_numpy(PALETTE[int(world.state.agent_colour[0])])[:, None, None]
    full = round(CFG.agent_size * CFG.size) ** 2
    frames = [world.step(DOWN), world.step(DOWN), world.step(NOOP)]
    counts = [int(((f * 255).round().byte() == colour).all(0).sum()) for f in frames]
    assert counts == [full // 2, full // 2, full]
    assert world.agent_position()[0, 1] == pytest.approx(FLOOR_Y)


def test_walls_stop_the_agent():
    world = world_on_floor(0.2)
    for _ in range(20):
        world.step(LEFT)
    assert world.agent_position()[0, 0] == pytest.approx(CFG.wall_width + HALF)


def jump_heights(actions) -> np.ndarray:
    """Agent y after each of `actions`, starting on the floor."""
    world = world_on_floor(0.5)
    ys = []
    for a in actions:
        world.step(a)
        ys.append(world.agent_position()[0, 1])
    return np.array(ys)


def test_jump_rises_then_gravity_brings_the_agent_back():
    ys = jump_heights([UP] * 8 + [NOOP] * 30)  # hold up through the rise, then release
    top = int(ys.argmin())
    assert ys[0] < FLOOR_Y - 0.05 and ys[top] < FLOOR_Y - 0.2
    assert (np.diff(ys[: top + 1]) < 0).all() and (np.diff(ys[top:]) >= 0).all()
    assert ys[-1] == pytest.approx(FLOOR_Y)  # landed


def test_up_in_the_air_extends_the_jump_and_glides_but_never_jumps_again():
    held = jump_heights([UP] * 8 + [NOOP] * 30)
    tapped = jump_heights([UP] + [NOOP] * 37)
    assert held.min() < tapped.min() - 0.05  # releasing `up` cuts the jump short
    assert tapped[-1] == pytest.approx(FLOOR_Y)
    # Falling while holding `up` is capped at the glide speed; without it, gravity wins.
    glide = jump_heights([UP] * 20)
    fall = jump_heights([UP] * 8 + [NOOP] * 12)
    assert np.diff(glide[8:12]).max() <= CFG.glide_speed + 1e-12
    assert np.diff(fall[8:12]).max() > 2 * CFG.glide_speed
    # No double jump: `up` in mid-air only adds gravity to the rising speed.
    world = world_on_floor(0.5)
    world.step(UP)
    vy = world.state.agent_vy[0]
    world.step(UP)
    assert world.state.agent_vy[0] == pytest.approx(vy + CFG.gravity)


def test_gravity_accelerates_a_falling_agent_until_it_lands():
    world = world_on_floor(0.5)
    st = world.get_state()
    st.agent_y[:], st.on_ground[:] = 0.2, False
    world.set_state(st)
    ys = [0.2]
    for _ in range(20):
        world.step(NOOP)
        ys.append(world.agent_position()[0, 1])
    ys = np.array(ys)
    falling = np.diff(ys)[:4]
    assert np.allclose(np.diff(falling), CFG.gravity)  # constant acceleration
    assert ys[-1] == pytest.approx(FLOOR_Y) and world.state.on_ground[0]


def test_platforms_carry_the_agent_and_down_drops_through():
    world = World(WorldConfig(num_balls=0, num_platforms=1))
    world.reset(seed=0)
    st = world.get_state()
    st.platforms[0, 0] = (0.3, 0.7, 0.6)
    st.agent_x[:], st.agent_y[:], st.agent_vy[:], st.on_ground[:] = 0.5, 0.3, 0.0, False
    world.set_state(st)
    for _ in range(15):
        world.step(NOOP)
    assert world.agent_position()[0, 1] == pytest.approx(0.6 - HALF)  # landed on top
    world.step(DOWN)
    for _ in range(15):
        world.step(NOOP)
    assert world.agent_position()[0, 1] == pytest.approx(FLOOR_Y)  # fell through to the floor
    for _ in range(12):  # walking right past the platform's end keeps it on the floor
        world.step(RIGHT)
    assert world.agent_position()[0, 1] == pytest.approx(FLOOR_Y)


def test_balls_move_straight_and_bounce_off_walls():
    world = World(WorldConfig(num_balls=1, num_platforms=0))
    world.reset(seed=0)
    st = world.get_state()
    st.ball_pos[0, 0], st.ball_vel[0, 0] = (0.5, 0.5), (-0.03, 0.0)
    world.set_state(st)
    xs = []
    for _ in range(30):
        world.step(NOOP)
        xs.append(world.state.ball_pos[0, 0, 0])
    xs = np.array(xs)
    assert np.allclose(world.state.ball_pos[0, 0, 1], 0.5)  # no gravity on balls
    lo = CFG.wall_width + CFG.ball_radius
    assert xs.min() >= lo - 1e-12 and world.state.ball_vel[0, 0, 0] > 0  # reflected
    assert np.allclose(np.diff(xs[:5]), -0.03)


def test_different_actions_give_different_futures():
    world = World(size=32)
    world.reset(seed=9, batch_size=NUM_ACTIONS)
    for _ in range(6):
        frames = world.step(np.arange(NUM_ACTIONS))
    flat = frames.flatten(1)
    assert not torch.equal(flat[LEFT], flat[RIGHT])
    assert not torch.equal(flat[NOOP], flat[UP])


def test_actions_are_identifiable_from_frames():
    report = action_identifiability(n=48, frames=10, seed=2)
    assert report["steps"] == 48 * 9
    # Only left/right against a wall, up/down where they change nothing, are ambiguous.
    assert report["ambiguous_fraction"] < 0.2 and report["oracle_nmi"] > 0.7
    assert report["ambiguous_by_action"][NOOP] == 0.0
    # Without jump cut, glide, fast fall and crouch, up/down in the air or on the floor
    # look like noop: the measure must see that.
    plain = WorldConfig(jump_cut=0.0, glide_speed=0.2, fast_fall=0.0)
    worse = action_identifiability(n=48, frames=10, seed=2, config=plain)
    assert worse["ambiguous_by_action"][UP] > report["ambiguous_by_action"][UP] + 0.2


def test_normalized_mutual_info():
    a = np.array([0, 0, 1, 1, 2, 2])
    assert normalized_mutual_info(a, a) == pytest.approx(1.0)
    assert normalized_mutual_info(a, np.array([5, 5, 3, 3, 0, 0])) == pytest.approx(1.0)
    assert normalized_mutual_info(np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])) == 0.0
    assert 0 < normalized_mutual_info(a, np.array([0, 0, 1, 1, 1, 1])) < 1
    with pytest.raises(ValueError, match="1D"):
        normalized_mutual_info(a, a[:3])


# ---------------------------------------------------------------- captions and attributes


def test_captions_match_the_motion():
    out = make_clips(64, 12, 64, seed=4, dtype=torch.uint8)
    world = World()
    world.reset(seed=4, batch_size=64)
    vel = world.state.ball_vel
    attrs = out["attributes"]
    seen_motions = set()
    for i, caption in enumerate(out["caption"]):
        parts = caption.split(", ")
        assert len(parts) == CFG.num_balls + 1
        for k, part in enumerate(parts[:-1]):
            colour, _, _, direction = part.split(" and ")[0].split(" ")
            assert colour == COLOUR_NAMES[world.state.ball_colour[i, k]]
            assert direction == DIRECTION_NAMES[world.state.ball_direction[i, k]]
            vx, vy = vel[i, k]  # y points down: "up" means vy < 0
            assert ("left" in direction) == (vx < -1e-9)
            assert ("right" in direction) == (vx > 1e-9)
            assert ("up" in direction) == (vy < -1e-9)
            assert ("down" in direction) == (vy > 1e-9)
        agent = parts[-1]
        colour = int(attrs["agent_colour"][i])
        assert agent.startswith(f"{COLOUR_NAMES[colour]} agent ")
        xy = agent_pixels(out["video"][i], colour)
        dx = float(xy[-1, 0] - xy[0, 0]) / CFG.size
        motion = int(attrs["agent_motion"][i])
        seen_motions.add(motion)
        if abs(abs(dx) - HALF) > 1.5 / CFG.size:  # rendering rounds to whole pixels
            assert AGENT_MOTIONS[motion] == ("left" if dx < -HALF else "right" if dx > HALF
                                             else "stays")
        assert ("moves left" in agent) == (motion == 1)
        assert ("moves right" in agent) == (motion == 2)
        assert ("jumps" in agent) == bool(attrs["agent_jumped"][i])
        if attrs["agent_jumped"][i]:
            assert (xy[1:, 1] < xy[:-1, 1] - 1).any()  # visibly rises at some step
        if "stays in place" in agent:
            assert motion == 0 and not attrs["agent_jumped"][i]
    assert seen_motions == {0, 1, 2}


def test_attributes_match_the_frames():
    out = make_clips(48, 4, 64, seed=8, dtype=torch.uint8)
    attrs = out["attributes"]
    world = World()
    world.reset(seed=8, batch_size=48)
    x0 = world.agent_position()[:, 0]
    assert torch.equal(attrs["agent_x_bin"], torch.from_numpy(np.minimum(x0 * 4, 3).astype(int)))
    assert torch.equal(attrs["agent_colour"], torch.from_numpy(world.state.agent_colour))
    # The ball attributes name the leftmost ball of the first frame, whichever its index.
    left = world.state.ball_pos[:, :, 0].argmin(1)
    assert (left == 1).any() and (left == 0).any()
    rows = np.arange(48)
    assert torch.equal(attrs["ball_direction"],
                       torch.from_numpy(world.state.ball_direction[rows, left]))
    assert torch.equal(attrs["ball_colour"], torch.from_numpy(world.state.ball_colour[rows, left]))
    for i in range(48):
        colour = int(attrs["agent_colour"][i])
        mask = (out["video"][i, 0] == torch.from_numpy(PALETTE[colour])[:, None, None]).all(0)
        assert mask.sum() == round(CFG.agent_size * CFG.size) ** 2  # drawn on top, whole
        xy = agent_pixels(out["video"][i, :1], colour)
        assert abs((float(xy[0, 0]) + 0.5) / CFG.size - x0[i]) < 1 / CFG.size
        assert attrs["ball_colour"][i] != colour
    assert len(set(attrs["agent_colour"].tolist())) > 4
    assert set(attrs["ball_direction"].tolist()) <= set(range(8))
    assert len(set(attrs["ball_direction"].tolist())) > 4
    assert set(attrs["agent_x_bin"].tolist()) == {0, 1, 2, 3}


def test_size_comes_from_the_config_unless_given():
    cfg = WorldConfig(size=24)
    assert make_clips(1, 2, config=cfg)["video"].shape[-1] == 24
    assert make_clips(1, 2, 16, config=cfg)["video"].shape[-1] == 16
    assert SyntheticVideoDataset(1, 2, config=cfg)[0]["video"].shape[-1] == 24
    assert make_clips(1, 2)["video"].shape[-1] == 64


def test_worlds_without_balls_or_platforms():
    out = make_clips(3, 5, 32, seed=0, config=WorldConfig(num_balls=0, num_platforms=0))
    assert out["video"].shape == (3, 5, 3, 32, 32)
    assert (out["attributes"]["ball_colour"] == -1).all()
    assert all(c.count(",") == 0 and " agent " in c for c in out["caption"])


def test_action_names_and_policy_stickiness():
    assert ACTIONS == ("noop", "left", "right", "up", "down")
    acts = make_clips(200, 16, 16, seed=0)["actions"]
    repeats = (acts[:, 1:] == acts[:, :-1]).float().mean()
    assert repeats > 0.7  # sticky: held actions make their effect visible
    counts = torch.bincount(acts.flatten(), minlength=NUM_ACTIONS)
    assert (counts > 0).all()


# ---------------------------------------------------------------- errors


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="num_balls"):
        WorldConfig(num_balls=9)
    with pytest.raises(ValueError, match="platform_width"):
        WorldConfig(platform_width=(0.5, 0.99))
    with pytest.raises(ValueError, match="action_probs"):
        WorldConfig(action_probs=(1.0, 0.0))
    with pytest.raises(ValueError, match="size"):
        make_clips(1, 4, size=4)
    with pytest.raises(ValueError, match="frames"):
        make_clips(1, 0)
    with pytest.raises(ValueError, match="seed"):
        make_clips(1, 4, seed=-1)
    with pytest.raises(TypeError, match="dtype"):
        make_clips(1, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match="num_clips"):
        SyntheticVideoDataset(-1)
    world = World()
    with pytest.raises(RuntimeError, match="reset"):
        world.step(0)
    world.reset(seed=0)
    with pytest.raises(ValueError, match="action ids"):
        world.step(NUM_ACTIONS)
    with pytest.raises(ValueError, match="action"):
        world.step(np.array([0, 1]))
    with pytest.raises(ValueError, match="items"):
        collate_clips([])


# ---------------------------------------------------------------- real videos


def moving_square_frames(n: int, h: int = 40, w: int = 50) -> np.ndarray:
    frames = np.zeros((n, h, w, 3), np.uint8)
    for t in range(n):
        frames[t, 15:25, 2 + 2 * t: 12 + 2 * t] = (255, 255, 255)
    return frames


def test_gif_loads_through_the_dataset_api(tmp_path):
    import imageio.v3 as iio

    path = tmp_path / "clip.gif"
    iio.imwrite(path, moving_square_frames(18), extension=".gif", duration=50, loop=0)
    (tmp_path / "clip.txt").write_text("a white square moves right\n")
    ds = VideoDataset(path, frames=8, size=32)
    assert len(ds) == 2  # 18 frames -> two non-overlapping clips of 8
    item = ds[1]
    assert item["video"].shape == (8, 3, 32, 32) and item["video"].dtype == torch.float32
    assert 0 <= item["video"].min() and item["video"].max() <= 1
    assert (item["actions"] == -1).all() and item["actions"].shape == (7,)
    assert item["has_actions"] is False
    assert item["caption"] == "a white square moves right"
    assert int(item["attributes"]["start_frame"]) == 8
    # The square moves right: the bright centroid's x grows frame to frame.
    bright = item["video"].mean(1)
    xs = (bright * torch.arange(32)).sum((1, 2)) / bright.sum((1, 2))
    assert (xs.diff() > 0).all()
    batch = collate_clips([ds[0], ds[1]])
    assert batch["video"].shape == (2, 8, 3, 32, 32) and not batch["has_actions"].any()
    strided = VideoDataset(path, frames=4, size=16, frame_step=3, clip_step=2, crop=False)
    assert len(strided) == 5 and strided[0]["video"].shape == (4, 3, 16, 16)


def test_mp4_loads_through_the_dataset_api(tmp_path):
    pytest.importorskip("av", reason="MP4 needs the av package (or imageio-ffmpeg)")
    import imageio.v3 as iio

    path = tmp_path / "clip.mp4"
    iio.imwrite(path, moving_square_frames(12, 48, 64), extension=".mp4", fps=10)
    ds = VideoDataset(path, frames=5, size=16)
    assert len(ds) == 2
    video = ds[1]["video"]
    assert video.shape == (5, 3, 16, 16) and 0 <= video.min() and video.max() <= 1
    bright = video.mean(1)
    xs = (bright * torch.arange(16)).sum((1, 2)) / bright.sum((1, 2))
    assert (xs.diff() > 0).all()  # lossy codec, but the square still moves right


def test_frame_folders_and_video_folders(tmp_path):
    import imageio.v3 as iio

    frames = moving_square_frames(6)
    one = tmp_path / "videos" / "run1"
    one.mkdir(parents=True)
    for t, f in enumerate(frames):
        iio.imwrite(one / f"{t:04d}.png", f)
    ds = VideoDataset(one, frames=3, size=20)
    assert len(ds) == 2 and ds[0]["video"].shape == (3, 3, 20, 20)
    iio.imwrite(tmp_path / "videos" / "b.gif", moving_square_frames(9), extension=".gif",
                duration=50)
    many = VideoDataset(tmp_path / "videos", frames=3, size=20)
    assert len(many) == 3 + 2
    assert {int(many[i]["attributes"]["video_index"]) for i in range(len(many))} == {0, 1}


# imageio tries its other plugins on a corrupt file; some of them warn that they are old.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unreadable_or_short_videos_raise(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        VideoDataset(tmp_path / "missing.gif")
    bad = tmp_path / "bad.gif"
    bad.write_bytes(b"not a gif at all")
    with pytest.raises(ValueError, match="bad.gif"):
        VideoDataset(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no video"):
        VideoDataset(empty)
    import imageio.v3 as iio

    short = tmp_path / "short.gif"
    iio.imwrite(short, moving_square_frames(4), extension=".gif", duration=50)
    with pytest.raises(ValueError, match="long enough"):
        VideoDataset(short, frames=8)
    with pytest.raises(ValueError, match="frames"):
        VideoDataset(short, frames=0)


def test_world_config_from_overrides():
    """A model config's `world` dict, as read back from JSON: lists become tuples, the
    caller's own fields win, bad input is named."""
    from wmkernels.models.data import WorldConfig

    cfg = WorldConfig.from_overrides({"ball_speed": [0.05, 0.06], "size": 8}, size=32)
    assert cfg.ball_speed == (0.05, 0.06) and cfg.size == 32
    with pytest.raises(ValueError, match="unknown WorldConfig fields"):
        WorldConfig.from_overrides({"agnt_size": 0.3})
    with pytest.raises(ValueError, match="world: WorldConfig.agent_size"):
        WorldConfig.from_overrides({"agent_size": -1.0})
    with pytest.raises(ValueError, match="world must be a dict"):
        WorldConfig.from_overrides([("agent_size", 0.3)])
