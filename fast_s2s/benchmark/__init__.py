"""`fast-s2s bench`: times every fast_s2s backend against the peers a user would otherwise use.

    fast-s2s bench --quick                      # the project's target shapes, a minute or two
    fast-s2s bench --device cuda --dtype bfloat16 --plot bench_results/bench-cuda.png

    fast-s2s bench --quick --ops model --threads 2   # the whole seq2seq model only

Ops (--ops): dot_attention, additive_attention, gru_cell, gru_layer (fast_s2s.ops), gru (the
fast_s2s.nn.GRU module: a 2-layer bidirectional encoder, against torch.nn.GRU) and model (the
whole fast_s2s.models.Seq2Seq, E 64 / H 128: training steps per second of Bahdanau and Luong
general models, greedy and beam-5 decoding tokens per second at batch 1 and 32, each on
backend="cpp" / "auto" against the same model and weights on backend="reference"; see
model_cases).

Each case times, in the same run and on the same inputs, every available fast_s2s backend
(rows labelled with the concrete backend that ran, e.g. fast_s2s[cpp], fast_s2s[auto->cpp]) and
the peers (fast_s2s.benchmark.peers): the reference, the bmm + softmax + bmm composite,
F.scaled_dot_product_attention, torch.nn.GRUCell / torch.nn.GRU and torch.compile of the
reference. It reports medians and IQRs, the speedup against each peer, for forward cases of
memory-bound ops the GB/s over the compulsory reads against a read roofline (torch.sum over as
many bytes) measured in the same run, and for the model steps/s or tokens/s (its own table,
titled with the torch thread count). Results go to a JSON file ({"machine", "settings",
"results"}) and optionally a PNG.

The CLI wires `add_arguments(parser)` and `main(args)`; the modules hold one concern each:
timing (median timing), spec (what a case is), cases, gru_cases and model_cases (shapes and
inputs), peers, gru_peers and model_peers (implementations), roofline, runner (rows and
speedups), machine (machine info) and report (tables, JSON, plot).
"""

from __future__ import annotations

import argparse
import sys
import time

DTYPES = ("float32", "bfloat16", "float16", "float64")
DEFAULT_PEERS = ("reference", "composite", "sdpa", "GRUCell", "GRU", "compile")
DEFAULT_OPS = ("dot_attention", "additive_attention", "gru_cell", "gru_layer", "gru", "model")

__all__ = ["add_arguments", "main", "run_benchmarks"]


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `fast-s2s bench` options to `parser`."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="only the shapes the project's targets name, with short timing (a minute or two)",
    )
    parser.add_argument(
        "--ops",
        type=_csv,
        default=None,
        metavar="OP[,OP]",
        help="ops to time, comma-separated (default: every op with benchmark cases that "
        f"fast_s2s has: {','.join(DEFAULT_OPS)}; gru is the fast_s2s.nn.GRU module, 2 layers, "
        "bidirectional; model is the whole Seq2Seq model (E 64, H 128): training steps/s "
        "(forward + backward + Adam, batch 32, Bahdanau and Luong general) and greedy / beam-5 "
        "decoding tokens/s at batch 1 and 32 (source length 25, max_len 30, eos suppressed so "
        "every decode runs 31 steps), backend cpp/auto against the same weights on "
        "backend=reference)",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="default: float32")
    parser.add_argument(
        "--backends",
        type=_csv,
        default=None,
        metavar="B[,B]",
        help="fast_s2s backends to time, from auto,reference,cpp,triton "
        "(default: every available one, plus auto)",
    )
    parser.add_argument(
        "--peers",
        type=_csv,
        default=list(DEFAULT_PEERS),
        metavar="P[,P]",
        help=f"peers to time (default: {','.join(DEFAULT_PEERS)}; composite applies to "
        "attention, sdpa to dot_attention, GRUCell to gru_cell, GRU to gru_layer and gru, "
        "compile to every op but gru and model; for model, reference is the model on "
        "backend=reference)",
    )
    parser.add_argument(
        "--json",
        default=None,
        metavar="PATH",
        help="where to write the results (default: bench_results/bench-<device>.json)",
    )
    parser.add_argument("--plot", default=None, metavar="PATH", help="also write a PNG plot here")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads before timing (default: torch's; the count that ran is in "
        "the machine block, every JSON row and the model table's title)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time each implementation for at least this long (default: 0.5, --quick: 0.05)",
    )
    # For the harness's own tests: toy shapes that run in seconds.
    parser.add_argument("--shapes", choices=("targets", "full", "tiny"), help=argparse.SUPPRESS)


