"""pytest-benchmark suite for the whole seq2seq model (op "model", fast_s2s.benchmark.model_cases):
training steps (forward, backward, clipping, Adam; batch 32, Bahdanau and Luong general) and
greedy / beam-5 decoding (batch 1 and 32, source length 25, max_len 30) of fast_s2s.models.Seq2Seq
(E 64, H 128) on each fast_s2s backend, against the same model and weights on backend="reference"
(the peer "reference"), on the cases of `fast-s2s bench --ops model`.

    .venv/bin/pytest bench/test_bench_model.py --benchmark-only --bench-shapes targets
    .venv/bin/pytest bench/test_bench_model.py --benchmark-only -k "greedy and B1-"
    .venv/bin/pytest bench/test_bench_model.py --benchmark-disable --bench-shapes tiny

See test_bench_attention.py for the options; the parametrisation and timing are conftest.py's.
Each test records steps/s or tokens/s (extra_info "steps_per_s" / "tokens_per_s": decoded
tokens = B x (max_len + 1), the best hypothesis per sentence with its eos) and the torch thread
count; `fast-s2s bench --ops model` prints them with the cpp / reference ratios. fast_s2s[reference]
is skipped: it is the reference peer.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fast_s2s.models", reason="fast_s2s (with fast_s2s.models) is not importable")

BENCH_OPS = ("model",)


def test_bench(benchmark, case, impl_name: str, run_bench) -> None:
    run_bench(benchmark, case, impl_name)
