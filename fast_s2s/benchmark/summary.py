"""What a run says beyond its rows: which backend was fastest per op (to update
fast_s2s.backends.AUTO_PREFERENCE from), and whether the fast_s2s rows reached their cases' goals.

Both work on result rows alone (fast_s2s.benchmark.runner), so they apply equally to the rows of
the run just made and to rows loaded from earlier runs' JSON files (`fast-s2s bench --summarize
bench_results/bench-cuda-*.json`, one file per dtype, say).

Fastest backend: for each op that AUTO_PREFERENCE governs (KERNEL_OPS), over its target cases
(Case.target: the shapes the project's targets name) in every dtype of the rows, the fast_s2s rows
that asked for a concrete backend (cpp, triton, reference; not auto) are compared by median. Per
case and dtype the fastest is the winner; per op the backends are ranked by the geometric mean,
over the cases and dtypes, of their median divided by the winner's (1.00x = always fastest), those
that ran on every case and dtype first. That ranking is the suggested AUTO_PREFERENCE order for the
op (reference appended last when it was not timed: auto's fallback). `split` flags an op whose
winner differs between cases or dtypes, where one order cannot be best everywhere.

Goals: every fast_s2s row (except the reference backend) of a case with goals (Case.goals, copied
into the row as "goals") is checked: the copy-roofline fraction or the speedup against the named
peer, against the number the goal asks for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fast_s2s.benchmark.peers import CONCRETE_BACKENDS, FAST_S2S
from fast_s2s.benchmark.spec import Goal

# The fast_s2s.ops whose backend `auto` picks from fast_s2s.backends.AUTO_PREFERENCE.
KERNEL_OPS = ("dot_attention", "additive_attention", "gru_cell", "gru_layer")
BASIS = (
    "median per call at the target shapes, explicit backends only; per op the backends are "
    "ranked by the geometric mean over cases and dtypes of median / fastest median, those that "
    "ran everywhere first"
)


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fastest_backends(rows: Iterable[dict], targets_only: bool = True) -> dict:
    """The fastest-backend summary of `rows` (see the module docstring). JSON-ready:

    {"basis", "device", "dtypes", "ops": {op: {"cases": [{"case_id", "case", "mode", "dtype",
    "times_us": {backend: median}, "winner", "slowdown": {backend: median / winner's}, "auto"}],
    "order", "winner", "wins", "geomean_slowdown", "ran_in", "not_timed": {backend: reason},
    "split", "auto_now", "auto_agrees"}}, "auto_preference": {op: order}, "auto_preference_device":
    the common order when every op has the same one, else None}.
    """
    rows = list(rows)
    per_op: dict[str, dict[tuple[str, str], dict]] = {}
    not_timed: dict[str, dict[str, str]] = {}
    for row in rows:
        op = row["op"]
        if row["kind"] != FAST_S2S or op not in KERNEL_OPS:
            continue
        if targets_only and not row.get("target"):
            continue
        entry = per_op.setdefault(op, {}).setdefault(
            (row["case_id"], row["dtype"]),
            {
                "case_id": row["case_id"],
                "case": row["case"],
                "mode": row["mode"],
                "dtype": row["dtype"],
                "times_us": {},
                "winner": None,
                "slowdown": {},
                "auto": None,
            },
        )
        requested = row.get("backend_requested")
        if requested == "auto":
            entry["auto"] = row.get("backend")
            continue
        if requested not in CONCRETE_BACKENDS:
            continue
        if row["status"] == "ok" and row.get("median_us"):
            entry["times_us"][requested] = row["median_us"]
        else:
            reason = row.get("reason") or row["status"]
            not_timed.setdefault(op, {}).setdefault(requested, reason)

    ops: dict[str, dict] = {}
    for op in [op for op in KERNEL_OPS if op in per_op]:
        entries = list(per_op[op].values())
        for entry in entries:
            times = entry["times_us"]
            if times:
                best = min(times.values())
                entry["winner"] = min(times, key=times.__getitem__)
                entry["slowdown"] = {b: t / best for b, t in times.items()}
        timed = [e for e in entries if e["winner"] is not None]
        backends = [b for b in CONCRETE_BACKENDS if any(b in e["times_us"] for e in timed)]
        ran_in = {b: sum(b in e["times_us"] for e in timed) for b in backends}
        wins = {b: sum(e["winner"] == b for e in timed) for b in backends}
        geomean = {
            b: _geomean([e["slowdown"][b] for e in timed if b in e["slowdown"]]) for b in backends
        }
        order = sorted(backends, key=lambda b: (ran_in[b] < len(timed), geomean[b], -wins[b]))
        auto_now = sorted({e["auto"] for e in entries if e["auto"]})
        ops[op] = {
            "cases": entries,
            "order": order,
            "winner": order[0] if order else None,
            "wins": wins,
            "geomean_slowdown": geomean,
            "ran_in": ran_in,
            "cases_timed": len(timed),
            "not_timed": {
                b: r for b, r in not_timed.get(op, {}).items() if ran_in.get(b, 0) < len(timed)
            },
            "split": len({e["winner"] for e in timed}) > 1,
            "auto_now": auto_now,
            "auto_agrees": (auto_now == [order[0]]) if order and auto_now else None,
        }
    preference = {
        op: [*info["order"], *(["reference"] if "reference" not in info["order"] else [])]
        for op, info in ops.items()
        if info["order"]
    }
    orders = {tuple(order) for order in preference.values()}
    return {
        "basis": BASIS,
        "device": sorted({r["device"] for r in rows if r.get("device")}),
        "dtypes": sorted({r["dtype"] for r in rows if r.get("dtype")}),
        "ops": ops,
        "auto_preference": preference,
        "auto_preference_device": list(orders.pop()) if len(orders) == 1 else None,
    }


def _fmt_us(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _tuple(order: list[str]) -> str:
    return "(" + ", ".join(f'"{b}"' for b in order) + ("," if len(order) == 1 else "") + ")"


def preference_code(summary: dict) -> list[str]:
    """Python lines to paste into fast_s2s/backends.py: AUTO_PREFERENCE["<device>"] = (...) when
    every op has the same order, else one entry per op (the table is per device today)."""
    devices = summary.get("device") or ["?"]
    device = devices[0] if len(devices) == 1 else "/".join(devices)
    if summary["auto_preference_device"]:
        return [f'AUTO_PREFERENCE["{device}"] = {_tuple(summary["auto_preference_device"])}']
    lines = [f"# {device}: the ops differ, so the order is per op (AUTO_PREFERENCE is per device)"]
    lines += [f'#   "{op}": {_tuple(order)},' for op, order in summary["auto_preference"].items()]
    return lines


def print_fastest(console: Console, summary: dict) -> None:
    """The fastest-backend table (per op, case and dtype: each backend's median, the winner,
    what auto picks now), one line per op with its ranking, and the code for AUTO_PREFERENCE."""
    if not summary["ops"]:
        console.print("[dim]fastest backend: no target cases of the kernel ops were timed[/dim]")
        return
    table = Table(
        title="fastest backend per op (median at the target shapes)", title_justify="left"
    )
    for col in ("op", "case", "dtype", *(f"{b} us" for b in CONCRETE_BACKENDS), "fastest"):
        table.add_column(col, justify="right" if col.endswith(" us") else "left", no_wrap=True)
    table.add_column("auto now", no_wrap=True)
    for op, info in summary["ops"].items():
        for entry in info["cases"]:
            times = entry["times_us"]
            table.add_row(
                op,
                entry["case"],
                entry["dtype"],
                *(_fmt_us(times.get(b)) for b in CONCRETE_BACKENDS),
                entry["winner"] or "[red]none ran[/red]",
                entry["auto"] or "",
            )
    console.print(table)
    for op, info in summary["ops"].items():
        ranking = ", ".join(
            f"{b} {info['geomean_slowdown'][b]:.2f}x ({info['wins'][b]}/{info['cases_timed']} won"
            + (f", ran on {info['ran_in'][b]}" if info["ran_in"][b] < info["cases_timed"] else "")
            + ")"
            for b in info["order"]
        )
        notes = []
        if info["split"]:
            notes.append("[yellow]split: the winner differs between cases or dtypes[/yellow]")
        if info["auto_agrees"] is False:
            notes.append(f"[yellow]auto now picks {', '.join(info['auto_now'])}[/yellow]")
        for backend, reason in info["not_timed"].items():
            notes.append(f"{backend} not timed everywhere: {escape(reason)}")
        console.print(
            f"{op}: [bold]{info['winner'] or 'none'}[/bold] fastest; geomean median / fastest: "
            f"{ranking or 'nothing timed'}" + "".join(f"\n  {n}" for n in notes)
        )
    console.print("suggested fast_s2s/backends.py AUTO_PREFERENCE (from this run):")
    for line in preference_code(summary):
        console.print(f"  {escape(line)}", highlight=False)


# ----------------------------------------------------------------------------- goals


def goal_dicts(goals: Iterable[Goal], dtype: str) -> list[dict]:
    """The goals that apply to `dtype`, JSON-ready (what a row carries as "goals")."""
    return [
        {
            "metric": g.metric,
            "at_least": g.at_least,
            "peer": g.peer,
            "dtypes": list(g.dtypes),
            "description": g.description,
        }
        for g in goals
        if g.applies_to(dtype)
    ]


def check_goals(rows: Iterable[dict]) -> list[dict]:
    """One result per goal of every fast_s2s row (the reference backend's excepted): "value"
    (None where the row or the metric did not run) and "met" (None then too)."""
    out = []
    for row in rows:
        if row["kind"] != FAST_S2S or row.get("backend_requested") == "reference":
            continue
        for spec in row.get("goals") or []:
            goal = Goal(spec["metric"], spec["at_least"], spec.get("peer"), tuple(spec["dtypes"]))
            value = goal.value(row) if row["status"] == "ok" else None
            out.append(
                {
                    "op": row["op"],
                    "case": row["case"],
                    "case_id": row["case_id"],
                    "dtype": row["dtype"],
                    "impl": row["impl"],
                    "implementation": row.get("implementation"),
                    "goal": goal.description,
                    "metric": goal.metric,
                    "peer": goal.peer,
                    "at_least": goal.at_least,
                    "value": value,
                    "met": None if value is None else value >= goal.at_least,
                    "status": row["status"],
                    "reason": row.get("reason"),
                }
            )
    return out


def _goal_value(result: dict) -> str:
    value = result["value"]
    if value is None:
        return "[dim]not run[/dim]" if result["status"] != "ok" else "[dim]not measured[/dim]"
    return f"{100 * value:.0f}%" if result["metric"] == "copy_fraction" else f"{value:.2f}x"


def print_goals(console: Console, results: list[dict]) -> None:
    """The goals table: case, dtype, implementation, goal, value, met."""
    if not results:
        return
    table = Table(title="goals (the project's targets for this device)", title_justify="left")
    for col in ("case", "dtype", "implementation", "goal", "value", "met"):
        table.add_column(col, no_wrap=col != "goal")
    for r in results:
        met = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "[dim]-[/dim]"}[r["met"]]
        table.add_row(
            f"{r['op']} {r['case']}", r["dtype"], escape(r["impl"]), r["goal"], _goal_value(r), met
        )
    console.print(table)
    counted = [r for r in results if r["met"] is not None]
    met = sum(r["met"] for r in counted)
    console.print(f"goals met: {met} of {len(counted)} measured ({len(results)} in all)")
