"""Where a Genie rollout breaks, read from a trained checkpoint: whether the tokenizer gives a
patch that did not change the code it had (the dynamics can only copy what stays put if its
code stays put), whether each latent action names one movement of the agent (the dynamics
can only place the agent as well as the action says where) and what they call a move
pressed against a wall, whether a rollout breaks by the errors of each generated frame or
by feeding them back as the next frame's past, whether the dynamics predicts its training
clips better than held-out ones and how well it predicts the codes that change from frame to
frame against those that do not, and where the agent is not one blob, whether its stray
pieces are the agent broken or the ball drawn partly in the agent's colour (and the colours
of the clips where the ball is).

    python -m wmkernels.models.genie.diagnose runs/demo/genie.safetensors

The numbers behind the tiny preset's dynamics width are in models/genie/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json

import torch

from wmkernels.models.data.world import COLOUR_NAMES, LEFT, RIGHT
from wmkernels.models.genie.config import IMAGE_CLIPS
from wmkernels.models.genie.data import ClipPool, held_out
from wmkernels.models.genie.evaluate import (
    GENERATION_SEEDS,
    generate,
    held_out_colours,
    reconstruct,
    teacher_forced_accuracy,
    teacher_forced_logits,
)
from wmkernels.models.genie.metrics import agent_mask, agent_metrics, blob_labels, centroid
from wmkernels.models.genie.model import Genie, load_checkpoint
from wmkernels.models.genie.tokenizer import static_patches


@torch.no_grad()
def code_stability(model: Genie, video: torch.Tensor) -> dict:
    """Over consecutive frames of video (B, T, 3, H, W) in [0, 1]: the fraction of patches
    whose pixels did not change ("static_patches"), the fraction of those whose code did not
    change either ("same_code_if_static"), and the accuracy of predicting every code as the
    previous frame's ("copy_code_accuracy", the bar a next-frame model must clear)."""
    codes = model.tokenizer.encode(video)[1]
    static = static_patches(video, model.cfg.tokenizer.patch)
    same = codes[:, 1:] == codes[:, :-1]
    return {"static_patches": float(static.double().mean()),
            "same_code_if_static": float(same[static].double().mean()) if static.any() else None,
            "copy_code_accuracy": float(same.double().mean())}


def training_gap(model: Genie, clips: int = 256) -> dict:
    """Teacher-forced next-frame token accuracy (evaluate.teacher_forced_accuracy) on the
    first `clips` training clips ("training") and on as many held-out clips ("held_out").
    Clip i of the world depends only on the seed and i, so the first clips are those of any
    training pool at least that large. Accuracy that rises on the training clips and not on
    held-out ones is the dynamics learning its clips rather than the world."""
    seed = model.cfg.train.seed
    return {"training": teacher_forced_accuracy(
                model, ClipPool(model.cfg, clips, seed=seed).all()[0])["token_accuracy"],
            "held_out": teacher_forced_accuracy(
                model, held_out(model.cfg, clips, seed=seed)[0])["token_accuracy"]}


@torch.no_grad()
def changed_codes(model: Genie, video: torch.Tensor) -> dict:
    """Teacher-forced next-frame prediction (evaluate.teacher_forced_logits: the real past and
    the inferred actions, each frame t = 1..T-1 fully masked) split by whether a code differs
    from the code at its place in the frame before: their share of frames 1..T-1's codes
    ("changed"), the accuracy of the argmax on those ("changed_accuracy") and on the rest
    ("unchanged_accuracy"), and the changed codes' share of the summed cross-entropy
    ("changed_share_of_loss"). Copying the past gets every unchanged code right and every
    changed one wrong, so the changed ones say whether the dynamics predicts what moves."""
    tokens = model.tokenizer.encode(video)[1]
    logits = teacher_forced_logits(model, tokens, model.lam.infer_actions(video))
    target = tokens[:, 1:]
    changed = target != tokens[:, :-1]
    right = logits.argmax(-1) == target
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, -2), target.flatten(),
                                             reduction="none").view_as(target)
    return {"changed": _share(changed.flatten()),
            "changed_accuracy": _share(right[changed]),
            "unchanged_accuracy": _share(right[~changed]),
            "changed_share_of_loss": round(float(loss[changed].sum() / loss.sum()), 3)}


