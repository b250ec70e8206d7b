"""What an op family registers with the harness (`Family`), and the factories several families
share: the fast_s2s.ops call, the reference peer and the torch.compile peer.

A factory takes a case's `Inputs` and returns the zero-argument call that is timed. Work a user
does once per batch and not per call (tiling the encoder states over the beam, packing a
sequence, building a module) happens in the factory, outside the timed call, unless a gradient
flows through it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fast_s2s.benchmark.case import Case, Inputs

Call = Callable[[], object]
Factory = Callable[[Inputs], Call]
CaseLists = dict[str, list[Case]]  # op -> its cases, in report order


@dataclass(frozen=True)
class Family:
    """Ops compared against the same peers, printed in one table.

    `cases`: per case set, "cpu" (also any device type without its own list), "cuda" and
    "tiny", the case lists of every op. `peers`: op -> peer label -> factory, in column order.
    `fast_s2s(op, backend)`: the factory of the fast_s2s row on `backend`. `kernel_ops`: the
    fast_s2s.ops whose backends an op runs on, where that is not the op itself (a module, the
    model). `reference_is_peer`: the reference backend is the "reference" peer already, so it is
    not a default fast_s2s row. `quick_left_out`: (op, mode) -> peer -> why --quick skips it;
    `left_out`: the same for peers that never apply to a mode.
    `throughput_table`: rows are printed with steps/s or tokens/s rather than GB/s.
    """

    name: str
    cases: dict[str, CaseLists]
    make_inputs: Callable[[Case, torch.device, torch.dtype], Inputs]
    peers: dict[str, dict[str, Factory]]
    fast_s2s: Callable[[str, str], Factory]
    kernel_ops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    reference_is_peer: bool = False
    quick_left_out: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    left_out: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    throughput_table: bool = False

    @property
    def ops(self) -> tuple[str, ...]:
        return tuple(self.cases["cpu"])


def primary_output(out: object) -> torch.Tensor:
    """What a call is timed (and differentiated) for: the context of attention, the output of
    gru_layer and the GRU module, h' of gru_cell."""
    return out[0] if isinstance(out, (tuple, list)) else out  # type: ignore[return-value]


def op_call(op: str, backend: str) -> Factory:
    """fast_s2s.ops.<op>(*args, **kwargs, backend=backend)."""

    def make(inputs: Inputs) -> Call:
        from fast_s2s import ops

        fn, args, kwargs = getattr(ops, op), inputs.args, inputs.kwargs
        return lambda: primary_output(fn(*args, **kwargs, backend=backend))

    return make


def reference_peer(op: str) -> Factory:
    """fast_s2s.reference.<op>: the pure-PyTorch definition (float32 accumulation)."""

    def make(inputs: Inputs) -> Call:
        from fast_s2s import reference

        fn, args, kwargs = getattr(reference, op), inputs.args, inputs.kwargs
        return lambda: primary_output(fn(*args, **kwargs))

    return make


def compile_peer(op: str) -> Factory:
    """torch.compile(fast_s2s.reference.<op>, dynamic=False), compiled by the first call; a
    compile error becomes a failed row."""

    def make(inputs: Inputs) -> Call:
        from fast_s2s import reference

        if os.environ.get("TORCHDYNAMO_DISABLE") == "1":  # it would time the eager reference
            raise RuntimeError("torch.compile would run eagerly: TORCHDYNAMO_DISABLE=1 is set")
        torch.compiler.reset()  # fresh caches per case: no recompile limit, no dynamic shapes
        fn = torch.compile(getattr(reference, op), dynamic=False)
        args, kwargs = inputs.args, inputs.kwargs
        return lambda: primary_output(fn(*args, **kwargs))

    return make


def kernel_peers(op: str, **own: Factory) -> dict[str, Factory]:
    """The peers of a fast_s2s.ops op: the reference, the op's own peers, torch.compile."""
    return {"reference": reference_peer(op), **own, "compile": compile_peer(op)}
