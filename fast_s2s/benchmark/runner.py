"""Runs the cases: builds each implementation's call, times it, and turns timings into rows.

A row is a flat dict (JSON-ready). `add_speedups` then gives every fast_s2s row the ratio
peer time / fast_s2s time for each peer measured on the same case in the same run. Forward rows of
memory-bound cases carry two bandwidths (fast_s2s.benchmark.roofline): `gbps` (compulsory reads /
median, against the read roofline: `roofline_gbps`, `roofline_fraction`) and `copy_gbps`
(compulsory reads + writes / median, against the copy roofline at the same traffic:
`copy_roofline_gbps`, `copy_fraction`). Whole-model rows (op "model") also carry their
throughput: `work` (training steps or decoded tokens per call), `work_unit` ("step" or "token")
and `throughput` (work per second of the median call); a ratio of median times is the inverse
ratio of throughputs, so "vs reference" is also cpp speed / reference speed there. Every row
records `threads` (torch.get_num_threads() when it ran), `implementation` (what code ran, in
words) and `goals` (its case's goals for its dtype, fast_s2s rows only).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from fast_s2s.benchmark.cases import (
    DECODE,
    FORWARD,
    FORWARD_BACKWARD,
    TRAIN_STEP,
    Case,
    Inputs,
    make_inputs,
)
from fast_s2s.benchmark.peers import FAST_S2S, Call, Impl, build_impls, implementation_name
from fast_s2s.benchmark.roofline import CopyRoofline, ReadRoofline, gbps
from fast_s2s.benchmark.summary import goal_dicts
from fast_s2s.benchmark.timing import FULL_BUDGET, Budget, measure

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


def make_step(call: Call, case: Case, inputs: Inputs) -> Callable[[], object]:
    """What one timed iteration runs: the forward call, or (forward+backward) the forward call
    and the gradients of sum(output) with respect to every input that requires grad (the query,
    keys and values; x, h and every weight of the GRU ops). A model case's call is already the
    whole iteration (a training step, or a decode)."""
    if case.mode in (FORWARD, TRAIN_STEP, DECODE):
        return call
    if case.mode != FORWARD_BACKWARD:
        raise ValueError(f"unknown mode {case.mode!r}")
    wrt = inputs.grad_inputs

    def step() -> object:
        return torch.autograd.grad(call().sum(), wrt, allow_unused=True)

    return step


def grad_mode(case: Case) -> contextlib.AbstractContextManager:
    """Forward and decode cases run without autograd (set around the timing loop, not inside the
    call)."""
    return torch.no_grad() if case.mode in (FORWARD, DECODE) else contextlib.nullcontext()


def error_reason(exc: BaseException) -> str:
    """One line: the exception type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()


def base_row(case: Case, impl: Impl, device: torch.device, dtype: torch.dtype) -> dict:
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "op": case.op,
        "case": case.name,
        "case_id": case.id,
        "label": case.label,
        "mode": case.mode,
        "shape": case.shape,
        "lengths": case.lengths,
        "variant": case.variant or None,
        "target": case.target,
        "goals": goal_dicts(case.goals, dtype_name) if impl.kind == FAST_S2S else [],
        "device": device.type,
        "dtype": dtype_name,
        "threads": torch.get_num_threads(),
        "impl": impl.label,
        "kind": impl.kind,
        "backend_requested": impl.backend_requested,
        "backend": impl.backend,
        "implementation": implementation_name(impl, device),
        "status": SKIPPED,
        "reason": impl.reason,
        "median_us": None,
        "iqr_us": None,
        "q1_us": None,
        "q3_us": None,
        "min_us": None,
        "repeats": 0,
        "first_call_s": None,
        "read_bytes": None,
        "write_bytes": None,
        "gbps": None,
        "roofline_gbps": None,
        "roofline_fraction": None,
        "copy_gbps": None,
        "copy_roofline_gbps": None,
        "copy_fraction": None,
        "work": None,
        "work_unit": None,
        "throughput": None,
        "hypothesis_tokens": None,
        "speedup_vs": {},
    }


def time_impl(
    case: Case,
    impl: Impl,
    inputs: Inputs,
    device: torch.device,
    dtype: torch.dtype,
    budget: Budget,
) -> dict:
    """One row: `impl` timed on `case`. Failures (in set-up, compilation or the call) become a
    row with status "failed" and the reason, never an exception."""
    row = base_row(case, impl, device, dtype)
    if impl.make is None:
        return row
    try:
        with grad_mode(case):
            call = impl.make(inputs)
            row["implementation"] = getattr(call, "implementation", row["implementation"])
            step = make_step(call, case, inputs)
            start = time.perf_counter()
            step()  # the first call compiles (torch.compile) and initialises; not timed
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            row["first_call_s"] = time.perf_counter() - start
            # the first call was one warm-up call already
            timing = measure(step, device, replace(budget, warmup=max(0, budget.warmup - 1)))
    except Exception as exc:  # a failing implementation is a result, not a crash
        row.update(status=FAILED, reason=error_reason(exc))
        return row
    row.update(status=OK, reason=None, **timing.as_dict())
    return row


