"""Showing and saving results: the machine block, one table per op family, the JSON file (written
atomically), the PNG; and, from the rows alone, the fastest backend per op (the AUTO_PREFERENCE
order a run suggests) and the goals."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from itertools import zip_longest
from statistics import geometric_mean

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from fast_s2s.atomic import write_atomically
from fast_s2s.benchmark.family import COPY_FRACTION, Goal
from fast_s2s.benchmark.registry import CONCRETE_BACKENDS, FAMILY_OF, FAST_S2S, OPS
from fast_s2s.peers import PEER_NAMES

MACHINE_KEYS = {
    "cpu": "CPU", "cpu_count": "CPU cores (os)", "torch_threads": "torch threads",
    "load_average_1min": "load average (1 min)", "cpu_capability": "fast_s2s CPU kernels",
    "torch_cpu_capability": "torch CPU capability",
    "mkl_enable_instructions": "MKL_ENABLE_INSTRUCTIONS", "blas": "BLAS (torch)",
    "gemm_available": "fast_s2s GEMM backends", "gemm_forced": "fast_s2s GEMM choice",
    "gemm_bf16": "fast_s2s bfloat16 products",
    "gpu": "GPU", "gpu_capability": "GPU compute capability",
    "gpu_sm_count": "GPU multiprocessors", "gpu_l2_mib": "GPU L2 (MiB)", "cudnn": "cuDNN",
    "copy_gbps": "copy bandwidth (GB/s, read + written)", "sgemm_gflops": "sgemm rate (GFLOP/s)",
    "torch": "torch", "torch_cuda": "torch CUDA", "triton": "triton", "python": "python",
    "fast_s2s": "fast_s2s", "extension_loaded": "extension loaded",
}  # fmt: skip
OPS_NOTE = (
    "[dim]vs X = X's median / this row's median (above 1: fast_s2s is faster). GB/s: compulsory "
    "reads per second (memory-bound cases); % roof: of the read roofline (torch.sum over as many "
    "bytes); % copy: reads + writes, of the copy roofline (dst.copy_(src)); GFLOP/s: the GRU "
    "matrix products (x3 with the backward); % sgemm: of the sgemm rate above. All same run.[/dim]"
)
THROUGHPUT_NOTE = (
    "[dim]model: the same Seq2Seq and weights on each backend. steps/s: training steps (loss, "
    "backward, clipping, Adam); tokens/s: B x (max_len + 1) tokens per decode (eos kept from "
    "winning early). '... loop': the search loop that ran (fast_s2s.models.decode_path); vs "
    "weight read: us/token over the time to read the decoder's weights once.[/dim]"
)
# a decode row's "decode_loop" -> its label's suffix (anything else is a "python: why" loop)
LOOP_LABELS = {
    "native": "native loop",
    "cuda-graph": "cuda-graph loop",
    "cuda-graph (capture failed, eager)": "static loop, eager",
}
FAILED_TEXT = "[red]failed[/red]"


def _table(title: str, columns: Iterable[str], wrapped=(), right=()) -> Table:
    """A table titled on the left; its columns left-justified and unwrapped, but those named."""
    table = Table(title=title, title_justify="left")
    for name in columns:
        justify = "right" if name in right else "left"
        table.add_column(name, justify=justify, no_wrap=name not in wrapped)
    return table


def print_machine(console: Console, info: dict) -> None:
    table = Table(title="machine", show_header=False, box=None, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    n = info.get("sgemm_n")
    for key, name in MACHINE_KEYS.items():
        if (value := info.get(key)) is None:
            continue
        if key == "copy_gbps":
            value = f"{value:,.1f} ({info.get('copy_bytes', 0) / 2**20:,.0f} MiB each way)"
        elif key == "sgemm_gflops":
            value = f"{value:,.1f} (torch.mm float32 {n} x {n} x {n})"
        elif key == "gemm_forced" and value == "auto":
            value = "auto (measured per product site; see the GEMM choices below)"
        table.add_row(name, str(value))
    if not info.get("extension_loaded") and info.get("extension_error"):
        table.add_row("extension error", str(info["extension_error"]))
    console.print(table)


def _fixed(value: float) -> str:  # GB/s, GFLOP/s, ms
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def _us(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def _ratio(value: float | None) -> str:
    if value is None:
        return ""
    style = "green" if value >= 1.05 else ("red" if value < 0.95 else "")
    return f"[{style}]{value:.2f}x[/{style}]" if style else f"{value:.2f}x"


def _throughput(row: dict) -> str:
    if (value := row.get("throughput")) is None:
        return ""
    text = f"{value:,.0f}" if value >= 100 else f"{value:.2f}" if value < 10 else f"{value:.1f}"
    return f"{text} {row.get('work_unit') or 'call'}s/s"


def _vs_weight_read(row: dict) -> str:
    per_token, read = row.get("us_per_token"), row.get("weight_read_us")
    return f"{per_token / read:.1f}x" if per_token and read else ""


def _field(key: str, fmt: Callable[[float], str]) -> Callable[[dict], str]:
    """The cell of `key` in `fmt`, empty where the row has no value."""
    return lambda row: "" if row.get(key) is None else fmt(row[key])


def _figure_columns(rows: list[dict], throughput: bool) -> list[tuple[str, Callable]]:
    """(header, cell) of each figure column: median and IQR, throughput (the model), vs <peer>
    (on fast_s2s rows), then us per token (decode) or GB/s, roofline and sgemm fractions."""
    unit, fmt = ("ms", lambda us: _fixed(us / 1000)) if throughput else ("us", _us)
    columns = [(f"median {unit}", _field("median_us", fmt)), (f"IQR {unit}", _field("iqr_us", fmt))]
    columns += [("throughput", _throughput)] if throughput else []
    present = {r["impl"] for r in rows if r["kind"] != FAST_S2S}
    peers = [p for p in PEER_NAMES if p in present] + sorted(present - set(PEER_NAMES))
    columns += [(f"vs {p}", lambda r, p=p: _ratio(r["speedup_vs"].get(p))) for p in peers]
    if throughput and any(r.get("us_per_token") for r in rows):
        per_token = _field("us_per_token", lambda v: f"{v:.1f}")
        columns += [("us/token", per_token), ("vs weight read", _vs_weight_read)]
    if not throughput:
        roof, copy = _field("roofline_fraction", _percent), _field("copy_fraction", _percent)
        columns += [("GB/s", _field("gbps", _fixed)), ("% roof", roof), ("% copy", copy)]
    if not throughput and any(r.get("flops") for r in rows):
        sgemm = _field("sgemm_fraction", _percent)
        columns += [("GFLOP/s", _field("gflops", _fixed)), ("% sgemm", sgemm)]
    return columns


def _captions(first: dict, dtype: str, throughput: bool) -> list[str]:
    """What the first column of a case's section says, a line per row."""
    if not throughput:
        captions = [first["op"] + dtype, first["case"]]
        for name, key in (("read", "roofline_gbps"), ("copy", "copy_roofline_gbps")):
            if first.get(key):
                captions.append(f"[dim]{name} roofline {_fixed(first[key])} GB/s[/dim]")
        return captions
    captions = [first["case"] + dtype]
    if first.get("hypothesis_tokens"):
        captions.append(f"[dim]{first['hypothesis_tokens']:,} hypothesis tokens/call[/dim]")
    if first.get("weight_read_us"):
        kb = first["weight_bytes"] / 1e3
        captions.append(f"[dim]weights {kb:,.0f} kB read in {first['weight_read_us']:.1f} us[/dim]")
    return captions


