"""Which matrix-product implementation the CPU kernels use (csrc/cpu/gemm.h).

Every product of the C++ CPU ops goes through one GEMM layer with three backends:

- ``mkl_packed``: MKL's packed GEMM (weights packed once per call and reused by every step),
  where torch links MKL (its x86 builds);
- ``blas``: ``at::mm`` / ``at::bmm``, i.e. whatever BLAS torch was built with;
- ``inhouse``: fast_s2s's register-tiled kernel.

By default ("auto") the first call of each product site and shape class (op, rows rounded up to
a power of two, columns, depth, dtype, thread count) times every candidate for a few
milliseconds and keeps the fastest for the process. ``set_gemm_backend`` or the environment
variable ``FAST_S2S_GEMM`` pins one (results are then deterministic per backend); a pinned
backend a site does not offer (``mkl_packed`` for a one-shot product, or for float64) runs there
as ``blas``. Under ``torch.use_deterministic_algorithms(True)`` nothing is measured: with no
backend pinned, every product runs on ``blas`` (a measured choice can differ between runs, and
the candidates round differently), so two runs of the same program compute the same bits.
``gemm_report()`` says what was chosen and what was measured.

``frozen_weights()`` declares that the weights will not change for a while (a decoding loop):
inside it ``gru_cell`` packs its weights once and reuses them across calls, instead of once per
call (csrc/cpu/prepared_cache.h).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from fast_s2s import _extension

__all__ = ["GEMM_BACKENDS", "GemmReport", "frozen_weights", "gemm_report", "set_gemm_backend"]

GEMM_BACKENDS = ("auto", "mkl_packed", "blas", "inhouse", "panel", "mkl_bf16")


@dataclass(frozen=True)
class GemmReport:
    """forced: the pinned backend or "auto"; available: the float32 backends of this process;
    mkl: MKL's version string ("" without MKL); choices: one line per product site measured or
    pinned so far, e.g. "gru_layer.recurrent m<=16 n=1536 k=512 Float threads=2: mkl_packed
    (best us: mkl_packed 155 blas 167 inhouse 206)"; bf16_native: bfloat16 GRU products run on
    the CPU's bfloat16 instructions (MKL's bf16 GEMM: AVX512-BF16 or AMX, kernels built for
    AVX-512, no backend pinned), listed in choices as "mkl_bf16"; else they run in float32 on
    converted copies, as on every other CPU."""

    forced: str
    available: tuple[str, ...]
    mkl: str
    choices: tuple[str, ...] = field(default_factory=tuple)
    bf16_native: bool = False


def _require_extension() -> None:
    if not _extension.extension_loaded():
        raise RuntimeError(_extension.EXTENSION_ERROR)


def set_gemm_backend(name: str = "auto") -> None:
    """Pins the CPU kernels' GEMM backend ("mkl_packed", "blas", "inhouse", "panel") or returns to
    measuring ("auto"). "mkl_bf16" (only where gemm_report().bf16_native can be true: a CPU with
    AVX512-BF16 or AMX-BF16, an AVX-512 build, MKL) pins the bfloat16 products: every bfloat16
    GRU product takes it, float32 ones run on blas. Forgets every choice made so far."""
    if name not in GEMM_BACKENDS:
        raise ValueError(f"set_gemm_backend: name must be one of {GEMM_BACKENDS}, got {name!r}")
    _require_extension()
    torch.ops.fast_s2s.set_gemm_backend(name)


def gemm_report() -> GemmReport:
    """What the GEMM layer has chosen so far in this process (see GemmReport)."""
    _require_extension()
    lines = torch.ops.fast_s2s.gemm_report().split("\n")
    forced = lines[0].removeprefix("forced: ")
    available = tuple(lines[1].removeprefix("available:").split())
    mkl = lines[2].removeprefix("mkl: ")
    bf16_native = lines[3] == "bf16_native: 1"
    return GemmReport(forced, available, mkl, tuple(lines[4:]), bf16_native)


@contextlib.contextmanager
def frozen_weights() -> Iterator[None]:
    """A scope in which the calling thread's CPU ops may keep their prepared (packed) weights
    across calls: ``fast_s2s.gru_cell`` (and ``fast_s2s.nn.GRUCell``) then packs each weight once
    instead of at every call, which is most of a call's time at batch 16-64 besides the product
    itself, and ``fast_s2s.gru_layer`` (``fast_s2s.nn.GRU``, the native encoder) packs each W_hh
    once, as a server encoding one sentence after another wants. ``greedy_decode`` and
    ``beam_search`` decode inside one, and the ``Translator`` translates inside one.

    The promise it takes: while inside, the weights change only through in-place ops torch
    tracks (``p.add_(...)``, ``optimizer.step()``, ``load_state_dict``: a changed version counter
    is seen and the weight packed again). Writes through ``p.data`` are not seen, so do not
    update weights that way inside it. Leaving the outermost scope drops every packed weight.
    Nests; per thread. Without the C++ extension it does nothing (nothing is packed then)."""
    if not _extension.extension_loaded():
        yield
        return
    torch.ops.fast_s2s.set_frozen_weights(True)
    try:
        yield
    finally:
        torch.ops.fast_s2s.set_frozen_weights(False)
