"""The benchmark cases: which op, which mode, which shapes, and how to make their inputs.

One `Case` (fast_s2s.benchmark.spec) is an op, a mode ("forward" without autograd, or
"forward+backward" of the sum of the output) and a shape. `make_inputs(case, device, dtype)`
builds the op's positional arguments in the order of its signature, the keyword arguments, and
the tensors gradients are taken for. This module holds the attention cases and the registry; the
GRU cases (gru_cell, gru_layer and the fast_s2s.nn.GRU module, op "gru") live in gru_cases, the
whole-model cases (op "model": training steps and greedy / beam decoding of
fast_s2s.models.Seq2Seq) in model_cases.

Case lists are per device type (DEVICE_CASES): "cpu" is CASES, the shapes of the project's CPU
targets; "cuda" is CUDA_CASES, issue 4's GPU targets: attention at the decode shape N64-T1-S50-D512
(goal in bfloat16: 2x the composite, and not slower than SDPA) and at a large memory-bound shape
(N64-T1-S2048-D512: keys and values 268 MB in 16-bit, over 4x a 50-60 MB L2; goal: 80% of the copy
bandwidth), gru_cell at B=1 and B=16 with H=1024 (goal: 2x torch.nn.GRUCell) and gru_layer at
T=50, B=16, H=1024 (goal: torch.nn.GRU, i.e. cuDNN). The goals ride on the cases (Case.goals) and
are checked by fast_s2s.benchmark.summary. The tiny set is the same on every device.

To add an op: write its input maker, register it in INPUT_MAKERS, list its cases in CASES,
CUDA_CASES (and TINY_CASES), name its report table in FAMILIES, and give it peers in
fast_s2s.benchmark.peers.PEERS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fast_s2s.benchmark import gru_cases, model_cases
from fast_s2s.benchmark.spec import (
    COPY_FRACTION,
    DECODE,
    FORWARD,
    FORWARD_BACKWARD,
    MODES,
    SHAPE_SETS,
    SPEEDUP,
    TRAIN_STEP,
    Case,
    Goal,
    Inputs,
    ragged_lengths,
    randn,
)

__all__ = [
    "CASES",
    "CUDA_CASES",
    "DECODE",
    "DEVICE_CASES",
    "FAMILIES",
    "FORWARD",
    "FORWARD_BACKWARD",
    "INPUT_MAKERS",
    "MODES",
    "SHAPE_SETS",
    "TINY_CASES",
    "TRAIN_STEP",
    "Case",
    "Inputs",
    "cases_for",
    "make_inputs",
    "select_cases",
]


def _attention_case(
    op: str,
    mode: str,
    label: str,
    *,
    B: int,
    beam: int = 1,
    T: int,
    S: int,
    D: int,
    Dv: int | None = None,
    lengths: str = "full",
    target: bool = False,
    goals: tuple[Goal, ...] = (),
) -> Case:
    dims = (("B", B), ("beam", beam), ("T", T), ("S", S), ("D", D), ("Dv", D if Dv is None else Dv))
    return Case(
        op=op, mode=mode, dims=dims, label=label, lengths=lengths, target=target, goals=goals
    )


def _attention_cases(op: str) -> list[Case]:
    """The project's target shapes first, then beam search, ragged lengths, longer sources."""
    fwd, fwdbwd = FORWARD, FORWARD_BACKWARD
    c = _attention_case
    return [
        c(op, fwd, "decode", B=64, T=1, S=50, D=512, target=True),
        c(op, fwdbwd, "train", B=64, T=30, S=30, D=512, target=True),
        c(op, fwd, "decode", B=64, T=1, S=50, D=512, lengths="ragged"),
        c(op, fwd, "beam5", B=16, beam=5, T=1, S=50, D=512),
        c(op, fwd, "beam5", B=16, beam=5, T=1, S=50, D=512, lengths="ragged"),
        c(op, fwd, "long-src", B=32, T=1, S=200, D=256),
        c(op, fwd, "train", B=64, T=30, S=30, D=512),
        c(op, fwdbwd, "train", B=64, T=30, S=30, D=512, lengths="ragged"),
    ]


# Issue 4's CUDA goals for the attention ops.
MEMORY_BOUND_GOAL = Goal(COPY_FRACTION, 0.8)
DECODE_GOALS: dict[str, tuple[Goal, ...]] = {
    "dot_attention": (
        Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),
        Goal(SPEEDUP, 1.0, "sdpa", ("bfloat16",)),
    ),
    "additive_attention": (Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),),
}


def _cuda_attention_cases(op: str) -> list[Case]:
    """The CPU cases with issue 4's goals on the decode shape, plus a large memory-bound decode
    read (keys and values 2 x 64 x 2048 x 512 elements: 268 MB in 16-bit, 537 MB in float32,
    several times any L2, so it streams from device memory) as a target."""
    fwd, fwdbwd = FORWARD, FORWARD_BACKWARD
    c = _attention_case
    large = {"B": 64, "T": 1, "S": 2048, "D": 512}
    return [
        c(op, fwd, "decode", B=64, T=1, S=50, D=512, target=True, goals=DECODE_GOALS[op]),
        c(op, fwd, "large", **large, target=True, goals=(MEMORY_BOUND_GOAL,)),
        c(op, fwdbwd, "train", B=64, T=30, S=30, D=512, target=True),
        c(op, fwd, "decode", B=64, T=1, S=50, D=512, lengths="ragged"),
        c(op, fwd, "beam5", B=16, beam=5, T=1, S=50, D=512),
        c(op, fwd, "beam5", B=16, beam=5, T=1, S=50, D=512, lengths="ragged"),
        c(op, fwd, "large", **large, lengths="ragged"),
        c(op, fwd, "long-src", B=32, T=1, S=200, D=256),
        c(op, fwd, "train", B=64, T=30, S=30, D=512),
        c(op, fwdbwd, "train", B=64, T=30, S=30, D=512, lengths="ragged"),
    ]