def family_table(rows: list[dict], title: str, throughput: bool = False) -> Table:
    """One section per case and dtype, a row per implementation that ran or failed (then the
    case's captions left over). The model's table (`throughput`) gives times in ms and the torch
    thread count in its title."""
    counts = sorted({r["threads"] for r in rows if r.get("threads") is not None})
    if throughput and counts:
        title += f" (torch threads {', '.join(map(str, counts))})"
    columns = _figure_columns(rows, throughput)
    names = [name for name, _ in columns]
    table = _table(title, ("case", "implementation", *names), wrapped=names, right=names)
    several_dtypes = len({r["dtype"] for r in rows}) > 1
    sections: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row["status"] != "skipped":
            sections.setdefault((row["case_id"], row["dtype"]), []).append(row)
    for i, section in enumerate(sections.values()):
        if i:
            table.add_section()
        dtype = f" {section[0]['dtype']}" if several_dtypes else ""
        for caption, row in zip_longest(_captions(section[0], dtype, throughput), section):
            if row is None:
                table.add_row(caption, *[""] * (len(columns) + 1))
                continue
            label = row["impl"]
            if row.get("decode_loop"):  # which search loop ran (fast_s2s.models.decode_path)
                label += " " + LOOP_LABELS.get(row["decode_loop"], "python loop")
            failed = [FAILED_TEXT, *[""] * (len(columns) - 1)]
            figures = [cell(row) for _, cell in columns] if row["status"] == "ok" else failed
            bold = "bold" if row["kind"] == FAST_S2S else ""
            table.add_row(caption or "", Text(label, style=bold), *figures)
    return table


