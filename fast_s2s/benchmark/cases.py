"""The benchmark cases: which op, which mode, which shapes, and how to make their inputs.

One `Case` (fast_s2s.benchmark.spec) is an op, a mode ("forward" without autograd, or
"forward+backward" of the sum of the output) and a shape. `make_inputs(case, device, dtype)`
builds the op's positional arguments in the order of its signature, the keyword arguments, and
the tensors gradients are taken for. This module holds the attention cases and the registry; the
GRU cases (gru_cell, gru_layer and the fast_s2s.nn.GRU module, op "gru") live in gru_cases, the
whole-model cases (op "model": training steps and greedy / beam decoding of
fast_s2s.models.Seq2Seq) in model_cases.

To add an op: write its input maker, register it in INPUT_MAKERS, list its cases in CASES (and
TINY_CASES), name its report table in FAMILIES, and give it peers in
fast_s2s.benchmark.peers.PEERS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from fast_s2s.benchmark import gru_cases, model_cases
from fast_s2s.benchmark.spec import (
    DECODE,
    FORWARD,
    FORWARD_BACKWARD,
    MODES,
    SHAPE_SETS,
    TRAIN_STEP,
    Case,
    Inputs,
    ragged_lengths,
    randn,
)

__all__ = [
    "CASES",
    "DECODE",
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
) -> Case:
    dims = (("B", B), ("beam", beam), ("T", T), ("S", S), ("D", D), ("Dv", D if Dv is None else Dv))
    return Case(op=op, mode=mode, dims=dims, label=label, lengths=lengths, target=target)


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


def select_cases(ops: Sequence[str], shapes: str = "full") -> list[Case]:
    """The cases of `ops` (in that order) in the shape set `shapes` (see SHAPE_SETS)."""
    if shapes not in SHAPE_SETS:
        raise ValueError(f"shapes must be one of {SHAPE_SETS}, got {shapes!r}")
    unknown = [op for op in ops if op not in CASES]
    if unknown:
        raise ValueError(f"no benchmark cases for {unknown}; known ops: {sorted(CASES)}")
    out: list[Case] = []
    for op in ops:
        if shapes == "tiny":
            out.extend(TINY_CASES[op])
        elif shapes == "targets":
            out.extend(case for case in CASES[op] if case.target)
        else:
            out.extend(CASES[op])
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
    return Inputs(args=args, kwargs=kwargs, grad_inputs=args if requires_grad else (), beam=beam)


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
