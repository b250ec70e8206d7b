"""pytest-benchmark suite: every fast_s2s backend and every peer on the cases of `fast-s2s bench`
(attention, the GRU ops and module, the whole model), for pytest-benchmark's comparison and
storage tools (--benchmark-autosave, --benchmark-compare). Run from the repository root:

    .venv/bin/python -m pytest bench/ --benchmark-only                         # CPU, float32, all
    .venv/bin/python -m pytest bench/ --benchmark-only --bench-shapes targets  # the target shapes
    .venv/bin/python -m pytest bench/ --benchmark-only --bench-device cuda --bench-dtype bfloat16
    .venv/bin/python -m pytest bench/ --benchmark-only -k "gru_layer and GRU"
    .venv/bin/python -m pytest bench/ --benchmark-disable --bench-shapes tiny  # a smoke test

Test ids are `<case id>-<implementation>`, e.g. dot_attention-fwd-N64-T1-S50-D512-sdpa; results are
grouped per case. Unlike `fast-s2s bench --quick`, no peer is left out: torch.compile of the
50-step gru_layer reference with its backward compiles for about a minute on a cold cache. The
speedups and roofline fractions are `fast-s2s bench`'s to report; conftest.py has the rest.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fast_s2s.ops", reason="fast_s2s (with fast_s2s.ops) is not importable")


def test_bench(benchmark, case, impl_name: str, run_bench) -> None:
    run_bench(benchmark, case, impl_name)