def print_results(console: Console, rows: list[dict], title: str = "results") -> None:
    """One table per op family, in the order the families first appear, with its note; then the
    rows that failed and the implementations not timed, each with its reason."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(FAMILY_OF[row["op"]].name, []).append(row)
    throughput = {name: FAMILY_OF[g[0]["op"]].throughput_table for name, g in groups.items()}
    for name, group in groups.items():
        named = f"{title}: {name}" if len(groups) > 1 else title
        console.print(family_table(group, named, throughput[name]))
    if not all(throughput.values()):
        console.print(OPS_NOTE)
    if any(throughput.values()):
        console.print(THROUGHPUT_NOTE)
    for status, word in (("failed", FAILED_TEXT), ("skipped", "[yellow]not timed[/yellow]")):
        seen: dict[tuple[str, str, str], list[str]] = {}
        for row in (r for r in rows if r["status"] == status):
            seen.setdefault((row["op"], row["impl"], row["reason"] or ""), []).append(row["case"])
        for (op, impl, reason), cases in seen.items():
            where = cases[0] if len(cases) == 1 else f"{len(cases)} cases"
            where = f" ({where})" if status == "failed" else ""
            console.print(f"{word} {escape(impl)} on {op}{where}: {escape(reason)}")


def build_payload(
    machine: dict, settings: dict, rows: list[dict], gemm: list[str] | None = None
) -> dict:
    """The JSON file: the machine, the run's settings, the rows, the fastest backend per op at
    the target shapes, the goals checked and (from a run) the CPU GEMM layer's choices."""
    return {"machine": machine, "settings": settings, "results": rows, "gemm_choices": gemm or [],
            "fastest_backends": fastest_backends(rows), "goals": check_goals(rows)}  # fmt: skip


def write_json(path: str | os.PathLike, payload: dict) -> str:
    text = json.dumps(payload, indent=2, default=str) + "\n"
    return write_atomically(path, lambda f: f.write(text))


def write_plot(path: str | os.PathLike, rows: list[dict], machine: dict) -> str | None:
    """Median time per implementation and case as horizontal bars (log scale); returns None, or
    why no plot was written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no plot was written (pip install matplotlib)"
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return "no successful rows to plot"
    dtypes = list(dict.fromkeys(r["dtype"] for r in ok))

    def case_key(r: dict) -> str:
        return f"{r['op']}" + (f" {r['dtype']}" if len(dtypes) > 1 else "") + f"\n{r['case']}"

    cases = list(dict.fromkeys(map(case_key, ok)))
    impls = list(dict.fromkeys(r["impl"] for r in ok))
    height = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(10, 1.2 + len(cases) * (0.12 * len(impls) + 0.25)))
    for k, impl in enumerate(impls):
        mine = [r for r in ok if r["impl"] == impl]
        y = [cases.index(case_key(r)) + k * height for r in mine]
        ax.barh(y, [r["median_us"] for r in mine], height=height, label=impl)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(cases))])
    ax.set_yticklabels(cases, fontsize=7)
    ax.margins(y=0.005)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("median time per call (us, log scale; shorter is faster)")
    where = machine.get("gpu") or machine.get("cpu")
    title = f"fast_s2s vs peers, {machine.get('device')} {', '.join(dtypes)}: {where}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, dpi=120, format="png"), binary=True)
    plt.close(fig)
    return None


# The ops whose backend `auto` picks from fast_s2s.backends.AUTO_PREFERENCE: those that are
# fast_s2s.ops themselves (not the GRU module or the model, which run other ops' kernels).
KERNEL_OPS = tuple(op for op in OPS if op not in FAMILY_OF[op].kernel_ops)
BASIS = (
    "median per call at the target shapes, explicit backends only; per op the backends are "
    "ranked by the geometric mean over cases and dtypes of median / fastest median, those that "
    "ran everywhere first"
)


def _rank(entries: list[dict], not_timed: dict[str, str]) -> dict:
    """One op's summary from its {case, dtype} entries."""
    timed = [e for e in entries if e["times_us"]]
    for e in timed:
        e["winner"] = min(e["times_us"], key=e["times_us"].__getitem__)
        e["slowdown"] = {b: t / e["times_us"][e["winner"]] for b, t in e["times_us"].items()}
    backends = [b for b in CONCRETE_BACKENDS if any(b in e["times_us"] for e in timed)]
    ran_in = {b: sum(b in e["times_us"] for e in timed) for b in backends}
    wins = {b: sum(e["winner"] == b for e in timed) for b in backends}
    geomean = {b: geometric_mean([e["slowdown"][b] for e in timed if b in e["slowdown"]])
               for b in backends}  # fmt: skip
    order = sorted(backends, key=lambda b: (ran_in[b] < len(timed), geomean[b], -wins[b]))
    auto_now = sorted({e["auto"] for e in entries if e["auto"]})
    return {"cases": entries, "order": order, "winner": order[0] if order else None,
            "wins": wins, "geomean_slowdown": geomean, "ran_in": ran_in, "cases_timed": len(timed),
            "not_timed": {b: r for b, r in not_timed.items() if ran_in.get(b, 0) < len(timed)},
            "split": len({e["winner"] for e in timed}) > 1, "auto_now": auto_now,
            "auto_agrees": (auto_now == [order[0]]) if order and auto_now else None}  # fmt: skip


