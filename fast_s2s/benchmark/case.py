"""What a benchmark case is: `Case` (one op at one shape in one mode), `Goal` (a number its
fast_s2s rows should reach) and `Inputs` (what one call gets), plus the seeded input helpers the
op families share."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FORWARD = "forward"  # the op without autograd
FORWARD_BACKWARD = "forward+backward"  # the op, then the gradients of the sum of its output
TRAIN_STEP = "train-step"  # the whole model: forward, backward, clipping and Adam on a batch
DECODE = "decode"  # the whole model: greedy or beam decoding of a batch
# mode -> (tag in case ids, tag in display names)
MODE_TAGS: dict[str, tuple[str, str]] = {
    FORWARD: ("fwd", "fwd"),
    FORWARD_BACKWARD: ("fwdbwd", "fwd+bwd"),
    TRAIN_STEP: ("train", "fwd+bwd+adam"),
    DECODE: ("decode", "decode"),
}
# "targets": the shapes the project's targets name (what --quick runs); "full": those plus beam
# search, ragged lengths and longer sequences; "tiny": the targets' structure at toy sizes, for
# the harness's own tests.
SHAPE_SETS = ("targets", "full", "tiny")

# Goal metrics: the fraction of the copy roofline (row["copy_fraction"]) or the speedup against
# a peer (row["speedup_vs"][peer]).
COPY_FRACTION = "copy_fraction"
SPEEDUP = "speedup"


@dataclass(frozen=True)
class Goal:
    """A number a case's fast_s2s rows should reach (the project's targets, e.g. the GPU
    targets in the README's "On a GPU"): `metric` at least `at_least`, against `peer` for
    SPEEDUP, in the dtypes named (all when empty)."""

    metric: str
    at_least: float
    peer: str | None = None
    dtypes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.metric not in (COPY_FRACTION, SPEEDUP):
            raise ValueError(f"Goal.metric must be {COPY_FRACTION!r} or {SPEEDUP!r}")
        if (self.metric == SPEEDUP) != (self.peer is not None):
            raise ValueError("a SPEEDUP goal names its peer; a COPY_FRACTION goal none")

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
        """The row's value of the metric (None when it was not measured)."""
        if self.metric == COPY_FRACTION:
            return row.get("copy_fraction")
        return (row.get("speedup_vs") or {}).get(self.peer)

    def as_dict(self) -> dict:
        """What a row carries in "goals" (summary.check_goals rebuilds the Goal from it)."""
        return {
            "metric": self.metric,
            "at_least": self.at_least,
            "peer": self.peer,
            "dtypes": list(self.dtypes),
            "description": self.description,
        }


@dataclass(frozen=True)
class Case:
    """One op at one shape in one mode.

    `dims`: named sizes in display order (attention: B sources, beam, T query steps, S source
    length, D width (A for additive), Dv value width; GRU: T, B, I, H, and for the module L
    layers and dirs; model: B, beam, S, T, maxlen, E, H, V). `lengths`: "full" or "ragged" (some
    rows short). `memory_bound`: its forward rows report GB/s and roofline fractions (False where
    the op is a matrix product and GB/s would say nothing). `variant` names what the dims do not
    (the model's wiring) and leads the shape id. `goals`: what its fast_s2s rows should reach.
    """

    op: str
    mode: str
    dims: tuple[tuple[str, int], ...]
    label: str
    lengths: str = "full"
    target: bool = False
    memory_bound: bool = True
    variant: str = ""
    goals: tuple[Goal, ...] = ()

    def dim(self, name: str) -> int:
        return dict(self.dims)[name]

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
        """Unique and stable: op, mode and shape."""
        return f"{self.op}-{MODE_TAGS[self.mode][0]}-{self.shape_id}"

    @property
    def name(self) -> str:
        """For display: label, mode and shape."""
        return f"{self.label} {MODE_TAGS[self.mode][1]} {self.shape_id}"


@dataclass
class Inputs:
    """What one call gets (`args`, `kwargs`), the tensors gradients are taken for, and what the
    harness needs to know: `beam` rows per source, `extra` (e.g. a module's parameters by name,
    a model's weights and batch), `write_bytes`, the compulsory writes of one call, and `flops`,
    the matrix-product floating-point operations of one call (0 where the op is not
    GEMM-bound: its rows then report no GFLOP/s)."""

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


def make_case(
    op: str, mode: str, label: str, *, lengths: str = "full", target: bool = False,
    memory_bound: bool = True, variant: str = "", goals: tuple[Goal, ...] = (), **dims: int,
) -> Case:  # fmt: skip
    """A Case with its dims given as keywords, in display order."""
    return Case(op, mode, tuple(dims.items()), label, lengths, target, memory_bound, variant, goals)


def ragged_lengths(B: int, S: int, device: torch.device) -> torch.Tensor:
    """Every third row a quarter of S, the next three quarters, the others full: padded batches."""
    lengths = torch.full((B,), S, dtype=torch.int64)
    lengths[1::3] = max(1, S // 4)
    lengths[2::3] = max(1, (3 * S) // 4)
    return lengths.to(device)


def randn(
    shape: tuple[int, ...], gen: torch.Generator, device, dtype, scale: float = 1.0
) -> torch.Tensor:
    """Standard normal times `scale`, drawn in float32 on the CPU from `gen`, so every device and
    dtype sees the same numbers."""
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(device, dtype)


def uniform(
    shape: tuple[int, ...], gen: torch.Generator, device, dtype, bound: float
) -> torch.Tensor:
    """uniform(-bound, bound), drawn like `randn` (torch.nn's RNN initialisation)."""
    values = torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1
    return (values * bound).to(device, dtype)
