"""vq_lookup cases: the canonical shapes on GPU, scaled shapes on CPU.

Baselines: eager `cdist + argmin` (how tokenizers write it), the vector-quantize-pytorch
style path (fp32 distances, one-hot, one-hot GEMM gather), torch.compile of eager, and
vector-quantize-pytorch / FAISS when installed.
"""

from __future__ import annotations

import importlib.util

import torch

import wmkernels
from wmkernels import routing
from wmkernels.bench import baselines
from wmkernels.bench.harness import Case, Skip
from wmkernels.reference import vq as ref

GPU_SHAPES = [("vq-tokenizer", 131072, 1024, 32, ("float32", "bfloat16")),
              ("vq-large", 131072, 8192, 256, ("bfloat16",)),
              ("vq-actions", 131072, 8, 32, ("float32",))]
# CPU: vq-tokenizer at N = 16384 is the CPU target; the others scaled alike.
CPU_SHAPES = [("vq-tokenizer/cpu", 16384, 1024, 32, ("float32",)),
              ("vq-large/cpu", 4096, 8192, 256, ("float32",)),
              ("vq-actions/cpu", 131072, 8, 32, ("float32",))]
QUICK_SHAPES = [("vq-quick", 300, 40, 16, ("float32",))]


def cases(device: str, quick: bool) -> list:
    shapes = QUICK_SHAPES if quick else (GPU_SHAPES if device == "cuda" else CPU_SHAPES)
    out = []
    for name, N, K, D, dtypes in shapes:
        for dt in dtypes:
            out += _shape_cases(device, quick, name, N, K, D, getattr(torch, dt))
    return out


def _shape_cases(device, quick, name, N, K, D, dtype):
    z = torch.randn(N, D, device=device, dtype=dtype)
    codebook = torch.randn(K, D, device=device, dtype=dtype)
    es = z.element_size()
    common = dict(op="vq_lookup", shape=name, dtype=str(dtype).replace("torch.", ""),
                  bytes=(N + K) * D * es + N * 8, flops=2 * N * K * D,
                  params={"N": N, "K": K, "D": D})
    out = [Case(backend="eager", fn=lambda: ref.vq_lookup(z, codebook), **common),
           Case(backend="eager-onehot", fn=lambda: baselines.vq_lookup_onehot(z, codebook),
                **common)]
    if quick:
        out.append(Skip("vq_lookup", name, "compile", "torch.compile skipped in quick mode"))
    else:
        compiled = torch.compile(ref.vq_lookup)
        out.append(Case(backend="compile", fn=lambda: compiled(z, codebook), **common))
    for backend in ("cpu", "triton", "cuda"):
        reason = routing.unavailable_reason(backend, device)
        if backend == "triton" and device == "cpu" and reason is None and not quick:
            reason = "the Triton interpreter is for tests, not timing"
        if reason is None:
            out.append(Case(backend=f"wmk-{backend}", **common,
                            fn=lambda b=backend: wmkernels.vq_lookup(z, codebook, backend=b)))
        elif not (backend == "cuda" and device == "cpu" or backend == "cpu" and device == "cuda"):
            out.append(Skip("vq_lookup", name, f"wmk-{backend}", reason))
    out += _peers(device, name, z, codebook, common)
    return out


def _peers(device, name, z, codebook, common):
    out = []
    if importlib.util.find_spec("faiss") is None:
        out.append(Skip("vq_lookup", name, "faiss", "faiss not installed"))
    elif device == "cpu" and z.dtype == torch.float32:
        import faiss

        index = faiss.IndexFlatL2(z.shape[1])
        index.add(codebook.numpy())
        zn = z.numpy()
        out.append(Case(backend="faiss", fn=lambda: index.search(zn, 1), **common))
    if importlib.util.find_spec("vector_quantize_pytorch") is None:
        out.append(Skip("vq_lookup", name, "vector-quantize-pytorch", "not installed"))
    else:
        from vector_quantize_pytorch import VectorQuantize

        vq = VectorQuantize(dim=z.shape[1], codebook_size=codebook.shape[0]).to(z.device).eval()
        vq._codebook.embed.data.copy_(codebook.float()[None])
        out.append(Case(backend="vector-quantize-pytorch", fn=lambda: vq(z[None].float()),
                        **common))
    return out
