"""The CUDA side of `fast-s2s bench`, checked on the CPU: issue 4's case list and goals, the dtypes
per device, the plan a GPU run times (built without touching CUDA), the CUDA-event timing path
(with fake events), the rooflines' arithmetic, the fastest-backend summary and the goals,
a run over several dtypes, and scripts/gpu_check.sh's `plan` step."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rich.console import Console

pytest.importorskip("fast_s2s.ops", reason="fast_s2s.ops is not importable yet")

from fast_s2s import _extension, backends  # noqa: E402
from fast_s2s.benchmark import measure as roofline  # noqa: E402
from fast_s2s.benchmark import registry as reg  # noqa: E402
from fast_s2s.benchmark.family import COPY_FRACTION, FORWARD, FORWARD_BACKWARD, SPEEDUP, Goal  # noqa: E402
from fast_s2s.benchmark.measure import Budget, Timing  # noqa: E402
from fast_s2s.benchmark.registry import parse_dtypes  # noqa: E402
from fast_s2s.benchmark.report import (  # noqa: E402
    check_goals,
    fastest_backends,
    preference_code,
    print_fastest,
)
from fast_s2s.benchmark.rows import base_row, run_case  # noqa: E402
from fast_s2s.cli.bench import add_arguments, main  # noqa: E402
from fast_s2s.peers import torch_gru  # noqa: E402

TINY_BUDGET = Budget(warmup=1, min_repeats=3, max_repeats=5, min_time_s=0.0)
KERNEL_OPS = ["dot_attention", "additive_attention", "gru_cell", "gru_layer"]
L2_BYTES = 60 * 2**20  # the larger L2 of an H100 / H200


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def _tiny(op: str, mode: str = FORWARD):
    return next(c for c in reg.select_cases([op], "tiny") if c.mode == mode)


@pytest.fixture
def cuda_kernels(monkeypatch):
    """Pretends the CUDA C++ kernels of all four ops were built (nothing runs them here)."""
    monkeypatch.setitem(backends.CPP_KERNELS, "cuda", frozenset(KERNEL_OPS))
    monkeypatch.setattr(_extension, "cuda_compiled", lambda: True)
    monkeypatch.setattr(_extension, "extension_loaded", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")


# ----------------------------------------------------------------------------- cases, dtypes


def test_cuda_targets_are_issue_4s_shapes_with_their_goals():
    targets = reg.select_cases(KERNEL_OPS, "targets", "cuda")

    def kv(case):  # keys + values of an attention case, in bytes of a 16-bit dtype
        return 2 * case.shape["B"] * case.shape["S"] * (case.shape["D"] + case.shape["Dv"])

    for op in ("dot_attention", "additive_attention"):
        (decode,) = [c for c in targets if c.op == op and c.label == "decode"]
        assert (decode.mode, decode.shape["B"] * decode.shape["beam"], decode.shape["S"]) == (
            FORWARD,
            64,
            50,
        )
        goals = {(g.metric, g.peer, g.at_least, g.dtypes) for g in decode.goals}
        assert (SPEEDUP, "composite", 2.0, ("bfloat16",)) in goals
        assert ((SPEEDUP, "sdpa", 1.0, ("bfloat16",)) in goals) == (op == "dot_attention")
        (large,) = [c for c in targets if c.op == op and c.label == "large"]
        assert large.memory_bound and large.mode == FORWARD and large.shape["S"] == 2048
        assert large.goals == (Goal(COPY_FRACTION, 0.8),)
        assert kv(large) >= 4 * L2_BYTES > L2_BYTES > kv(decode)  # streams / fits in L2
    cells = [c for c in targets if c.op == "gru_cell" and c.mode == FORWARD]
    assert sorted(c.shape["B"] for c in cells) == [1, 16]
    for cell in cells:
        assert (cell.shape["H"], cell.shape["I"]) == (1024, 1024) and cell.memory_bound
        assert cell.goals == (Goal(SPEEDUP, 2.0, "GRUCell"),)
    (layer,) = [c for c in targets if c.op == "gru_layer" and c.mode == FORWARD]
    assert layer.shape == {"T": 50, "B": 16, "I": 1024, "H": 1024}
    assert layer.goals == (Goal(SPEEDUP, 1.0, "GRU"),)
    for op in KERNEL_OPS:  # the training step of every op is a target too
        assert any(c.op == op and c.mode == FORWARD_BACKWARD for c in targets)


def test_cuda_case_list_is_consistent_and_the_cpu_one_has_only_the_local_goals():
    full = reg.select_cases(list(reg.OPS), "full", "cuda")
    assert len({c.id for c in full}) == len(full), "case ids must be unique"
    assert set(reg.select_cases(list(reg.OPS), "targets", "cuda")) <= set(full)
    for case in full:
        for goal in case.goals:
            assert case.mode == FORWARD and case.target, case.id
            assert case.memory_bound or goal.metric != COPY_FRACTION, case.id
    cpu = reg.select_cases(list(reg.OPS), "full", "cpu")
    assert not any(c.label == "large" for c in cpu)
    # The CPU's only goals: local attention's at S = 2,000 (issue 16), on every device.
    assert {c.id for c in cpu if c.goals} == {"local_attention-fwd-N64-T1-S2000-D512-W10"}
    cuda0 = reg.select_cases(KERNEL_OPS, "targets", "cuda:0")
    assert cuda0 == reg.select_cases(KERNEL_OPS, "targets", torch.device("cuda")) != cpu


def test_dtypes_per_device():
    assert parse_dtypes(None, "cuda") == ["float32", "float16", "bfloat16"]
    assert parse_dtypes([], "cpu") == ["float32"]
    assert parse_dtypes(["bfloat16", "float16", "bfloat16"], "cuda") == ["bfloat16", "float16"]
    with pytest.raises(ValueError, match="float16"):
        parse_dtypes(["float16"], "cpu")
    with pytest.raises(ValueError, match="int8"):
        parse_dtypes(["int8"], "cuda")


# ----------------------------------------------------------------------------- the plan


PEERS_PER_OP = {
    "dot_attention": {"reference", "composite", "sdpa", "compile"},
    "additive_attention": {"reference", "composite", "compile"},
    "gru_cell": {"reference", "GRUCell", "compile"},
    "gru_layer": {"reference", "GRU", "compile"},
}


def _cuda_impls(op_or_case, quick: bool = True) -> dict[str, reg.Impl]:
    """A CUDA case's implementations by label, as `--device cuda --plan` lists them."""
    case = op_or_case
    if isinstance(case, str):
        case = reg.select_cases([case], "targets", "cuda")[0]
    return {i.label: i for i in reg.build_impls(case, "cuda", quick=quick)}


