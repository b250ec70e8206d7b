"""The rooflines: how fast this machine moves a given number of bytes, measured in the same run as
the ops with the same timing code, each at the size of the op's own traffic so that the op and its
roofline sit in the same level of the cache hierarchy (a decode step's 13 MB of keys and values fit
in a GPU's L2; the large attention case's 268 MB do not):

  read  torch.sum over as many bytes as the op's compulsory reads ("% roof")
  copy  dst.copy_(src) with half the op's reads plus writes each way, so that the bytes read plus
        the bytes written equal the op's ("% copy"); counted both ways, as CUDA's bandwidthTest
        counts a device-to-device copy

`device_copy_bandwidth` is the copy at one large size (DEVICE_COPY_BYTES, far past the last-level
cache): the device's copy bandwidth, recorded once per run with the machine. `sgemm_rate` is the
machine's matrix-product rate: torch.mm of two float32 n x n matrices (SGEMM_N), the roof the
GEMM-bound rows (the GRU ops) are reported against ("% sgemm").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch

from fast_s2s.benchmark.timing import FULL_BUDGET, Budget, Timing, measure

READ, COPY = "read", "copy"
# Bytes each of source and destination hold for the device's copy bandwidth: 20 times a GPU's
# 50-60 MB L2 (H100 / H200), and past a CPU's last-level cache.
DEVICE_COPY_BYTES: dict[str, int] = {"cuda": 1 << 30, "cpu": 1 << 26}
# Large enough that the product runs at the BLAS's peak (2048: 17 GFLOP, ~0.1 s on 2 CPU cores).
SGEMM_N: dict[str, int] = {"cuda": 8192, "cpu": 2048}


def gbps(nbytes: int, seconds: float) -> float:
    """GB/s, 1e9 bytes."""
    return nbytes / seconds / 1e9


def roofline_call(
    kind: str, nbytes: int, dtype: torch.dtype, device: torch.device | str
) -> tuple[Callable[[], object], int]:
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


def device_copy_bandwidth(
    device: torch.device | str, budget: Budget = FULL_BUDGET, nbytes: int | None = None
) -> dict[str, object]:
    """The machine block's {"copy_gbps", "copy_bytes" (one side), "copy_median_us"}: a float32
    copy of `nbytes` (default DEVICE_COPY_BYTES) each way."""
    device = torch.device(device)
    nbytes = nbytes or DEVICE_COPY_BYTES.get(device.type, DEVICE_COPY_BYTES["cpu"])
    value, timing = Roofline(COPY, device, budget).measure(2 * nbytes, torch.float32)
    return {"copy_gbps": value, "copy_bytes": nbytes, "copy_median_us": timing.median_us}


def sgemm_rate(
    device: torch.device | str, budget: Budget = FULL_BUDGET, n: int | None = None
) -> dict[str, object]:
    """The machine block's {"sgemm_gflops", "sgemm_n", "sgemm_median_us"}: torch.mm of two
    float32 n x n matrices (default SGEMM_N), 2 n^3 operations per call."""
    device = torch.device(device)
    n = n or SGEMM_N.get(device.type, SGEMM_N["cpu"])
    a = torch.rand(n, n, device=device)
    b = torch.rand(n, n, device=device)
    timing = measure(
        lambda: torch.mm(a, b), device, replace(budget, min_repeats=max(3, budget.min_repeats // 4))
    )
    return {
        "sgemm_gflops": 2 * n**3 / (timing.median_us * 1e-6) / 1e9,
        "sgemm_n": n,
        "sgemm_median_us": timing.median_us,
    }