def _tiny_attention_cases(op: str) -> list[Case]:
    c = _attention_case
    return [
        c(op, FORWARD, "decode", B=4, T=1, S=5, D=8, target=True),
        c(op, FORWARD_BACKWARD, "train", B=2, T=3, S=4, D=8, target=True),
        c(op, FORWARD, "beam2", B=2, beam=2, T=1, S=5, D=8, Dv=6, lengths="ragged"),
    ]


CASES: dict[str, list[Case]] = {
    "dot_attention": _attention_cases("dot_attention"),
    "additive_attention": _attention_cases("additive_attention"),
    **gru_cases.CASES,
    **model_cases.CASES,
}
CUDA_CASES: dict[str, list[Case]] = {
    "dot_attention": _cuda_attention_cases("dot_attention"),
    "additive_attention": _cuda_attention_cases("additive_attention"),
    **gru_cases.CUDA_CASES,
    **model_cases.CASES,  # the model is the same on every device
}
# Case lists per device type ("cpu" also for any device type not listed).
DEVICE_CASES: dict[str, dict[str, list[Case]]] = {"cpu": CASES, "cuda": CUDA_CASES}
TINY_CASES: dict[str, list[Case]] = {
    "dot_attention": _tiny_attention_cases("dot_attention"),
    "additive_attention": _tiny_attention_cases("additive_attention"),
    **gru_cases.TINY_CASES,
    **model_cases.TINY_CASES,
}
# The report prints one table per family (ops compared against the same peers).
FAMILIES: dict[str, str] = {
    "dot_attention": "attention",
    "additive_attention": "attention",
    **dict.fromkeys(gru_cases.GRU_OPS, "GRU"),
    **dict.fromkeys(model_cases.MODEL_OPS, "model"),
}


def cases_for(device: torch.device | str) -> dict[str, list[Case]]:
    """The case lists of `device`'s type (DEVICE_CASES; CASES for a type not listed). Touches no
    device: a plan for "cuda" can be built on a machine without a GPU."""
    return DEVICE_CASES.get(torch.device(device).type, CASES)


def select_cases(
    ops: Sequence[str], shapes: str = "full", device: torch.device | str = "cpu"
) -> list[Case]:
    """The cases of `ops` (in that order) in the shape set `shapes` (see SHAPE_SETS) for
    `device`'s type (cases_for)."""
    if shapes not in SHAPE_SETS:
        raise ValueError(f"shapes must be one of {SHAPE_SETS}, got {shapes!r}")
    table = cases_for(device)
    unknown = [op for op in ops if op not in table]
    if unknown:
        raise ValueError(f"no benchmark cases for {unknown}; known ops: {sorted(table)}")
    out: list[Case] = []
    for op in ops:
        if shapes == "tiny":
            out.extend(TINY_CASES[op])
        elif shapes == "targets":
            out.extend(case for case in table[op] if case.target)
        else:
            out.extend(table[op])
    return out


def make_attention_inputs(
    case: Case, device: torch.device | str, dtype: torch.dtype, requires_grad: bool
) -> Inputs:
    """Inputs of dot_attention (query, keys, values) or additive_attention (query_proj,
    keys_proj, v, values), with `lengths` (and `scale` for dot) as keyword arguments."""
    device = torch.device(device)
    d = case.shape
    B, beam, T, S, D, Dv = d["B"], d["beam"], d["T"], d["S"], d["D"], d["Dv"]
    N = B * beam
    gen = torch.Generator().manual_seed(0)
    kwargs: dict[str, object] = {}
    kwargs["lengths"] = ragged_lengths(B, S, device) if case.lengths == "ragged" else None
    if case.op == "dot_attention":
        args = (
            randn((N, T, D), gen, device, dtype),
            randn((B, S, D), gen, device, dtype),
            randn((B, S, Dv), gen, device, dtype),
        )
        kwargs["scale"] = D**-0.5
    elif case.op == "additive_attention":
        args = (
            randn((N, T, D), gen, device, dtype, 0.5),
            randn((B, S, D), gen, device, dtype, 0.5),
            randn((D,), gen, device, dtype, D**-0.5),
            randn((B, S, Dv), gen, device, dtype),
        )
    else:
        raise ValueError(f"make_attention_inputs: not an attention op: {case.op!r}")
    if requires_grad:
        for t in args:
            t.requires_grad_(True)
    itemsize = args[0].element_size()
    return Inputs(
        args=args,
        kwargs=kwargs,
        grad_inputs=args if requires_grad else (),
        beam=beam,
        write_bytes=N * T * (Dv + S) * itemsize,  # context (N, T, Dv) and weights (N, T, S)
    )


INPUT_MAKERS: dict[str, Callable[[Case, torch.device | str, torch.dtype, bool], Inputs]] = {
    "dot_attention": make_attention_inputs,
    "additive_attention": make_attention_inputs,
    **dict.fromkeys(gru_cases.GRU_OPS, gru_cases.make_gru_inputs),
    **dict.fromkeys(model_cases.MODEL_OPS, model_cases.make_model_inputs),
}


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """Inputs for `case` (fixed seed, so every implementation sees the same numbers); they
    require grad exactly when the case's mode is forward+backward (model cases: the model's
    own parameters, see model_cases)."""
    return INPUT_MAKERS[case.op](case, device, dtype, case.mode == FORWARD_BACKWARD)