@pytest.mark.parametrize("quick", [True, False])
def test_cuda_plan_times_every_backend_and_peer(cuda_kernels, quick):
    assert roofline.DEVICE_COPY_BYTES["cuda"] >= 16 * L2_BYTES
    for case in reg.select_cases(KERNEL_OPS, "targets", "cuda"):
        impls = _cuda_impls(case, quick)
        timed = {name for name, i in impls.items() if i.make is not None}
        # reference, cpp and triton, quick or not on CUDA, each labelled with what runs
        assert {"fast_s2s[reference]", "fast_s2s[cpp]", "fast_s2s[triton]"} <= timed
        assert f"fast_s2s[auto->{backends.resolve_backend(case.op, 'auto', 'cuda')}]" in timed
        names = {k: reg.implementation_name(i, "cuda") for k, i in impls.items()}
        assert names["fast_s2s[cpp]"] == "CUDA C++ (fast_s2s._C)"
        assert names["fast_s2s[triton]"] == "Triton (fast_s2s.kernels)"
        peers = PEERS_PER_OP[case.op]
        if quick and case.op == "gru_layer" and case.mode == FORWARD_BACKWARD:
            peers = peers - {"compile"}  # --quick's documented exception
            assert "--quick leaves it out" in impls["compile"].reason
        assert {n for n in timed if not n.startswith("fast_s2s")} == peers, case.id


