"""The attention family: dot_attention and additive_attention, their cases, inputs and peers.

CPU cases: the decode step N64-T1-S50-D512 and the training step T=S=30 (the targets), then
ragged lengths, beam 5 and a longer source. CUDA cases add the GPU goals on the decode step
(bfloat16: 2x the composite, and not slower than SDPA) and a large memory-bound decode read,
N64-T1-S2048-D512 (keys and values 268 MB in 16-bit, over 4x a 50-60 MB L2, so it streams from
device memory; goal: 80% of the copy bandwidth).

Peers besides the reference and torch.compile:
  composite  bmm + masked softmax + bmm as a user writes it, in the input dtype (additive: tanh
             of the broadcast sum, times v), keys and values repeat_interleave'd over the beam
  sdpa       F.scaled_dot_product_attention (dot only) on 4-D one-head views, beam rows folded
             into the query length: torch's fused kernels take only 4-D inputs (3-D ones fall
             back to the unfused math path), and the folding copies no keys
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fast_s2s.benchmark.case import (
    COPY_FRACTION,
    FORWARD,
    FORWARD_BACKWARD,
    SPEEDUP,
    Case,
    Goal,
    Inputs,
    ragged_lengths,
    randn,
)
from fast_s2s.benchmark.family import Call, Family, kernel_peers, op_call

OPS = ("dot_attention", "additive_attention")
MEMORY_BOUND_GOAL = Goal(COPY_FRACTION, 0.8)
DECODE_GOALS: dict[str, tuple[Goal, ...]] = {
    "dot_attention": (
        Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),
        Goal(SPEEDUP, 1.0, "sdpa", ("bfloat16",)),
    ),
    "additive_attention": (Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),),
}


def _case(
    op: str, mode: str, label: str, *, B: int, beam: int = 1, T: int, S: int, D: int,
    Dv: int | None = None, lengths: str = "full", target: bool = False,
    goals: tuple[Goal, ...] = (),
) -> Case:  # fmt: skip
    dims = (("B", B), ("beam", beam), ("T", T), ("S", S), ("D", D), ("Dv", D if Dv is None else Dv))
    return Case(op, mode, dims, label, lengths, target, goals=goals)


def _cases(op: str, cuda: bool) -> list[Case]:
    fwd, bwd = FORWARD, FORWARD_BACKWARD
    decode = {"B": 64, "T": 1, "S": 50, "D": 512}
    train = {"B": 64, "T": 30, "S": 30, "D": 512}
    beam = {"B": 16, "beam": 5, "T": 1, "S": 50, "D": 512}
    large = {"B": 64, "T": 1, "S": 2048, "D": 512}  # `[...] * cuda`: on CUDA only
    return [
        _case(op, fwd, "decode", **decode, target=True, goals=DECODE_GOALS[op] if cuda else ()),
        *([_case(op, fwd, "large", **large, target=True, goals=(MEMORY_BOUND_GOAL,))] * cuda),
        _case(op, bwd, "train", **train, target=True),
        _case(op, fwd, "decode", **decode, lengths="ragged"),
        _case(op, fwd, "beam5", **beam),
        _case(op, fwd, "beam5", **beam, lengths="ragged"),
        *([_case(op, fwd, "large", **large, lengths="ragged")] * cuda),
        _case(op, fwd, "long-src", B=32, T=1, S=200, D=256),
        _case(op, fwd, "train", **train),
        _case(op, bwd, "train", **train, lengths="ragged"),
    ]


def _tiny_cases(op: str) -> list[Case]:
    return [
        _case(op, FORWARD, "decode", B=4, T=1, S=5, D=8, target=True),
        _case(op, FORWARD_BACKWARD, "train", B=2, T=3, S=4, D=8, target=True),
        _case(op, FORWARD, "beam2", B=2, beam=2, T=1, S=5, D=8, Dv=6, lengths="ragged"),
    ]


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """dot_attention: (query, keys, values) and `lengths`, `scale`; additive_attention:
    (query_proj, keys_proj, v, values) and `lengths`. Every tensor argument requires grad in
    forward+backward."""
    device = torch.device(device)
    d = case.shape
    B, beam, T, S, D, Dv = d["B"], d["beam"], d["T"], d["S"], d["D"], d["Dv"]
    N = B * beam
    gen = torch.Generator().manual_seed(0)
    kwargs: dict[str, object] = {
        "lengths": ragged_lengths(B, S, device) if case.lengths == "ragged" else None
    }
    if case.op == "dot_attention":
        args = tuple(randn(s, gen, device, dtype) for s in ((N, T, D), (B, S, D), (B, S, Dv)))
        kwargs["scale"] = D**-0.5
    else:
        args = (
            randn((N, T, D), gen, device, dtype, 0.5),
            randn((B, S, D), gen, device, dtype, 0.5),
            randn((D,), gen, device, dtype, D**-0.5),
            randn((B, S, Dv), gen, device, dtype),
        )
    grad = case.mode == FORWARD_BACKWARD
    if grad:
        for t in args:
            t.requires_grad_(True)
    return Inputs(
        args=args,
        kwargs=kwargs,
        grad_inputs=args if grad else (),
        beam=beam,
        write_bytes=N * T * (Dv + S) * args[0].element_size(),  # context and weights
    )


def _pad_mask(lengths: torch.Tensor | None, beam: int, S: int, device) -> torch.Tensor | None:
    """(N, 1, S) bool, True at padding, one row per beam row."""
    if lengths is None:
        return None
    rows = lengths.repeat_interleave(beam) if beam > 1 else lengths
    return (torch.arange(S, device=device)[None, :] >= rows[:, None])[:, None, :]


def _tile(t: torch.Tensor, beam: int) -> torch.Tensor:
    return t if beam == 1 else t.repeat_interleave(beam, dim=0)


def _softmax_bmm(scores: torch.Tensor, pad: torch.Tensor | None, values: torch.Tensor):
    if pad is not None:
        scores = scores.masked_fill(pad, float("-inf"))
    return torch.bmm(torch.softmax(scores, dim=-1), values)


def dot_composite(inputs: Inputs) -> Call:
    query, keys, values = inputs.args
    lengths, scale, beam = inputs.kwargs["lengths"], inputs.kwargs["scale"], inputs.beam
    pad = _pad_mask(lengths, beam, keys.shape[1], keys.device)  # type: ignore[arg-type]

    def attend(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _softmax_bmm(torch.bmm(query, k.transpose(1, 2)) * scale, pad, v)

    if keys.requires_grad or values.requires_grad:  # tiling is part of the graph
        return lambda: attend(_tile(keys, beam), _tile(values, beam))
    k, v = _tile(keys, beam), _tile(values, beam)  # once per source batch
    return lambda: attend(k, v)


def dot_sdpa(inputs: Inputs) -> Call:
    query, keys, values = inputs.args
    lengths, scale, beam = inputs.kwargs["lengths"], inputs.kwargs["scale"], inputs.beam
    (B, S, _), (N, T, D), Dv = keys.shape, query.shape, values.shape[-1]
    mask = None  # True = may attend; (B, 1, 1, S) broadcasts over the beam * T query rows
    if lengths is not None:
        mask = (torch.arange(S, device=keys.device)[None, :] < lengths[:, None])[:, None, None, :]

    def call() -> torch.Tensor:
        q, k, v = query.reshape(B, 1, beam * T, D), keys.unsqueeze(1), values.unsqueeze(1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale).reshape(
            N, T, Dv
        )

    return call


def additive_composite(inputs: Inputs) -> Call:
    query_proj, keys_proj, v, values = inputs.args
    beam = inputs.beam
    pad = _pad_mask(inputs.kwargs["lengths"], beam, keys_proj.shape[1], keys_proj.device)  # type: ignore[arg-type]

    def attend(kp: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
        scores = torch.tanh(query_proj.unsqueeze(2) + kp.unsqueeze(1)) @ v  # (N, T, S)
        return _softmax_bmm(scores, pad, vals)

    if keys_proj.requires_grad or values.requires_grad:
        return lambda: attend(_tile(keys_proj, beam), _tile(values, beam))
    kp, vals = _tile(keys_proj, beam), _tile(values, beam)
    return lambda: attend(kp, vals)


FAMILY = Family(
    name="attention",
    cases={
        "cpu": {op: _cases(op, cuda=False) for op in OPS},
        "cuda": {op: _cases(op, cuda=True) for op in OPS},
        "tiny": {op: _tiny_cases(op) for op in OPS},
    },
    make_inputs=make_inputs,
    peers={
        "dot_attention": kernel_peers("dot_attention", composite=dot_composite, sdpa=dot_sdpa),
        "additive_attention": kernel_peers("additive_attention", composite=additive_composite),
    },
    fast_s2s=op_call,
)
