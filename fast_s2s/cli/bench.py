"""`fast-s2s bench`: its options and their checks; the harness itself is fast_s2s.benchmark
(cases, peers, the runner, the report). No torch import until main: the CLI builds its parser."""

from __future__ import annotations

import argparse
import sys

from fast_s2s.cli.options import THREADS, number
from fast_s2s.peers import PEER_NAMES

__all__ = ["add_arguments", "main"]

DTYPES = ("float32", "bfloat16", "float16", "float64")
DEFAULT_OPS = "dot_attention,additive_attention,local_attention,gru_cell,gru_layer,gru,model"


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `fast-s2s bench` options to `parser`."""
    add = parser.add_argument
    # fmt: off
    add("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    add("--quick", action="store_true",
        help="only the shapes the project's targets name, with short timing (a minute or two)")
    add("--ops", type=_csv, default=None, metavar="OP[,OP]",
        help=f"ops to time (default: all, {DEFAULT_OPS}; gru is the fast_s2s.nn.GRU module, "
        "model the whole Seq2Seq model: training steps/s, decoding tokens/s)")
    add("--dtype", type=_csv, default=None, metavar="DTYPE[,DTYPE]",
        help=f"dtypes to time, comma-separated, from {','.join(DTYPES)} (default: float32 on cpu; "
        "float32,float16,bfloat16 on cuda; float16 is CUDA's only)")
    add("--backends", type=_csv, default=None, metavar="B[,B]",
        help="fast_s2s backends to time, from auto,reference,cpp,triton "
        "(default: every available one, plus auto)")
    add("--peers", type=_csv, default=list(PEER_NAMES), metavar="P[,P]",
        help=f"peers to time (default: {','.join(PEER_NAMES)}; each where it applies: --plan "
        "lists a case's, the JSON's rows say what ran behind each)")
    add("--json", default=None, metavar="PATH",
        help="where to write the results (default: bench_results/bench-<device>.json)")
    add("--plot", default=None, metavar="PATH", help="also write a PNG plot here")
    add("--threads", type=THREADS, default=None,
        help="torch.set_num_threads before timing (default: torch's; the count that ran is in "
        "the machine block, every JSON row and the model table's title)")
    add("--min-time", type=number(0, 3600), default=None, metavar="SECONDS",
        help="time each implementation for at least this long (default: 0.5, --quick: 0.05)")
    add("--plan", action="store_true",
        help="print what each case would time, and what not and why, and exit; touches no "
        "device, so --device cuda --plan works without a GPU")
    # For the harness's own tests: toy shapes that run in seconds.
    add("--shapes", choices=("targets", "full", "tiny"), help=argparse.SUPPRESS)
    # fmt: on


def _fail(message: str) -> int:
    print(f"fast-s2s bench: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    """Runs `fast-s2s bench` with parsed `args`. Exit status: 0 every fast_s2s row ran, 1 some
    fast_s2s row failed, 2 bad arguments or fast_s2s not importable."""
    import torch

    from fast_s2s.benchmark.registry import parse_dtypes

    try:
        args.dtype = parse_dtypes(args.dtype, args.device)
    except ValueError as exc:
        return _fail(str(exc))
    if args.device == "cuda" and not args.plan and not torch.cuda.is_available():
        return _fail("--device cuda, but torch.cuda.is_available() is False (no GPU visible)")
    try:
        from fast_s2s import ops as _  # noqa: F401
    except Exception as exc:
        return _fail(f"fast_s2s.ops could not be imported ({type(exc).__name__}: {exc})")
    from fast_s2s.benchmark.registry import CONCRETE_BACKENDS, OPS

    ops = args.ops or list(OPS)
    if unknown := [op for op in ops if op not in OPS]:
        return _fail(f"no benchmark cases for {unknown}; known: {','.join(OPS)}")
    if bad := [b for b in args.backends or () if b not in ("auto", *CONCRETE_BACKENDS)]:
        return _fail(f"unknown backends {bad}; choose from auto,{','.join(CONCRETE_BACKENDS)}")
    if bad := [p for p in args.peers if p not in PEER_NAMES]:
        return _fail(f"unknown peers {bad}; choose from {','.join(PEER_NAMES)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.shapes = args.shapes or ("targets" if args.quick else "full")
    from fast_s2s.benchmark import run_benchmarks, show_plan

    return show_plan(args, ops) if args.plan else run_benchmarks(args, ops)
