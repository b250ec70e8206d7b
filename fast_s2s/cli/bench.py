"""`fast-s2s bench`: the benchmark harness of fast_s2s.benchmark, against the PyTorch peers."""

from fast_s2s.benchmark import add_arguments, main

__all__ = ["add_arguments", "main"]
