"""Measuring: median timing of a callable and of a case's implementations together
(measure_interleaved), the rooflines, and the machine the numbers were measured on.

CPU calls are timed one by one with time.perf_counter; CUDA calls with a pair of torch.cuda.Event
around each call and a synchronize after it, so every sample is the device time of one call.

The rooflines are measured in the same run with the same timing code, each at the size of the
op's own traffic so that the op and its roofline sit in the same level of the cache hierarchy:
  read  torch.sum over as many bytes as the op's compulsory reads ("% roof")
  copy  dst.copy_(src) with half the op's reads plus writes each way, counted both ways as CUDA's
        bandwidthTest counts a device-to-device copy ("% copy")
`device_copy_bandwidth` is the copy at DEVICE_COPY_BYTES, far past the last-level cache;
`sgemm_rate` torch.mm of two float32 n x n matrices, the roof of the GEMM-bound rows ("% sgemm").
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import re
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
READ, COPY = "read", "copy"
# Bytes each of source and destination hold for the device's copy bandwidth: 20 times a GPU's
# 50-60 MB L2 (H100 / H200), and past a CPU's last-level cache.
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


def measure_samples(fn: Callable[[], object], device="cpu", budget=FULL_BUDGET) -> list[float]:
    """Per-call times in microseconds after `budget.warmup` untimed calls (lazy initialisation,
    allocator growth, compilation), with the cyclic garbage collector paused (as timeit does): a
    collection would otherwise land in some call's time."""
    device = torch.device(device)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
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
    finally:
        if was_enabled:
            gc.enable()


def measure_interleaved(
    calls: list[tuple[Callable[[], object], Callable[[], contextlib.AbstractContextManager]]],
    device: torch.device | str = "cpu",
    budget: Budget = FULL_BUDGET,
    rounds: int = ROUNDS,
) -> list[Timing | Exception]:
    """Times every (call, scope) of one case in `rounds` alternating rounds, each call's budget
    split evenly across them, so that a drift of the machine's speed over the seconds a case
    takes falls on every implementation alike: the ratios between them are what the bench
    reports. Each round of a call runs inside its scope (entered afresh, e.g.
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
    timing = measure(
        lambda: torch.mm(a, b), device, replace(budget, min_repeats=max(3, budget.min_repeats // 4))
    )
    gflops = 2 * n**3 / (timing.median_us * 1e-6) / 1e9
    return {"sgemm_gflops": gflops, "sgemm_n": n, "sgemm_median_us": timing.median_us}


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def busy_warning(info: dict) -> str | None:
    """A warning when other work competes for the cores: multi-threaded calls then wait for
    descheduled threads (millisecond stalls), so their timings mean little."""
    load, cores, threads = (
        info.get(k) for k in ("load_average_1min", "cpu_count", "torch_threads")
    )
    if load is None or not cores or info.get("device") != "cpu":
        return None
    if load > 0.5 * cores and (threads or 1) > 1:
        return (
            f"the machine may be busy (1-minute load average {load} on {cores} cores) and torch "
            f"uses {threads} threads: timings will be noisy; rerun when idle or with --threads 1"
        )
    return None


def _version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:
        return None


def _gemm_and_blas() -> dict[str, object]:
    """The BLAS torch was built with and its version where MKL says one (e.g. "MKL (Intel(R)
    oneAPI Math Kernel Library Version 2024.2 ...)"), and the fast_s2s GEMM layer's setting."""
    found = re.search(r"BLAS_INFO=([\w.+-]+)", torch.__config__.show())
    name = found.group(1) if found else "unknown"
    try:
        from fast_s2s.gemm import gemm_report

        report = gemm_report()
    except Exception:  # no extension: torch's own words only
        return {"blas": name}
    return {"blas": f"{name} ({report.mkl})" if report.mkl else name,
            "gemm_forced": report.forced, "gemm_available": " ".join(report.available)}  # fmt: skip


def _extension_info() -> dict[str, object]:
    try:
        from fast_s2s import _extension
    except Exception as exc:  # fast_s2s itself broken: still describe the machine
        return {"extension_loaded": False, "extension_error": str(exc), "cpu_capability": None}
    capability = _extension.cpu_capability()
    return {
        "extension_loaded": _extension.extension_loaded(),
        "extension_error": _extension.EXTENSION_ERROR,
        "cpu_capability": capability() if callable(capability) else capability,
        "cuda_compiled": _extension.cuda_compiled(),
    }


def machine_info(device: torch.device | str = "cpu") -> dict[str, object]:
    """The machine block of the JSON file: CPU, threads, SIMD levels, BLAS, GEMM setting, load,
    versions, the GPU (name, compute capability, multiprocessors, L2, cuDNN)."""
    device = torch.device(device)
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not every OS reports one
        load = None
    blas = _gemm_and_blas()
    info: dict[str, object] = {
        "device": device.type, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "load_average_1min": load,
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas.pop("blas"),
        "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
        **blas, "triton": _version("triton"), "python": platform.python_version(),
        "platform": platform.platform(), "fast_s2s": _version("fast_s2s"), **_extension_info(),
    }  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(
            device.index if device.index is not None else torch.cuda.current_device()
        )
        l2 = getattr(props, "L2_cache_size", None)
        info.update(
            gpu=props.name,
            gpu_capability=f"{props.major}.{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_sm_count=getattr(props, "multi_processor_count", None),
            gpu_l2_mib=round(l2 / 2**20, 1) if l2 else None,
            gpu_count=torch.cuda.device_count(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        )
    return info
