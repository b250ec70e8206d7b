"""The one runner: result rows (flat JSON-ready dicts, one per implementation of a case) for
`fast-s2s bench` (run_case) and the pytest-benchmark suite in bench/ alike. `speedup_vs[peer]` =
peer median / fast_s2s median on the same case, device and dtype (above 1: fast_s2s is faster)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from fast_s2s.benchmark import family, measure, registry
from fast_s2s.benchmark.family import DECODE, FORWARD, FORWARD_BACKWARD, Case, Inputs, PeerSkipped
from fast_s2s.benchmark.measure import COPY, READ, Budget, Roofline, Timing
from fast_s2s.benchmark.registry import FAST_S2S, Impl, build_impls, implementation_name

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# The measured fields of a row, None (repeats 0, speedup_vs {}) until they are measured.
MEASURED_FIELDS = (
    "median_us", "iqr_us", "q1_us", "q3_us", "min_us", "repeats", "first_call_s",
    "read_bytes", "write_bytes", "gbps", "roofline_gbps", "roofline_fraction",
    "copy_gbps", "copy_roofline_gbps", "copy_fraction", "flops", "gflops", "sgemm_fraction",
    "work", "work_unit", "throughput", "hypothesis_tokens", "speedup_vs",
    "decode_loop", "us_per_token", "weight_bytes", "weight_read_us",
)  # fmt: skip
Scope = Callable[[], contextlib.AbstractContextManager]


def base_row(case: Case, impl: Impl, device: torch.device, dtype: torch.dtype) -> dict:
    """The row before timing: what was asked for, status "skipped", nothing measured. Only
    fast_s2s rows carry their case's goals for the dtype (peers are what goals compare with)."""
    dtype_name = str(dtype).removeprefix("torch.")
    goals = [g.as_dict() for g in case.goals if g.applies_to(dtype_name)]
    row = {
        "op": case.op, "case": case.name, "case_id": case.id, "label": case.label,
        "mode": case.mode, "shape": case.shape, "lengths": case.lengths,
        "variant": case.variant or None, "target": case.target,
        "goals": goals if impl.kind == FAST_S2S else [],
        "device": device.type, "dtype": dtype_name, "threads": torch.get_num_threads(),
        "impl": impl.label, "kind": impl.kind, "backend_requested": impl.backend_requested,
        "backend": impl.backend, "implementation": implementation_name(impl, device),
        "status": SKIPPED, "reason": impl.reason,
        **dict.fromkeys(MEASURED_FIELDS),
    }  # fmt: skip
    row.update(repeats=0, speedup_vs={})
    return row


def grad_mode(case: Case) -> contextlib.AbstractContextManager:
    """Forward and decode cases run without autograd (around the timing loop, not in the call)."""
    return torch.no_grad() if case.mode in (FORWARD, DECODE) else contextlib.nullcontext()


def make_step(call: Callable[[], object], case: Case, inputs: Inputs) -> Callable[[], object]:
    """One timed iteration: the call, in forward+backward followed by the gradients of the sum
    of its output (a model call already is a whole training step or decode)."""
    if case.mode != FORWARD_BACKWARD:
        return call
    wrt, grad = inputs.grad_inputs, torch.autograd.grad
    return lambda: grad(call().sum(), wrt, allow_unused=True)  # type: ignore[union-attr]


