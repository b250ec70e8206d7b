"""Which implementation of an op runs: backend names, availability, and what `auto` picks.

`auto` picks per op and device the fastest implementation the benchmarks measured
(`fast-s2s bench`); see AUTO_PREFERENCE for the order and the measurement behind it.
"""

from __future__ import annotations

import os

import torch

from fast_s2s import _extension
from fast_s2s.checks import BACKENDS, check_backend

__all__ = [
    "AUTO_PREFERENCE",
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "resolve_backend",
    "why_unavailable",
]

# Ops with a compiled kernel, per device type. Grows as kernels land.
CPP_KERNELS: dict[str, frozenset[str]] = {
    "cpu": frozenset(
        {"dot_attention", "additive_attention", "local_attention", "gru_cell", "gru_layer"}
    ),
    "cuda": frozenset(
        {"dot_attention", "additive_attention", "local_attention", "gru_cell", "gru_layer"}
    ),
}
# Ops with a Triton kernel in fast_s2s.kernels (kernels/ in the repository).
TRITON_KERNELS: frozenset[str] = frozenset(
    {"dot_attention", "additive_attention", "gru_cell", "gru_layer", "local_attention"}
)

# Order in which `auto` tries backends, per device type (docs/DESIGN.md, "Backends"). CPU: the
# C++ kernels beat the reference on every shape `fast-s2s bench` measures (README,
# "Benchmarks"), so they come first. CUDA: the CUDA C++ and Triton kernels pass their tests under
# the CPU emulation and Triton's interpreter, but `auto` changes the default implementation for
# every user of a GPU, so it moves off the reference only on measured GPU figures: run
# `bash scripts/gpu_check.sh` on a GPU and put the order it prints here, with its figures.
AUTO_PREFERENCE: dict[str, tuple[str, ...]] = {
    "cpu": ("cpp", "reference"),
    "cuda": ("reference",),
}


class BackendUnavailableError(RuntimeError):
    """The requested backend cannot run this op on this device; the message says why."""


def _device_type(device: torch.device | str) -> str:
    # A module's forward resolves its backend per call, and building a torch.device from a
    # string costs more than the rest of the lookup: plain device type names pass as they are.
    if isinstance(device, str):
        return device if device in ("cpu", "cuda") else torch.device(device).type
    return device.type


def why_unavailable(op: str, backend: str, device: torch.device | str) -> str | None:
    """None if `backend` can run `op` on `device`, else a sentence saying why not and what to do."""
    device_type = _device_type(device)
    if backend == "reference":
        return None
    if backend == "cpp":
        if not _extension.extension_loaded():
            return _extension.EXTENSION_ERROR
        if device_type == "cuda" and not _extension.cuda_compiled():
            return (
                "the extension was built without CUDA sources; rebuild with a CUDA build of torch "
                "and nvcc on PATH (or CUDA_HOME set), e.g. FAST_S2S_CUDA=1 pip install "
                "--no-build-isolation -e ."
            )
        if op not in CPP_KERNELS.get(device_type, frozenset()):
            return f"no compiled {device_type} kernel for {op} yet"
        return None
    if backend == "triton":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (pip install triton, or a CUDA build of torch)"
        if op not in TRITON_KERNELS:
            return f"no Triton kernel for {op} yet"
        if device_type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            return (
                "Triton kernels run on CUDA tensors; on the CPU only in Triton's interpreter "
                "(set TRITON_INTERPRET=1 before importing triton, for testing)"
            )
        return None
    check_backend(op, backend)
    raise AssertionError(f"unhandled backend {backend!r}")  # BACKENDS and this function disagree


def available_backends(op: str, device: torch.device | str) -> dict[str, str | None]:
    """Every concrete backend mapped to None (available) or the reason it is not."""
    return {b: why_unavailable(op, b, device) for b in BACKENDS if b != "auto"}


def resolve_backend(op: str, backend: str, device: torch.device | str) -> str:
    """The concrete backend that runs `op` on `device` when `backend` is asked for.

    Raises BackendUnavailableError (saying why and how to fix it) for an explicit backend that
    is not available; `auto` never raises, it falls back down AUTO_PREFERENCE.
    """
    check_backend(op, backend)
    if backend != "auto":
        reason = why_unavailable(op, backend, device)
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend={backend!r} is not available: {reason}")
        return backend
    device_type = _device_type(device)
    for candidate in AUTO_PREFERENCE.get(device_type, ("reference",)):
        if why_unavailable(op, candidate, device_type) is None:
            return candidate
    return "reference"
