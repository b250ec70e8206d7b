"""What a benchmark case is (`Case`, `Goal`, the `Inputs` of one call), what an op family registers
(`Family`), and the helpers the families share. A factory takes a case's Inputs and returns the
call that is timed; work a user does once per batch (tiling over the beam, packing a sequence,
building a module) happens in the factory, unless a gradient flows through it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

FORWARD = "forward"  # the op without autograd
FORWARD_BACKWARD = "forward+backward"  # the op, then the gradients of the sum of its output
TRAIN_STEP = "train-step"  # the whole model: forward, backward, clipping and Adam on a batch
DECODE = "decode"  # the whole model: greedy or beam decoding of a batch
MODE_TAGS: dict[str, tuple[str, str]] = {  # mode -> (tag in case ids, tag in display names)
    FORWARD: ("fwd", "fwd"), FORWARD_BACKWARD: ("fwdbwd", "fwd+bwd"),
    TRAIN_STEP: ("train", "fwd+bwd+adam"), DECODE: ("decode", "decode"),
}  # fmt: skip
# targets: the shapes the project's targets name (--quick); full: also beam search, ragged
# lengths and longer sequences; tiny: the targets at toy sizes, for the tests.
SHAPE_SETS = ("targets", "full", "tiny")
COPY_FRACTION, SPEEDUP = "copy_fraction", "speedup"  # goal metrics: row fields


@dataclass(frozen=True)
class Goal:
    """`metric` at least `at_least` (against `peer` for SPEEDUP) in the dtypes named (all when
    empty): one of the project's targets."""

    metric: str
    at_least: float
    peer: str | None = None
    dtypes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        named = self.peer is not None
        if self.metric not in (COPY_FRACTION, SPEEDUP) or named != (self.metric == SPEEDUP):
            raise ValueError(f"Goal: {SPEEDUP!r} names its peer, {COPY_FRACTION!r} none")

    def applies_to(self, dtype: str) -> bool:
        return not self.dtypes or dtype in self.dtypes

    @property
    def description(self) -> str:
        """E.g. ">= 80% of copy bandwidth", ">= 2.00x composite (bfloat16)"."""
        if self.metric == COPY_FRACTION:
            text = f">= {100 * self.at_least:.0f}% of copy bandwidth"
        else:
            text = f">= {self.at_least:.2f}x {self.peer}"
        return f"{text} ({', '.join(self.dtypes)})" if self.dtypes else text

    def value(self, row: dict) -> float | None:
        if self.metric == COPY_FRACTION:
            return row.get("copy_fraction")
        return (row.get("speedup_vs") or {}).get(self.peer)

    def as_dict(self) -> dict:
        """What a row carries in "goals" (report.check_goals rebuilds the Goal from it)."""
        return {"metric": self.metric, "at_least": self.at_least, "peer": self.peer,
                "dtypes": list(self.dtypes), "description": self.description}  # fmt: skip


@dataclass(frozen=True)
class Case:
    """One op at one shape in one mode. `dims`: named sizes in display order; `memory_bound`: its
    forward rows report GB/s; `variant`: what the dims do not name (the model's wiring)."""

    op: str
    mode: str
    dims: tuple[tuple[str, int], ...]
    label: str
    lengths: str = "full"
    target: bool = False
    memory_bound: bool = True
    variant: str = ""
    goals: tuple[Goal, ...] = ()

    @property
    def shape(self) -> dict[str, int]:
        return dict(self.dims)

    @property
    def shape_id(self) -> str:
        """E.g. `N64-T1-S50-D512`, `B16x5-T1-S50-D512` (5 beam rows per source),
        `T50-B16-I512-H512-L2-bidir`, `bahdanau-B32x5-S25-maxlen30-E64-H128-V54`."""
        d = self.shape
        parts = [self.variant] if self.variant else []
        if "B" in d and "beam" in d:
            parts.append(f"N{d['B']}" if d["beam"] == 1 else f"B{d['B']}x{d['beam']}")
        for key, value in self.dims:
            if key == "beam" or (key == "B" and "beam" in d) or (key == "Dv" and value == d["D"]):
                continue
            if key == "dirs":
                parts += ["bidir"] if value == 2 else []
                continue
            parts.append(f"{'A' if key == 'D' and self.op == 'additive_attention' else key}{value}")
        if self.lengths != "full":
            parts.append(self.lengths)
        return "-".join(parts)

    @property
    def id(self) -> str:
        return f"{self.op}-{MODE_TAGS[self.mode][0]}-{self.shape_id}"

    @property
    def name(self) -> str:
        return f"{self.label} {MODE_TAGS[self.mode][1]} {self.shape_id}"


def reports_bandwidth(case: Case) -> bool:
    return case.mode == FORWARD and case.memory_bound  # GB/s mean something there only


