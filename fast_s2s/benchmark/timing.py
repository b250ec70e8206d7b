"""Median timing of a callable: warm-up calls, then timed calls until a budget is spent; and of
a case's implementations together, in alternating rounds (measure_interleaved).

CPU calls are timed one by one with time.perf_counter. CUDA calls are timed with a pair of
torch.cuda.Event around each call and a synchronize after it, so every sample is the device time
of one call (launch gaps inside it included), never a queue of calls overlapping.
"""

from __future__ import annotations

import contextlib
import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

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
ROUNDS = 5  # measure_interleaved's rounds per case
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
    return summarize(measure_samples(fn, device, budget))


def measure_samples(
    fn: Callable[[], object], device: torch.device | str = "cpu", budget: Budget = FULL_BUDGET
) -> list[float]:
    """measure's per-call times in microseconds, with Python's cyclic garbage collector paused
    (as timeit does): a collection triggered by whatever allocated before would otherwise land
    in some call's time (milliseconds for a full one, more than a whole batch-1 decode)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _samples(fn, torch.device(device), budget)
    finally:
        if was_enabled:
            gc.enable()


def _samples(fn: Callable[[], object], device: torch.device, budget: Budget) -> list[float]:
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
    return samples


def measure_interleaved(
    calls: list[tuple[Callable[[], object], Callable[[], contextlib.AbstractContextManager]]],
    device: torch.device | str = "cpu",
    budget: Budget = FULL_BUDGET,
    rounds: int = ROUNDS,
) -> list[Timing | Exception]:
    """Times every (call, scope) of one case in `rounds` alternating rounds, each call's share
    of the budget split evenly across them, so that a drift of the machine's speed over the
    seconds a case takes (another tenant on a shared VM, clocks) falls on every implementation
    alike instead of on whichever ran during it: the ratios between them are what the bench
    reports. Each round of a call runs inside its scope (entered afresh: e.g.
    fast_s2s.frozen_weights) after one untimed call; the first round warms up `budget.warmup`
    times. A call that raises is timed no further and its exception is returned in its place."""
    share = Budget(
        warmup=budget.warmup,
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
