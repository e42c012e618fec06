"""Planning in representation space with the cross-entropy method (CEM).

Given the current frame's features and a goal frame's features, CEM searches over discrete
action sequences: it keeps one categorical distribution per step, samples sequences, rolls
each one out with the action-conditioned predictor, scores it by the L1 distance between the
predicted final features and the goal's, and refits the distributions to the best sequences
(the elites). The JEPA paper's "mode-2" planning and V-JEPA 2-AC use the same energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wmkernels.models.jepa.ac import ActionConditionedPredictor


@dataclass
class CEMConfig:
    horizon: int = 4          # actions per plan
    samples: int = 64         # sequences per iteration
    elites: int = 8           # best sequences the distribution is refitted to
    iterations: int = 4
    smoothing: float = 0.1    # mix of the previous distribution kept at each refit

    def validate(self) -> None:
        for name in ("horizon", "samples", "elites", "iterations"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.elites > self.samples:
            raise ValueError(f"elites ({self.elites}) must be <= samples ({self.samples})")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing!r}")


class CEMPlanner:
    """CEM over discrete action sequences with an `ActionConditionedPredictor`.

    plan(z_start, z_goal, generator) -> (actions int64 (horizon,), energy float), where
    z_start (S, C) or (T0, S, C) holds the observed frame(s) and z_goal (S, C) the goal.
    The returned sequence is the lowest-energy one seen in any iteration.
    """

    def __init__(self, predictor: ActionConditionedPredictor, cfg: CEMConfig | None = None):
        self.predictor = predictor
        self.cfg = cfg or CEMConfig()
        self.cfg.validate()

    @torch.no_grad()
    def energy(self, z_start: torch.Tensor, z_goal: torch.Tensor,
               actions: torch.Tensor) -> torch.Tensor:
        """L1 distance between the predicted last frame and the goal, per sequence (N,)."""
        n = actions.shape[0]
        z0 = z_start.expand(n, *z_start.shape[1:])
        t0 = z0.shape[1]
        # The observed frames before the last are taken to be followed by noop (action 0).
        history = actions.new_zeros(n, t0 - 1)
        pred = self.predictor.rollout(z0, torch.cat([history, actions], dim=1))
        return (pred[:, -1] - z_goal).abs().mean(dim=(-1, -2))

    @torch.no_grad()
    def plan(self, z_start: torch.Tensor, z_goal: torch.Tensor,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
        if z_start.dim() == 2:
            z_start = z_start[None]
        if z_start.dim() != 3 or z_goal.shape != z_start.shape[1:]:
            raise ValueError(f"z_start must be (S, C) or (T0, S, C) and z_goal (S, C) of the "
                             f"same S, C; got {tuple(z_start.shape)} and {tuple(z_goal.shape)}")
        c = self.cfg
        a = self.predictor.num_actions
        probs = torch.full((c.horizon, a), 1.0 / a)
        best, best_energy = None, float("inf")
        for _ in range(c.iterations):
            seqs = torch.multinomial(probs, c.samples, replacement=True,
                                     generator=generator).T           # (N, H)
            e = self.energy(z_start[None], z_goal, seqs)
            order = e.argsort()
            if float(e[order[0]]) < best_energy:
                best_energy, best = float(e[order[0]]), seqs[order[0]].clone()
            elites = seqs[order[:c.elites]]
            counts = torch.nn.functional.one_hot(elites, a).float().mean(dim=0)  # (H, A)
            probs = c.smoothing * probs + (1.0 - c.smoothing) * counts
        return best, best_energy
