"""The rooflines: how fast this machine moves a given number of bytes, measured in the same run as
the ops, by the same timing code (fast_s2s.benchmark.timing) on every device.

Two of them, each measured at the size of the op's own traffic, so that the op and its roofline
sit in the same level of the cache hierarchy (a decode step's 13 MB of keys and values fit in a
GPU's L2; the large attention case's 268 MB do not):

  read  torch.sum over as many bytes as the op's compulsory reads (reported as "% roof")
  copy  a device-to-device copy, dst.copy_(src), of half the op's compulsory reads plus writes
        each way: the bytes read plus the bytes written equal the op's (reported as "% copy").
        Copy bandwidth counts both, as CUDA's bandwidthTest does for device-to-device copies.

`device_copy_bandwidth` measures the copy at one large size (DEVICE_COPY_BYTES: far past the
last-level cache), the device's copy bandwidth, recorded once per run with the machine.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fast_s2s.benchmark.timing import FULL_BUDGET, Budget, Timing, measure

# Bytes each of source and destination hold for the device-level copy bandwidth: past a GPU's L2
# (50-60 MB on an H100 / H200) by 20 times, and past a CPU's last-level cache.
DEVICE_COPY_BYTES: dict[str, int] = {"cuda": 1 << 30, "cpu": 1 << 26}


def gbps(nbytes: int, seconds: float) -> float:
    """Bytes per second in GB/s (1e9 bytes)."""
    return nbytes / seconds / 1e9


def _roofline_budget(budget: Budget) -> Budget:
    # Streaming kernels are cheap: take enough samples that one descheduled thread does not set it
    return replace(budget, warmup=max(budget.warmup, 3), min_repeats=max(budget.min_repeats, 25))


def _numel(nbytes: int, dtype: torch.dtype) -> tuple[int, int]:
    itemsize = torch.empty((), dtype=dtype).element_size()
    return max(1, nbytes // itemsize), itemsize


class ReadRoofline:
    """Measures (and caches per size, dtype and device) the GB/s of torch.sum over `nbytes`."""

    def __init__(self, device: torch.device | str, budget: Budget = FULL_BUDGET) -> None:
        self.device = torch.device(device)
        self.budget = _roofline_budget(budget)
        self._cache: dict[tuple[int, torch.dtype], tuple[float, Timing]] = {}

    def measure(self, nbytes: int, dtype: torch.dtype) -> tuple[float, Timing]:
        """(GB/s, timing) of summing `nbytes` bytes of `dtype`."""
        numel, itemsize = _numel(nbytes, dtype)
        key = (numel, dtype)
        if key not in self._cache:
            x = torch.rand(numel, device=self.device, dtype=torch.float32).to(dtype)
            timing = measure(lambda: torch.sum(x), self.device, self.budget)
            self._cache[key] = (gbps(numel * itemsize, timing.median_us * 1e-6), timing)
        return self._cache[key]


class CopyRoofline:
    """Measures (and caches per size, dtype and device) the copy bandwidth at a given traffic:
    `measure(moved_bytes, dtype)` times dst.copy_(src) with src and dst of moved_bytes / 2 each,
    and returns (bytes read + bytes written) / median time in GB/s."""

    def __init__(self, device: torch.device | str, budget: Budget = FULL_BUDGET) -> None:
        self.device = torch.device(device)
        self.budget = _roofline_budget(budget)
        self._cache: dict[tuple[int, torch.dtype], tuple[float, Timing]] = {}

    def measure(self, moved_bytes: int, dtype: torch.dtype) -> tuple[float, Timing]:
        """(GB/s, timing) of a copy that reads and writes `moved_bytes` in all."""
        numel, itemsize = _numel(moved_bytes // 2, dtype)
        key = (numel, dtype)
        if key not in self._cache:
            src = torch.rand(numel, device=self.device, dtype=torch.float32).to(dtype)
            dst = torch.empty_like(src)
            timing = measure(lambda: dst.copy_(src), self.device, self.budget)
            self._cache[key] = (gbps(2 * numel * itemsize, timing.median_us * 1e-6), timing)
            del src, dst
        return self._cache[key]


def device_copy_bandwidth(
    device: torch.device | str, budget: Budget = FULL_BUDGET, nbytes: int | None = None
) -> dict[str, object]:
    """The device's copy bandwidth: a float32 copy of `nbytes` (default DEVICE_COPY_BYTES of the
    device type) each way, timed like every op. JSON-ready: {"copy_gbps", "copy_bytes" (one
    side), "copy_median_us"}."""
    device = torch.device(device)
    nbytes = nbytes or DEVICE_COPY_BYTES.get(device.type, DEVICE_COPY_BYTES["cpu"])
    roof = CopyRoofline(device, budget)
    value, timing = roof.measure(2 * nbytes, torch.float32)
    return {"copy_gbps": value, "copy_bytes": nbytes, "copy_median_us": timing.median_us}
