"""Build of the fast_s2s._C extension (C++ CPU kernels, CUDA kernels when possible).

Environment knobs:
  FAST_S2S_CUDA=0|1          skip / demand the CUDA sources (default: build them when torch is a
                             CUDA build and nvcc is found)
  FAST_S2S_CPU_CAPABILITY    default | avx2 | avx512 (default: the best the build machine has)
  TORCH_CUDA_ARCH_LIST       CUDA targets (default here: 9.0, the H100/H200 the project runs on)
  MAX_JOBS                   parallel compile jobs for ninja
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import site
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be 0 or 1, got {value!r}")


def _find_nvcc() -> str | None:
    """Locate a CUDA toolkit; torch's own detection picks /usr/local on this image."""
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidates = [cuda_home] if cuda_home else []
    candidates += ["/usr/local/cuda"]
    for home in candidates:
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return home
    nvcc = shutil.which("nvcc")
    return os.path.dirname(os.path.dirname(nvcc)) if nvcc else None


WANT_CUDA = _env_flag("FAST_S2S_CUDA")
CUDA_HOME = _find_nvcc() if WANT_CUDA is not False else None
if CUDA_HOME:
    # Must be set before torch.utils.cpp_extension is imported: it reads CUDA_HOME at import time.
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

TORCH_HAS_CUDA = torch.version.cuda is not None
BUILD_CUDA = bool(CUDA_HOME) and TORCH_HAS_CUDA and WANT_CUDA is not False
if WANT_CUDA and not BUILD_CUDA:
    why = (
        "torch is a CPU-only build" if not TORCH_HAS_CUDA else "nvcc was not found (set CUDA_HOME)"
    )
    raise SystemExit(f"FAST_S2S_CUDA=1 but the CUDA sources cannot be built: {why}")


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_capability() -> str:
    """Pick the SIMD level ATen's at::vec is compiled for.

    at::vec picks its implementation from CPU_CAPABILITY_* macros at compile time, so the kernels
    are built for the build machine's best level (a source build runs where it was built).
    """
    forced = os.environ.get("FAST_S2S_CPU_CAPABILITY")
    if forced:
        if forced not in ("default", "avx2", "avx512"):
            raise SystemExit(
                f"FAST_S2S_CPU_CAPABILITY must be default, avx2 or avx512, got {forced}"
            )
        return forced
    if platform.machine() not in ("x86_64", "AMD64"):
        return "default"
    flags = _cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


CPU_CAPABILITY = _cpu_capability()
CAPABILITY_FLAGS = {
    "default": ["-DCPU_CAPABILITY=DEFAULT", "-DCPU_CAPABILITY_DEFAULT"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "avx512": [
        "-mavx512f",
        "-mavx512bw",
        "-mavx512vl",
        "-mavx512dq",
        "-mfma",
        "-mf16c",
        "-DCPU_CAPABILITY=AVX512",
        "-DCPU_CAPABILITY_AVX512",
    ],
}[CPU_CAPABILITY]

cxx_flags = [
    "-O3",
    "-fopenmp",
    "-DPy_LIMITED_API=0x03090000",
    f'-DFAST_S2S_CPU_CAPABILITY="{CPU_CAPABILITY}"',
    *CAPABILITY_FLAGS,
]
# csrc/common: what the CPU and the CUDA kernels share (argument checks, gate formulas).
sources = (
    sorted(glob.glob("csrc/*.cpp"))
    + sorted(glob.glob("csrc/common/*.cpp"))
    + sorted(glob.glob("csrc/cpu/*.cpp"))
)
include_dirs = [os.path.join(ROOT, "csrc")]
extra_link_args = ["-fopenmp"]

if BUILD_CUDA:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    # ATen/cuda/CUDAContext.h includes cusparse.h & co., which ship in the nvidia/cu13 wheel.
    for sp in site.getsitepackages() + [site.getusersitepackages()]:
        for sub in (
            "nvidia/cu13/include",
            "nvidia/cuda_runtime/include",
            "nvidia/cusparse/include",
        ):
            path = os.path.join(sp, sub)
            if os.path.isdir(path):
                include_dirs.append(path)
    sources += sorted(glob.glob("csrc/cuda/*.cu"))
    extension = CUDAExtension(
        "fast_s2s._C",
        sources,
        include_dirs=include_dirs,
        define_macros=[("FAST_S2S_WITH_CUDA", "1")],
        extra_compile_args={
            "cxx": cxx_flags,
            # No --use_fast_math: the kernels are held to the float64 reference.
            "nvcc": ["-O3", "-lineinfo"],
        },
        extra_link_args=extra_link_args,
        py_limited_api=True,
    )
else:
    extension = CppExtension(
        "fast_s2s._C",
        sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=extra_link_args,
        py_limited_api=True,
    )

print(
    f"fast_s2s build: cpu capability {CPU_CAPABILITY}, "
    f"cuda {'yes (' + CUDA_HOME + ')' if BUILD_CUDA else 'no'}, torch {torch.__version__}",
    file=sys.stderr,
)

setup(
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