@torch.no_grad()
def action_movements(model: Genie, video: torch.Tensor, agent_colours: torch.Tensor,
                     radius: float = 2.0) -> dict:
    """How well each latent action names one movement of the agent: for every transition the
    LAM labels with action a, the agent's centroid displacement (pixels) against the mean
    displacement of all a-labelled transitions. Returns "within" (fraction of transitions
    within `radius` px of their action's mean: the most a dynamics driven by these actions
    can place the agent within that radius) and "per_action" {a: (count, mean dx, mean dy)}.

    "dead_reckoning_within" (per t = 1..T-1): the fraction of clips whose agent at frame t
    is within `radius` px of its first place moved by the mean movements of the actions
    a_0..a_{t-1}: where a model that knew only the actions, not the agent's state (its
    speed in a jump, a wall ahead), would put it."""
    actions = model.lam.infer_actions(video)
    places = centroid(agent_mask(video, agent_colours))                  # (B, T, 2)
    moves = places.diff(dim=1)                                           # (B, T-1, 2)
    seen = moves.isfinite().all(-1)
    within, per_action = 0, {}
    mean_move = moves.new_zeros(model.num_actions, 2)
    for a in actions.unique().tolist():
        d = moves[seen & (actions == a)]
        if len(d):
            mean_move[a] = d.mean(0)
            within += int(((d - mean_move[a]).norm(dim=-1) <= radius).sum())
            per_action[a] = (len(d), *[round(float(x), 2) for x in mean_move[a]])
    count = int(seen.sum())
    reckoned = places[:, :1] + mean_move[actions].cumsum(1)             # frames 1..T-1
    error = (reckoned - places[:, 1:]).norm(dim=-1)
    found = error.isfinite()
    dead_reckoning = ((error <= radius) & found).sum(0) / found.sum(0).clamp(min=1)
    return {"within": within / count if count else None, "per_action": per_action,
            "dead_reckoning_within": dead_reckoning.tolist()}


@torch.no_grad()
def moves_into_walls(model: Genie, video: torch.Tensor, true_actions: torch.Tensor,
                     agent_colours: torch.Tensor, *, still_px: float = 0.5,
                     share: float = 0.1) -> dict:
    """What the LAM calls left or right pressed against a wall. For each direction, the
    transitions whose true action (world.LEFT, world.RIGHT) it is split into "free" ones (the
    agent's centroid moved at least `still_px` sideways) and "blocked" ones (it did not:
    walls clamp the agent). The direction's moving codes are the latent actions that label at
    least `share` of its free presses. Returns per direction the counts, the moving codes,
    the fraction of free and of blocked presses labelled with a moving code, and the code
    that labels most blocked presses with its fraction. The LAM sees frames, not keys: if
    blocked presses seldom get a moving code, training clips seldom show "moved left" at a
    wall, and holding that code there (the play picture) asks the dynamics for a transition
    it has hardly ever seen."""
    latent = model.lam.infer_actions(video)
    moves = centroid(agent_mask(video, agent_colours)).diff(dim=1)       # (B, T-1, 2)
    seen = moves.isfinite().all(-1)
    out = {}
    for name, action in (("left", LEFT), ("right", RIGHT)):
        pressed = seen & (true_actions == action)
        free = latent[pressed & (moves[..., 0].abs() >= still_px)]
        blocked = latent[pressed & (moves[..., 0].abs() < still_px)]
        codes, counts = free.unique(return_counts=True)
        moving = codes[counts >= share * len(free)]     # empty if no free press
        reading = {"free": len(free), "blocked": len(blocked),
                   "moving_codes": moving.tolist(),
                   "free_as_moving": _share(torch.isin(free, moving)),
                   "blocked_as_moving": _share(torch.isin(blocked, moving))}
        if len(blocked):
            code = blocked.mode().values
            reading["blocked_most"] = [int(code), _share(blocked == code)]
        out[name] = reading
    return out


def _share(hits: torch.Tensor) -> float | None:
    """The fraction of True in `hits`, rounded to 3 places; None if it is empty."""
    return round(hits.double().mean().item(), 3) if len(hits) else None


