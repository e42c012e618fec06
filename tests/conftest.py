"""Test setup shared by every test file.

Without a GPU, Triton kernels run in the interpreter: TRITON_INTERPRET must be set before
anything imports triton (torch._dynamo does), so it is set here, first.
"""

import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

# The CUDA C++ kernels run on the CPU through a SIMT emulation: backend "cuda-sim".
pytest_plugins = ("cuda_sim.plugin",)


@pytest.fixture(autouse=True)
def _seed(request):
    """Fresh random inputs per test, reproducible per test id."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def pytest_report_header(config):
    import wmkernels
    from wmkernels import _extension

    lines = [f"wmkernels: cuda={torch.cuda.is_available()} "
             f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET')} "
             f"extension={_extension.BUILD_INFO or _extension.LOAD_ERROR}"]
    for op, per_device in wmkernels.backends().items():
        for dev, row in per_device.items():
            avail = [b for b, s in row.items() if s == "available"]
            lines.append(f"  {op} on {dev}: {avail}")
    return lines
