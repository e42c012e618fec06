"""The CPU measurement behind the routing rule's CPU decisions (routing.CPU_MEASURED): our
cpu kernel against torch's SDPA on zero-copy views (the `sdpa` backend), forward and
forward+backward, spatial on packed-QKV views, temporal on contiguous and packed inputs.

Rounds of the two implementations are interleaved and each number is a median of medians,
because the machines this runs on are shared: compare ratios, not absolute times.

    OMP_NUM_THREADS=1 python -m wmkernels.bench.sdpa_views --threads 1
"""

from __future__ import annotations

import argparse

import torch

import wmkernels
from wmkernels.bench.timing import time_interleaved

# kind, layout, B, Tq, Tk, S, H, D
CASES = [
    ("spatial", "packed", 1, 4, 4, 256, 4, 64),  # attn-spatial-genie/cpu
    ("spatial", "packed", 1, 4, 4, 64, 4, 64),
    ("spatial", "packed", 1, 16, 16, 16, 4, 64),
    ("spatial", "packed", 1, 2, 2, 1024, 4, 64),
    ("spatial", "packed", 1, 4, 4, 256, 4, 32),
    ("spatial", "packed", 2, 8, 8, 64, 8, 32),
    ("temporal", "contiguous", 1, 16, 16, 256, 4, 64),  # attn-temporal-genie/cpu layouts
    ("temporal", "packed", 1, 16, 16, 256, 4, 64),
    ("temporal", "contiguous", 1, 64, 64, 64, 4, 64),
    ("temporal", "contiguous", 1, 1, 16, 256, 4, 64),  # attn-temporal-decode/cpu
    ("temporal", "packed", 1, 1, 16, 256, 4, 64),
    ("temporal", "contiguous", 1, 4, 16, 256, 4, 64),
]


def _inputs(layout, B, Tq, Tk, S, H, D, grad):
    """A callable giving fresh q, k, v views of leaf tensors (packed: one (..., 3, H, D)
    projection per frame count; contiguous: separate tensors)."""
    def make(T):
        if layout == "packed":
            x = torch.randn(B, T, S, 3, H, D, requires_grad=grad)
            return lambda: x.unbind(3)
        xs = [torch.randn(B, T, S, H, D, requires_grad=grad) for _ in range(3)]
        return lambda: xs
    get_q = make(Tq)
    get_kv = make(Tk) if Tk != Tq else get_q
    return lambda: (get_q()[0], *get_kv()[1:])


def _median_ms(fns: dict, rounds: int) -> dict:
    times = time_interleaved(list(fns.values()), "cpu", rounds=rounds)
    return dict(zip(fns, times, strict=True))


def measure(case, causal: bool, rounds: int) -> dict:
    kind, layout, B, Tq, Tk, S, H, D = case
    op = wmkernels.spatial_attention if kind == "spatial" else (
        lambda q, k, v, backend: wmkernels.temporal_attention(q, k, v, causal=causal,
                                                              backend=backend))
    qkv = _inputs(layout, B, Tq, Tk, S, H, D, grad=False)
    out = {"fwd": _median_ms({b: (lambda b=b: op(*qkv(), backend=b)) for b in ("cpu", "sdpa")},
                             rounds)}
    if Tq == Tk:
        qkv = _inputs(layout, B, Tq, Tk, S, H, D, grad=True)
        g = torch.randn(B, Tq, S, H, D)
        out["fwdbwd"] = _median_ms({b: (lambda b=b: op(*qkv(), backend=b).backward(g))
                                    for b in ("cpu", "sdpa")}, rounds)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {args.threads} thread(s); ratio = sdpa / cpu time")
    for case in CASES:
        for causal in ((True, False) if case[0] == "temporal" else (False,)):
            res = measure(case, causal, args.rounds)
            kind, layout, B, Tq, Tk, S, H, D = case
            line = f"{kind:<8} {layout:<10} B{B} Tq{Tq} Tk{Tk} S{S} H{H} D{D}"
            line += " causal" if causal else ""
            for what, ms in res.items():
                line += (f" | {what} cpu {ms['cpu']:.3f} ms sdpa {ms['sdpa']:.3f} ms "
                         f"ratio {ms['sdpa'] / ms['cpu']:.2f}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
