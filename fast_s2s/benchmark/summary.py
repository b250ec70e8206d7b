"""What a run says beyond its rows: the fastest backend per op (what
fast_s2s.backends.AUTO_PREFERENCE should say) and whether the fast_s2s rows reached their goals.
Both read result rows alone, so they apply as well to rows loaded from earlier runs' JSON
(`fast-s2s bench --summarize bench_results/bench-cuda-*.json`, one file per dtype).

Fastest backend: per op that AUTO_PREFERENCE governs, over its target cases in every dtype, the
fast_s2s rows that asked for a concrete backend are compared by median. Per case and dtype the
fastest wins; per op the backends are ranked by the geometric mean over cases and dtypes of
their median / the winner's (1.00x: always fastest), those that ran everywhere first. The
ranking is the suggested AUTO_PREFERENCE order (reference appended when it was not timed: auto's
fallback); `split` flags an op whose winner differs between cases or dtypes.

Goals: every fast_s2s row of a case with goals (the reference backend excepted: it is no kernel)
is checked against the number its goals ask for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fast_s2s.benchmark.case import COPY_FRACTION, Goal
from fast_s2s.benchmark.registry import CONCRETE_BACKENDS, FAST_S2S

# The fast_s2s.ops whose backend `auto` picks from fast_s2s.backends.AUTO_PREFERENCE.
KERNEL_OPS = ("dot_attention", "additive_attention", "local_attention", "gru_cell", "gru_layer")
BASIS = (
    "median per call at the target shapes, explicit backends only; per op the backends are "
    "ranked by the geometric mean over cases and dtypes of median / fastest median, those that "
    "ran everywhere first"
)


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _rank(entries: list[dict], not_timed: dict[str, str]) -> dict:
    """One op's summary from its {case, dtype} entries."""
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
    return {
        "cases": entries,
        "order": order,
        "winner": order[0] if order else None,
        "wins": wins,
        "geomean_slowdown": geomean,
        "ran_in": ran_in,
        "cases_timed": len(timed),
        "not_timed": {b: r for b, r in not_timed.items() if ran_in.get(b, 0) < len(timed)},
        "split": len({e["winner"] for e in timed}) > 1,
        "auto_now": auto_now,
        "auto_agrees": (auto_now == [order[0]]) if order and auto_now else None,
    }


def fastest_backends(rows: Iterable[dict], targets_only: bool = True) -> dict:
    """JSON-ready: {"basis", "device", "dtypes", "ops": {op: {"cases": [{"case_id", "case",
    "mode", "dtype", "times_us", "winner", "slowdown", "auto"}], "order", "winner", "wins",
    "geomean_slowdown", "ran_in", "cases_timed", "not_timed", "split", "auto_now",
    "auto_agrees"}}, "auto_preference": {op: order}, "auto_preference_device": the order when
    every op has the same one, else None}."""
    rows = list(rows)
    per_op: dict[str, dict[tuple[str, str], dict]] = {}
    not_timed: dict[str, dict[str, str]] = {}
    for row in rows:
        op = row["op"]
        if (
            row["kind"] != FAST_S2S
            or op not in KERNEL_OPS
            or (targets_only and not row.get("target"))
        ):
            continue
        entry = per_op.setdefault(op, {}).setdefault(
            (row["case_id"], row["dtype"]),
            {"case_id": row["case_id"], "case": row["case"], "mode": row["mode"],
             "dtype": row["dtype"], "times_us": {}, "winner": None, "slowdown": {}, "auto": None},
        )  # fmt: skip
        requested = row.get("backend_requested")
        if requested == "auto":
            entry["auto"] = row.get("backend")
        elif requested not in CONCRETE_BACKENDS:
            continue
        elif row["status"] == "ok" and row.get("median_us"):
            entry["times_us"][requested] = row["median_us"]
        else:
            not_timed.setdefault(op, {}).setdefault(requested, row.get("reason") or row["status"])
    ops = {
        op: _rank(list(per_op[op].values()), not_timed.get(op, {}))
        for op in KERNEL_OPS
        if op in per_op
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


def _us(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _tuple(order: list[str]) -> str:
    return "(" + ", ".join(f'"{b}"' for b in order) + ("," if len(order) == 1 else "") + ")"


def preference_code(summary: dict) -> list[str]:
    """Lines to paste into fast_s2s/backends.py: AUTO_PREFERENCE["<device>"] = (...) when every
    op has the same order, else one commented entry per op (the table is per device today)."""
    devices = summary.get("device") or ["?"]
    device = devices[0] if len(devices) == 1 else "/".join(devices)
    if summary["auto_preference_device"]:
        return [f'AUTO_PREFERENCE["{device}"] = {_tuple(summary["auto_preference_device"])}']
    lines = [f"# {device}: the ops differ, so the order is per op (AUTO_PREFERENCE is per device)"]
    return lines + [f'#   "{op}": {_tuple(o)},' for op, o in summary["auto_preference"].items()]


def print_fastest(console: Console, summary: dict) -> None:
    """Per op, case and dtype each backend's median, the winner and what auto picks now; one
    line per op with its ranking; then the AUTO_PREFERENCE code."""
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
        for e in info["cases"]:
            times = [_us(e["times_us"].get(b)) for b in CONCRETE_BACKENDS]
            winner = e["winner"] or "[red]none ran[/red]"
            table.add_row(op, e["case"], e["dtype"], *times, winner, e["auto"] or "")
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
        notes += [f"{b} not timed everywhere: {escape(r)}" for b, r in info["not_timed"].items()]
        console.print(
            f"{op}: [bold]{info['winner'] or 'none'}[/bold] fastest; geomean median / fastest: "
            f"{ranking or 'nothing timed'}" + "".join(f"\n  {n}" for n in notes)
        )
    console.print("suggested fast_s2s/backends.py AUTO_PREFERENCE (from this run):")
    for line in preference_code(summary):
        console.print(f"  {escape(line)}", highlight=False)


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
    table = Table(title="goals (the project's targets for this device)", title_justify="left")
    for col in ("case", "dtype", "implementation", "goal", "value", "met"):
        table.add_column(col, no_wrap=col != "goal")
    for r in results:
        if r["value"] is None:
            value = "[dim]not run[/dim]" if r["status"] != "ok" else "[dim]not measured[/dim]"
        elif r["metric"] == COPY_FRACTION:
            value = f"{100 * r['value']:.0f}%"
        else:
            value = f"{r['value']:.2f}x"
        met = {True: "[green]yes[/green]", False: "[red]NO[/red]", None: "[dim]-[/dim]"}[r["met"]]
        table.add_row(
            f"{r['op']} {r['case']}", r["dtype"], escape(r["impl"]), r["goal"], value, met
        )
    console.print(table)
    counted = [r for r in results if r["met"] is not None]
    met_count = sum(r["met"] for r in counted)
    console.print(f"goals met: {met_count} of {len(counted)} measured ({len(results)} in all)")
