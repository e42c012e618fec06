"""Where a Genie rollout breaks, read from a trained checkpoint: whether the tokenizer gives a
patch that did not change the code it had (the dynamics can only copy what stays put if its
code stays put), whether each latent action names one movement of the agent (the dynamics
can only place the agent as well as the action says where), and whether a rollout breaks by
the errors of each generated frame or by feeding them back as the next frame's past.

    python -m wmkernels.models.genie.diagnose runs/demo/genie.safetensors

The numbers behind the tiny preset's dynamics width are in models/genie/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json

import torch

from wmkernels.models.genie.config import IMAGE_CLIPS
from wmkernels.models.genie.data import held_out
from wmkernels.models.genie.evaluate import held_out_colours, reconstruct, rollouts
from wmkernels.models.genie.metrics import agent_mask, agent_metrics, centroid
from wmkernels.models.genie.model import Genie, load_checkpoint
from wmkernels.models.genie.play import play
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


@torch.no_grad()
def action_movements(model: Genie, video: torch.Tensor, agent_colours: torch.Tensor,
                     radius: float = 2.0) -> dict:
    """How well each latent action names one movement of the agent: for every transition the
    LAM labels with action a, the agent's centroid displacement (pixels) against the mean
    displacement of all a-labelled transitions. Returns "within" (fraction of transitions
    within `radius` px of their action's mean: the most a dynamics driven by these actions
    can place the agent within that radius) and "per_action" {a: (count, mean dx, mean dy)}."""
    actions = model.lam.infer_actions(video)
    moves = centroid(agent_mask(video, agent_colours)).diff(dim=1)      # (B, T-1, 2)
    seen = moves.isfinite().all(-1)
    within, per_action = 0, {}
    for a in actions.unique().tolist():
        d = moves[seen & (actions == a)]
        if len(d):
            mean = d.mean(0)
            within += int(((d - mean).norm(dim=-1) <= radius).sum())
            per_action[a] = (len(d), *[round(float(x), 2) for x in mean])
    count = int(seen.sum())
    return {"within": within / count if count else None, "per_action": per_action}


@torch.no_grad()
def errors_fed_back(model: Genie, video: torch.Tensor, agent_colours: torch.Tensor, *,
                    seed: int = 0) -> dict:
    """Each frame t = 1..T-1 of video (B, T, 3, H, W) generated twice with the latent actions
    inferred from the real clip and the same generator seed: "one_step" from the real frames
    0..t-1 (one MaskGIT frame), "rollout" from the real first frame through its own frames
    (what `evaluate` measures). Returns per-t lists {one_step,rollout}_{one_blob,within_2px}:
    the fraction of frames whose agent is one blob, and within 2 px of the real agent. A
    one-step row that holds while the rollout's falls means errors fed back (exposure
    bias); a one-step row that falls with t means the model."""
    inferred = model.lam.infer_actions(video)
    g = torch.Generator(device=video.device)
    one_step = []
    for t in range(1, video.shape[1]):
        g.manual_seed(1000 + seed)
        one_step.append(play(model, video[:, :t], inferred[:, t - 1:t],
                             prompt_actions=inferred[:, :t - 1], generator=g)[:, -1])
    g.manual_seed(1000 + seed)
    rollout = play(model, video[:, :1], inferred, generator=g)[:, 1:]
    out = {}
    for name, frames in (("one_step", torch.stack(one_step, 1)), ("rollout", rollout)):
        agent = agent_metrics(frames, video[:, 1:], agent_colours)
        out[f"{name}_one_blob"] = agent["one_blob"].double().mean(0).tolist()
        out[f"{name}_within_2px"] = (agent["centroid_error"] <= 2).double().mean(0).tolist()
    return out


@torch.no_grad()
def ball_in_rollouts(model: Genie, video: torch.Tensor, ball_colours: torch.Tensor) -> dict:
    """The agent metrics of `evaluate`, read on a ball instead (ball_colours (B,) palette
    ids): per t = 1..T-1 the fraction of frames in which that ball is one blob
    ("{real,recon,inferred}_one_blob", the rollouts' averaged over 3 generation seeds) and
    within 2 px of the real ball ("inferred_within_2px"). From one prompt frame a ball's
    direction cannot be known, so its place is a guess; that it stays one blob is not."""
    real = video[:, 1:]

    def read(frames):
        ball = agent_metrics(frames, real, ball_colours)
        return (ball["one_blob"].double().mean(0),
                (ball["centroid_error"] <= 2).double().mean(0))

    inferred = [read(x[:, 1:]) for x, _ in rollouts(model, video)]
    return {"real_one_blob": read(real)[0].tolist(),
            "recon_one_blob": read(reconstruct(model, video)[:, 1:])[0].tolist(),
            "inferred_one_blob": torch.stack([b for b, _ in inferred]).mean(0).tolist(),
            "inferred_within_2px": torch.stack([w for _, w in inferred]).mean(0).tolist()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a genie.safetensors file")
    ap.add_argument("--clips", type=int, default=512,
                    help="held-out clips (the generated frames on the first 128)")
    args = ap.parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint)
    video, _ = held_out(model.cfg, args.clips, seed=model.cfg.train.seed)
    colours = held_out_colours(model.cfg, video)
    fed_back = errors_fed_back(model, video[:IMAGE_CLIPS], colours[:IMAGE_CLIPS])
    balls = ball_in_rollouts(model, video[:IMAGE_CLIPS], held_out_colours(
        model.cfg, video[:IMAGE_CLIPS], "ball"))
    print(json.dumps({"codes": code_stability(model, video),
                      "actions": action_movements(model, video, colours),
                      "errors_fed_back": {k: [round(x, 3) for x in v]
                                          for k, v in fed_back.items()},
                      "first_ball": {k: [round(x, 3) for x in v]
                                     for k, v in balls.items()}}, indent=1))


if __name__ == "__main__":
    main()
