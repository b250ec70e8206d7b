"""What a `fast-s2s bench` run will time, worked out without touching the device: the dtypes of
each device type, and the plan (cases, implementations, rooflines, goals) that `fast-s2s bench
--plan` prints. A plan for --device cuda is built on a machine without a GPU exactly as on one
with a GPU (it asks fast_s2s.backends which backends can run, which never initialises CUDA), so
the CUDA benchmark's case list can be checked, and tested, anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fast_s2s.benchmark.roofline import DEVICE_COPY_BYTES

# The dtypes fast_s2s's ops take per device type (../shared/DESIGN.md): float16 is CUDA's only.
DEVICE_DTYPES: dict[str, tuple[str, ...]] = {
    "cpu": ("float32", "bfloat16", "float64"),
    "cuda": ("float32", "float16", "bfloat16", "float64"),
}
# What `fast-s2s bench` times when --dtype is not given: on CUDA the three dtypes issue 4 names.
DEFAULT_DTYPES: dict[str, tuple[str, ...]] = {
    "cpu": ("float32",),
    "cuda": ("float32", "float16", "bfloat16"),
}


def parse_dtypes(names: Sequence[str] | None, device: torch.device | str) -> list[str]:
    """The dtypes to time on `device` (DEFAULT_DTYPES when `names` is None or empty); raises
    ValueError naming any the ops do not take on that device type."""
    device_type = torch.device(device).type
    allowed = DEVICE_DTYPES.get(device_type, DEVICE_DTYPES["cpu"])
    if not names:
        return list(DEFAULT_DTYPES.get(device_type, ("float32",)))
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
    from fast_s2s.benchmark.cases import FORWARD, select_cases
    from fast_s2s.benchmark.peers import build_impls, implementation_name

    device = torch.device(device)
    cases = []
    for case in select_cases(ops, shapes, device):
        impls = build_impls(case, device, backends, peers, quick=quick)
        bandwidth = case.mode == FORWARD and case.memory_bound
        cases.append(
            {
                "op": case.op,
                "case": case.name,
                "case_id": case.id,
                "mode": case.mode,
                "target": case.target,
                "memory_bound": case.memory_bound,
                "rooflines": ["read (torch.sum)", "copy (dst.copy_(src))"] if bandwidth else [],
                "goals": [g.description for g in case.goals],
                "implementations": [
                    {
                        "impl": impl.label,
                        "kind": impl.kind,
                        "backend": impl.backend,
                        "implementation": implementation_name(impl, device),
                        "timed": impl.make is not None,
                        "reason": impl.reason,
                    }
                    for impl in impls
                ],
            }
        )
    return {
        "device": device.type,
        "dtypes": list(dtypes),
        "shapes": shapes,
        "quick": quick,
        "device_copy_bytes": DEVICE_COPY_BYTES.get(device.type, DEVICE_COPY_BYTES["cpu"]),
        "cases": cases,
    }


def print_plan(console: Console, plan: dict) -> None:
    """The plan as a table (one row per case) and the implementations left out, with why."""
    copy_mib = plan["device_copy_bytes"] / 2**20
    console.print(
        f"fast-s2s bench plan: {plan['device']}, dtypes {', '.join(plan['dtypes'])}, shapes "
        f"{plan['shapes']}{' (quick)' if plan['quick'] else ''}; {len(plan['cases'])} cases x "
        f"{len(plan['dtypes'])} dtypes; device copy bandwidth over {copy_mib:,.0f} MiB each way"
    )
    table = Table(title="cases", title_justify="left")
    for col in ("op", "case", "target", "timed", "rooflines", "goals"):
        table.add_column(col)
    left_out: dict[tuple[str, str], str] = {}
    for case in plan["cases"]:
        timed = [i["impl"] for i in case["implementations"] if i["timed"]]
        for i in case["implementations"]:
            if not i["timed"]:
                left_out.setdefault((i["impl"], i["reason"] or ""), case["op"])
        table.add_row(
            case["op"],
            case["case"],
            "yes" if case["target"] else "",
            escape(", ".join(timed)),
            "read, copy" if case["rooflines"] else "",
            "; ".join(case["goals"]),
        )
    console.print(table)
    for (impl, reason), op in left_out.items():
        console.print(f"[yellow]not timed[/yellow] {escape(impl)} (e.g. {op}): {escape(reason)}")
