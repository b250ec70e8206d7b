"""What the numbers were measured on: CPU, threads, SIMD level (fast_s2s's and torch's), BLAS and
its version, the GEMM backend setting, load, torch, triton, the GPU (name, compute capability,
multiprocessors, L2, cuDNN). The run adds the device's copy bandwidth and sgemm rate
(roofline.device_copy_bandwidth, roofline.sgemm_rate)."""

from __future__ import annotations

import os
import platform
import re

import torch


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def busy_warning(info: dict) -> str | None:
    """A warning when other work competes for the cores: multi-threaded calls then wait for
    descheduled threads (millisecond stalls), so their timings mean little."""
    load, cores, threads = (
        info.get("load_average_1min"),
        info.get("cpu_count"),
        info.get("torch_threads"),
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


def blas_info() -> str:
    """The BLAS torch was built with, and its version where it says one: "MKL 2024.2 (Intel(R)
    oneAPI Math Kernel Library Version 2024.2-Product Build ...)", "openblas", ..."""
    found = re.search(r"BLAS_INFO=([\w.+-]+)", torch.__config__.show())
    name = found.group(1) if found else "unknown"
    try:
        from fast_s2s.gemm import gemm_report

        mkl = gemm_report().mkl
    except Exception:  # no extension: torch's own words only
        mkl = ""
    if mkl:
        return f"{name} ({mkl})"
    return name


def _gemm_info() -> dict[str, object]:
    try:
        from fast_s2s.gemm import gemm_report

        report = gemm_report()
    except Exception:
        return {}
    return {"gemm_forced": report.forced, "gemm_available": " ".join(report.available)}


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
    """The machine block of the JSON file."""
    device = torch.device(device)
    try:
        load: float | None = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not every OS reports one
        load = None
    info: dict[str, object] = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": load,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blas": blas_info(),
        "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS"),
        **_gemm_info(),
        "triton": _version("triton"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "fast_s2s": _version("fast_s2s"),
        **_extension_info(),
    }
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
