"""pytest-benchmark suite: every fast_s2s backend and every peer on the cases of `fast-s2s bench`.

Run from the repository root (fast_s2s installed with `pip install --no-build-isolation -e .`):

    .venv/bin/pytest bench/ --benchmark-only                         # CPU, float32, all cases
    .venv/bin/pytest bench/ --benchmark-only --bench-shapes targets  # only the target shapes
    .venv/bin/pytest bench/ --benchmark-only --bench-device cuda --bench-dtype bfloat16
    .venv/bin/pytest bench/ --benchmark-only -k "decode and dot" --benchmark-columns=median,iqr
    .venv/bin/pytest bench/ --benchmark-disable --bench-shapes tiny  # a smoke test, seconds

The cases, inputs and implementations are those of fast_s2s.benchmark (cases.py, peers.py), so
the shapes match `fast-s2s bench`; results are grouped per case (benchmark.group), and each
forward case of a memory-bound op also times the read roofline (torch.sum over the op's
compulsory read bytes). `fast-s2s bench` reports the speedups and roofline fractions; this suite
is for pytest-benchmark's comparison and storage tools (--benchmark-autosave,
--benchmark-compare). Backends that cannot run here are skipped with the reason; a failing peer
(e.g. torch.compile) is skipped with its error; a failing fast_s2s backend fails the test. The
parametrisation and the timing live in conftest.py (shared with test_bench_gru.py).
"""

from __future__ import annotations

import pytest

pytest.importorskip("fast_s2s.ops", reason="fast_s2s (with fast_s2s.ops) is not importable")

BENCH_OPS = ("dot_attention", "additive_attention")


def test_bench(benchmark, case, impl_name: str, run_bench) -> None:
    run_bench(benchmark, case, impl_name)