def fastest_backends(rows: Iterable[dict]) -> dict:
    """JSON-ready: {"basis", "device", "dtypes", "ops": {op: _rank's summary, its "cases" each
    {"case_id", "case", "mode", "dtype", "times_us", "winner", "slowdown", "auto"}},
    "auto_preference": {op: order}, "auto_preference_device": the order all ops share, or None}."""
    rows = list(rows)
    per_op: dict[str, dict[tuple[str, str], dict]] = {}
    not_timed: dict[str, dict[str, str]] = {}
    for row in rows:
        op, requested = row["op"], row.get("backend_requested")
        if row["kind"] != FAST_S2S or op not in KERNEL_OPS or not row.get("target"):
            continue
        entry = per_op.setdefault(op, {}).setdefault((row["case_id"], row["dtype"]), {
            **{k: row[k] for k in ("case_id", "case", "mode", "dtype")},
            "times_us": {}, "winner": None, "slowdown": {}, "auto": None,
        })  # fmt: skip
        if requested == "auto":
            entry["auto"] = row.get("backend")
        elif requested not in CONCRETE_BACKENDS:
            continue
        elif row["status"] == "ok" and row.get("median_us"):
            entry["times_us"][requested] = row["median_us"]
        else:
            not_timed.setdefault(op, {}).setdefault(requested, row.get("reason") or row["status"])
    ops = {op: _rank(list(per_op[op].values()), not_timed.get(op, {}))
           for op in KERNEL_OPS if op in per_op}  # fmt: skip
    preference = {op: [*info["order"], *(["reference"] if "reference" not in info["order"] else [])]
                  for op, info in ops.items() if info["order"]}  # fmt: skip
    orders = {tuple(order) for order in preference.values()}
    return {
        "basis": BASIS,
        "device": sorted({r["device"] for r in rows if r.get("device")}),
        "dtypes": sorted({r["dtype"] for r in rows if r.get("dtype")}),
        "ops": ops,
        "auto_preference": preference,
        "auto_preference_device": list(orders.pop()) if len(orders) == 1 else None,
    }


def preference_code(summary: dict) -> list[str]:
    """Lines to paste into fast_s2s/backends.py: AUTO_PREFERENCE["<device>"] = (...) when every
    op has the same order, else one commented entry per op (the table is per device today)."""

    def as_tuple(order: list[str]) -> str:
        return "(" + ", ".join(f'"{b}"' for b in order) + ("," if len(order) == 1 else "") + ")"

    devices = summary.get("device") or ["?"]
    device = devices[0] if len(devices) == 1 else "/".join(devices)
    if summary["auto_preference_device"]:
        return [f'AUTO_PREFERENCE["{device}"] = {as_tuple(summary["auto_preference_device"])}']
    lines = [f"# {device}: the ops differ, so the order is per op (AUTO_PREFERENCE is per device)"]
    return lines + [f'#   "{op}": {as_tuple(o)},' for op, o in summary["auto_preference"].items()]


