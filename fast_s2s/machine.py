"""What machine a figure was measured on: the CPU (model, cores, load), the SIMD levels fast_s2s's
kernels and torch run at, the BLAS and the CPU GEMM layer's setting, versions, and the GPU.
`fast-s2s bench` writes it as the machine block of its JSON, `fast-s2s verify` prints its first
lines, and a shipped model's card names the CPU it was trained on."""

from __future__ import annotations

import contextlib
import os
import platform
import re

import torch


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


def describe(device: torch.device | str = "cpu") -> dict[str, object]:
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


def summary(info: dict[str, object]) -> str:
    """One line of `describe`'s block: the CPU, and the SIMD levels and BLAS that ran."""
    blas = str(info["blas"])
    if version := re.search(r"Version ([\d.]+)", blas):  # MKL's banner is a sentence long
        blas = f"{blas.split(' (')[0]} {version.group(1)}"
    gpu = info.get("gpu")
    return (
        f"{info['cpu']}, {info['cpu_count']} cores, torch threads {info['torch_threads']}; "
        f"fast_s2s CPU kernels {info.get('cpu_capability') or 'not loaded'}, torch "
        f"{info['torch_cpu_capability']}, BLAS {blas}"
        + (
            f" (MKL_ENABLE_INSTRUCTIONS={mkl})"
            if (mkl := info.get("mkl_enable_instructions"))
            else ""
        )
        + (f"; GPU {gpu} (compute capability {info['gpu_capability']})" if gpu else "")
    )
