"""Helpers for the correctness rules of the benchmarks document (tolerances, devices,
dtypes, backends, opcheck)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wmkernels import routing
from wmkernels.bench.static.cuda_kernels import find_nvcc

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])

ROOT = Path(__file__).resolve().parents[1]


# nvcc for the compile gates (tests/gates), found as the static report finds it; None if absent.
NVCC = find_nvcc()

def gpu_only(why: str):
    """Mark `gpu`, and skip without a GPU; `why` says why the CPU stand-ins (cpu-cuda-sim,
    cpu-triton) cannot run the test either."""
    skip = pytest.mark.skipif(not HAS_CUDA, reason=f"needs a CUDA GPU (none visible): {why}")
    return lambda test: pytest.mark.gpu(skip(test))

# Relative-RMS bounds per dtype, on top of the max-error rule.
REL_RMS = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-7}


def dtypes_for(device: str, backend: str, supported=(torch.float32, torch.float16,
                                                     torch.bfloat16)):
    """The dtypes a backend is tested in on a device. The Triton interpreter cannot do
    bf16, so bf16 Triton runs only on a GPU."""
    out = []
    for dt in supported:
        if backend == "triton" and device == "cpu" and dt == torch.bfloat16:
            continue
        out.append(dt)
    return out


def available_backends(op: str, device: str) -> list[str]:
    return [b for b in routing._OPS[op] if routing.unavailable_reason(b, device) is None]


# Where the tests of each backend's CUDA-device parameter run when there is no GPU.
NO_GPU = {"cuda": "the CUDA C++ kernels run on the CPU in emulation as cpu-cuda-sim",
          "triton": "the Triton kernels run in the interpreter as cpu-triton",
          "reference": "the reference runs as cpu-reference",
          "sdpa": "torch SDPA on views runs as cpu-sdpa"}


def backend_params(op: str):
    """pytest params (device, backend) for every backend of `op`, skipped with the reason
    when it cannot run here."""
    params = []
    # the device type each backend runs; "cuda-sim" (tests/cuda_sim) runs CPU tensors
    runs = {"cpu": "cpu", "cuda": "cuda", **{b: d for b, (d, _) in routing._EXTRA.items()}}
    for dev in ("cpu", "cuda"):
        for b in routing._OPS[op]:
            if runs.get(b, dev) != dev:
                continue
            reason = f"no CUDA GPU; {NO_GPU.get(b, 'no CPU stand-in')}" if (
                dev == "cuda" and not HAS_CUDA) else routing.unavailable_reason(b, dev)
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            if dev == "cuda":
                marks.append(pytest.mark.gpu)
            params.append(pytest.param(dev, b, id=f"{dev}-{b}", marks=marks))
    return params


def assert_close(out, ref64, low, *, dtype=None, name="output"):
    """FlashAttention's rule: max|out - ref64| <= 2 * max|low - ref64| + 1e-5, plus a
    relative-RMS bound per dtype. `low` is the reference run in the kernel's dtype."""
    dtype = dtype or out.dtype
    out64, low64 = out.double(), low.double()
    err = (out64 - ref64).abs().max().item() if out.numel() else 0.0
    base = (low64 - ref64).abs().max().item() if out.numel() else 0.0
    assert err <= 2 * base + 1e-5, f"{name}: max error {err:.3e} > 2 * {base:.3e} + 1e-5"
    if out.numel():
        rel = ((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30)).item()
        assert rel < REL_RMS[dtype], f"{name}: relative RMS {rel:.3e} >= {REL_RMS[dtype]}"


def opcheck(op, args, kwargs=None):
    """torch.library.opcheck, failing the test on any of its checks."""
    torch.library.opcheck(op, args, kwargs or {}, raise_exception=True)


def run_two_gloo_processes(worker: Path, out: Path, timeout: int = 300) -> None:
    """Run `worker out` under `torchrun --standalone --nproc_per_node=2` on the CPU (gloo),
    one thread per process, with any torchrun variables of the calling shell removed; fail
    the test with the workers' output if they do not exit cleanly."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(worker), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
