"""Loads the compiled extension (fast_s2s._C) if it was built, and says why if it was not."""

from __future__ import annotations

BUILD_HINT = (
    "build it from the repository root with `pip install --no-build-isolation -e .` "
    "(torch must already be installed; see README.md)"
)

try:
    from fast_s2s import _C  # noqa: F401  (loading it registers torch.ops.fast_s2s.*)

    EXTENSION_ERROR: str | None = None
except ImportError as exc:  # not built, or built against another torch
    _C = None
    EXTENSION_ERROR = (
        f"the compiled extension fast_s2s._C could not be imported ({exc}); {BUILD_HINT}"
    )


def extension_loaded() -> bool:
    return _C is not None


def cpu_capability() -> str | None:
    """The SIMD level the C++ kernels were compiled for (default, avx2 or avx512)."""
    return getattr(_C, "cpu_capability", None)


def cuda_compiled() -> bool:
    return bool(getattr(_C, "with_cuda", 0))
