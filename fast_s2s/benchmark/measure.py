"""Timing (per-call medians; a case's implementations in alternating rounds; CUDA calls between
an event pair each), the rooflines at an op's own traffic, so that both sit in the same cache
level (read: torch.sum over its reads; copy: dst.copy_(src) moving its reads + writes, counted
both ways as CUDA's bandwidthTest does), the sgemm rate, and the machine block."""

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
    the budget, so that a drift in the machine's speed falls on every implementation alike. Each
    round runs inside the call's scope (entered afresh) after one untimed call (the first round:
    `budget.warmup`). A call that raises is dropped and its exception returned in its place."""
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
    budget = replace(budget, min_repeats=max(3, budget.min_repeats // 4))
    timing = measure(lambda: torch.mm(a, b), device, budget)
    gflops = 2 * n**3 / (timing.median_us * 1e-6) / 1e9
    return {"sgemm_gflops": gflops, "sgemm_n": n, "sgemm_median_us": timing.median_us}


def busy_warning(info: dict) -> str | None:
    """A warning when other work competes for the cores: multi-threaded calls then wait for
    descheduled threads (millisecond stalls), so their timings mean little."""
    load, cores = info.get("load_average_1min"), info.get("cpu_count")
    threads = info.get("torch_threads")
    if load is None or not cores or info.get("device") != "cpu":
        return None
    if load > 0.5 * cores and (threads or 1) > 1:
        return (
            f"the machine may be busy (1-minute load average {load} on {cores} cores) and torch "
            f"uses {threads} threads: timings will be noisy; rerun when idle or with --threads 1"
        )
    return None


def gemm_report():
    """fast_s2s.gemm_report() (the CPU GEMM layer's setting and choices); None without it."""
    try:
        from fast_s2s.gemm import gemm_report

        return gemm_report()
    except Exception:
        return None


def gemm_choices() -> list[str]:
    """What the CPU GEMM layer chose for each product site so far."""
    report = gemm_report()
    return list(report.choices) if report else []


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:
        return None


def _blas() -> dict[str, object]:
    """The BLAS torch was built with, with MKL's version where it says one, and the fast_s2s GEMM
    layer's setting."""
    found = re.search(r"BLAS_INFO=([\w.+-]+)", torch.__config__.show())
    name = found.group(1) if found else "unknown"
    report = gemm_report()
    if report is None:  # no extension: torch's own words only
        return {"blas": name}
    bf16 = "native (MKL bf16 products)" if report.bf16_native else "float32"
    return {"blas": f"{name} ({report.mkl})" if report.mkl else name,
            "gemm_forced": report.forced, "gemm_available": " ".join(report.available),
            "gemm_bf16": bf16}  # fmt: skip


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
    """The JSON file's machine block: CPU, threads, SIMD levels, BLAS, GEMM setting, load,
    versions, and the GPU (name, compute capability, multiprocessors, L2, cuDNN)."""
    device = torch.device(device)
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not every OS reports one
        load = None
    blas = _blas()
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
        props = torch.cuda.get_device_properties(device)  # index None: the current device
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
