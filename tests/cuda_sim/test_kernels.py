"""Every launch path of the CUDA C++ kernels under all three thread schedules of the
emulation (tests/ops runs the full matrix under the forward one): each case is checked
against the float64 reference in the forward schedule, and the reversed and shuffled
schedules must give the same bits (the kernels' arithmetic does not depend on the order of
threads; the EMA's float atomics do, so that case is compared within rounding). Also the
kernel-level behaviours that the public API hides on CPU tensors."""

from __future__ import annotations

import pytest
import torch
from checks import assert_close

import wmkernels
from cuda_sim import library

pytestmark = pytest.mark.skipif(library.unavailable_reason() is not None,
                                reason=str(library.unavailable_reason()))
SIM = torch.ops.wmk_sim  # resolved at the first call, after the library is loaded


@pytest.fixture(scope="module", autouse=True)
def _loaded():
    library.load()


def _vq(dtype):
    def run():
        packed = torch.randn(131, 2, 35).to(dtype)
        z = packed[:, 1, 1:34]  # strided rows, 3 row blocks, D = 33: two dim chunks
        codebook = torch.randn(70, 33).to(dtype)  # two code tiles
        codebook[69] = codebook[3]  # a tie: the smaller index wins
        idx = SIM.vq_lookup(z, codebook, "l2")
        d = torch.cdist(z.double(), codebook.double())
        chosen, best = d.gather(1, idx[:, None]).squeeze(1), d.min(1).values
        assert (chosen - best <= {torch.float64: 1e-12, torch.float32: 1e-5}.get(
            dtype, 5e-2) * (1 + best)).all()
        assert (idx != 69).all()
        return (idx,)
    return run


