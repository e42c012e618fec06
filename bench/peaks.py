"""The device's measured peaks, taken in the same run as the op timings: copy bandwidth
(a large device-to-device copy) and matmul throughput (bf16 on GPU, fp32 on CPU, where
bf16 matmul is not the fast path)."""

from __future__ import annotations

import torch
from wmkernels.bench.timing import time_fn


def measure(device: str) -> dict:
    if device == "cuda":
        n_copy, n_mm, dtype = 1 << 28, 8192, torch.bfloat16  # 512 MiB bf16 copy
    else:
        n_copy, n_mm, dtype = 1 << 25, 2048, torch.float32  # 64 MiB fp16 copy
    src = torch.empty(n_copy, dtype=torch.float16, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = time_fn(lambda: dst.copy_(src), device)
    copy_gbs = 2 * src.numel() * src.element_size() / ms / 1e6
    a = torch.randn(n_mm, n_mm, device=device, dtype=dtype)
    b = torch.randn(n_mm, n_mm, device=device, dtype=dtype)
    ms = time_fn(lambda: a @ b, device)
    mm_tflops = 2 * n_mm**3 / ms / 1e9
    return {"copy_GBps": copy_gbs, "matmul_TFLOPs": mm_tflops,
            "matmul_dtype": str(dtype).replace("torch.", "")}