def build_cases(make: Callable[..., Case], specs: dict[str, list[tuple]]) -> dict[str, list[Case]]:
    """op -> its cases, from op -> [(mode, label, dims, fields)] and the family's case maker,
    make(op, mode, label, dims, **fields)."""
    return {op: [make(op, *spec[:3], **spec[3]) for spec in specs[op]] for op in specs}


@dataclass
class Inputs:
    """What one call gets, the tensors gradients are taken for, `beam` rows per source, `extra`
    (parameters, a model's weights and batch), compulsory writes and matrix-product flops."""

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, object]
    grad_inputs: tuple[torch.Tensor, ...] = ()
    beam: int = 1
    extra: dict[str, object] = field(default_factory=dict)
    write_bytes: int = 0
    flops: int = 0

    @property
    def read_bytes(self) -> int:
        """Compulsory reads: every floating-point input, read once (the weights included)."""
        return sum(
            t.numel() * t.element_size()
            for t in (*self.args, *self.kwargs.values())
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        )

    @property
    def moved_bytes(self) -> int:
        """Reads plus writes: the traffic the copy roofline is measured at."""
        return self.read_bytes + self.write_bytes


def needs_grad(case: Case, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """In forward+backward, `tensors` require grad and are returned (the grad_inputs); else ()."""
    if case.mode != FORWARD_BACKWARD:
        return ()
    return tuple(t.requires_grad_(True) for t in tensors)


def ragged_lengths(B: int, S: int, device: torch.device) -> torch.Tensor:
    """Every third row a quarter of S, the next three quarters, the others full: padded batches."""
    lengths = torch.full((B,), S, dtype=torch.int64)
    lengths[1::3] = max(1, S // 4)
    lengths[2::3] = max(1, (3 * S) // 4)
    return lengths.to(device)


def randn(shape: tuple[int, ...], gen: torch.Generator, device, dtype, scale: float = 1.0):
    """Standard normal times `scale`, drawn in float32 on the CPU from `gen`: every device and
    dtype sees the same numbers."""
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(device, dtype)


Call = Callable[[], object]
Factory = Callable[[Inputs], Call]


class PeerSkipped(Exception):
    """Raised by a peer's factory that cannot run the case here (an optional package missing, a
    mode or device it lacks): the row is "skipped" with the message as its reason, not "failed"."""


def primary_output(out: object) -> torch.Tensor:
    """What a call is timed and differentiated for: attention's context, a GRU's output, h'."""
    return out[0] if isinstance(out, (tuple, list)) else out  # type: ignore[return-value]


def op_call(op: str, backend: str | None = None, compiled: bool = False) -> Factory:
    """fast_s2s.ops.<op>(..., backend=backend); with backend None fast_s2s.reference.<op>, and
    with `compiled` torch.compile of it (dynamic=False, compiled by the first call)."""

    def make(inputs: Inputs) -> Call:
        from fast_s2s import ops, reference

        args, kwargs = inputs.args, dict(inputs.kwargs)
        fn = getattr(ops if backend else reference, op)
        if backend:
            kwargs["backend"] = backend
        if compiled:
            if os.environ.get("TORCHDYNAMO_DISABLE") == "1":  # it would time the eager reference
                raise RuntimeError("torch.compile would run eagerly: TORCHDYNAMO_DISABLE=1 is set")
            torch.compiler.reset()  # fresh caches per case: no recompile limit, no dynamic shapes
            fn = torch.compile(fn, dynamic=False)
        return lambda: primary_output(fn(*args, **kwargs))

    return make


def kernel_peers(op: str, **own: Factory) -> dict[str, Factory]:
    """The peers of a fast_s2s.ops op: the reference, the op's own peers, torch.compile."""
    return {"reference": op_call(op), **own, "compile": op_call(op, compiled=True)}


@dataclass(frozen=True)
class Family:
    """Ops compared against the same peers, printed in one table. `cases`: case set ("cpu", also
    for devices without their own; "cuda"; "tiny") -> op -> cases. `peers`: op -> label ->
    factory, in column order. `kernel_ops`: the fast_s2s.ops an op runs on, where not itself.
    `reference_is_peer`: the reference backend is the "reference" peer. `left_out(case, device
    type, quick)`: peer -> why it is not timed there."""

    name: str
    cases: dict[str, dict[str, list[Case]]]
    make_inputs: Callable[[Case, torch.device, torch.dtype], Inputs]
    peers: dict[str, dict[str, Factory]]
    fast_s2s: Callable[[str, str], Factory] = op_call
    kernel_ops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reference_is_peer: bool = False
    throughput_table: bool = False
    left_out: Callable[[Case, str, bool], dict[str, str]] = lambda case, device_type, quick: {}

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(self.cases["cpu"])