@torch.no_grad()
def errors_fed_back(model: Genie, video: torch.Tensor, agent_colours: torch.Tensor,
                    rollout: torch.Tensor, *, seed: int = 0) -> dict:
    """Each frame t = 1..T-1 of video (B, T, 3, H, W) generated twice with the latent actions
    inferred from the real clip and the same generation seed: "one_step" from the real
    frames 0..t-1 (one MaskGIT frame, made here), "rollout" from the real first frame through
    its own frames (`rollout`, that seed's inferred clip of evaluate.rollouts, which
    `evaluate` measures). Returns per-t lists {one_step,rollout}_{one_blob,within_2px}: the
    fraction of frames whose agent is one blob, and within 2 px of the real agent. A
    one-step row that holds while the rollout's falls means errors fed back (exposure
    bias); a one-step row that falls with t means the model."""
    inferred = model.lam.infer_actions(video)
    one_step = [generate(model, video[:, :t], inferred[:, t - 1:t], seed,
                         prompt_actions=inferred[:, :t - 1])[:, -1]
                for t in range(1, video.shape[1])]
    out = {}
    for name, frames in (("one_step", torch.stack(one_step, 1)), ("rollout", rollout[:, 1:])):
        agent = agent_metrics(frames, video[:, 1:], agent_colours)
        out[f"{name}_one_blob"] = agent["one_blob"].double().mean(0).tolist()
        out[f"{name}_within_2px"] = (agent["centroid_error"] <= 2).double().mean(0).tolist()
    return out


@torch.no_grad()
def ball_in_rollouts(video: torch.Tensor, recon: torch.Tensor, ball_colours: torch.Tensor,
                     generated: list[torch.Tensor]) -> dict:
    """The agent metrics of `evaluate`, read on a ball instead (ball_colours (B,) palette
    ids): per t = 1..T-1 the fraction of frames in which that ball is one blob
    ("{real,recon,inferred}_one_blob": the real clips `video`, the tokenizer's
    reconstruction `recon` of them, the rollouts' averaged over the clips `generated`
    with the inferred actions, one per generation seed) and within 2 px of the real ball
    ("inferred_within_2px"). From one prompt frame a ball's direction cannot be known, so
    its place is a guess; that it stays one blob is not."""
    real = video[:, 1:]

    def read(frames):
        ball = agent_metrics(frames, real, ball_colours)
        return (ball["one_blob"].double().mean(0),
                (ball["centroid_error"] <= 2).double().mean(0))

    inferred = [read(x[:, 1:]) for x in generated]
    return {"real_one_blob": read(real)[0].tolist(),
            "recon_one_blob": read(recon[:, 1:])[0].tolist(),
            "inferred_one_blob": torch.stack([b for b, _ in inferred]).mean(0).tolist(),
            "inferred_within_2px": torch.stack([w for _, w in inferred]).mean(0).tolist()}


def _grown(mask: torch.Tensor, px: int) -> torch.Tensor:
    """(H, W) bool mask grown by `px` pixels in every direction (diagonals too)."""
    return torch.nn.functional.max_pool2d(mask[None, None].double(), 2 * px + 1, stride=1,
                                          padding=px)[0, 0] > 0


@torch.no_grad()
def frame_breaks(frames: torch.Tensor, agent_colours: torch.Tensor,
                 ball_colours: torch.Tensor) -> list[set[str]]:
    """Why the agent is or is not one blob in each frame of `frames` (B, T, 3, H, W)
    (generated or reconstructed; agent_colours, ball_colours (B,) palette ids), frame by
    frame in (B, T) order: {"one_blob"}, {"none"} (no pixel of the agent's colour), or the
    kinds of its pieces apart from the largest blob. Each such piece is one of: "on_ball",
    touching a pixel of the ball's colour (the ball drawn partly in the agent's colour);
    "beside", within 2 px of the largest blob (the agent itself broken); "apart", neither.
    agent_breaks and ball_tint_by_colours summarise one such reading."""
    labels = blob_labels(agent_mask(frames, agent_colours)).flatten(0, 1)   # (B*T, H, W)
    ball = agent_mask(frames, ball_colours).flatten(0, 1)
    kinds_of_frames = []
    for lab, ball_px in zip(labels, ball, strict=True):
        ids, sizes = lab[lab > 0].unique(return_counts=True)
        if len(ids) <= 1:
            kinds_of_frames.append({"one_blob" if len(ids) else "none"})
            continue
        largest = ids[sizes.argmax()]
        near_largest, kinds = _grown(lab == largest, 2), set()
        for i in ids[ids != largest]:
            piece = lab == i
            kinds.add("on_ball" if (_grown(piece, 1) & ball_px).any() else
                      "beside" if (piece & near_largest).any() else "apart")
        kinds_of_frames.append(kinds)
    return kinds_of_frames


