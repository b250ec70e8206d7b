"""Median timing of a callable: warm-up, then repeats until a time budget is spent.

CPU calls are timed one by one with time.perf_counter. CUDA calls are timed with a pair of
torch.cuda.Event around each call and a synchronize after it, so every sample is the device time
of one call (launch gaps inside the call included), never a queue of calls overlapping.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class Budget:
    """How long to time one implementation: timed calls go on until at least `min_repeats` calls
    were made and either `min_time_s` seconds were spent or `max_repeats` calls were made."""

    warmup: int = 5
    min_repeats: int = 10
    max_repeats: int = 1000
    min_time_s: float = 0.5


QUICK_BUDGET = Budget(warmup=1, min_repeats=3, max_repeats=100, min_time_s=0.05)
FULL_BUDGET = Budget()


@dataclass(frozen=True)
class Timing:
    """Summary of the per-call samples, in microseconds."""

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
    """Median, quartiles and minimum of a list of per-call times (microseconds)."""
    if not samples_us:
        raise ValueError("summarize: no samples")
    if len(samples_us) == 1:
        q1 = q3 = samples_us[0]
    else:
        q1, _, q3 = statistics.quantiles(samples_us, n=4, method="inclusive")
    return Timing(
        median_us=statistics.median(samples_us),
        q1_us=q1,
        q3_us=q3,
        min_us=min(samples_us),
        repeats=len(samples_us),
    )


def _enough(n: int, elapsed: float, budget: Budget) -> bool:
    if n < budget.min_repeats:
        return False
    return n >= budget.max_repeats or elapsed >= budget.min_time_s


def measure(
    fn: Callable[[], object],
    device: torch.device | str = "cpu",
    budget: Budget = FULL_BUDGET,
) -> Timing:
    """Time `fn()` (no arguments) on `device`; returns the median and quartiles per call.

    The first `budget.warmup` calls are not timed (they trigger lazy initialisation, allocator
    growth, compilation; pass a budget with warmup=0 only if `fn` already ran). Exceptions raised
    by `fn` propagate.
    """
    device = torch.device(device)
    is_cuda = device.type == "cuda"
    for _ in range(budget.warmup):
        fn()
    if is_cuda:
        torch.cuda.synchronize(device)

    samples: list[float] = []
    start_wall = time.perf_counter()
    if is_cuda:
        with torch.cuda.device(device):
            while not _enough(len(samples), time.perf_counter() - start_wall, budget):
                begin, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                begin.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(begin.elapsed_time(end) * 1e3)  # ms -> us
    else:
        clock = time.perf_counter
        while not _enough(len(samples), clock() - start_wall, budget):
            t0 = clock()
            fn()
            samples.append((clock() - t0) * 1e6)
    return summarize(samples)