def run_case(
    case: Case,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    backends: list[str] | None = None,
    peers: list[str] | None = None,
    budget: Budget = FULL_BUDGET,
    roofline: ReadRoofline | None = None,
    impls: list[Impl] | None = None,
    quick: bool = False,
    copy_roofline: CopyRoofline | None = None,
) -> list[dict]:
    """Every implementation of `case`, timed one after another on the same inputs.

    Forward cases of memory-bound ops (case.memory_bound) also get the GB/s of their compulsory
    reads against the read roofline and of their reads + writes against the copy roofline
    (add_bandwidth); model cases their throughput (add_throughput). `quick` leaves
    fast_s2s[reference] out of the default CPU backends, and the peers gru_peers.quick_left_out
    names.
    """
    device = torch.device(device)
    if impls is None:
        impls = build_impls(case, device, backends, peers, quick=quick)
    inputs = make_inputs(case, device, dtype)
    rows = [time_impl(case, impl, inputs, device, dtype, budget) for impl in impls]
    if case.mode == FORWARD and case.memory_bound and any(r["status"] == OK for r in rows):
        roofline = roofline or ReadRoofline(device, budget)
        copy_roofline = copy_roofline or CopyRoofline(device, budget)
        read_gbps, _ = roofline.measure(inputs.read_bytes, dtype)
        copy_gbps, _ = copy_roofline.measure(inputs.moved_bytes, dtype)
        add_bandwidth(rows, inputs.read_bytes, inputs.write_bytes, read_gbps, copy_gbps)
    add_throughput(rows, inputs)
    return rows


def add_bandwidth(
    rows: list[dict], read_bytes: int, write_bytes: int, read_roof: float, copy_roof: float
) -> list[dict]:
    """Sets the byte counts and rooflines on every row, and on rows that ran `gbps` (reads /
    median), `roofline_fraction` (of the read roofline), `copy_gbps` ((reads + writes) /
    median) and `copy_fraction` (of the copy roofline)."""
    for row in rows:
        row.update(read_bytes=read_bytes, write_bytes=write_bytes)
        row.update(roofline_gbps=read_roof, copy_roofline_gbps=copy_roof)
        if row["status"] == OK and row["median_us"]:
            seconds = row["median_us"] * 1e-6
            row["gbps"] = gbps(read_bytes, seconds)
            row["roofline_fraction"] = row["gbps"] / read_roof
            row["copy_gbps"] = gbps(read_bytes + write_bytes, seconds)
            row["copy_fraction"] = row["copy_gbps"] / copy_roof
    return rows


def add_throughput(rows: list[dict], inputs: Inputs) -> list[dict]:
    """For cases whose inputs say how much work one call does (inputs.extra["work"] and
    ["work_unit"]: model cases), sets `work`, `work_unit` and, on rows that ran, `throughput`
    (work per second of the median call); beam search also gets `hypothesis_tokens`."""
    work, unit = inputs.extra.get("work"), inputs.extra.get("work_unit")
    if not work or not unit:
        return rows
    for row in rows:
        row.update(work=work, work_unit=unit)
        row["hypothesis_tokens"] = inputs.extra.get("hypothesis_tokens")
        if row["status"] == OK and row["median_us"]:
            row["throughput"] = work / (row["median_us"] * 1e-6)
    return rows


def add_speedups(rows: list[dict]) -> list[dict]:
    """Sets `speedup_vs[peer] = peer median / fast_s2s median` on every fast_s2s row that ran,
    for every peer that ran on the same case (same case_id, device and dtype). Returns `rows`."""
    peers: dict[tuple, dict[str, float]] = {}
    for row in rows:
        if row["kind"] != FAST_S2S and row["status"] == OK:
            key = (row["case_id"], row["device"], row["dtype"])
            peers.setdefault(key, {})[row["impl"]] = row["median_us"]
    for row in rows:
        if row["kind"] == FAST_S2S and row["status"] == OK and row["median_us"]:
            key = (row["case_id"], row["device"], row["dtype"])
            row["speedup_vs"] = {
                peer: peer_us / row["median_us"] for peer, peer_us in peers.get(key, {}).items()
            }
    return rows
