"""Video data for the pipelines: the embedded synthetic world and real videos, one API.

The embedded world
------------------
A 2D platformer rendered procedurally (frames are RGB, 64 x 64 by default): a square agent
moved by discrete actions under gravity, one-way platforms, side walls and a floor, and
balls of several colours bouncing at constant speed off the walls. Every world is fully
determined by (seed, index). Generation is batched (numpy physics, torch rendering), so
thousands of clips take seconds on a CPU.

    ACTIONS = ("noop", "left", "right", "up", "down");  NOOP, LEFT, RIGHT, UP, DOWN = 0..4
    NUM_ACTIONS = 5.  Actions act at once (no inertia): left/right move the agent by
    `agent_speed` per step; `up` jumps when standing; `down` crouches on the floor (drawn
    half height), drops through a platform when standing on one, falls faster in the air.
    COLOUR_NAMES (colour ids), DIRECTION_NAMES (ball direction ids: k * 45 degrees,
    y pointing down: 0 right, 2 down, 4 left, 6 up), AGENT_MOTIONS ("stays", "left",
    "right"), ATTRIBUTE_NAMES.

Clip items (every dataset yields these dicts):
    "video"        float32 (T, 3, H, W) in [0, 1]
    "actions"      int64 (T-1,): actions[t] is applied between frame t and t+1
                   (-1 where unknown, i.e. real videos)
    "has_actions"  bool: False for real videos
    "caption"      str, e.g. "red ball moves up-left and bounces, blue agent moves right
                   and jumps" (ball: initial direction; agent: net horizontal motion over
                   the clip, "jumps" if it jumped; "stays in place" otherwise)
    "attributes"   dict of int64 scalar tensors, for linear probes. Synthetic:
                   agent_colour, agent_x_bin (initial x in 4 columns), agent_motion
                   (AGENT_MOTIONS id), agent_jumped (0/1), ball_colour, ball_direction,
                   ball_fast (0/1) of the leftmost ball in the first frame (-1 when there
                   are no balls).
                   Real videos: video_index, start_frame.

make_clips(n, frames=16, size=None, seed=0, config=None, start=0, dtype=float32) -> dict
    Clips start..start+n-1, already batched: video (n, T, 3, H, W), actions (n, T-1),
    has_actions (n,), caption list[str], attributes name -> (n,). Clip i depends only on
    (seed, i, config). size=None takes config.size (64 by default). dtype=torch.uint8
    gives 0..255 frames (4x less memory).
SyntheticVideoDataset(num_clips, frames=16, size=None, seed=0, config=None)
    torch Dataset; item i == clip i of make_clips(seed=seed). Renders on demand; with a
    DataLoader, whole batches render at once (`__getitems__`).
VideoDataset(path, frames=16, size=64, frame_step=1, clip_step=None, crop=True)
    Real videos: a GIF/MP4 file, a folder of frame images, or a folder of such videos;
    centre-cropped, resized, cut into clips; sidecar `<video>.txt` becomes the caption.
collate_clips(items) -> batch dict (the make_clips layout); split_batch is its inverse.
    DataLoader(ds, batch_size=32, collate_fn=collate_clips)

The simulator (for planning, controllability checks, interactive play):
    world = World(config=None, size=None)
    frame = world.reset(seed)                   # (3, H, W) float32 in [0, 1]
    frames = world.reset(seed, batch_size=B)    # (B, 3, H, W); world b == clip b of
                                                #   make_clips(n, seed=seed)
    frame = world.step(action)                  # int, or (B,) ints for a batch
    state = world.get_state(); world.set_state(state)   # branch and restore
    world.agent_position()                      # (B, 2) agent centres, y pointing down
action_identifiability(n=256, frames=16, seed=0, config=None) -> dict
    How often another action would have rendered the identical next frame
    ("ambiguous_fraction") and the NMI between true actions and the best frame-based
    labels ("oracle_nmi", about 0.8 by default): the ceiling for latent/true action NMI.
    normalized_mutual_info(a, b) is the NMI used (arithmetic-mean normalization).
WorldConfig: frozen dataclass of every world parameter (sizes, speeds, gravity, number of
balls/platforms, behaviour policy: sticky random actions with `sticky` repeat probability
and `action_probs`); validated on creation, `.replace(**changes)` for variants.
"""

from wmkernels.models.data.clips import (
    AGENT_MOTIONS,
    ATTRIBUTE_NAMES,
    SyntheticVideoDataset,
    collate_clips,
    make_clips,
    split_batch,
)
from wmkernels.models.data.identifiability import (
    action_identifiability,
    normalized_mutual_info,
)
from wmkernels.models.data.video import VideoDataset
from wmkernels.models.data.world import (
    ACTIONS,
    COLOUR_NAMES,
    DIRECTION_NAMES,
    DOWN,
    LEFT,
    NOOP,
    NUM_ACTIONS,
    RIGHT,
    UP,
    World,
    WorldConfig,
    WorldState,
)

__all__ = [
    "ACTIONS", "AGENT_MOTIONS", "ATTRIBUTE_NAMES", "COLOUR_NAMES", "DIRECTION_NAMES", "DOWN",
    "LEFT", "NOOP", "NUM_ACTIONS", "RIGHT", "UP", "SyntheticVideoDataset", "VideoDataset",
    "World", "WorldConfig", "WorldState", "action_identifiability", "collate_clips",
    "make_clips", "normalized_mutual_info", "split_batch",
]
