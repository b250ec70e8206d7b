"""What a benchmark case is: `Case` (op, mode, shape), `Goal` (a number a case's fast_s2s rows
must reach), `Inputs` (what one call gets), and the input helpers the op families share
(fast_s2s.benchmark.cases and gru_cases build on them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

FORWARD = "forward"
FORWARD_BACKWARD = "forward+backward"
# The whole-model cases (fast_s2s.benchmark.model_cases): one call is a complete training step
# (forward, backward, clipping, Adam) or a complete decode (greedy or beam search) of a batch.
TRAIN_STEP = "train-step"
DECODE = "decode"
MODES = (FORWARD, FORWARD_BACKWARD, TRAIN_STEP, DECODE)
# mode -> (in case ids, in display names)
MODE_TAGS: dict[str, tuple[str, str]] = {
    FORWARD: ("fwd", "fwd"),
    FORWARD_BACKWARD: ("fwdbwd", "fwd+bwd"),
    TRAIN_STEP: ("train", "fwd+bwd+adam"),
    DECODE: ("decode", "decode"),
}

# Case sets: "targets" = the shapes the project's targets name (what --quick runs), "full" =
# targets plus beam search, ragged lengths and longer sequences, "tiny" = the targets' structure
# at toy sizes (for the harness's own tests).
SHAPE_SETS = ("targets", "full", "tiny")

# Goal metrics: the fraction of the device's copy bandwidth a row moves its compulsory bytes at
# (runner: row["copy_fraction"]), or the speedup against a peer (row["speedup_vs"][peer]).
COPY_FRACTION = "copy_fraction"
SPEEDUP = "speedup"


@dataclass(frozen=True)
class Goal:
    """A number the fast_s2s rows of a case should reach (the project's targets, e.g. issue 4's
    for CUDA): `metric` COPY_FRACTION (of the copy roofline) or SPEEDUP (against `peer`), at
    least `at_least`, in the dtypes named (every dtype when `dtypes` is empty)."""

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


@dataclass(frozen=True)
class Case:
    """One op at one shape in one mode.

    `dims` are named sizes in display order; attention cases use B (source batch), beam
    (N = B * beam query rows), T (query steps), S (source length), D (query/key width; the
    attention width A for additive attention) and Dv (value width); GRU cases use T (steps), B
    (batch), I (input features), H (hidden size), and for the module L (layers) and dirs (2:
    bidirectional); model cases use B (sentences), beam (beam search only), S (source length),
    T (target steps, training), maxlen (decode), E, H (embedding and hidden size) and V
    (vocabulary). `lengths` is "full" (no lengths passed) or "ragged" (lengths passed, some
    rows short). `memory_bound`: forward rows report GB/s over the compulsory reads against the
    read roofline, and the fraction of the copy roofline their compulsory reads and writes are
    moved at (False for compute-bound cases, whose GB/s would say nothing). `variant` names what
    the dims do not (the model's wiring, e.g. "bahdanau"); it leads the shape id. `goals`: what
    the case's fast_s2s rows should reach (report.check_goals).
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
        """Readable shape, e.g. `N64-T1-S50-D512`, `B16x5-T1-S50-D512` (5 beam rows each) or
        `T50-B16-I512-H512-L2-bidir`; a model case leads with its variant:
        `bahdanau-B32x5-S25-maxlen30-E64-H128-V54`)."""
        d = self.shape
        parts = [self.variant] if self.variant else []
        if "B" in d and "beam" in d:
            parts.append(f"N{d['B']}" if d["beam"] == 1 else f"B{d['B']}x{d['beam']}")
        for key, value in self.dims:
            if key == "beam" or (key == "B" and "beam" in d):
                continue
            if key == "Dv" and value == d.get("D"):
                continue
            if key == "dirs":
                if value == 2:
                    parts.append("bidir")
                continue
            name = "A" if key == "D" and self.op == "additive_attention" else key
            parts.append(f"{name}{value}")
        if self.lengths != "full":
            parts.append(self.lengths)
        return "-".join(parts)

    @property
    def id(self) -> str:
        """Unique, stable identifier: op, mode and shape."""
        return f"{self.op}-{MODE_TAGS[self.mode][0]}-{self.shape_id}"

    @property
    def name(self) -> str:
        """Short display name: label and shape."""
        return f"{self.label} {MODE_TAGS[self.mode][1]} {self.shape_id}"


@dataclass
class Inputs:
    """What one call of the op gets, plus what the harness needs to know about it.

    `extra` holds what is not an argument of the call, e.g. a module's parameters by name
    (`extra["params"]`, shared by every implementation of the case). `write_bytes`: the
    compulsory writes of one call (every output, written once), set by the input maker.
    """

    args: tuple[torch.Tensor, ...]
    kwargs: dict[str, object]
    grad_inputs: tuple[torch.Tensor, ...] = ()
    beam: int = 1
    extra: dict[str, object] = field(default_factory=dict)
    write_bytes: int = 0

    @property
    def read_bytes(self) -> int:
        """Compulsory reads: every floating-point input, read once (query, keys, values, ...;
        x, h and the weights of gru_cell)."""
        return sum(
            t.numel() * t.element_size()
            for t in (*self.args, *self.kwargs.values())
            if isinstance(t, torch.Tensor) and t.is_floating_point()
        )

    @property
    def moved_bytes(self) -> int:
        """Compulsory traffic of one call: reads plus writes (what the copy roofline compares)."""
        return self.read_bytes + self.write_bytes


def ragged_lengths(B: int, S: int, device: torch.device) -> torch.Tensor:
    """Every third row short (a quarter of S, at least 1), the others full: padded batches."""
    lengths = torch.full((B,), S, dtype=torch.int64)
    lengths[1::3] = max(1, S // 4)
    lengths[2::3] = max(1, (3 * S) // 4)
    return lengths.to(device)


def randn(shape: tuple[int, ...], gen: torch.Generator, device, dtype, scale: float = 1.0):
    """Standard normal times `scale`, drawn in float32 on the CPU from `gen` (the same numbers
    on every device and dtype)."""
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale).to(device, dtype)


def uniform(shape: tuple[int, ...], gen: torch.Generator, device, dtype, bound: float):
    """uniform(-bound, bound), drawn like `randn` (torch.nn's RNN initialisation)."""
    return ((torch.rand(shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound).to(
        device, dtype
    )
