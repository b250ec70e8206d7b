"""Median timing of a callable: warm-up calls, then timed calls until a budget is spent.

CPU calls are timed one by one with time.perf_counter. CUDA calls are timed with a pair of
torch.cuda.Event around each call and a synchronize after it, so every sample is the device time
of one call (launch gaps inside it included), never a queue of calls overlapping.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch


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
    median = statistics.median(samples_us)
    return Timing(median, q1, q3, min(samples_us), len(samples_us))


def measure(
    fn: Callable[[], object], device: torch.device | str = "cpu", budget: Budget = FULL_BUDGET
) -> Timing:
    """Times `fn()` on `device`. The warm-up calls trigger lazy initialisation, allocator growth
    and compilation; exceptions from `fn` propagate."""
    device = torch.device(device)
    for _ in range(budget.warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples: list[float] = []
    start = time.perf_counter()

    def enough() -> bool:
        n = len(samples)
        done = n >= budget.max_repeats or time.perf_counter() - start >= budget.min_time_s
        return n >= budget.min_repeats and done

    if device.type == "cuda":
        with torch.cuda.device(device):
            while not enough():
                begin, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
                begin.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(begin.elapsed_time(end) * 1e3)  # ms -> us
    else:
        while not enough():
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e6)
    return summarize(samples)
