"""The benchmark cases: which op, which mode, which shapes, and how to make their inputs.

One `Case` is an op, a mode ("forward" without autograd, or "forward+backward" of the sum of the
context) and a shape. `make_inputs(case, device, dtype)` builds the op's positional arguments in
the order of its signature, the keyword arguments, and the tensors gradients are taken for.

To add an op (gru_cell, gru_layer): write its input maker, register it in INPUT_MAKERS, list its
cases in CASES (and TINY_CASES), and give it peers in fast_s2s.benchmark.peers.PEERS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

FORWARD = "forward"
FORWARD_BACKWARD = "forward+backward"
MODES = (FORWARD, FORWARD_BACKWARD)

# Case sets: "targets" = the shapes the project's targets name (what --quick runs), "full" =
# targets plus beam search, ragged lengths and longer sources, "tiny" = the targets' structure at
# toy sizes (for the harness's own tests).
SHAPE_SETS = ("targets", "full", "tiny")


@dataclass(frozen=True)
class Case:
    """One op at one shape in one mode.

    `dims` are named sizes in display order; attention cases use B (source batch), beam
    (N = B * beam query rows), T (query steps), S (source length), D (query/key width; the
    attention width A for additive attention) and Dv (value width). `lengths` is "full" (no
    lengths passed) or "ragged" (lengths passed, some rows short).
    """

    op: str
    mode: str
    dims: tuple[tuple[str, int], ...]
    label: str
    lengths: str = "full"
    target: bool = False

    def dim(self, name: str) -> int:
        return dict(self.dims)[name]

    @property
    def shape(self) -> dict[str, int]:
        return dict(self.dims)

    @property
    def shape_id(self) -> str:
        """Readable shape, e.g. `N64-T1-S50-D512` or `B16x5-T1-S50-D512` (5 beam rows each)."""
        d = self.shape
        parts = []
        if "B" in d and "beam" in d:
            parts.append(f"N{d['B']}" if d["beam"] == 1 else f"B{d['B']}x{d['beam']}")
        for key, value in self.dims:
            if key in ("B", "beam"):
                continue
            if key == "Dv" and value == d.get("D"):
                continue
            name = "A" if key == "D" and self.op == "additive_attention" else key
            parts.append(f"{name}{value}")
        if self.lengths != "full":
            parts.append(self.lengths)
        return "-".join(parts)

    @property
    def id(self) -> str:
        """Unique, stable identifier: op, mode and shape."""
        return f"{self.op}-{'fwd' if self.mode == FORWARD else 'fwdbwd'}-{self.shape_id}"

    @property
    def name(self) -> str:
        """Short display name: label and shape."""
        mode = "fwd" if self.mode == FORWARD else "fwd+bwd"
        return f"{self.label} {mode} {self.shape_id}"


@dataclass
class Inputs:
    """What one call of the op gets, plus what the harness needs to know about it."""

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, object]
    grad_inputs: tuple[torch.Tensor, ...] = ()
    beam: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def read_bytes(self) -> int:
        """Compulsory reads: every floating-point input, read once (query, keys, values, ...)."""
        return sum(
            t.numel() * t.element_size()
            for t in (*self.args, *self.kwargs.values())
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        )


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
}
TINY_CASES: dict[str, list[Case]] = {
    "dot_attention": _tiny_attention_cases("dot_attention"),
    "additive_attention": _tiny_attention_cases("additive_attention"),
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


def _ragged_lengths(B: int, S: int, device: torch.device) -> torch.Tensor:
    """Every third row short (a quarter of S, at least 1), the others full: padded batches."""
    lengths = torch.full((B,), S, dtype=torch.int64)
    lengths[1::3] = max(1, S // 4)
    lengths[2::3] = max(1, (3 * S) // 4)
    return lengths.to(device)


def _randn(shape: tuple[int, ...], gen: torch.Generator, device, dtype, scale: float = 1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(device, dtype)


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
    kwargs["lengths"] = _ragged_lengths(B, S, device) if case.lengths == "ragged" else None
    if case.op == "dot_attention":
        args = (
            _randn((N, T, D), gen, device, dtype),
            _randn((B, S, D), gen, device, dtype),
            _randn((B, S, Dv), gen, device, dtype),
        )
        kwargs["scale"] = D**-0.5
    elif case.op == "additive_attention":
        args = (
            _randn((N, T, D), gen, device, dtype, 0.5),
            _randn((B, S, D), gen, device, dtype, 0.5),
            _randn((D,), gen, device, dtype, D**-0.5),
            _randn((B, S, Dv), gen, device, dtype),
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
}


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """Inputs for `case` (fixed seed, so every implementation sees the same numbers); they
    require grad exactly when the case's mode is forward+backward."""
    return INPUT_MAKERS[case.op](case, device, dtype, case.mode == FORWARD_BACKWARD)
