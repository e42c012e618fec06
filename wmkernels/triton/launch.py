"""What a Triton launcher launches, as data: the kernel, its grid, its arguments and its
launch parameters. The launchers compute a list of `Launch` and then run it; the compile
gates (tests/gates) and the static report (bench/static) compute the same list without a
GPU and compile it ahead of time, so they check exactly what a GPU call would run.

The launch parameters depend on the device through its per-block shared memory limit,
which `smem_limit` reads from the device (and which the gates pass per architecture).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

# Opt-in shared memory per block (bytes) of the architectures the kernels are compiled for.
SMEM_LIMIT = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448}
# The smallest of them: what a launcher assumes when it cannot ask the device (interpreter).
MIN_SMEM_LIMIT = min(SMEM_LIMIT.values())


@dataclass(frozen=True)
class Launch:
    """One kernel launch: `kernel[grid](*args, **meta)`."""

    kernel: object  # a triton.JITFunction (or an Autotuner around one)
    grid: tuple
    args: tuple
    meta: dict = field(default_factory=dict)

    def __call__(self):
        self.kernel[self.grid](*self.args, **self.meta)


def smem_limit(x: torch.Tensor) -> int:
    """Opt-in shared memory per block of `x`'s device; MIN_SMEM_LIMIT off CUDA."""
    if x.device.type != "cuda":
        return MIN_SMEM_LIMIT
    return torch.cuda.get_device_properties(x.device).shared_memory_per_block_optin


def run(launches: list[Launch], x: torch.Tensor) -> None:
    """Run `launches` in order on `x`'s device, whatever the current device is."""
    ctx = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with ctx:
        for launch in launches:
            launch()
