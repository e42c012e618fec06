"""Mask collators for JEPA training: which patches the context encoder sees and which ones the
predictor must fill in.

- `MultiBlockMasks` (I-JEPA, arXiv 2301.08243 sec. 3): M target blocks per image (scale
  0.15-0.2, aspect 0.75-1.5) and one context block (scale 0.85-1.0) with every target patch
  removed from it.
- `MultiBlock3DMasks` (V-JEPA): per mask spec, the union of N spatial blocks is the target
  and its complement the context; blocks span all frames, so a mask is a set of spatial
  positions shared by every frame (short range: 8 blocks of scale 0.15; long range: 2 blocks
  of scale 0.7). Keeping masks frame-independent keeps the visible tokens a (T, S_vis) grid,
  which is what factorized spatial/temporal attention needs.
- `TubeMasks`: a random fraction of spatial positions, masked in every frame.
- `FutureMasks` (ours): the context is every position of the first tubelets, the targets
  every position of the later ones: predicting where things will be, which the families
  above (hiding the same positions in every frame) never ask for.
- `MaskFamilies`: several collators as one; each batch gets one mask of every family.

All collators draw from an explicit `torch.Generator`, build the masks for a whole batch with
tensor ops (no per-sample Python loops), and return index tensors with the *same* number of
indices for every sample of the batch (the longer index sets are randomly subsampled down to
the batch minimum), so the encoders run on dense (B, N, C) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not (low <= value[0] <= value[1] <= high)):
        raise ValueError(f"{name} must be a pair (lo, hi) with {low} <= lo <= hi <= {high}, "
                         f"got {value!r}")


def _check_grid(name: str, grid: tuple[int, ...], dims: int) -> None:
    if (not isinstance(grid, (tuple, list)) or len(grid) != dims
            or not all(isinstance(g, int) and g >= 1 for g in grid)):
        raise ValueError(f"{name} must be {dims} positive ints, got {grid!r}")


def _uniform(lo: float, hi: float, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def sample_blocks(batch: int, num_blocks: int, grid_hw: tuple[int, int],
                  scale: tuple[float, float], aspect: tuple[float, float],
                  gen: torch.Generator) -> torch.Tensor:
    """Random rectangles on an H x W patch grid.

    Each block gets an area fraction ~ U(scale) and an aspect ratio (h / w) drawn uniformly in
    log space from `aspect`; its size is rounded and clipped to the grid, its top-left corner
    is uniform over the positions where it fits.

    Returns:
        bool tensor (batch, num_blocks, H, W), True inside each block.
    """
    h_grid, w_grid = grid_hw
    area = _uniform(*scale, (batch, num_blocks), gen) * h_grid * w_grid
    log_ar = _uniform(float(torch.log(torch.tensor(aspect[0]))),
                      float(torch.log(torch.tensor(aspect[1]))), (batch, num_blocks), gen)
    ar = torch.exp(log_ar)
    h = torch.sqrt(area * ar).round().clamp(1, h_grid).long()
    w = torch.sqrt(area / ar).round().clamp(1, w_grid).long()
    top = (torch.rand((batch, num_blocks), generator=gen, dtype=torch.float64)
           * (h_grid - h + 1)).floor().long()
    left = (torch.rand((batch, num_blocks), generator=gen, dtype=torch.float64)
            * (w_grid - w + 1)).floor().long()
    rows = torch.arange(h_grid).view(1, 1, h_grid, 1)
    cols = torch.arange(w_grid).view(1, 1, 1, w_grid)
    inside_r = (rows >= top[..., None, None]) & (rows < (top + h)[..., None, None])
    inside_c = (cols >= left[..., None, None]) & (cols < (left + w)[..., None, None])
    return inside_r & inside_c


def select_equal(mask: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """Indices of `count` True entries per row of `mask`, chosen uniformly, sorted ascending.

    Args:
        mask: bool (R, N); every row must hold at least `count` True entries.
        count: how many indices to keep per row.

    Returns:
        int64 (R, count).
    """
    # Random keys for True entries, +inf-like keys for False ones: the `count` smallest keys
    # are a uniform random subset of the True entries.
    keys = torch.rand(mask.shape, generator=gen, dtype=torch.float64)
    keys = torch.where(mask, keys, torch.full_like(keys, 2.0))
    idx = keys.argsort(dim=-1)[:, :count]
    return idx.sort(dim=-1).values


@dataclass
class IJEPAMasks:
    """One batch of I-JEPA masks on a flattened (row-major) H*W patch grid.

    context: int64 (B, Nc) patch indices the context encoder sees.
    targets: int64 (B, M, Nt) patch indices of each of the M target blocks.
    """
    context: torch.Tensor
    targets: torch.Tensor


class MultiBlockMasks:
    """I-JEPA multi-block masking.

    Args:
        grid: (H, W) patch grid.
        num_targets: target blocks per image (paper: 4).
        target_scale, target_aspect: block area fraction and h/w ratio ranges
            (paper: (0.15, 0.2) and (0.75, 1.5)).
        context_scale: context block area fraction (paper: (0.85, 1.0)); aspect 1.
        min_context: smallest acceptable number of context patches after removing targets;
            samples below it are redrawn (vectorized over the failing samples).

    Calling it with (batch, generator) returns `IJEPAMasks`. Every target block keeps the
    same number of patches across the batch and blocks (the minimum drawn), and so does the
    context, exactly as the reference implementation truncates them. Context and targets
    never overlap.
    """

    def __init__(self, grid: tuple[int, int], *, num_targets: int = 4,
                 target_scale: tuple[float, float] = (0.15, 0.2),
                 target_aspect: tuple[float, float] = (0.75, 1.5),
                 context_scale: tuple[float, float] = (0.85, 1.0), min_context: int = 4,
                 max_tries: int = 100):
        _check_grid("grid", grid, 2)
        _check_range("target_scale", target_scale, 0.0, 1.0)
        _check_range("context_scale", context_scale, 0.0, 1.0)
        _check_range("target_aspect", target_aspect, 1e-3, 1e3)
        if not isinstance(num_targets, int) or num_targets < 1:
            raise ValueError(f"num_targets must be an int >= 1, got {num_targets!r}")
        if not isinstance(min_context, int) or not 1 <= min_context <= grid[0] * grid[1]:
            raise ValueError(f"min_context must be an int in [1, H*W={grid[0] * grid[1]}], "
                             f"got {min_context!r}")
        self.grid = tuple(grid)
        self.num_targets = num_targets
        self.target_scale, self.target_aspect = tuple(target_scale), tuple(target_aspect)
        self.context_scale = tuple(context_scale)
        self.min_context = min_context
        self.max_tries = max_tries

    def _draw(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        targets = sample_blocks(batch, self.num_targets, self.grid, self.target_scale,
                                self.target_aspect, gen)
        context = sample_blocks(batch, 1, self.grid, self.context_scale, (1.0, 1.0), gen)[:, 0]
        context = context & ~targets.any(dim=1)
        return context.flatten(1), targets.flatten(2)

    def __call__(self, batch: int, gen: torch.Generator) -> IJEPAMasks:
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        context, targets = self._draw(batch, gen)
        for _ in range(self.max_tries):
            bad = context.sum(-1) < self.min_context
            if not bad.any():
                break
            new_c, new_t = self._draw(int(bad.sum()), gen)
            context[bad], targets[bad] = new_c, new_t
        else:
            raise RuntimeError(f"could not draw a context of >= {self.min_context} patches in "
                               f"{self.max_tries} tries; lower target_scale or num_targets")
        n_ctx = int(context.sum(-1).min())
        n_tgt = int(targets.sum(-1).min())
        ctx_idx = select_equal(context, n_ctx, gen)
        tgt_idx = select_equal(targets.flatten(0, 1), n_tgt, gen).view(batch, self.num_targets,
                                                                       n_tgt)
        return IJEPAMasks(context=ctx_idx, targets=tgt_idx)


@dataclass
class BlockSpec:
    """One V-JEPA mask family: `num_blocks` blocks of area fraction ~ U(spatial_scale)."""
    num_blocks: int
    spatial_scale: tuple[float, float]
    aspect: tuple[float, float] = (0.75, 1.5)


SHORT_RANGE = BlockSpec(8, (0.15, 0.15))
LONG_RANGE = BlockSpec(2, (0.7, 0.7))


@dataclass
class VideoMasks:
    """One V-JEPA mask on a (T', H*W) token grid of T' tubelets.

    context: int64 (B, Nc) spatial indices visible in every context tubelet.
    target: int64 (B, Nt) spatial indices to predict in every target tubelet.
    context_tubelets: None: every tubelet is both (the mask hides the same positions in all
        of them); k: the first k tubelets are the context, the later ones the targets.
    """
    context: torch.Tensor
    target: torch.Tensor
    context_tubelets: int | None = None


def _split_equal(masked: torch.Tensor, gen: torch.Generator) -> VideoMasks:
    visible = ~masked
    n_ctx, n_tgt = int(visible.sum(-1).min()), int(masked.sum(-1).min())
    return VideoMasks(context=select_equal(visible, n_ctx, gen),
                      target=select_equal(masked, n_tgt, gen))


class MultiBlock3DMasks:
    """V-JEPA 3D multi-block masking: one `VideoMasks` per spec, blocks spanning all frames.

    Args:
        grid: (H, W) spatial patch grid (the temporal extent is always all frames).
        specs: mask families (paper: short range 8 x 0.15 and long range 2 x 0.7).
        min_visible: smallest context size; samples whose union covers more are redrawn.

    Calling it with (batch, generator) returns a list of `VideoMasks`, one per spec.
    """

    def __init__(self, grid: tuple[int, int],
                 specs: tuple[BlockSpec, ...] = (SHORT_RANGE, LONG_RANGE), *,
                 min_visible: int = 1, max_tries: int = 100):
        _check_grid("grid", grid, 2)
        if not specs:
            raise ValueError("specs must hold at least one BlockSpec, got none")
        for i, s in enumerate(specs):
            if not isinstance(s, BlockSpec) or s.num_blocks < 1:
                raise ValueError(f"specs[{i}] must be a BlockSpec with num_blocks >= 1, "
                                 f"got {s!r}")
            _check_range(f"specs[{i}].spatial_scale", s.spatial_scale, 0.0, 1.0)
            _check_range(f"specs[{i}].aspect", s.aspect, 1e-3, 1e3)
        if not 1 <= min_visible < grid[0] * grid[1]:
            raise ValueError(f"min_visible must be in [1, H*W), got {min_visible!r}")
        self.grid, self.specs = tuple(grid), tuple(specs)
        self.min_visible, self.max_tries = min_visible, max_tries

    def _draw(self, spec: BlockSpec, batch: int, gen: torch.Generator) -> torch.Tensor:
        blocks = sample_blocks(batch, spec.num_blocks, self.grid, spec.spatial_scale,
                               spec.aspect, gen)
        return blocks.any(dim=1).flatten(1)

    def __call__(self, batch: int, gen: torch.Generator) -> list[VideoMasks]:
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        out = []
        for spec in self.specs:
            masked = self._draw(spec, batch, gen)
            for _ in range(self.max_tries):
                bad = (~masked).sum(-1) < self.min_visible
                if not bad.any():
                    break
                masked[bad] = self._draw(spec, int(bad.sum()), gen)
            else:
                raise RuntimeError(f"could not leave >= {self.min_visible} visible patches "
                                   f"with {spec} in {self.max_tries} tries")
            out.append(_split_equal(masked, gen))
        return out


class TubeMasks:
    """Tube masking: `ratio` of the spatial positions, chosen uniformly, masked in all frames.

    Calling it with (batch, generator) returns a one-element list of `VideoMasks` (the same
    form as `MultiBlock3DMasks`); every sample masks exactly round(ratio * H * W) positions.
    """

    def __init__(self, grid: tuple[int, int], ratio: float = 0.9):
        _check_grid("grid", grid, 2)
        n = grid[0] * grid[1]
        n_mask = round(ratio * n) if isinstance(ratio, (int, float)) else -1
        if not 1 <= n_mask < n:
            raise ValueError(f"ratio must mask at least one and leave at least one of the "
                             f"{n} positions, got ratio={ratio!r}")
        self.grid, self.ratio, self.num_masked = tuple(grid), float(ratio), n_mask

    def __call__(self, batch: int, gen: torch.Generator) -> list[VideoMasks]:
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        n = self.grid[0] * self.grid[1]
        order = torch.rand((batch, n), generator=gen, dtype=torch.float64).argsort(dim=-1)
        return [VideoMasks(context=order[:, self.num_masked:].sort(-1).values,
                           target=order[:, :self.num_masked].sort(-1).values)]


class FutureMasks:
    """Future prediction: the context is every position of the first `context_tubelets`
    tubelets, the targets every position of the later ones.

    Masks that hide the same positions in every frame ask what is hidden, never where
    anything will be; this family asks for the later frames, which needs the velocities of
    what moves (on the embedded world it is what lifts V-JEPA above the random-encoder and
    pixel baselines: models/jepa/RESULTS.md). Calling it with (batch, generator) returns a
    one-element list of `VideoMasks` (deterministic: the generator is not used).
    """

    def __init__(self, grid: tuple[int, int], tubelets: int, context_tubelets: int = 1):
        _check_grid("grid", grid, 2)
        if not (isinstance(context_tubelets, int) and isinstance(tubelets, int)
                and 1 <= context_tubelets < tubelets):
            raise ValueError(f"context_tubelets must be an int in [1, tubelets) with tubelets "
                             f"= {tubelets!r} (a target tubelet must follow), got "
                             f"{context_tubelets!r}")
        self.grid, self.context_tubelets = tuple(grid), context_tubelets

    def __call__(self, batch: int, gen: torch.Generator) -> list[VideoMasks]:
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        every = torch.arange(self.grid[0] * self.grid[1]).expand(batch, -1)
        return [VideoMasks(context=every, target=every, context_tubelets=self.context_tubelets)]


class MaskFamilies:
    """Several video mask collators as one: calling it returns their lists, concatenated in
    order (each collator draws from the same generator in turn)."""

    def __init__(self, *collators):
        if not collators:
            raise ValueError("MaskFamilies needs at least one collator, got none")
        self.collators = collators

    def __call__(self, batch: int, gen: torch.Generator) -> list[VideoMasks]:
        return [m for c in self.collators for m in c(batch, gen)]