def agent_breaks(frame_kinds: list[set[str]]) -> dict:
    """The fraction of frames of a frame_breaks reading with a piece of each kind (a frame
    with several pieces counts under each of their kinds), "none" and "one_blob"."""
    return {k: sum(k in kinds for kinds in frame_kinds) / len(frame_kinds)
            for k in ("one_blob", "none", "on_ball", "beside", "apart")}


def ball_tint_by_colours(frame_kinds: list[set[str]], agent_colours: torch.Tensor,
                         ball_colours: torch.Tensor) -> dict:
    """Which colours the ball drawn partly in the agent's colour comes from: for each
    (agent, ball) pair of palette colours (agent_colours, ball_colours (B,), those the
    frame_breaks reading `frame_kinds` of B clips was made with), the frames with an
    "on_ball" piece and all its frames, as {"agent/ball": [on_ball frames, frames]}, the
    pairs with most such frames first. Neighbours in colour (orange between red and yellow)
    are where a slightly wrong shade crosses over to the agent's."""
    T = len(frame_kinds) // len(agent_colours)
    counts: dict[str, list[int]] = {}
    for b, (agent, ball) in enumerate(zip(agent_colours.tolist(), ball_colours.tolist(),
                                          strict=True)):
        pair = counts.setdefault(f"{COLOUR_NAMES[agent]}/{COLOUR_NAMES[ball]}", [0, 0])
        pair[0] += sum("on_ball" in kinds for kinds in frame_kinds[b * T:(b + 1) * T])
        pair[1] += T
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0])))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a genie.safetensors file")
    ap.add_argument("--clips", type=int, default=512,
                    help="held-out clips (the generated frames on the first 128)")
    args = ap.parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint)
    video, true_actions = held_out(model.cfg, args.clips, seed=model.cfg.train.seed)
    colours = held_out_colours(model.cfg, video)
    images = video[:IMAGE_CLIPS]
    with torch.no_grad():     # the inferred clips of evaluate.rollouts, its seeds
        inferred = model.lam.infer_actions(images)
        generated = [generate(model, images[:, :1], inferred, seed)
                     for seed in GENERATION_SEEDS]
    fed_back = errors_fed_back(model, images, colours[:IMAGE_CLIPS], generated[0])
    ball_colours = held_out_colours(model.cfg, images, "ball")
    recon = reconstruct(model, images)
    balls = ball_in_rollouts(images, recon, ball_colours, generated)
    rolled = torch.cat([x[:, 1:] for x in generated])
    repeat = len(generated)
    read = {"recon": (recon[:, 1:], colours[:IMAGE_CLIPS], ball_colours),
            "rollouts": (rolled, colours[:IMAGE_CLIPS].repeat(repeat),
                         ball_colours.repeat(repeat))}
    kinds = {k: frame_breaks(*args) for k, args in read.items()}
    print(json.dumps({"codes": code_stability(model, video),
                      "teacher_forced_tokens": training_gap(model),
                      "changed_codes": changed_codes(model, images),
                      "actions": _rounded(action_movements(model, video, colours)),
                      "walls": moves_into_walls(model, video, true_actions, colours),
                      "errors_fed_back": _rounded(fed_back),
                      "first_ball": _rounded(balls),
                      "ball_tint": {k: ball_tint_by_colours(kinds[k], *read[k][1:])
                                    for k in read},
                      "agent_breaks": {k: {kind: round(x, 3)
                                           for kind, x in agent_breaks(kinds[k]).items()}
                                       for k in read}}, indent=1))


def _rounded(readings: dict) -> dict:
    """The per-t lists of `readings` rounded to 3 places for printing; other values as they are."""
    return {k: [round(x, 3) for x in v] if isinstance(v, list) else v
            for k, v in readings.items()}


if __name__ == "__main__":
    main()
