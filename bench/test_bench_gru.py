"""pytest-benchmark suite for the GRU ops: gru_cell, gru_layer and the fast_s2s.nn.GRU module
(op "gru", 2 layers, bidirectional), against torch.nn.GRUCell / torch.nn.GRU, the reference and
torch.compile of the reference, on the cases of `fast-s2s bench` (fast_s2s.benchmark.gru_cases).

    .venv/bin/pytest bench/test_bench_gru.py --benchmark-only --bench-shapes targets
    .venv/bin/pytest bench/test_bench_gru.py --benchmark-only -k "gru_layer and GRU"

See test_bench_attention.py for the options; the parametrisation and timing are conftest.py's.
Only gru_cell at B=1 is memory-bound, so it is the only GRU case with a roofline row. Unlike
`fast-s2s bench --quick`, this suite leaves no peer out: torch.compile of the 50-step gru_layer
reference with its backward compiles for about a minute on a cold cache.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fast_s2s.ops", reason="fast_s2s (with fast_s2s.ops) is not importable")

BENCH_OPS = ("gru_cell", "gru_layer", "gru")


def test_bench(benchmark, case, impl_name: str, run_bench) -> None:
    run_bench(benchmark, case, impl_name)
