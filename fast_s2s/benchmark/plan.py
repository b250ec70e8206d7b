"""What a `fast-s2s bench` run will time, worked out without touching the device: the dtypes of
each device type, and the plan (cases, implementations, rooflines, goals) that --plan prints. A
--device cuda plan is built on a machine without a GPU exactly as on one with a GPU (the backends'
availability never initialises CUDA), so the CUDA case list can be checked, and tested, anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fast_s2s.benchmark.registry import build_impls, implementation_name, select_cases
from fast_s2s.benchmark.roofline import DEVICE_COPY_BYTES
from fast_s2s.benchmark.rows import reports_bandwidth

# The dtypes fast_s2s's ops take per device type (docs/DESIGN.md): float16 is CUDA's only.
DEVICE_DTYPES: dict[str, tuple[str, ...]] = {
    "cpu": ("float32", "bfloat16", "float64"),
    "cuda": ("float32", "float16", "bfloat16", "float64"),
}
# What is timed when --dtype is not given: on CUDA the three dtypes of the GPU targets.
DEFAULT_DTYPES: dict[str, tuple[str, ...]] = {
    "cpu": ("float32",),
    "cuda": ("float32", "float16", "bfloat16"),
}


def parse_dtypes(names: Sequence[str] | None, device: torch.device | str) -> list[str]:
    """The dtypes to time on `device` (its defaults when `names` is empty), each once; raises
    ValueError naming any the ops do not take there."""
    device_type = torch.device(device).type
    if not names:
        return list(DEFAULT_DTYPES.get(device_type, ("float32",)))
    allowed = DEVICE_DTYPES.get(device_type, DEVICE_DTYPES["cpu"])
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ValueError(
            f"--dtype {','.join(bad)}: fast_s2s's ops on {device_type} take {', '.join(allowed)}"
        )
    return list(dict.fromkeys(names))


def build_plan(
    ops: Sequence[str],
    device: torch.device | str,
    dtypes: Sequence[str],
    shapes: str,
    backends: list[str] | None = None,
    peers: list[str] | None = None,
    quick: bool = False,
) -> dict:
    """JSON-ready: {"device", "dtypes", "shapes", "quick", "device_copy_bytes", "cases": [{"op",
    "case", "case_id", "mode", "target", "memory_bound", "rooflines", "goals",
    "implementations": [{"impl", "kind", "backend", "implementation", "timed", "reason"}]}]}.
    Every case is timed once per dtype; goals are listed with the dtypes they apply to."""
    device = torch.device(device)
    cases = []
    rooflines = ["read (torch.sum)", "copy (dst.copy_(src))"]
    for case in select_cases(list(ops), shapes, device):
        impls = build_impls(case, device, backends, peers, quick=quick)
        cases.append({
            "op": case.op, "case": case.name, "case_id": case.id, "mode": case.mode,
            "target": case.target, "memory_bound": case.memory_bound,
            "rooflines": rooflines if reports_bandwidth(case) else [],
            "goals": [g.description for g in case.goals],
            "implementations": [
                {"impl": i.label, "kind": i.kind, "backend": i.backend,
                 "implementation": implementation_name(i, device), "timed": i.make is not None,
                 "reason": i.reason}
                for i in impls
            ],
        })  # fmt: skip
    return {
        "device": device.type,
        "dtypes": list(dtypes),
        "shapes": shapes,
        "quick": quick,
        "device_copy_bytes": DEVICE_COPY_BYTES.get(device.type, DEVICE_COPY_BYTES["cpu"]),
        "cases": cases,
    }


def print_plan(console: Console, plan: dict) -> None:
    """One row per case, then the implementations not timed, with why (once each)."""
    console.print(
        f"fast-s2s bench plan: {plan['device']}, dtypes {', '.join(plan['dtypes'])}, shapes "
        f"{plan['shapes']}{' (quick)' if plan['quick'] else ''}; {len(plan['cases'])} cases x "
        f"{len(plan['dtypes'])} dtypes; device copy bandwidth over "
        f"{plan['device_copy_bytes'] / 2**20:,.0f} MiB each way"
    )
    table = Table(title="cases", title_justify="left")
    for col in ("op", "case", "target", "timed", "rooflines", "goals"):
        table.add_column(col)
    left_out: dict[tuple[str, str], str] = {}
    for case in plan["cases"]:
        impls = case["implementations"]
        for i in impls:
            if not i["timed"]:
                left_out.setdefault((i["impl"], i["reason"] or ""), case["op"])
        table.add_row(
            case["op"], case["case"], "yes" if case["target"] else "",
            escape(", ".join(i["impl"] for i in impls if i["timed"])),
            "read, copy" if case["rooflines"] else "", "; ".join(case["goals"]),
        )  # fmt: skip
    console.print(table)
    for (impl, reason), op in left_out.items():
        console.print(f"[yellow]not timed[/yellow] {escape(impl)} (e.g. {op}): {escape(reason)}")
