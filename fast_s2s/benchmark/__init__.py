"""`fast-s2s bench`: every fast_s2s backend timed against the peers a user would otherwise use.
The families (*_family.py) list cases, inputs and peers; registry finds them, rows is the one
runner, measure times, report shows and saves (docs/DESIGN.md, "Benchmarks"). The command line
is fast_s2s/cli/bench.py's; nothing heavy is imported until a run."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["run_benchmarks", "show_plan"]


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 190)  # logs: every column readable


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
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False,  # until the last case
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