def _ema():
    K, D, N = 37, 5, 700
    cb, es = torch.randn(K, D), torch.randn(K, D)
    cs = torch.rand(K) * 3
    z, idx = torch.randn(N, D), torch.randint(0, K // 2, (N,))
    state = [cb.clone(), cs.clone(), es.clone()]
    SIM.vq_ema_update_(*state, z, idx, 0.9, 1e-5)
    want = [cb.clone(), cs.clone(), es.clone()]
    wmkernels.vq_ema_update_(*want, z, idx, decay=0.9, eps=1e-5, backend="reference")
    for got, w in zip(state, want, strict=True):
        torch.testing.assert_close(got, w)
    return tuple(state)


def _attention(kind, dtype, shape, view):
    """shape (B, Tq, Tk, S, H, D); view "packed" (16-byte aligned views of one projection),
    "offset" (views one element off alignment: the scalar load path)."""
    def run():
        B, Tq, Tk, S, H, D = shape
        extra = 1 if view == "offset" else 0
        qkv = torch.randn(B, Tk, S, 3, H, D + extra).to(dtype)
        q, k, v = (x[..., extra:] for x in qkv.unbind(3))
        q = q[:, Tk - Tq:]
        if kind == "spatial":
            out, lse = SIM.spatial_attention_fwd(q, k, v, 0.3)
            ref = wmkernels.spatial_attention(q, k, v, scale=0.3, backend="reference")
            ref64 = wmkernels.spatial_attention(q.double(), k.double(), v.double(), scale=0.3,
                                                backend="reference")
        else:
            out, lse = SIM.temporal_attention_fwd(q, k, v, True, 0.3)
            ref = wmkernels.temporal_attention(q, k, v, scale=0.3, backend="reference")
            ref64 = wmkernels.temporal_attention(q.double(), k.double(), v.double(), scale=0.3,
                                                 backend="reference")
        assert_close(out, ref64, ref, dtype=dtype)
        return out, lse
    return run


def _sample(dtype, V, strided):
    def run():
        base = torch.randn(5, 2 * V if strided else V).to(dtype)
        logits = base[:, ::2] if strided else base
        seed = torch.tensor([11])
        tokens, conf = SIM.maskgit_sample(logits, 0.0, 0, seed)
        torch.testing.assert_close(tokens, logits.double().argmax(-1))
        sampled, conf_s = SIM.maskgit_sample(logits, 1.5, 7, seed)
        top = torch.topk(logits.float(), 7, -1).values[:, -1:]
        assert (logits.float().gather(1, sampled[:, None]) >= top).all()
        return tokens, conf, sampled, conf_s
    return run


def _step(B, N, random_order, left=None):
    """left: keep all but `left` unknown positions masked (few sampler rows: large N)."""
    def run():
        V = 9
        logits = torch.randn(B, N, V)
        tokens = torch.randint(0, V, (B, N))
        mask = torch.rand(B, N) > 0.3
        k = torch.tensor([N // 3, N])[:B] if left is None else mask.sum(-1) - left
        out_t, out_m = SIM.maskgit_step(logits, tokens, mask, k, 1.0, 0, 2.0, random_order,
                                        torch.tensor([5]))
        assert torch.equal(out_m.sum(-1), torch.minimum(k, mask.sum(-1)))
        assert not (out_m & ~mask).any() and torch.equal(out_t[~mask], tokens[~mask])
        revealed = mask & ~out_m
        assert ((out_t[revealed] >= 0) & (out_t[revealed] < V)).all()
        return out_t, out_m
    return run


CASES = {
    **{f"vq-{str(dt)[6:]}": _vq(dt) for dt in (torch.float32, torch.float16, torch.bfloat16,
                                                torch.float64)},
    "vq-ema": _ema,
    # head dims: one of each register tiling (D per lane 1, 2, 4, 8), D = 256 needs the
    # cudaFuncSetAttribute opt-in (82 KiB of shared memory)
    "spatial-d32-fp32": _attention("spatial", torch.float32, (1, 2, 2, 37, 2, 32), "packed"),
    "spatial-d64-bf16": _attention("spatial", torch.bfloat16, (1, 1, 1, 20, 1, 64), "packed"),
    "spatial-d100-fp16": _attention("spatial", torch.float16, (1, 1, 1, 17, 1, 100), "offset"),
    "spatial-d256-fp32": _attention("spatial", torch.float32, (1, 1, 1, 33, 1, 256), "packed"),
    # vector loads (L lanes per row, one or two chunks per lane) and the scalar path
    "temporal-d64-bf16": _attention("temporal", torch.bfloat16, (2, 5, 7, 3, 2, 64), "packed"),
    "temporal-d256-fp32": _attention("temporal", torch.float32, (1, 3, 4, 2, 1, 256), "packed"),
    "temporal-d8-fp16": _attention("temporal", torch.float16, (1, 1, 9, 5, 1, 8), "packed"),
    "temporal-d40-fp32": _attention("temporal", torch.float32, (1, 4, 4, 3, 2, 40), "offset"),
    "temporal-d200-fp16": _attention("temporal", torch.float16, (1, 2, 3, 2, 1, 200), "offset"),
    # vector and scalar loads, the shared-memory copy of the row and the re-read beyond it
    "sample-fp32": _sample(torch.float32, 300, False),
    "sample-bf16-strided": _sample(torch.bfloat16, 45, True),
    "sample-fp16-large-vocab": _sample(torch.float16, 10248, False),
    # re-mask scores in shared memory, and beyond it (N > 10240) in global memory
    "step-confidence": _step(2, 67, False),
    "step-random": _step(2, 67, True),
    "step-beyond-shared": _step(1, 10241, True, left=9),
}


@pytest.mark.parametrize("case", list(CASES))
def test_schedules_agree(case):
    seed = torch.initial_seed()
    results = {}
    for schedule in library.SCHEDULES:
        torch.manual_seed(seed)  # the same inputs under every schedule
        with library.schedule(schedule, seed=3):
            results[schedule] = CASES[case]()
    for schedule in ("reversed", "shuffled"):
        for a, b in zip(results["forward"], results[schedule], strict=True):
            if case == "vq-ema":
                torch.testing.assert_close(a, b)
            else:
                assert torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8)), (
                    f"{case}: the {schedule} schedule changed the result")


def test_row_without_finite_logit():
    """On CUDA tensors such a row yields (-1, 0) (no host sync to raise); on CPU tensors
    the public API raises, so the kernel's answer is checked here."""
    logits = torch.randn(3, 40)
    logits[1] = float("-inf")
    logits[1, 7] = float("nan")
    tokens, conf = SIM.maskgit_sample(logits, 1.0, 0, torch.tensor([2]))
    assert tokens[1] == -1 and conf[1] == 0 and (tokens[[0, 2]] >= 0).all()



def test_attention_grid_limits_are_refused_with_the_sizes():
    """The temporal kernel runs a warp per (b, s, h), four per block on grid axis x (at most
    2^31 - 1 blocks), with 32-bit frame indices; the spatial one puts B*T*H on grid axis x and
    16-row tiles of S on axis y (at most 65535). Stride-0 views reach past those limits
    without memory: the glue must refuse them, naming the sizes, before allocating the
    output (else the unsigned block count wraps and most positions are never written)."""
    one = torch.zeros(1, 1, 1, 1, 1)
    q = one.expand(2 ** 33, 1, 1, 1, 1)  # 2^31 blocks: one past the limit
    with pytest.raises(ValueError, match=r"B\*S\*H = 8589934592 \(B = 8589934592"):
        SIM.temporal_attention_fwd(q, q, q, True, 1.0)
    q = one.expand(4, 1, 2 ** 32 + 1, 1, 1)  # 2^32 + 1 blocks: wraps to 1 as an unsigned
    with pytest.raises(ValueError, match=r"B\*S\*H = 17179869188"):
        SIM.temporal_attention_fwd(q, q, q, False, 1.0)
    k = one.expand(1, 2 ** 31, 1, 1, 1)  # Tk = 2^31 is -2^31 as the kernel's int
    with pytest.raises(ValueError, match="Tk = 2147483648"):
        SIM.temporal_attention_fwd(one, k, k, True, 1.0)
    q = one.expand(1, 1, 65535 * 16 + 1, 1, 1)
    with pytest.raises(RuntimeError, match="S <= 1048560"):
        SIM.spatial_attention_fwd(q, q, q, 1.0)


def test_maskgit_grid_limits_are_refused_with_the_sizes():
    """The MaskGIT sampler runs one block per row on grid axis x (at most 2^31 - 1): the glue
    refuses more rows, naming them, before allocating the outputs (stride-0 views reach
    there without memory)."""
    seed = torch.tensor([0])
    rows = 2 ** 31
    logits = torch.zeros(1, 2).expand(rows, 2)
    with pytest.raises(ValueError, match="R = 2147483648"):
        SIM.maskgit_sample(logits, 1.0, 0, seed)
    tokens = torch.zeros(1, 1, dtype=torch.long).expand(rows, 1)
    mask = torch.ones(1, 1, dtype=torch.bool).expand(rows, 1)
    num_masked = torch.zeros(1, dtype=torch.long).expand(rows)
    with pytest.raises(ValueError, match=r"B\*N = 2147483648"):
        SIM.maskgit_step(logits[:, None], tokens, mask, num_masked, 1.0, 0, 1.0, False, seed)