def _fail(message: str) -> int:
    print(f"fast-s2s bench: error: {message}", file=sys.stderr)
    return 2


def main(args: argparse.Namespace) -> int:
    """Runs `fast-s2s bench` with parsed `args`; returns the exit status (0 all fast_s2s rows
    ran, 1 some fast_s2s row failed, 2 bad arguments or fast_s2s not importable)."""
    import torch

    from fast_s2s.benchmark.cases import CASES
    from fast_s2s.benchmark.peers import CONCRETE_BACKENDS, PEER_NAMES, missing_reason

    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail("--device cuda, but torch.cuda.is_available() is False (no GPU visible)")
    try:
        from fast_s2s import ops  # noqa: F401
    except Exception as exc:
        return _fail(f"fast_s2s.ops could not be imported ({type(exc).__name__}: {exc})")

    ops_wanted = args.ops or [op for op in CASES if missing_reason(op) is None]
    unknown = [op for op in ops_wanted if op not in CASES]
    if unknown:
        return _fail(f"no benchmark cases for {unknown}; known: {','.join(CASES)}")
    missing = [reason for op in ops_wanted if (reason := missing_reason(op)) is not None]
    if missing:
        return _fail("; ".join(missing))
    if args.backends is not None:
        bad = [b for b in args.backends if b not in ("auto", *CONCRETE_BACKENDS)]
        if bad:
            return _fail(f"unknown backends {bad}; choose from auto,{','.join(CONCRETE_BACKENDS)}")
    bad_peers = [p for p in args.peers if p not in PEER_NAMES]
    if bad_peers:
        return _fail(f"unknown peers {bad_peers}; choose from {','.join(PEER_NAMES)}")
    if args.threads is not None:
        if args.threads < 1:
            return _fail("--threads must be at least 1")
        torch.set_num_threads(args.threads)

    return run_benchmarks(args, ops_wanted)


def run_benchmarks(args: argparse.Namespace, ops_wanted: list[str]) -> int:
    """Times the selected cases, prints the table, writes the JSON (and plot)."""
    import torch
    from rich.console import Console

    from fast_s2s.benchmark.cases import select_cases
    from fast_s2s.benchmark.machine import busy_warning, machine_info
    from fast_s2s.benchmark.report import (
        build_payload,
        print_machine,
        print_results,
        write_json,
        write_plot,
    )
    from fast_s2s.benchmark.roofline import ReadRoofline
    from fast_s2s.benchmark.runner import FAILED, add_speedups, run_case
    from fast_s2s.benchmark.timing import FULL_BUDGET, QUICK_BUDGET

    console = Console(width=None if sys.stdout.isatty() else 160)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    shapes = args.shapes or ("targets" if args.quick else "full")
    budget = QUICK_BUDGET if args.quick or shapes == "tiny" else FULL_BUDGET
    if args.min_time is not None:
        budget = type(budget)(**{**budget.__dict__, "min_time_s": args.min_time})
    cases = select_cases(ops_wanted, shapes)

    machine = machine_info(device)
    print_machine(console, machine)
    warning = busy_warning(machine)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    settings = {
        "device": device.type,
        "dtype": args.dtype,
        "ops": ops_wanted,
        "shapes": shapes,
        "quick": bool(args.quick),
        "backends": args.backends,
        "peers": args.peers,
        "threads": torch.get_num_threads(),
        "budget": budget.__dict__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }

    roofline = ReadRoofline(device, budget)
    rows: list[dict] = []
    start = time.perf_counter()
    for i, case in enumerate(cases, 1):
        console.print(f"[dim]\\[{i}/{len(cases)}] {case.op} {case.name}[/dim]")
        rows += run_case(
            case,
            device,
            dtype,
            backends=args.backends,
            peers=args.peers,
            budget=budget,
            roofline=roofline,
            quick=bool(args.quick),
        )
    add_speedups(rows)
    settings["seconds"] = round(time.perf_counter() - start, 1)

    title = f"fast-s2s bench: {device.type} {args.dtype} ({settings['seconds']} s)"
    print_results(console, rows, title)
    json_path = args.json or f"bench_results/bench-{device.type}.json"
    written = write_json(json_path, build_payload(machine, settings, rows))
    console.print(f"results written to {written}")
    if args.plot:
        problem = write_plot(args.plot, rows, machine)
        if problem:
            console.print(f"[yellow]no plot:[/yellow] {problem}")
        else:
            console.print(f"plot written to {args.plot}")
    return 1 if any(r["status"] == FAILED and r["kind"] == "fast_s2s" for r in rows) else 0
