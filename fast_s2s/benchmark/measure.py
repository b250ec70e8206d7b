"""Timing (per-call medians, a case's implementations in alternating rounds, CUDA calls between
events), rooflines at an op's own traffic so both sit in the same cache level (read: torch.sum;
copy: dst.copy_(src), counted both ways as CUDA's bandwidthTest does), and the sgemm rate."""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch

from fast_s2s import machine


@dataclass(frozen=True)
class Budget:
    """Timed calls go on until at least `min_repeats` were made and either `min_time_s` seconds
    were spent or `max_repeats` calls made; `warmup` calls before them are not timed."""

    warmup: int = 5
    min_repeats: int = 10
    max_repeats: int = 1000
    min_time_s: float = 0.5


QUICK_BUDGET = Budget(warmup=1, min_repeats=3, max_repeats=100, min_time_s=0.05)
FULL_BUDGET = Budget()
ROUNDS = 5  # measure_interleaved's rounds per case
READ, COPY = "read", "copy"
# Bytes on each side of the device copy: 20 times a GPU's 50-60 MB L2, past a CPU's last level.
DEVICE_COPY_BYTES: dict[str, int] = {"cuda": 1 << 30, "cpu": 1 << 26}
# Large enough that the product runs at the BLAS's peak (2048: 17 GFLOP, ~0.1 s on 2 CPU cores).
SGEMM_N: dict[str, int] = {"cuda": 8192, "cpu": 2048}


@dataclass(frozen=True)
class Timing:
    """The per-call samples summarised, in microseconds."""

    median_us: float
    q1_us: float
    q3_us: float
    min_us: float
    repeats: int

    @property
    def iqr_us(self) -> float:
        return self.q3_us - self.q1_us

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "iqr_us": self.iqr_us}


def summarize(samples_us: list[float]) -> Timing:
    """Median, quartiles (inclusive method) and minimum of per-call times."""
    if not samples_us:
        raise ValueError("summarize: no samples")
    q1 = q3 = samples_us[0]
    if len(samples_us) > 1:
        q1, _, q3 = statistics.quantiles(samples_us, n=4, method="inclusive")
    return Timing(statistics.median(samples_us), q1, q3, min(samples_us), len(samples_us))


def measure(fn: Callable[[], object], device="cpu", budget: Budget = FULL_BUDGET) -> Timing:
    """Times `fn()` on `device`; exceptions from `fn` propagate."""
    return summarize(measure_samples(fn, device, budget))


def _time_call(fn: Callable[[], object], cuda: bool) -> float:
    """One call's time in microseconds (on CUDA: device time)."""
    if not cuda:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e6
    begin, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) * 1e3  # ms -> us


def measure_samples(fn: Callable[[], object], device="cpu", budget=FULL_BUDGET) -> list[float]:
    """Per-call times (us) after `budget.warmup` untimed calls, with the garbage collector paused
    (as timeit does): a collection would otherwise land in some call's time."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(budget.warmup):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
        samples: list[float] = []
        start = time.perf_counter()
        with torch.cuda.device(device) if cuda else contextlib.nullcontext():
            while len(samples) < budget.min_repeats or (
                len(samples) < budget.max_repeats
                and time.perf_counter() - start < budget.min_time_s
            ):
                samples.append(_time_call(fn, cuda))
        return samples
    finally:
        if was_enabled:
            gc.enable()


def measure_interleaved(
    calls: list[tuple[Callable[[], object], Callable[[], contextlib.AbstractContextManager]]],
    device: torch.device | str = "cpu",
    budget: Budget = FULL_BUDGET,
    rounds: int = ROUNDS,
) -> list[Timing | Exception]:
    """Times every (call, scope) of one case in `rounds` alternating rounds, each with a share of
    the budget, so a drift in the machine's speed falls on all alike. A round runs in the call's
    scope, entered afresh, after one untimed call (the first round: `budget.warmup`); a call
    that raises is dropped and its exception returned in its place."""
    share = replace(
        budget,
        min_repeats=max(1, math.ceil(budget.min_repeats / rounds)),
        max_repeats=max(1, math.ceil(budget.max_repeats / rounds)),
        min_time_s=budget.min_time_s / rounds,
    )
    samples: list[list[float]] = [[] for _ in calls]
    failed: dict[int, Exception] = {}
    for r in range(rounds):
        for i, (fn, scope) in enumerate(calls):
            if i in failed:
                continue
            try:
                with scope():
                    warm = replace(share, warmup=budget.warmup if r == 0 else 1)
                    samples[i] += measure_samples(fn, device, warm)
            except Exception as exc:  # a failing implementation is a result
                failed[i] = exc
    return [failed[i] if i in failed else summarize(samples[i]) for i in range(len(calls))]


def gbps(nbytes: int, seconds: float) -> float:
    """GB/s, 1e9 bytes."""
    return nbytes / seconds / 1e9


def roofline_call(kind: str, nbytes: int, dtype: torch.dtype, device) -> tuple[Callable, int]:
    """The call a `kind` roofline times for an op that reads (READ) or moves (COPY) `nbytes`,
    and the bytes it counts per call."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    numel = max(1, (nbytes if kind == READ else nbytes // 2) // itemsize)
    src = torch.rand(numel, device=device, dtype=torch.float32).to(dtype)
    if kind == READ:
        return (lambda: torch.sum(src)), numel * itemsize
    dst = torch.empty_like(src)
    return (lambda: dst.copy_(src)), 2 * numel * itemsize


