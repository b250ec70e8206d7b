"""The CUDA side of `fast-s2s bench`, checked on the CPU: the CUDA case list and goals, the dtypes
per device, the plan (which backends and peers a GPU run times) built without touching CUDA, the
CUDA-event timing path (with fake events), the copy roofline (the same code on every device), the
fastest-backend summary and the goals, `--summarize`, and scripts/gpu_check.sh's `plan` step."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from rich.console import Console

pytest.importorskip("fast_s2s.ops", reason="fast_s2s.ops is not importable yet")

from fast_s2s import _extension, backends  # noqa: E402
from fast_s2s.benchmark import add_arguments, main, roofline, timing  # noqa: E402
from fast_s2s.benchmark import peers as peers_mod  # noqa: E402
from fast_s2s.benchmark.cases import (  # noqa: E402
    CASES,
    CUDA_CASES,
    FORWARD,
    FORWARD_BACKWARD,
    make_inputs,
    select_cases,
)
from fast_s2s.benchmark.plan import build_plan, parse_dtypes  # noqa: E402
from fast_s2s.benchmark.runner import base_row, make_step, run_case  # noqa: E402
from fast_s2s.benchmark.spec import COPY_FRACTION, SPEEDUP, Goal  # noqa: E402
from fast_s2s.benchmark.summary import (  # noqa: E402
    check_goals,
    fastest_backends,
    goal_dicts,
    preference_code,
    print_fastest,
)
from fast_s2s.benchmark.timing import Budget, Timing  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY_BUDGET = Budget(warmup=1, min_repeats=3, max_repeats=5, min_time_s=0.0)
KERNEL_OPS = ["dot_attention", "additive_attention", "gru_cell", "gru_layer"]
ALL_FOUR = frozenset(KERNEL_OPS)
L2_BYTES = 60 * 2**20  # the larger L2 of an H100 / H200


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def _bytes(case, itemsize: int) -> int:
    """Keys + values of an attention case, without allocating them."""
    d = case.shape
    return d["B"] * d["S"] * (d["D"] + d["Dv"]) * itemsize


@pytest.fixture
def cuda_kernels(monkeypatch):
    """Pretends the CUDA C++ kernels of all four ops were built (nothing runs them here)."""
    monkeypatch.setitem(backends.CPP_KERNELS, "cuda", ALL_FOUR)
    monkeypatch.setattr(_extension, "cuda_compiled", lambda: True)
    monkeypatch.setattr(_extension, "extension_loaded", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")


# ----------------------------------------------------------------------------- cases, dtypes


def _key(case):
    return (case.op, case.mode, tuple(sorted(case.shape.items())), case.lengths)


def test_cuda_targets_are_issue_4s_shapes_with_their_goals():
    targets = {_key(c): c for c in select_cases(KERNEL_OPS, "targets", "cuda")}
    attn = {"B": 64, "beam": 1, "T": 1, "D": 512, "Dv": 512}
    for op in ("dot_attention", "additive_attention"):
        decode = targets[(op, FORWARD, tuple(sorted({**attn, "S": 50}.items())), "full")]
        goals = {(g.metric, g.peer, g.at_least, g.dtypes) for g in decode.goals}
        assert (SPEEDUP, "composite", 2.0, ("bfloat16",)) in goals
        assert ((SPEEDUP, "sdpa", 1.0, ("bfloat16",)) in goals) == (op == "dot_attention")
        large = [c for c in targets.values() if c.op == op and c.label == "large"]
        assert len(large) == 1 and large[0].memory_bound and large[0].mode == FORWARD
        assert large[0].goals == (Goal(COPY_FRACTION, 0.8),)
        assert _bytes(large[0], 2) >= 4 * L2_BYTES  # streams from device memory in 16-bit
        assert _bytes(decode, 2) < L2_BYTES  # the decode step's keys and values fit in L2
    cells = [c for c in targets.values() if c.op == "gru_cell" and c.mode == FORWARD]
    assert sorted(c.dim("B") for c in cells) == [1, 16]
    for cell in cells:
        assert (cell.dim("H"), cell.dim("I")) == (1024, 1024) and cell.memory_bound
        assert cell.goals == (Goal(SPEEDUP, 2.0, "GRUCell"),)
    layer = targets[
        ("gru_layer", FORWARD, (("B", 16), ("H", 1024), ("I", 1024), ("T", 50)), "full")
    ]
    assert layer.goals == (Goal(SPEEDUP, 1.0, "GRU"),)
    for op in KERNEL_OPS:  # the training step of every op is a target too
        assert any(c.op == op and c.mode == FORWARD_BACKWARD for c in targets.values())


def test_cuda_case_list_is_consistent():
    full = select_cases(list(CUDA_CASES), "full", "cuda")
    assert len({c.id for c in full}) == len(full), "case ids must be unique"
    assert set(select_cases(list(CUDA_CASES), "targets", "cuda")) <= set(full)
    assert set(CUDA_CASES) == set(CASES)  # every op has CUDA cases
    for case in full:
        for goal in case.goals:
            assert case.mode == FORWARD and case.target, case.id
            if goal.metric == COPY_FRACTION:
                assert case.memory_bound, case.id


def test_cpu_cases_are_unchanged_and_device_strings_work():
    assert select_cases(list(CASES), "targets") == select_cases(list(CASES), "targets", "cpu")
    assert not any(c.goals for c in select_cases(list(CASES), "full", "cpu"))
    assert not any(c.label == "large" for c in select_cases(list(CASES), "full", "cpu"))
    cuda0 = select_cases(KERNEL_OPS, "targets", "cuda:0")
    assert cuda0 == select_cases(KERNEL_OPS, "targets", torch.device("cuda"))
    assert select_cases(KERNEL_OPS, "tiny", "cuda") == select_cases(KERNEL_OPS, "tiny", "cpu")


def test_dtypes_per_device():
    assert parse_dtypes(None, "cuda") == ["float32", "float16", "bfloat16"]
    assert parse_dtypes([], "cpu") == ["float32"]
    assert parse_dtypes(["bfloat16", "float16", "bfloat16"], "cuda") == ["bfloat16", "float16"]
    with pytest.raises(ValueError, match="float16"):
        parse_dtypes(["float16"], "cpu")
    with pytest.raises(ValueError, match="int8"):
        parse_dtypes(["int8"], "cuda")


def test_main_rejects_float16_on_cpu(tmp_path, capsys):
    assert main(_parse(["--dtype", "float16", "--json", str(tmp_path / "x.json")])) == 2
    assert "float16" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


# ----------------------------------------------------------------------------- the plan


def _plan_impls(plan: dict, case_id: str) -> dict[str, dict]:
    (case,) = [c for c in plan["cases"] if c["case_id"] == case_id]
    return {i["impl"]: i for i in case["implementations"]}


PEERS_PER_OP = {
    "dot_attention": {"reference", "composite", "sdpa", "compile"},
    "additive_attention": {"reference", "composite", "compile"},
    "gru_cell": {"reference", "GRUCell", "compile"},
    "gru_layer": {"reference", "GRU", "compile"},
}


@pytest.mark.parametrize("quick", [True, False])
def test_cuda_plan_times_every_backend_and_peer(cuda_kernels, quick):
    shapes = "targets"
    plan = build_plan(KERNEL_OPS, "cuda", ["bfloat16"], shapes, quick=quick)
    assert plan["device"] == "cuda" and plan["device_copy_bytes"] >= 16 * L2_BYTES
    assert [c["case_id"] for c in plan["cases"]] == [
        c.id for c in select_cases(KERNEL_OPS, shapes, "cuda")
    ]
    for case in plan["cases"]:
        impls = _plan_impls(plan, case["case_id"])
        timed = {name for name, i in impls.items() if i["timed"]}
        # reference, cpp and triton, each labelled with what runs; quick or not on CUDA
        for backend in ("reference", "cpp", "triton"):
            assert f"fast_s2s[{backend}]" in timed, (case["case_id"], backend)
        assert f"fast_s2s[auto->{backends.resolve_backend(case['op'], 'auto', 'cuda')}]" in timed
        assert impls["fast_s2s[cpp]"]["implementation"] == "CUDA C++ (fast_s2s._C)"
        assert impls["fast_s2s[triton]"]["implementation"] == "Triton (fast_s2s.kernels)"
        peers = PEERS_PER_OP[case["op"]]
        if quick and case["op"] == "gru_layer" and case["mode"] == FORWARD_BACKWARD:
            peers = peers - {"compile"}  # --quick's documented exception
        assert {n for n in timed if not n.startswith("fast_s2s")} == peers, case["case_id"]
        bandwidth = case["mode"] == FORWARD and case["memory_bound"]
        assert bool(case["rooflines"]) == bandwidth


def test_cuda_plan_without_cuda_kernels_says_why(monkeypatch):
    monkeypatch.setitem(backends.CPP_KERNELS, "cuda", frozenset())
    monkeypatch.setattr(_extension, "cuda_compiled", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    plan = build_plan(["gru_cell"], "cuda", ["float32"], "targets", quick=True)
    cpp = _plan_impls(plan, plan["cases"][0]["case_id"])["fast_s2s[cpp]"]
    assert not cpp["timed"] and "no compiled cuda kernel for gru_cell" in cpp["reason"]


def test_triton_interpreter_is_never_timed_on_cuda(cuda_kernels, monkeypatch):
    chosen, _ = peers_mod.default_backends("dot_attention", "cuda", quick=True)
    assert chosen == ["reference", "cpp", "triton", "auto"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    chosen, left_out = peers_mod.default_backends("dot_attention", "cuda", quick=True)
    assert "triton" not in chosen and "TRITON_INTERPRET=1" in left_out["triton"]
    chosen, left_out = peers_mod.default_backends("dot_attention", "cpu", quick=True)
    assert "reference" not in chosen and "--quick" in left_out["reference"]  # CPU unchanged


def test_gru_peer_says_whether_cudnn_runs_it(monkeypatch):
    from fast_s2s.benchmark import gru_peers

    monkeypatch.setattr(torch, "cudnn_is_acceptable", lambda x: x.dtype != torch.bfloat16)
    assert gru_peers.gru_implementation(torch.zeros(1)) == "torch.nn.GRU (cuDNN)"
    assert "own kernels" in gru_peers.gru_implementation(torch.zeros(1, dtype=torch.bfloat16))
    case = _tiny("gru_layer")
    inputs = make_inputs(case, "cpu", torch.float32)
    (impl,) = peers_mod.peer_impls("gru_layer", ["GRU"])
    assert not hasattr(impl.make(inputs), "implementation")  # CPU: nothing to say
    (row,) = run_case(case, "cpu", torch.float32, backends=[], peers=["GRU"], budget=TINY_BUDGET)
    assert row["implementation"] == "torch.nn.GRU"


def test_a_call_that_names_its_implementation_labels_its_row():
    case = _tiny("gru_cell")

    def make(inputs):
        def call():
            return inputs.args[1] + 1

        call.implementation = "torch.nn.GRU (cuDNN)"
        return call

    impl = peers_mod.Impl("GRU", peers_mod.PEER, make)
    (row,) = run_case(case, "cpu", torch.float32, impls=[impl], budget=TINY_BUDGET)
    assert row["status"] == "ok" and row["implementation"] == "torch.nn.GRU (cuDNN)"


def test_sdpa_peer_passes_4d_tensors(monkeypatch):
    """torch's fused SDPA kernels (flash, memory-efficient, cuDNN, CPU flash) take 4-D inputs
    only; a 3-D call would time the unfused math path."""
    import torch.nn.functional as F

    real, dims = F.scaled_dot_product_attention, []

    def spy(q, k, v, **kwargs):
        mask = kwargs.get("attn_mask")
        dims.append((q.dim(), k.dim(), v.dim(), None if mask is None else mask.dim()))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    case = next(c for c in select_cases(["dot_attention"], "tiny") if c.lengths == "ragged")
    inputs = make_inputs(case, "cpu", torch.float32)
    (impl,) = peers_mod.peer_impls("dot_attention", ["sdpa"])
    impl.make(inputs)()
    assert dims == [(4, 4, 4, 4)]


CUDA_PROBE = r"""
import json, sys
import torch