def error_reason(exc: BaseException) -> str:
    """The exception's type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()


def prepare(
    impl: Impl, case: Case, inputs: Inputs, device: torch.device, row: dict
) -> tuple[Callable[[], object], Scope]:
    """Builds the step of `impl` and runs it once, untimed (it compiles, initialises), recording
    what ran; returns the step and the scope its rounds run in (e.g. fast_s2s.frozen_weights)."""
    assert impl.make is not None
    call = impl.make(inputs)
    scope: Scope = getattr(call, "scope", None) or contextlib.nullcontext
    row["implementation"] = getattr(call, "implementation", row["implementation"])
    row["decode_loop"] = getattr(call, "decode_loop", None)
    step = make_step(call, case, inputs)
    start = time.perf_counter()
    with scope():
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row["first_call_s"] = time.perf_counter() - start
    return step, scope


def record(row: dict, timing: Timing) -> dict:
    row.update(status=OK, reason=None, **timing.as_dict())
    return row


def add_figures(
    rows: list[dict], case: Case, inputs: Inputs, dtype: torch.dtype,
    rooflines: dict[str, Roofline] | None = None, sgemm_gflops: float | None = None,
) -> list[dict]:  # fmt: skip
    """The figures derived from the medians, on every row of a case: byte counts, GB/s and
    roofline fractions (memory-bound forward cases; no fractions without rooflines, as in
    bench/), GFLOP/s and the sgemm fraction (flops > 0), the model's work, throughput and us per
    token, and the time to read a decoder's weights once (decode cases, with a read roofline)."""
    ran = [r for r in rows if r["status"] == OK and r["median_us"]]
    rooflines, extra = rooflines or {}, inputs.extra
    nbytes = extra.get("weight_bytes")
    if case.mode == DECODE and nbytes and READ in rooflines and ran:
        read_gbps, _ = rooflines[READ].measure(nbytes, dtype)  # type: ignore[arg-type]
        for row in rows:
            row.update(weight_bytes=nbytes, weight_read_us=nbytes / (read_gbps * 1e9) * 1e6)
    if family.reports_bandwidth(case) and (ran or not rooflines):
        read, moved = inputs.read_bytes, inputs.moved_bytes
        roofs = {k: rooflines[k].measure(n, dtype)[0] if k in rooflines else None
                 for k, n in ((READ, read), (COPY, moved))}  # fmt: skip
        for row in rows:
            row.update(read_bytes=read, write_bytes=inputs.write_bytes)
            row.update(roofline_gbps=roofs[READ], copy_roofline_gbps=roofs[COPY])
        for row in ran:
            seconds = row["median_us"] * 1e-6
            row.update(gbps=measure.gbps(read, seconds), copy_gbps=measure.gbps(moved, seconds))
            row["roofline_fraction"] = row["gbps"] / roofs[READ] if roofs[READ] else None
            row["copy_fraction"] = row["copy_gbps"] / roofs[COPY] if roofs[COPY] else None
    work, unit, flops = extra.get("work"), extra.get("work_unit"), inputs.flops
    for row in rows:
        row["flops"] = flops or None
        if work and unit:
            row.update(work=work, work_unit=unit, hypothesis_tokens=extra.get("hypothesis_tokens"))
    for row in ran:
        seconds = row["median_us"] * 1e-6
        if flops:
            row["gflops"] = flops / seconds / 1e9
            row["sgemm_fraction"] = row["gflops"] / sgemm_gflops if sgemm_gflops else None
        if work and unit:
            row["throughput"] = work / seconds  # type: ignore[operator]
            if unit == "token":
                row["us_per_token"] = row["median_us"] / work  # type: ignore[operator]
    return rows


def run_case(
    case: Case, device: torch.device | str, dtype: torch.dtype, *,
    backends: list[str] | None = None, peers: list[str] | None = None,
    budget: Budget = measure.FULL_BUDGET, rooflines: dict[str, Roofline] | None = None,
    impls: list[Impl] | None = None, quick: bool = False, sgemm_gflops: float | None = None,
) -> list[dict]:  # fmt: skip
    """A row per implementation of `case` (registry.build_impls unless `impls` is given), all
    timed together in alternating rounds on the same inputs, with their figures; a failure in
    set-up, compilation or a call is a "failed" row with the reason, never an exception.
    `rooflines` (READ and COPY), shared across cases, measure each traffic size once a run."""
    device = torch.device(device)
    impls = build_impls(case, device, backends, peers, quick=quick) if impls is None else impls
    inputs = registry.make_inputs(case, device, dtype)
    rows = [base_row(case, impl, device, dtype) for impl in impls]
    prepared: list[tuple[int, Callable[[], object], Scope]] = []
    with grad_mode(case):
        for i, impl in enumerate(impls):
            if impl.make is None:
                continue
            try:
                prepared.append((i, *prepare(impl, case, inputs, device, rows[i])))
            except PeerSkipped as exc:
                rows[i].update(status=SKIPPED, reason=str(exc))
            except Exception as exc:  # a failing implementation is a result, not a crash
                rows[i].update(status=FAILED, reason=error_reason(exc))
        once = replace(budget, warmup=max(0, budget.warmup - 1))  # the first call was one
        timings = measure.measure_interleaved([(f, s) for _, f, s in prepared], device, once)
    for (i, _, _), timing in zip(prepared, timings, strict=True):
        if isinstance(timing, Exception):
            rows[i].update(status=FAILED, reason=error_reason(timing))
        else:
            record(rows[i], timing)
    roofs = rooflines or {kind: Roofline(kind, device, budget) for kind in (READ, COPY)}
    return add_figures(rows, case, inputs, dtype, roofs, sgemm_gflops)


def add_speedups(rows: list[dict]) -> list[dict]:
    """`speedup_vs[peer]` on every fast_s2s row that ran, for every peer that ran on the same
    case, device and dtype."""
    peers: dict[tuple, dict[str, float]] = {}
    for row in rows:
        if row["kind"] != FAST_S2S and row["status"] == OK:
            key = row["case_id"], row["device"], row["dtype"]
            peers.setdefault(key, {})[row["impl"]] = row["median_us"]
    for row in rows:
        if row["kind"] == FAST_S2S and row["status"] == OK and row["median_us"]:
            times = peers.get((row["case_id"], row["device"], row["dtype"]), {})
            row["speedup_vs"] = {peer: t / row["median_us"] for peer, t in times.items()}
    return rows