def test_cuda_plan_says_why_a_backend_is_not_timed(monkeypatch, capsys):
    monkeypatch.setitem(backends.CPP_KERNELS, "cuda", frozenset())
    monkeypatch.setattr(_extension, "cuda_compiled", lambda: True)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    impls = _cuda_impls("gru_cell")
    assert impls["fast_s2s[cpp]"].make is None
    assert "no compiled cuda kernel for gru_cell" in impls["fast_s2s[cpp]"].reason
    # Triton in its interpreter is never timed on CUDA: it would not be the GPU's figure
    assert impls["fast_s2s[triton]"].make is None
    assert "TRITON_INTERPRET=1" in impls["fast_s2s[triton]"].reason
    chosen, left_out = reg.default_backends("dot_attention", "cpu", quick=True)
    assert "reference" not in chosen and "--quick" in left_out["reference"]  # CPU only
    # --plan prints the same, case by case, without a GPU
    assert main(_parse(["--device", "cuda", "--quick", "--ops", "gru_cell", "--plan"])) == 0
    out = capsys.readouterr().out
    assert "gru_cell decode fwd B1-I1024-H1024: fast_s2s[reference]" in out
    assert "not timed fast_s2s[cpp]: no compiled cuda kernel for gru_cell" in out


def test_gpu_check_plan_step_runs_without_a_gpu():
    """scripts/gpu_check.sh's `plan` step: the one bench command of its `bench` step, all three
    dtypes, with --plan; it needs no GPU."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHON": sys.executable, "FAST_S2S_BENCH_ARGS": "--quick --ops gru_cell"}
    done = subprocess.run(
        ["bash", str(root / "scripts" / "gpu_check.sh"), "plan"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "fast-s2s bench plan: cuda, dtypes float32, float16, bfloat16" in done.stdout
    assert "gru_cell decode fwd B1-I1024-H1024:" in done.stdout


def test_gru_peer_row_says_whether_cudnn_ran_it(monkeypatch):
    monkeypatch.setattr(torch, "cudnn_is_acceptable", lambda x: x.dtype != torch.bfloat16)
    assert torch_gru.gru_implementation(torch.zeros(1)) == "torch.nn.GRU (cuDNN)"
    assert "own kernels" in torch_gru.gru_implementation(torch.zeros(1, dtype=torch.bfloat16))
    case = _tiny("gru_layer")
    (row,) = run_case(case, "cpu", torch.float32, backends=[], peers=["GRU"], budget=TINY_BUDGET)
    assert row["implementation"] == "torch.nn.GRU"  # CPU: nothing more to say

    def make(inputs):  # a call that names what ran labels its row
        def call():
            return inputs.args[1] + 1

        call.implementation = "torch.nn.GRU (cuDNN)"
        return call

    impl = reg.Impl("GRU", reg.PEER, make)
    (row,) = run_case(case, "cpu", torch.float32, impls=[impl], budget=TINY_BUDGET)
    assert row["status"] == "ok" and row["implementation"] == "torch.nn.GRU (cuDNN)"


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


def test_cuda_timing_uses_one_event_pair_per_call(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    calls = []
    budget = Budget(warmup=2, min_repeats=4, max_repeats=4, min_time_s=0.0)
    t = roofline.measure(lambda: calls.append(1), "cuda", budget)
    assert len(calls) == 2 + 4 and t.repeats == 4
    assert t.median_us == pytest.approx(250.0)  # 0.25 ms between begin and end, in us
    assert synced == [torch.device("cuda")]  # after the warm-up, before timing


def test_rooflines_count_the_bytes_read_and_written(monkeypatch):
    seen = []

    def fake_measure(fn, device, budget):
        seen.append((fn(), budget.min_repeats))
        return Timing(median_us=2.0, q1_us=2.0, q3_us=2.0, min_us=2.0, repeats=25)

    monkeypatch.setattr(roofline, "measure", fake_measure)
    copy = roofline.Roofline(roofline.COPY, "cpu", TINY_BUDGET)
    value, _ = copy.measure(8000, torch.float32)  # 1000 floats each way
    assert value == pytest.approx(8000 / 2e-6 / 1e9)  # 4.0 GB/s: read + written
    assert seen[0][0].numel() == 1000 and seen[0][0].dtype == torch.float32
    assert seen[0][1] >= 25  # streaming calls are cheap: many samples
    assert copy.measure(8000, torch.float32)[0] == value and len(seen) == 1  # measured once
    read = roofline.Roofline(roofline.READ, "cpu", TINY_BUDGET)
    assert read.measure(8000, torch.bfloat16)[0] == pytest.approx(8000 / 2e-6 / 1e9)
    assert seen[1][0].dtype == torch.bfloat16  # torch.sum over 4000 bfloat16 values
    device = roofline.device_copy_bandwidth("cpu", TINY_BUDGET, nbytes=4096)
    assert device == {"copy_gbps": pytest.approx(8192 / 2e-6 / 1e9), "copy_bytes": 4096,
                      "copy_median_us": 2.0}  # fmt: skip
    assert roofline.DEVICE_COPY_BYTES["cuda"] >= 16 * L2_BYTES
    monkeypatch.undo()
    value, t = roofline.Roofline(roofline.COPY, "cpu", TINY_BUDGET).measure(1 << 16, torch.bfloat16)
    assert value > 0 and t.repeats >= 25  # and it really copies


# ----------------------------------------------------------------------------- summary, goals


def _row(op, case_id, dtype, impl, backend, median, *, status="ok", target=True, goals=()):
    kind = reg.FAST_S2S if impl.startswith("fast_s2s") else reg.PEER
    requested, _, concrete = (backend or "").rpartition("->")
    impl_ = reg.Impl(impl, kind, None, requested or backend, concrete or None)
    case = _tiny(op)
    row = base_row(case, impl_, torch.device("cuda"), getattr(torch, dtype))
    row.update(case_id=case_id, case=case_id, status=status, median_us=median, target=target)
    row["goals"] = [g.as_dict() for g in goals if g.applies_to(dtype)]
    if status != "ok":
        row.update(median_us=None, reason="it broke")
    return row


def _rows_for(op, times, dtype="bfloat16", case_id="c1", auto="reference"):
    rows = [_row(op, case_id, dtype, f"fast_s2s[{b}]", b, t) for b, t in times.items()]
    rows.append(_row(op, case_id, dtype, f"fast_s2s[auto->{auto}]", f"auto->{auto}", 1.0))
    rows.append(_row(op, case_id, dtype, "composite", None, 0.01))  # peers never win
    return rows


def test_fastest_backend_ranks_by_median_at_the_target_shapes():
    rows = [
        *_rows_for("dot_attention", {"reference": 40.0, "cpp": 12.0, "triton": 10.0}),
        *_rows_for("dot_attention", {"reference": 80.0, "cpp": 20.0, "triton": 30.0}, "float16"),
        *_rows_for("dot_attention", {"reference": 8.0, "cpp": 9.0, "triton": 9.0}, "float32",
                   case_id="not-a-target"),
    ]  # fmt: skip
    for row in rows:
        row["target"] = row["case_id"] != "not-a-target"
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
        _row("gru_cell", "b", "bfloat16", "fast_s2s[triton]", "triton", None, status="failed"),
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
    large = (Goal(COPY_FRACTION, 0.8),)
    rows = [
        _row("dot_attention", "d", "bfloat16", "fast_s2s[triton]", "triton", 10.0, goals=decode),
        # the reference backend is not held to the goals
        _row("dot_attention", "d", "bfloat16", "fast_s2s[reference]", "reference", 10.0,
             goals=decode),
        _row("dot_attention", "d", "float32", "fast_s2s[cpp]", "cpp", 10.0, goals=decode),
        _row("dot_attention", "l", "bfloat16", "fast_s2s[cpp]", "cpp", 10.0, goals=large),
        _row("dot_attention", "l", "bfloat16", "fast_s2s[triton]", "triton", None,
             status="failed", goals=large),
        _row("dot_attention", "d", "bfloat16", "composite", None, 20.0, goals=decode),
    ]  # fmt: skip
    rows[0]["speedup_vs"] = {"composite": 2.5, "sdpa": 0.9}
    rows[2]["speedup_vs"] = {"composite": 1.5, "sdpa": 1.1}
    rows[3]["copy_fraction"] = 0.85
    got = [(r["case_id"], r["dtype"], r["impl"], r["goal"], r["value"], r["met"])
           for r in check_goals(rows)]  # fmt: skip
    assert got == [
        ("d", "bfloat16", "fast_s2s[triton]", ">= 2.00x composite (bfloat16)", 2.5, True),
        ("d", "bfloat16", "fast_s2s[triton]", ">= 1.00x sdpa", 0.9, False),
        ("d", "float32", "fast_s2s[cpp]", ">= 1.00x sdpa", 1.1, True),  # bfloat16's goal left out
        ("l", "bfloat16", "fast_s2s[cpp]", ">= 80% of copy bandwidth", 0.85, True),
        ("l", "bfloat16", "fast_s2s[triton]", ">= 80% of copy bandwidth", None, None),
    ]
    (case,) = [
        c for c in reg.select_cases(["dot_attention"], "targets", "cuda") if c.label == "decode"
    ]
    fast = reg.Impl("fast_s2s[triton]", reg.FAST_S2S, None, "triton", "triton")
    peer = reg.Impl("composite", reg.PEER, None)
    cuda = torch.device("cuda")
    assert len(base_row(case, fast, cuda, torch.bfloat16)["goals"]) == 2
    assert base_row(case, fast, cuda, torch.float32)["goals"] == []  # both are bfloat16's
    assert base_row(case, peer, cuda, torch.bfloat16)["goals"] == []  # peers are held to none
    with pytest.raises(ValueError):
        Goal(SPEEDUP, 2.0)  # a speedup goal names its peer
    with pytest.raises(ValueError):
        Goal("bandwidth", 0.8)


# ----------------------------------------------------------------------------- end to end (CPU)


def test_one_run_over_two_dtypes_ranks_the_backends_over_both(tmp_path, capsys):
    """One run over several dtypes (as scripts/gpu_check.sh does on CUDA): the fastest-backend
    summary in its JSON and output covers every target case in every dtype."""
    path = tmp_path / "bench.json"
    args = ["--quick", "--shapes", "tiny", "--ops", "dot_attention,gru_cell", "--backends",
            "reference,cpp,auto", "--peers", "composite,GRUCell", "--min-time", "0",
            "--dtype", "float32,bfloat16", "--json", str(path)]  # fmt: skip
    assert main(_parse(args)) == 0
    out = capsys.readouterr().out
    assert "fastest backend per op" in out and "% copy" in out
    assert "suggested fast_s2s/backends.py AUTO_PREFERENCE" in out
    data = json.loads(path.read_text())
    assert data["settings"]["dtypes"] == ["float32", "bfloat16"]
    assert {r["dtype"] for r in data["results"]} == {"float32", "bfloat16"}
    assert data["machine"]["copy_gbps"] > 0 and data["machine"]["copy_bytes"] == 1 << 20
    fastest = data["fastest_backends"]
    assert fastest["dtypes"] == ["bfloat16", "float32"] and fastest["device"] == ["cpu"]
    for op in ("dot_attention", "gru_cell"):
        info = fastest["ops"][op]
        targets = [c for c in reg.select_cases([op], "tiny") if c.target]
        assert info["cases_timed"] == 2 * len(targets)  # every target case in both dtypes
        assert set(info["order"]) == {"reference", "cpp"}
        assert info["auto_now"] == [backends.resolve_backend(op, "auto", "cpu")]