class Roofline:
    """A `kind` roofline on `device`, measured once per traffic size and dtype."""

    def __init__(self, kind: str, device: torch.device | str, budget: Budget = FULL_BUDGET):
        self.kind, self.device = kind, torch.device(device)
        # Streaming calls are cheap: enough samples that one descheduled thread does not set it.
        self.budget = replace(
            budget, warmup=max(budget.warmup, 3), min_repeats=max(budget.min_repeats, 25)
        )
        self._cache: dict[tuple[int, torch.dtype], tuple[float, Timing]] = {}

    def measure(self, nbytes: int, dtype: torch.dtype) -> tuple[float, Timing]:
        """(GB/s, timing) at the traffic of an op reading (read) or moving (copy) `nbytes`."""
        if (nbytes, dtype) not in self._cache:
            call, counted = roofline_call(self.kind, nbytes, dtype, self.device)
            timing = measure(call, self.device, self.budget)
            self._cache[nbytes, dtype] = (gbps(counted, timing.median_us * 1e-6), timing)
        return self._cache[nbytes, dtype]


def device_copy_bandwidth(device, budget: Budget = FULL_BUDGET, nbytes: int | None = None) -> dict:
    """The machine block's {"copy_gbps", "copy_bytes" (one side), "copy_median_us"}: a float32
    copy of `nbytes` (default DEVICE_COPY_BYTES) each way."""
    device = torch.device(device)
    nbytes = nbytes or DEVICE_COPY_BYTES.get(device.type, DEVICE_COPY_BYTES["cpu"])
    value, timing = Roofline(COPY, device, budget).measure(2 * nbytes, torch.float32)
    return {"copy_gbps": value, "copy_bytes": nbytes, "copy_median_us": timing.median_us}


def sgemm_rate(device, budget: Budget = FULL_BUDGET, n: int | None = None) -> dict:
    """The machine block's {"sgemm_gflops", "sgemm_n", "sgemm_median_us"}: torch.mm of two
    float32 n x n matrices (default SGEMM_N), 2 n^3 operations per call."""
    device = torch.device(device)
    n = n or SGEMM_N.get(device.type, SGEMM_N["cpu"])
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    budget = replace(budget, min_repeats=max(3, budget.min_repeats // 4))
    timing = measure(lambda: torch.mm(a, b), device, budget)
    gflops = 2 * n**3 / (timing.median_us * 1e-6) / 1e9
    return {"sgemm_gflops": gflops, "sgemm_n": n, "sgemm_median_us": timing.median_us}


def gemm_choices() -> list[str]:
    """The CPU GEMM layer's choice per product site so far (empty without the extension)."""
    report = machine.gemm_report()
    return list(report.choices) if report else []
