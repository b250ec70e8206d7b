"""The read roofline: how fast this machine streams a given number of bytes, measured in the same
run as the ops (torch.sum over a tensor of the same size and dtype as the op's compulsory reads,
so both sit in the same level of the cache hierarchy)."""

from __future__ import annotations

from dataclasses import replace

import torch

from fast_s2s.benchmark.timing import FULL_BUDGET, Budget, Timing, measure


def gbps(nbytes: int, seconds: float) -> float:
    """Bytes per second in GB/s (1e9 bytes)."""
    return nbytes / seconds / 1e9


class ReadRoofline:
    """Measures (and caches per size, dtype and device) the GB/s of torch.sum over `nbytes`."""

    def __init__(self, device: torch.device | str, budget: Budget = FULL_BUDGET) -> None:
        self.device = torch.device(device)
        # torch.sum is cheap: take enough samples that one descheduled thread does not set it
        self.budget = replace(
            budget, warmup=max(budget.warmup, 3), min_repeats=max(budget.min_repeats, 25)
        )
        self._cache: dict[tuple[int, torch.dtype], tuple[float, Timing]] = {}

    def measure(self, nbytes: int, dtype: torch.dtype) -> tuple[float, Timing]:
        """(GB/s, timing) of summing `nbytes` bytes of `dtype`."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        numel = max(1, nbytes // itemsize)
        key = (numel, dtype)
        if key not in self._cache:
            x = torch.rand(numel, device=self.device, dtype=torch.float32).to(dtype)
            timing = measure(lambda: torch.sum(x), self.device, self.budget)
            self._cache[key] = (gbps(numel * itemsize, timing.median_us * 1e-6), timing)
        return self._cache[key]
