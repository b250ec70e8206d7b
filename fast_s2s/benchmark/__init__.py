"""`fast-s2s bench`: times every fast_s2s backend against the peers a user would otherwise use.

    fast-s2s bench --quick                      # the project's target shapes, a minute or two
    fast-s2s bench --device cuda --dtype bfloat16 --plot bench_results/bench-cuda.png
    fast-s2s bench --device cuda --quick        # float32, float16 and bfloat16 (CUDA's default)
    fast-s2s bench --device cuda --quick --plan # what that would time; needs no GPU
    fast-s2s bench --summarize bench_results/bench-cuda-*.json   # fastest backends, goals

    fast-s2s bench --quick --ops model --threads 2   # the whole seq2seq model only

The case lists are per device type (cases.DEVICE_CASES): on CUDA they are issue 4's GPU targets
(attention at the decode shape and at a large memory-bound shape, gru_cell at B=1 and 16 and
gru_layer at T=50 B=16, H=1024), each with its goals (spec.Goal). --dtype takes a comma-separated
list (default float32 on the CPU; float32,float16,bfloat16 on CUDA, plan.DEFAULT_DTYPES). After
the tables come the fastest backend per op at the target shapes, with the AUTO_PREFERENCE line it
suggests for fast_s2s/backends.py, and the goals met or not (summary); the JSON holds both
("fastest_backends", "goals") beside the machine (GPU name, copy bandwidth) and the rows.

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
reference. It reports medians and IQRs (CUDA: CUDA events around each call), the speedup
against each peer, for forward cases of memory-bound ops the GB/s over the compulsory reads
against a read roofline (torch.sum over as many bytes) and the fraction of the copy roofline
(dst.copy_(src) reading and writing as many bytes as the op reads and writes) measured in the same
run, the device's copy bandwidth (a 1 GiB copy on CUDA), and for the model steps/s or tokens/s
(its own table, titled with the torch thread count). Results go to a JSON file ({"machine",
"settings", "results", "fastest_backends", "goals"}) and optionally a PNG.

The CLI wires `add_arguments(parser)` and `main(args)`; the modules hold one concern each:
timing (median timing), spec (what a case is), cases, gru_cases and model_cases (shapes and
inputs), peers, gru_peers and model_peers (implementations), roofline, plan (dtypes per device,
what a run will time), runner (rows and speedups), summary (fastest backend, goals), machine
(machine info) and report (tables, JSON, plot).
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
    parser.add_argument(
        "--dtype",
        type=_csv,
        default=None,
        metavar="DTYPE[,DTYPE]",
        help=f"dtypes to time, comma-separated, from {','.join(DTYPES)} (default: float32 on cpu; "
        "float32,float16,bfloat16 on cuda; float16 is CUDA's only)",
    )
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
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what would be timed (cases, implementations, rooflines, goals) and exit; "
        "touches no device, so --device cuda --plan works without a GPU",
    )
    parser.add_argument(
        "--summarize",
        nargs="+",
        default=None,
        metavar="JSON",
        help="time nothing: read earlier runs' JSON files (e.g. one per dtype), print the "
        "fastest backend per op and the goals over all of them, and write them with the rows "
        "to --json (default: bench_results/bench-<device>-summary.json)",
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
    from fast_s2s.benchmark.plan import parse_dtypes

    if args.summarize:
        return summarize(args)
    try:
        args.dtype = parse_dtypes(args.dtype, args.device)
    except ValueError as exc:
        return _fail(str(exc))
    if args.device == "cuda" and not args.plan and not torch.cuda.is_available():
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
    if args.plan:
        return show_plan(args, ops_wanted)

    return run_benchmarks(args, ops_wanted)


def _shapes(args: argparse.Namespace) -> str:
    return args.shapes or ("targets" if args.quick else "full")


def show_plan(args: argparse.Namespace, ops_wanted: list[str]) -> int:
    """`--plan`: prints what the run would time (and writes it to --json if given)."""
    from rich.console import Console

    from fast_s2s.benchmark.plan import build_plan, print_plan
    from fast_s2s.benchmark.report import write_json

    console = Console(width=None if sys.stdout.isatty() else 160)
    plan = build_plan(
        ops_wanted, args.device, args.dtype, _shapes(args), args.backends, args.peers,
        quick=bool(args.quick),
    )  # fmt: skip
    print_plan(console, plan)
    if args.json:
        console.print(f"plan written to {write_json(args.json, {'plan': plan})}")
    return 0


def summarize(args: argparse.Namespace) -> int:
    """`--summarize FILE...`: the fastest backends and goals over earlier runs' rows."""
    import json

    from rich.console import Console

    from fast_s2s.benchmark.report import build_payload, write_json
    from fast_s2s.benchmark.summary import print_fastest, print_goals

    console = Console(width=None if sys.stdout.isatty() else 160)
    rows: list[dict] = []
    machines: list[dict] = []
    for path in args.summarize:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            rows += data["results"]
            machines.append(data.get("machine", {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return _fail(f"--summarize {path}: not a fast-s2s bench JSON file ({exc})")
    devices = sorted({str(r.get("device")) for r in rows})
    gpus = sorted({str(m.get("gpu") or m.get("cpu")) for m in machines})
    if len(devices) > 1 or len(gpus) > 1:
        console.print(f"[yellow]warning:[/yellow] the files come from {devices} / {gpus}")
    console.print(
        f"summary of {len(args.summarize)} file(s), {len(rows)} rows: {', '.join(gpus)}; "
        f"dtypes {', '.join(sorted({str(r.get('dtype')) for r in rows}))}"
    )
    settings = {"summarized": list(args.summarize), "machines": machines}
    payload = build_payload(machines[0] if machines else {}, settings, rows)
    print_fastest(console, payload["fastest_backends"])
    print_goals(console, payload["goals"])
    device = devices[0] if len(devices) == 1 else "mixed"
    written = write_json(args.json or f"bench_results/bench-{device}-summary.json", payload)
    console.print(f"summary written to {written}")
    return 0


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
    from fast_s2s.benchmark.roofline import CopyRoofline, ReadRoofline, device_copy_bandwidth
    from fast_s2s.benchmark.runner import FAILED, add_speedups, run_case
    from fast_s2s.benchmark.summary import print_fastest, print_goals
    from fast_s2s.benchmark.timing import FULL_BUDGET, QUICK_BUDGET

    console = Console(width=None if sys.stdout.isatty() else 160)
    device = torch.device(args.device)
    dtypes = list(args.dtype)
    shapes = _shapes(args)
    budget = QUICK_BUDGET if args.quick or shapes == "tiny" else FULL_BUDGET
    if args.min_time is not None:
        budget = type(budget)(**{**budget.__dict__, "min_time_s": args.min_time})
    cases = select_cases(ops_wanted, shapes, device)

    machine = machine_info(device)
    # The device's copy bandwidth (toy size for the harness's own tiny runs).
    machine.update(device_copy_bandwidth(device, budget, 1 << 20 if shapes == "tiny" else None))
    print_machine(console, machine)
    warning = busy_warning(machine)
    if warning:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    settings = {
        "device": device.type,
        "dtype": ",".join(dtypes),
        "dtypes": dtypes,
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
    copy_roofline = CopyRoofline(device, budget)
    json_path = args.json or f"bench_results/bench-{device.type}.json"
    settings["complete"] = False  # until the last case: the file is rewritten after every case
    rows: list[dict] = []
    start = time.perf_counter()
    total = len(cases) * len(dtypes)
    for j, dtype_name in enumerate(dtypes):
        dtype = getattr(torch, dtype_name)
        for i, case in enumerate(cases, 1):
            step = j * len(cases) + i
            console.print(f"[dim]\\[{step}/{total}] {case.op} {case.name} {dtype_name}[/dim]")
            rows += run_case(
                case,
                device,
                dtype,
                backends=args.backends,
                peers=args.peers,
                budget=budget,
                roofline=roofline,
                quick=bool(args.quick),
                copy_roofline=copy_roofline,
            )
            # What ran so far survives a crash (a faulting kernel can take the process down).
            write_json(json_path, build_payload(machine, settings, add_speedups(rows)))
    add_speedups(rows)
    settings["seconds"] = round(time.perf_counter() - start, 1)
    settings["complete"] = True

    title = f"fast-s2s bench: {device.type} {', '.join(dtypes)} ({settings['seconds']} s)"
    print_results(console, rows, title)
    payload = build_payload(machine, settings, rows)
    print_fastest(console, payload["fastest_backends"])
    print_goals(console, payload["goals"])
    written = write_json(json_path, payload)
    console.print(f"results written to {written}")
    if args.plot:
        problem = write_plot(args.plot, rows, machine)
        if problem:
            console.print(f"[yellow]no plot:[/yellow] {problem}")
        else:
            console.print(f"plot written to {args.plot}")
    return 1 if any(r["status"] == FAILED and r["kind"] == "fast_s2s" for r in rows) else 0