def boom(*args, **kwargs):
    raise AssertionError("CUDA was touched")

for name in ("_lazy_init", "init", "is_available", "device_count", "current_device",
             "get_device_properties", "synchronize", "set_device", "Event"):
    setattr(torch.cuda, name, boom)
torch._C._cuda_getDeviceCount = boom

import fast_s2s.cli, fast_s2s.benchmark
import fast_s2s.benchmark.cases, fast_s2s.benchmark.peers, fast_s2s.benchmark.report
import fast_s2s.benchmark.runner, fast_s2s.benchmark.summary, fast_s2s.benchmark.plan
import fast_s2s.benchmark.machine, fast_s2s.benchmark.roofline, fast_s2s.benchmark.timing
rc = fast_s2s.cli.main(["bench", "--device", "cuda", "--quick", "--plan", "--json", sys.argv[1]])
print("RC", rc, torch.cuda.is_initialized())
"""


def test_nothing_touches_cuda_at_import_or_when_planning_a_cuda_run(tmp_path):
    """Every torch.cuda entry point raises in this process; importing the harness and building
    the --device cuda plan must not call any of them."""
    path = tmp_path / "plan.json"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", CUDA_PROBE, str(path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RC 0 False" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    plan = json.loads(path.read_text())["plan"]
    assert plan["device"] == "cuda" and plan["dtypes"] == ["float32", "float16", "bfloat16"]
    assert {c["op"] for c in plan["cases"]} >= set(KERNEL_OPS)


# ----------------------------------------------------------------------------- timing, rooflines


class _FakeEvent:
    """torch.cuda.Event stand-in: each record() advances a clock by 0.25 ms."""

    clock_ms = 0.0

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t = None

    def record(self) -> None:
        _FakeEvent.clock_ms += 0.25
        self.t = _FakeEvent.clock_ms

    def synchronize(self) -> None:
        assert self.t is not None

    def elapsed_time(self, end: _FakeEvent) -> float:
        return end.t - self.t


def test_cuda_timing_path_uses_one_event_pair_per_call(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    calls = []
    budget = Budget(warmup=2, min_repeats=4, max_repeats=4, min_time_s=0.0)
    t = timing.measure(lambda: calls.append(1), "cuda", budget)
    assert len(calls) == 2 + 4 and t.repeats == 4
    assert t.median_us == pytest.approx(250.0)  # 0.25 ms between begin and end, in us
    assert synced == [torch.device("cuda")]  # after the warm-up, before timing


def test_copy_roofline_counts_bytes_read_and_written(monkeypatch):
    seen = []

    def fake_measure(fn, device, budget):
        seen.append(fn())  # the copy itself
        return Timing(median_us=2.0, q1_us=2.0, q3_us=2.0, min_us=2.0, repeats=25)

    monkeypatch.setattr(roofline, "measure", fake_measure)
    copy = roofline.CopyRoofline("cpu", TINY_BUDGET)
    value, _ = copy.measure(8000, torch.float32)  # 1000 floats each way
    assert value == pytest.approx(8000 / 2e-6 / 1e9)  # 4.0 GB/s
    assert seen[0].numel() == 1000 and seen[0].dtype == torch.float32
    assert copy.measure(8000, torch.float32)[0] == value and len(seen) == 1  # cached
    read = roofline.ReadRoofline("cpu", TINY_BUDGET)
    assert read.measure(8000, torch.float32)[0] == pytest.approx(8000 / 2e-6 / 1e9)
    device = roofline.device_copy_bandwidth("cpu", TINY_BUDGET, nbytes=4096)
    assert device == {"copy_gbps": pytest.approx(8192 / 2e-6 / 1e9), "copy_bytes": 4096,
                      "copy_median_us": 2.0}  # fmt: skip


def test_copy_roofline_really_copies_on_the_cpu():
    copy = roofline.CopyRoofline("cpu", TINY_BUDGET)
    value, t = copy.measure(1 << 16, torch.bfloat16)
    assert value > 0 and t.repeats >= 25  # the roofline takes at least 25 samples
    assert roofline.DEVICE_COPY_BYTES["cuda"] >= 1 << 30


def _tiny(op: str, mode: str = FORWARD):
    return next(c for c in select_cases([op], "tiny") if c.mode == mode)


def test_write_bytes_count_every_output():
    case = _tiny("dot_attention")
    d = case.shape
    inputs = make_inputs(case, "cpu", torch.float32)
    N = d["B"] * d["beam"]
    assert inputs.write_bytes == 4 * N * d["T"] * (d["Dv"] + d["S"])
    assert inputs.moved_bytes == inputs.read_bytes + inputs.write_bytes
    cell = make_inputs(_tiny("gru_cell"), "cpu", torch.bfloat16)
    assert cell.write_bytes == 2 * cell.args[1].numel()  # h'
    layer_case = _tiny("gru_layer")
    layer = make_inputs(layer_case, "cpu", torch.float32)
    T, B, H = (layer_case.dim(k) for k in ("T", "B", "H"))
    assert layer.write_bytes == 4 * (T * B * H + B * H)
    module_case = _tiny("gru")
    module = make_inputs(module_case, "cpu", torch.float32)
    L, dirs = module_case.dim("L"), module_case.dim("dirs")
    T, B, H = (module_case.dim(k) for k in ("T", "B", "H"))
    assert module.write_bytes == 4 * (T * B * dirs * H + L * dirs * B * H)


def test_memory_bound_rows_carry_copy_bandwidth():
    case = _tiny("dot_attention")
    rows = run_case(
        case, "cpu", torch.float32, backends=["auto"], peers=["composite"], budget=TINY_BUDGET
    )
    inputs = make_inputs(case, "cpu", torch.float32)
    for row in rows:
        assert row["status"] == "ok"
        assert (row["read_bytes"], row["write_bytes"]) == (inputs.read_bytes, inputs.write_bytes)
        seconds = row["median_us"] * 1e-6
        assert row["copy_gbps"] == pytest.approx(inputs.moved_bytes / seconds / 1e9)
        assert row["copy_fraction"] == pytest.approx(row["copy_gbps"] / row["copy_roofline_gbps"])
        assert row["gbps"] == pytest.approx(inputs.read_bytes / seconds / 1e9)
    assert rows[0]["implementation"].startswith(("C++", "fast_s2s.reference"))
    assert rows[1]["implementation"].startswith("bmm + softmax + bmm")


def test_sdpa_peer_gradients_match_the_reference():
    """The 4-D SDPA peer (one head) differentiates to the same gradients as the reference."""
    case = _tiny("dot_attention", FORWARD_BACKWARD)
    grads = {}
    for label in ("reference", "sdpa"):
        inputs = make_inputs(case, "cpu", torch.float64)
        (impl,) = peers_mod.peer_impls("dot_attention", [label])
        grads[label] = make_step(impl.make(inputs), case, inputs)()
    for got, want in zip(grads["sdpa"], grads["reference"], strict=True):
        torch.testing.assert_close(got, want)


# ----------------------------------------------------------------------------- summary, goals


def _row(op, case_id, dtype, impl, kind, backend, median, *, status="ok", target=True, goals=()):
    case = _tiny(op)
    kind_name = peers_mod.FAST_S2S if kind == "f" else peers_mod.PEER
    requested = backend
    concrete = backend
    if backend and backend.startswith("auto->"):
        requested, concrete = "auto", backend.removeprefix("auto->")
    row = base_row(
        case, peers_mod.Impl(impl, kind_name, None, requested, concrete), torch.device("cuda"),
        getattr(torch, dtype),
    )  # fmt: skip
    row.update(case_id=case_id, case=case_id, status=status, median_us=median, target=target)
    row["goals"] = goal_dicts(goals, dtype)
    if status != "ok":
        row.update(median_us=None, reason="it broke")
    return row


def _rows_for(op, times, dtype="bfloat16", case_id="c1", auto="reference"):
    rows = [
        _row(op, case_id, dtype, f"fast_s2s[{b}]", "f", b, t) for b, t in times.items()
    ]  # fmt: skip
    rows.append(_row(op, case_id, dtype, f"fast_s2s[auto->{auto}]", "f", f"auto->{auto}", 1.0))
    rows.append(_row(op, case_id, dtype, "composite", "p", None, 0.01))  # peers never win
    return rows


def test_fastest_backend_ranks_by_median_at_the_target_shapes():
    rows = [
        *_rows_for("dot_attention", {"reference": 40.0, "cpp": 12.0, "triton": 10.0}),
        *_rows_for("dot_attention", {"reference": 80.0, "cpp": 20.0, "triton": 30.0}, "float16"),
        *_rows_for(
            "dot_attention",
            {"reference": 8.0, "cpp": 9.0, "triton": 9.0},
            "float32",
            case_id="not-a-target",
        ),  # fmt: skip
    ]
    for row in rows:
        if row["case_id"] == "not-a-target":
            row["target"] = False
    summary = fastest_backends(rows)
    info = summary["ops"]["dot_attention"]
    assert [e["winner"] for e in info["cases"]] == ["triton", "cpp"]
    assert info["cases_timed"] == 2 and info["split"]
    assert info["wins"] == {"reference": 0, "cpp": 1, "triton": 1}
    assert info["geomean_slowdown"]["cpp"] == pytest.approx(math.sqrt(1.2 * 1.0))
    assert info["geomean_slowdown"]["triton"] == pytest.approx(math.sqrt(1.0 * 1.5))
    assert info["order"] == ["cpp", "triton", "reference"] and info["winner"] == "cpp"
    assert info["auto_now"] == ["reference"] and info["auto_agrees"] is False
    assert summary["dtypes"] == ["bfloat16", "float16", "float32"]
    assert summary["auto_preference"] == {"dot_attention": ["cpp", "triton", "reference"]}
    assert preference_code(summary) == ['AUTO_PREFERENCE["cuda"] = ("cpp", "triton", "reference")']


def test_fastest_backend_puts_a_backend_that_failed_somewhere_last():
    rows = [
        *_rows_for("gru_cell", {"cpp": 10.0, "triton": 5.0}, case_id="a"),
        *_rows_for("gru_cell", {"cpp": 10.0}, case_id="b"),
        _row("gru_cell", "b", "bfloat16", "fast_s2s[triton]", "f", "triton", None, status="failed"),
        *_rows_for("gru_layer", {"triton": 3.0, "reference": 9.0}, auto="triton"),
    ]
    summary = fastest_backends(rows)
    cell = summary["ops"]["gru_cell"]
    assert cell["order"] == ["cpp", "triton"] and cell["ran_in"] == {"cpp": 2, "triton": 1}
    assert cell["not_timed"] == {"triton": "it broke"}
    assert summary["auto_preference"]["gru_cell"] == ["cpp", "triton", "reference"]
    layer = summary["ops"]["gru_layer"]
    assert layer["order"] == ["triton", "reference"] and layer["auto_agrees"] is True
    assert summary["auto_preference_device"] is None  # the ops differ: one entry per op
    code = "\n".join(preference_code(summary))
    assert '"gru_cell": ("cpp", "triton", "reference")' in code
    assert '"gru_layer": ("triton", "reference")' in code
    console = Console(file=io.StringIO(), width=200)
    print_fastest(console, summary)
    out = console.file.getvalue()
    assert "gru_cell: cpp fastest" in out and "triton not timed everywhere: it broke" in out
    assert '"gru_layer": ("triton", "reference")' in out


def test_goals_are_checked_per_row_and_dtype():
    decode = (Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)), Goal(SPEEDUP, 1.0, "sdpa"))
    assert [g["peer"] for g in goal_dicts(decode, "float32")] == ["sdpa"]
    assert len(goal_dicts(decode, "bfloat16")) == 2
    rows = [
        _row("dot_attention", "d", "bfloat16", "fast_s2s[triton]", "f", "triton", 10.0,
             goals=decode),
        _row("dot_attention", "d", "bfloat16", "fast_s2s[reference]", "f", "reference", 10.0,
             goals=decode),  # the reference is not held to the goals
        _row("dot_attention", "l", "bfloat16", "fast_s2s[cpp]", "f", "cpp", 10.0,
             goals=(Goal(COPY_FRACTION, 0.8),)),
        _row("dot_attention", "l", "bfloat16", "fast_s2s[triton]", "f", "triton", None,
             status="failed", goals=(Goal(COPY_FRACTION, 0.8),)),
    ]  # fmt: skip
    rows[0]["speedup_vs"] = {"composite": 2.5, "sdpa": 0.9}
    rows[2]["copy_fraction"] = 0.85
    results = check_goals(rows)
    got = [(r["case_id"], r["impl"], r["goal"], r["value"], r["met"]) for r in results]
    assert got == [
        ("d", "fast_s2s[triton]", ">= 2.00x composite (bfloat16)", 2.5, True),
        ("d", "fast_s2s[triton]", ">= 1.00x sdpa", 0.9, False),
        ("l", "fast_s2s[cpp]", ">= 80% of copy bandwidth", 0.85, True),
        ("l", "fast_s2s[triton]", ">= 80% of copy bandwidth", None, None),
    ]
    with pytest.raises(ValueError):
        Goal(SPEEDUP, 2.0)  # a speedup goal names its peer
    with pytest.raises(ValueError):
        Goal("bandwidth", 0.8)


def test_cuda_rows_carry_their_goals_for_their_dtype():
    (case,) = [c for c in select_cases(["dot_attention"], "targets", "cuda") if c.label == "decode"]
    fast = peers_mod.Impl("fast_s2s[triton]", peers_mod.FAST_S2S, None, "triton", "triton")
    peer = peers_mod.Impl("composite", peers_mod.PEER, None)
    cuda = torch.device("cuda")
    assert len(base_row(case, fast, cuda, torch.bfloat16)["goals"]) == 2
    assert base_row(case, fast, cuda, torch.float32)["goals"] == []
    assert base_row(case, peer, cuda, torch.bfloat16)["goals"] == []


# ----------------------------------------------------------------------------- end to end (CPU)


def test_several_dtypes_then_summarize(tmp_path, capsys):
    """One run per dtype (as scripts/gpu_check.sh does on CUDA), then --summarize over both; and
    one run with both dtypes at once: the same summary shape."""
    common = ["--quick", "--shapes", "tiny", "--ops", "dot_attention,gru_cell", "--backends",
              "reference,cpp,auto", "--peers", "composite,GRUCell", "--min-time", "0"]  # fmt: skip
    files = []
    for dtype in ("float32", "bfloat16"):
        files.append(tmp_path / f"bench-{dtype}.json")
        assert main(_parse([*common, "--dtype", dtype, "--json", str(files[-1])])) == 0
        data = json.loads(files[-1].read_text())
        assert data["settings"]["dtypes"] == [dtype] and data["settings"]["complete"] is True
        assert data["machine"]["copy_gbps"] > 0 and data["machine"]["copy_bytes"] == 1 << 20
        assert set(data["fastest_backends"]["ops"]) == {"dot_attention", "gru_cell"}
    out = capsys.readouterr().out
    assert "fastest backend per op" in out and "% copy" in out
    assert "suggested fast_s2s/backends.py AUTO_PREFERENCE" in out

    summary_path = tmp_path / "summary.json"
    args = _parse(["--summarize", *map(str, files), "--json", str(summary_path)])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "summary of 2 file(s)" in out and str(summary_path) in out
    summary = json.loads(summary_path.read_text())
    fastest = summary["fastest_backends"]
    assert fastest["dtypes"] == ["bfloat16", "float32"] and fastest["device"] == ["cpu"]
    for op in ("dot_attention", "gru_cell"):
        info = fastest["ops"][op]
        targets = [c for c in select_cases([op], "tiny") if c.target]
        assert info["cases_timed"] == 2 * len(targets)  # every target case in both dtypes
        assert set(info["order"]) == {"reference", "cpp"}
        assert info["auto_now"] == [backends.resolve_backend(op, "auto", "cpu")]
    assert len(summary["results"]) == sum(len(json.loads(f.read_text())["results"]) for f in files)

    both = tmp_path / "both.json"
    assert main(_parse([*common, "--dtype", "float32,bfloat16", "--json", str(both)])) == 0
    rows = json.loads(both.read_text())["results"]
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    for row in rows:  # speedups compare rows of the same dtype only
        if row["kind"] == "fast_s2s" and row["status"] == "ok":
            assert row["speedup_vs"], row["case_id"]


def test_results_so_far_survive_a_crash(tmp_path, monkeypatch):
    """The JSON is rewritten after every case, so a kernel that takes the process down (an
    illegal memory access, say) leaves what ran before it."""
    from fast_s2s.benchmark import runner

    real, calls = runner.run_case, []

    def crash_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("the process died")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "run_case", crash_on_second)
    path = tmp_path / "bench.json"
    args = _parse(
        ["--quick", "--shapes", "tiny", "--ops", "gru_cell", "--backends", "auto", "--peers",
         "GRUCell", "--min-time", "0", "--json", str(path)]
    )  # fmt: skip
    with pytest.raises(SystemExit):
        main(args)
    data = json.loads(path.read_text())
    assert data["settings"]["complete"] is False
    first = select_cases(["gru_cell"], "tiny")[0].id
    assert {r["case_id"] for r in data["results"]} == {first}
    assert data["results"][0]["speedup_vs"]  # speedups and the summary are there too
    assert {"fastest_backends", "goals"} <= set(data)


def test_summarize_refuses_a_file_that_is_not_a_bench_result(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"plan": {}}')
    assert main(_parse(["--summarize", str(bad), "--json", str(tmp_path / "s.json")])) == 2
    assert "not a fast-s2s bench JSON file" in capsys.readouterr().err


def test_gpu_check_plan_step_runs_the_bench_command_without_a_gpu():
    """scripts/gpu_check.sh's bench options parse and plan here (the plan step runs the same
    command as the bench step, plus --plan); the GPU steps refuse to start without a GPU."""
    script = ROOT / "scripts" / "gpu_check.sh"
    env = {**os.environ, "PYTHON": sys.executable, "FAST_S2S_BENCH_DTYPES": "bfloat16"}
    proc = subprocess.run(
        ["bash", str(script), "plan"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "fast-s2s bench plan: cuda, dtypes bfloat16, shapes targets (quick)" in proc.stdout
    assert "N64-T1-S2048-D512" in proc.stdout
    bad = subprocess.run(["bash", str(script), "nope"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown step" in bad.stderr
    if not torch.cuda.is_available():
        proc = subprocess.run(
            ["bash", str(script), "verify"], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 2 and "no GPU visible" in proc.stderr
