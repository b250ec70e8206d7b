"""The local attention family: local_attention (Luong local-p), its cases, inputs and peers.

Cases: the decode step (N64-T1, D512, window 10) at S = 50 and at S = 2,000 (the target: the
cost of a row is the window's, O(window), not the source's), a training step T = S = 50, beam 5
and ragged lengths. Centres are local-p's, p = L_b * sigmoid(x) per row.

Peers besides the reference and torch.compile:
  local-composite  what a user writes without the op: gather the 2D + 1 keys and values around
                   round(p) (clamped indices), scores by a batched product, mask what lies past
                   |s - p| <= D or the length, softmax, Gaussian, weighted sum; in the input
                   dtype. The same numbers as the op (round(p) +- D covers the window).
  global-fused     fast_s2s.dot_attention on the same query, keys and values: the global fused
                   op over every source position, what local attention replaces.
"""

from __future__ import annotations

import torch

from fast_s2s.benchmark.case import (
    FORWARD,
    FORWARD_BACKWARD,
    SPEEDUP,
    Case,
    Goal,
    Inputs,
    ragged_lengths,
    randn,
)
from fast_s2s.benchmark.family import Call, Family, kernel_peers, op_call, primary_output

OP = "local_attention"
WINDOW = 10
LONG_SOURCE_GOALS = (Goal(SPEEDUP, 20.0, "global-fused"), Goal(SPEEDUP, 5.0, "local-composite"))


def _case(
    mode: str, label: str, *, B: int, beam: int = 1, T: int, S: int, D: int,
    lengths: str = "full", target: bool = False, goals: tuple[Goal, ...] = (),
) -> Case:  # fmt: skip
    dims = (("B", B), ("beam", beam), ("T", T), ("S", S), ("D", D), ("Dv", D), ("W", WINDOW))
    # Not memory_bound: a row reads only the window, not the (B, S, .) inputs whose size GB/s
    # would count, so GB/s and roofline fractions would overstate it.
    return Case(OP, mode, dims, label, lengths, target, memory_bound=False, goals=goals)


def _cases() -> list[Case]:
    fwd, bwd = FORWARD, FORWARD_BACKWARD
    decode = {"B": 64, "T": 1, "D": 512}
    return [
        _case(fwd, "decode", **decode, S=50, target=True),
        _case(fwd, "decode", **decode, S=2000, target=True, goals=LONG_SOURCE_GOALS),
        _case(bwd, "train", B=64, T=50, S=50, D=512, target=True),
        _case(fwd, "decode", **decode, S=2000, lengths="ragged"),
        _case(fwd, "beam5", B=16, beam=5, T=1, S=2000, D=512),
        _case(bwd, "train", B=16, T=50, S=2000, D=256),
    ]


def _tiny_cases() -> list[Case]:
    return [
        _case(FORWARD, "decode", B=4, T=1, S=30, D=8, target=True),
        _case(FORWARD_BACKWARD, "train", B=2, T=3, S=25, D=8, target=True),
        _case(FORWARD, "beam2", B=2, beam=2, T=1, S=40, D=8, lengths="ragged"),
    ]


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """(query, keys, values, centers) and `window`, `lengths`, `scale`; query, keys and values
    require grad in forward+backward (the centres are data here: local-m's, or local-p's
    computed outside the timed call)."""
    device = torch.device(device)
    d = case.shape
    B, beam, T, S, D, Dv = d["B"], d["beam"], d["T"], d["S"], d["D"], d["Dv"]
    N = B * beam
    gen = torch.Generator().manual_seed(0)
    lengths = ragged_lengths(B, S, device) if case.lengths == "ragged" else None
    args = [randn(s, gen, device, dtype) for s in ((N, T, D), (B, S, D), (B, S, Dv))]
    row_lengths = torch.full((N,), float(S)) if lengths is None else lengths.cpu().float()
    if lengths is not None and beam > 1:
        row_lengths = row_lengths.repeat_interleave(beam)
    centers = row_lengths[:, None] * torch.sigmoid(torch.randn((N, T), generator=gen))
    grad = case.mode == FORWARD_BACKWARD
    if grad:
        for t in args:
            t.requires_grad_(True)
    weights_bytes = N * T * S * args[0].element_size()
    return Inputs(
        args=(*args, centers.to(device)),
        kwargs={"window": d["W"], "lengths": lengths, "scale": D**-0.5},
        grad_inputs=tuple(args) if grad else (),
        beam=beam,
        write_bytes=N * T * Dv * args[0].element_size() + weights_bytes,
    )


def local_composite(inputs: Inputs) -> Call:
    query, keys, values, centers = inputs.args
    window, lengths, scale = (inputs.kwargs[k] for k in ("window", "lengths", "scale"))
    B, S, _ = keys.shape
    N, T, _ = query.shape
    beam = N // B
    device = keys.device
    rows = (torch.arange(N, device=device) // beam)[:, None, None]  # (N, 1, 1) source row
    offsets = torch.arange(-window, window + 1, device=device)  # (2D + 1,)
    limit = torch.full((B,), S, device=device) if lengths is None else lengths.to(device)
    row_limit = limit[rows]  # (N, 1, 1)
    sigma = window / 2

    def call() -> torch.Tensor:
        positions = torch.round(centers).long()[:, :, None] + offsets  # (N, T, 2D + 1)
        index = positions.clamp(0, S - 1)
        k, v = keys[rows, index], values[rows, index]  # (N, T, 2D + 1, D), (N, T, 2D + 1, Dv)
        scores = torch.einsum("ntd,ntwd->ntw", query, k) * scale
        distance = positions.to(centers.dtype) - centers[:, :, None]
        inside = (distance.abs() <= window) & (positions >= 0) & (positions < row_limit)
        align = torch.softmax(scores.masked_fill(~inside, float("-inf")), dim=-1)
        align = torch.nan_to_num(align)  # an empty window: all -inf, softmax NaN -> 0
        gauss = torch.exp(-(distance**2) / (2 * sigma**2)).to(align.dtype)
        return torch.einsum("ntw,ntwv->ntv", align * gauss, v)

    return call


def global_fused(inputs: Inputs) -> Call:
    from fast_s2s import ops

    query, keys, values, _ = inputs.args
    lengths, scale = inputs.kwargs["lengths"], inputs.kwargs["scale"]
    return lambda: primary_output(ops.dot_attention(query, keys, values, lengths, scale))


FAMILY = Family(
    name="local attention",
    cases={"cpu": {OP: _cases()}, "tiny": {OP: _tiny_cases()}},
    make_inputs=make_inputs,
    peers={
        OP: kernel_peers(OP, **{"local-composite": local_composite, "global-fused": global_fused})
    },
    fast_s2s=op_call,
)
