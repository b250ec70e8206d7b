"""Options of the pytest-benchmark suite (see test_bench_attention.py for how to run it)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fast_s2s bench")
    group.addoption("--bench-device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    group.addoption(
        "--bench-dtype",
        choices=("float32", "bfloat16", "float16", "float64"),
        default="float32",
        help="default: float32",
    )
    group.addoption(
        "--bench-shapes",
        choices=("targets", "full", "tiny"),
        default="full",
        help="case set of fast_s2s.benchmark.cases (targets = what `fast-s2s bench --quick` runs)",
    )
