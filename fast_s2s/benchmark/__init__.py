"""`fast-s2s bench`: times every fast_s2s backend against the peers a user would otherwise use
(`--quick`: the target shapes; `--plan`: what a run would time, no device touched). Modules:
family (what a case and a family are), attention_family, gru_family, model_family (cases,
inputs, peers), registry (the families, implementations), rows (the one runner), measure
(timing, rooflines), report (tables, JSON, plot, fastest backends, goals), peers (names); the
peer systems are in fast_s2s.peers, and fast_s2s.machine describes the machine. This module
wires the CLI and imports nothing heavy until main.
"""

from __future__ import annotations

import argparse
import sys
import time

from fast_s2s.benchmark.peers import PEER_NAMES
from fast_s2s.cli.options import THREADS, number

DTYPES = ("float32", "bfloat16", "float16", "float64")
DEFAULT_OPS = "dot_attention,additive_attention,local_attention,gru_cell,gru_layer,gru,model"

__all__ = ["add_arguments", "main", "run_benchmarks"]


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
        help=f"ops to time, comma-separated (default: all, {DEFAULT_OPS}; gru is the "
        "fast_s2s.nn.GRU module, 2 layers, bidirectional; model the whole Seq2Seq model: "
        "training steps/s and greedy / beam-5 decoding tokens/s against the same weights on "
        "backend=reference)")
    add("--dtype", type=_csv, default=None, metavar="DTYPE[,DTYPE]",
        help=f"dtypes to time, comma-separated, from {','.join(DTYPES)} (default: float32 on cpu; "
        "float32,float16,bfloat16 on cuda; float16 is CUDA's only)")
    add("--backends", type=_csv, default=None, metavar="B[,B]",
        help="fast_s2s backends to time, from auto,reference,cpp,triton "
        "(default: every available one, plus auto)")
    add("--peers", type=_csv, default=list(PEER_NAMES), metavar="P[,P]",
        help=f"peers to time (default: {','.join(PEER_NAMES)}; composite applies to "
        "attention, sdpa to dot_attention, local-composite (gather the window) and "
        "global-fused (fast_s2s.dot_attention) to local_attention, GRUCell to gru_cell, GRU "
        "to gru_layer and gru, compile to every op but gru and model; for model, reference is "
        "the model on backend=reference, python-loop the Python search loop on backend=auto, "
        "torch.nn the model from torch.nn modules in a Python loop)")
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


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 190)  # logs: every column readable


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
    return show_plan(args, ops) if args.plan else run_benchmarks(args, ops)


def show_plan(args: argparse.Namespace, ops: list[str]) -> int:
    """--plan: per case, what would be timed, and what would not and why (the same in every
    dtype; a peer that cannot take a dtype says so when the run reaches it)."""
    from rich.markup import escape

    from fast_s2s.benchmark.registry import build_impls, select_cases

    console = _console()
    console.print(f"fast-s2s bench plan: {args.device}, dtypes {', '.join(args.dtype)}")
    for case in select_cases(ops, args.shapes, args.device):
        impls = build_impls(case, args.device, args.backends, args.peers, quick=bool(args.quick))
        timed = ", ".join(i.label for i in impls if i.make is not None)
        console.print(f"[bold]{case.op} {escape(case.name)}[/bold]: {escape(timed)}")
        for impl in (i for i in impls if i.make is None):
            console.print(f"  [yellow]not timed[/yellow] {escape(impl.label)}: {impl.reason}")
    return 0


def run_benchmarks(args: argparse.Namespace, ops: list[str]) -> int:
    """Times the selected cases in every dtype, prints the tables, the fastest backends and the
    goals, and writes the JSON (rewritten after every case: what ran survives a crash) and plot."""
    from dataclasses import replace

    import torch

    from fast_s2s.benchmark import measure, report
    from fast_s2s.benchmark.registry import select_cases
    from fast_s2s.benchmark.rows import FAILED, add_speedups, run_case
    from fast_s2s.machine import busy_warning, describe

    console = _console()
    device = torch.device(args.device)
    tiny = args.shapes == "tiny"  # the harness's own tests: toy sizes for the machine's figures too
    budget = measure.QUICK_BUDGET if args.quick or tiny else measure.FULL_BUDGET
    if args.min_time is not None:
        budget = replace(budget, min_time_s=args.min_time)
    cases = select_cases(ops, args.shapes, device)
    machine = describe(device)
    machine.update(measure.device_copy_bandwidth(device, budget, 1 << 20 if tiny else None))
    machine.update(measure.sgemm_rate(device, budget, 128 if tiny else None))
    report.print_machine(console, machine)
    if warning := busy_warning(machine):
        console.print(f"[yellow]warning:[/yellow] {warning}")
    settings = {
        "device": device.type, "dtype": ",".join(args.dtype), "dtypes": list(args.dtype),
        "ops": ops, "shapes": args.shapes, "quick": bool(args.quick), "backends": args.backends,
        "peers": args.peers, "threads": torch.get_num_threads(), "budget": budget.__dict__,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "complete": False,  # until the last case
    }  # fmt: skip
    rooflines = {k: measure.Roofline(k, device, budget) for k in (measure.READ, measure.COPY)}
    json_path = args.json or f"bench_results/bench-{device.type}.json"
    gemm = measure.gemm_choices  # what the CPU GEMM layer chose so far
    rows: list[dict] = []
    start = time.perf_counter()
    steps = [(dtype, case) for dtype in args.dtype for case in cases]
    for step, (dtype_name, case) in enumerate(steps, 1):
        console.print(f"[dim]\\[{step}/{len(steps)}] {case.op} {case.name} {dtype_name}[/dim]")
        rows += run_case(
            case, device, getattr(torch, dtype_name), backends=args.backends, peers=args.peers,
            budget=budget, rooflines=rooflines, quick=bool(args.quick),
            sgemm_gflops=machine["sgemm_gflops"],
        )  # fmt: skip
        add_speedups(rows)
        report.write_json(json_path, report.build_payload(machine, settings, rows, gemm()))
    settings.update(seconds=round(time.perf_counter() - start, 1), complete=True)
    title = f"fast-s2s bench: {device.type} {', '.join(args.dtype)} ({settings['seconds']} s)"
    report.print_results(console, rows, title)
    payload = report.build_payload(machine, settings, rows, gemm())
    report.print_fastest(console, payload["fastest_backends"])
    report.print_goals(console, payload["goals"])
    report.print_gemm_choices(console, payload["gemm_choices"])
    console.print(f"results written to {report.write_json(json_path, payload)}")
    if args.plot:
        problem = report.write_plot(args.plot, rows, machine)
        console.print(
            f"[yellow]no plot:[/yellow] {problem}" if problem else f"plot written to {args.plot}"
        )
    return 1 if any(r["status"] == FAILED and r["kind"] == "fast_s2s" for r in rows) else 0