def print_fastest(console: Console, summary: dict) -> None:
    """Per op, case and dtype each backend's median, the winner and what auto picks now; one
    line per op with its ranking; then the AUTO_PREFERENCE code."""
    if not summary["ops"]:
        console.print("[dim]fastest backend: no target cases of the kernel ops were timed[/dim]")
        return
    columns = ("op", "case", "dtype", *(f"{b} us" for b in CONCRETE_BACKENDS), "fastest")
    title = "fastest backend per op (median at the target shapes)"
    table = _table(title, (*columns, "auto now"), right=[c for c in columns if c.endswith(" us")])
    for op, info in summary["ops"].items():
        for e in info["cases"]:
            times = [_us(e["times_us"].get(b)) for b in CONCRETE_BACKENDS]
            winner = e["winner"] or "[red]none ran[/red]"
            table.add_row(op, e["case"], e["dtype"], *times, winner, e["auto"] or "")
    console.print(table)
    for op, info in summary["ops"].items():
        n, ran_in = info["cases_timed"], info["ran_in"]
        ranking = ", ".join(
            f"{b} {info['geomean_slowdown'][b]:.2f}x ({info['wins'][b]}/{n} won"
            + (f", ran on {ran_in[b]})" if ran_in[b] < n else ")")
            for b in info["order"]
        )
        notes = []
        if info["split"]:
            notes.append("[yellow]split: the winner differs between cases or dtypes[/yellow]")
        if info["auto_agrees"] is False:
            notes.append(f"[yellow]auto now picks {', '.join(info['auto_now'])}[/yellow]")
        notes += [f"{b} not timed everywhere: {escape(r)}" for b, r in info["not_timed"].items()]
        console.print(
            f"{op}: [bold]{info['winner'] or 'none'}[/bold] fastest; geomean median / fastest: "
            f"{ranking or 'nothing timed'}" + "".join(f"\n  {n}" for n in notes)
        )
    console.print("suggested fast_s2s/backends.py AUTO_PREFERENCE (from this run):")
    for line in preference_code(summary):
        console.print(f"  {escape(line)}", highlight=False)


def print_gemm_choices(console: Console, choices: list[str]) -> None:
    if choices:
        console.print("[bold]GEMM backend per product site[/bold] (fast_s2s C++ CPU kernels):")
        for line in choices:
            console.print(f"  {escape(line)}")


def check_goals(rows: Iterable[dict]) -> list[dict]:
    """One result per goal of every fast_s2s row but the reference backend's: "value" and
    "met" (both None where the row or its metric did not run)."""
    out = []
    for row in rows:
        if row["kind"] != FAST_S2S or row.get("backend_requested") == "reference":
            continue
        for spec in row.get("goals") or []:
            goal = Goal(spec["metric"], spec["at_least"], spec.get("peer"), tuple(spec["dtypes"]))
            value = goal.value(row) if row["status"] == "ok" else None
            out.append({
                "op": row["op"], "case": row["case"], "case_id": row["case_id"],
                "dtype": row["dtype"], "impl": row["impl"],
                "implementation": row.get("implementation"), "goal": goal.description,
                "metric": goal.metric, "peer": goal.peer, "at_least": goal.at_least,
                "value": value, "met": None if value is None else value >= goal.at_least,
                "status": row["status"], "reason": row.get("reason"),
            })  # fmt: skip
    return out


def print_goals(console: Console, results: list[dict]) -> None:
    """Case, dtype, implementation, goal, value, met; then how many were met."""
    if not results:
        return
    columns = ("case", "dtype", "implementation", "goal", "value", "met")
    table = _table("goals (the project's targets for this device)", columns, wrapped=["goal"])
    for r in results:
        if r["value"] is None:
            value = "[dim]not run[/dim]" if r["status"] != "ok" else "[dim]not measured[/dim]"
        else:
            value = _percent(r["value"]) if r["metric"] == COPY_FRACTION else f"{r['value']:.2f}x"
        met = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "[dim]-[/dim]"}[r["met"]]
        case = f"{r['op']} {r['case']}"
        table.add_row(case, r["dtype"], escape(r["impl"]), r["goal"], value, met)
    console.print(table)
    counted = [r["met"] for r in results if r["met"] is not None]
    console.print(f"goals met: {sum(counted)} of {len(counted)} measured ({len(results)} in all)")
