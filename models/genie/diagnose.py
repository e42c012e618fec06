"""Where a Genie rollout breaks, read from a trained checkpoint without generating: whether
the tokenizer gives a patch that did not change the code it had (the dynamics can only copy
what stays put if its code stays put), and whether each latent action names one movement
of the agent (the dynamics can only place the agent as well as the action says where).

    python -m wmkernels.models.genie.diagnose runs/demo/genie.safetensors

The numbers behind the tiny preset's dynamics width are in models/genie/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json

import torch

from wmkernels.models.common import patchify
from wmkernels.models.genie.data import held_out
from wmkernels.models.genie.evaluate import held_out_agent_colours
from wmkernels.models.genie.metrics import agent_mask, centroid
from wmkernels.models.genie.model import Genie, load_checkpoint


@torch.no_grad()
def code_stability(model: Genie, video: torch.Tensor) -> dict:
    """Over consecutive frames of video (B, T, 3, H, W) in [0, 1]: the fraction of patches
    whose pixels did not change ("static_patches"), the fraction of those whose code did not
    change either ("same_code_if_static"), and the accuracy of predicting every code as the
    previous frame's ("copy_code_accuracy", the bar a next-frame model must clear)."""
    codes = model.tokenizer.encode(video)[1]
    pixels = patchify(video, model.cfg.tokenizer.patch)
    static = (pixels[:, 1:] - pixels[:, :-1]).abs().amax(-1) == 0
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="a genie.safetensors file")
    ap.add_argument("--clips", type=int, default=512, help="held-out clips")
    args = ap.parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint)
    video, _ = held_out(model.cfg, args.clips, seed=model.cfg.train.seed)
    colours = held_out_agent_colours(model.cfg, video)
    print(json.dumps({"codes": code_stability(model, video),
                      "actions": action_movements(model, video, colours)}, indent=1))


if __name__ == "__main__":
    main()
