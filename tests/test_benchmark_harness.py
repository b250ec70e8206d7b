"""The benchmark harness (fast_s2s.benchmark): timing, rows and labels, speedups, JSON, and an end
to end `fast-s2s bench` run on toy shapes. Fast: tiny shapes, short timing budgets."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import torch
from rich.console import Console

pytest.importorskip("fast_s2s.ops", reason="fast_s2s.ops is not importable yet")

from fast_s2s.backends import resolve_backend  # noqa: E402
from fast_s2s.benchmark import add_arguments, main  # noqa: E402
from fast_s2s.benchmark import peers as peers_mod  # noqa: E402
from fast_s2s.benchmark.cases import (  # noqa: E402
    CASES,
    DECODE,
    FORWARD,
    FORWARD_BACKWARD,
    TRAIN_STEP,
    select_cases,
)
from fast_s2s.benchmark.cases import make_inputs as make_case_inputs  # noqa: E402
from fast_s2s.benchmark.report import build_payload, print_results, write_json  # noqa: E402
from fast_s2s.benchmark.runner import add_speedups, base_row, run_case  # noqa: E402
from fast_s2s.benchmark.timing import Budget, measure, summarize  # noqa: E402

TINY_BUDGET = Budget(warmup=1, min_repeats=3, max_repeats=5, min_time_s=0.0)
THREADS = torch.get_num_threads()
CPU = torch.device("cpu")
OPS = ["dot_attention", "additive_attention"]
GRU_OPS = ["gru_cell", "gru_layer", "gru"]


def _tiny_case(op: str, mode: str = FORWARD, lengths: str | None = None):
    for case in select_cases([op], "tiny"):
        if case.mode == mode and (lengths is None or case.lengths == lengths):
            return case
    raise AssertionError(f"no tiny {op} {mode} case")


# ----------------------------------------------------------------------------- timing


def test_measure_returns_positive_median_within_budget():
    timing = measure(lambda: torch.ones(64).sum(), "cpu", TINY_BUDGET)
    assert timing.median_us > 0
    assert 3 <= timing.repeats <= 5
    assert timing.min_us <= timing.q1_us <= timing.median_us <= timing.q3_us
    assert timing.iqr_us == pytest.approx(timing.q3_us - timing.q1_us)


def test_measure_stops_at_max_repeats_and_honours_min_repeats():
    calls = []
    budget = Budget(warmup=2, min_repeats=4, max_repeats=7, min_time_s=3600.0)
    timing = measure(lambda: calls.append(1), "cpu", budget)
    assert timing.repeats == 7
    assert len(calls) == 2 + 7  # warm-up calls are made but not timed
    budget = Budget(warmup=0, min_repeats=4, max_repeats=100, min_time_s=0.0)
    assert measure(lambda: None, "cpu", budget).repeats == 4


def test_summarize_quartiles():
    t = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (t.median_us, t.q1_us, t.q3_us, t.min_us, t.iqr_us) == (3.0, 2.0, 4.0, 1.0, 2.0)
    with pytest.raises(ValueError):
        summarize([])


# ----------------------------------------------------------------------------- cases


def test_quick_cases_are_the_project_targets():
    shapes = {
        (c.op, c.mode, c.dim("B") * c.dim("beam"), c.dim("T"), c.dim("S"), c.dim("D"), c.dim("Dv"))
        for c in select_cases(OPS, "targets")
    }
    for op in OPS:
        assert (op, FORWARD, 64, 1, 50, 512, 512) in shapes
        assert (op, FORWARD_BACKWARD, 64, 30, 30, 512, 512) in shapes
    full = select_cases(OPS, "full")
    assert len({c.id for c in full}) == len(full), "case ids must be unique"
    assert any(c.dim("beam") == 5 and c.dim("B") == 16 for c in full)
    assert any(c.lengths == "ragged" for c in full)
    with pytest.raises(ValueError, match="lstm_cell"):
        select_cases(["lstm_cell"], "full")


def test_inputs_require_grad_only_for_backward_and_count_reads():
    fwd = make_case_inputs(_tiny_case("dot_attention"), "cpu", torch.float32)
    assert not any(t.requires_grad for t in fwd.args) and fwd.grad_inputs == ()
    q, k, v = fwd.args
    assert fwd.read_bytes == 4 * (q.numel() + k.numel() + v.numel())
    bwd = make_case_inputs(_tiny_case("additive_attention", FORWARD_BACKWARD), "cpu", torch.float32)
    assert len(bwd.grad_inputs) == 4 and all(t.requires_grad for t in bwd.grad_inputs)


@pytest.mark.parametrize("op", OPS)
def test_peers_compute_the_same_context_as_the_reference(op):
    """A peer that computes something else would make its speedup meaningless."""
    from fast_s2s import reference

    case = _tiny_case(op, FORWARD, lengths="ragged")  # beam 2, ragged lengths, Dv != D
    inputs = make_case_inputs(case, "cpu", torch.float64)
    expected = getattr(reference, op)(*inputs.args, **inputs.kwargs)[0]
    impls = peers_mod.build_impls(case, "cpu", ["reference", "auto"], None)
    for impl in impls:
        if impl.label == "compile":
            continue  # compiling takes seconds; its numerics are torch's business
        got = impl.make(inputs)()
        torch.testing.assert_close(got, expected, msg=f"{impl.label} differs from the reference")


# ----------------------------------------------------------------------------- rows, labels


def test_run_case_rows_carry_the_right_labels_and_numbers():
    case = _tiny_case("dot_attention")
    rows = run_case(
        case,
        "cpu",
        torch.float32,
        backends=["reference", "auto"],
        peers=["reference", "composite", "sdpa"],
        budget=TINY_BUDGET,
    )
    auto = resolve_backend("dot_attention", "auto", "cpu")
    labels = [r["impl"] for r in rows]
    assert labels == [
        "fast_s2s[reference]",
        f"fast_s2s[auto->{auto}]",
        "reference",
        "composite",
        "sdpa",
    ]
    assert [r["kind"] for r in rows] == ["fast_s2s"] * 2 + ["peer"] * 3
    assert [r["backend"] for r in rows[:2]] == ["reference", auto]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["median_us"] > 0 and row["repeats"] >= 3
        assert row["case_id"] == case.id and row["dtype"] == "float32" and row["device"] == "cpu"
        assert row["gbps"] > 0 and row["roofline_gbps"] > 0
        assert row["roofline_fraction"] == pytest.approx(row["gbps"] / row["roofline_gbps"])


def test_backward_case_times_forward_and_backward_without_roofline():
    case = _tiny_case("additive_attention", FORWARD_BACKWARD)
    rows = run_case(
        case, "cpu", torch.float32, backends=["auto"], peers=["composite"], budget=TINY_BUDGET
    )
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert all(r["mode"] == FORWARD_BACKWARD and r["gbps"] is None for r in rows)


def test_unavailable_backend_is_a_skipped_row_with_the_reason(monkeypatch):
    import fast_s2s.backends as backends

    real = backends.why_unavailable
    monkeypatch.setattr(
        backends,
        "why_unavailable",
        lambda op, b, dev: "not built in this test" if b == "cpp" else real(op, b, dev),
    )
    rows = run_case(
        _tiny_case("dot_attention"), "cpu", torch.float32, backends=["cpp"], peers=[],
        budget=TINY_BUDGET,
    )  # fmt: skip
    assert rows[0]["impl"] == "fast_s2s[cpp]" and rows[0]["status"] == "skipped"
    assert "not built in this test" in rows[0]["reason"]


def test_failing_compile_is_a_failed_row_not_a_crash(monkeypatch):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("inductor exploded\nsecond line")

    monkeypatch.setattr(torch, "compile", broken_compile)
    rows = run_case(
        _tiny_case("dot_attention"), "cpu", torch.float32, backends=["reference"],
        peers=["compile"], budget=TINY_BUDGET,
    )  # fmt: skip
    compile_row = rows[-1]
    assert compile_row["impl"] == "compile" and compile_row["status"] == "failed"
    assert compile_row["reason"] == "RuntimeError: inductor exploded"
    assert rows[0]["status"] == "ok"
    add_speedups(rows)
    assert "compile" not in rows[0]["speedup_vs"]
    console = Console(file=io.StringIO(), width=250)
    print_results(console, rows, "t")
    out = console.file.getvalue()
    assert "fast_s2s[reference]" in out  # labels are not eaten as rich markup
    assert "failed compile on dot_attention" in out and "inductor exploded" in out


# ----------------------------------------------------------------------------- speedups


def _row(case_id: str, impl: str, kind: str, median_us: float | None, status: str = "ok"):
    case = _tiny_case("dot_attention")
    row = base_row(case, peers_mod.Impl(impl, kind, None), torch.device("cpu"), torch.float32)
    row.update(case_id=case_id, status=status, median_us=median_us)
    return row


def test_speedup_is_peer_time_over_fast_s2s_time():
    rows = [
        _row("a", "fast_s2s[cpp]", "fast_s2s", 10.0),
        _row("a", "reference", "peer", 20.0),  # 2x slower -> 2.0
        _row("a", "composite", "peer", 5.0),  # 2x faster -> 0.5
        _row("a", "sdpa", "peer", None, status="failed"),  # not a peer time
        _row("b", "reference", "peer", 1000.0),  # another case: not compared
        _row("b", "fast_s2s[cpp]", "fast_s2s", 100.0),
    ]
    add_speedups(rows)
    assert rows[0]["speedup_vs"] == {"reference": pytest.approx(2.0), "composite": 0.5}
    assert rows[5]["speedup_vs"] == {"reference": pytest.approx(10.0)}
    assert rows[1]["speedup_vs"] == {}  # peers get no ratios


# ----------------------------------------------------------------------------- JSON, CLI


def test_write_json_is_atomic_and_parseable(tmp_path):
    path = tmp_path / "sub" / "bench.json"
    rows = [_row("a", "fast_s2s[cpp]", "fast_s2s", 10.0)]
    write_json(path, build_payload({"cpu": "x"}, {"device": "cpu"}, rows))
    write_json(path, build_payload({"cpu": "y"}, {"device": "cpu"}, rows))  # replaces
    data = json.loads(path.read_text())
    assert set(data) == {"machine", "settings", "results", "fastest_backends", "goals"}
    assert data["machine"] == {"cpu": "y"} and data["results"][0]["impl"] == "fast_s2s[cpp]"
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temporary left


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_main_quick_tiny_end_to_end(tmp_path, capsys):
    path = tmp_path / "bench.json"
    plot = tmp_path / "bench.png"
    args = _parse(
        ["--quick", "--shapes", "tiny", "--json", str(path), "--plot", str(plot),
         "--ops", ",".join(OPS), "--peers", "reference,composite,sdpa", "--min-time", "0"]
    )  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fast_s2s[auto->" in out and "vs composite" in out and str(path) in out
    data = json.loads(path.read_text())
    machine = data["machine"]
    for key in ("cpu", "torch", "torch_threads", "cpu_capability", "device"):
        assert key in machine
    results = data["results"]
    assert {r["op"] for r in results} == set(OPS)
    assert {r["case_id"] for r in results} == {c.id for c in select_cases(OPS, "tiny")}
    ran = [r for r in results if r["status"] == "ok"]
    assert {r["impl"] for r in ran} >= {"reference", "composite", "sdpa"}
    for row in ran:
        if row["kind"] == "fast_s2s":
            assert row["speedup_vs"].keys() >= {"reference", "composite"}
            assert row["impl"] == f"fast_s2s[auto->{row['backend']}]" or row["impl"] == (
                f"fast_s2s[{row['backend']}]"
            )
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out and not plot.exists()
    else:
        assert plot.stat().st_size > 0


def test_default_ops_include_the_gru_ops():
    args = _parse([])
    assert args.ops is None  # main picks every op fast_s2s has
    assert {"GRUCell", "GRU"} <= set(args.peers)
    assert set(select_cases(GRU_OPS, "targets")) <= set(select_cases(list(CASES), "targets"))


def test_main_rejects_bad_arguments(tmp_path, capsys):
    json_path = str(tmp_path / "x.json")
    assert main(_parse(["--ops", "nope", "--json", json_path])) == 2
    assert main(_parse(["--peers", "nope", "--json", json_path])) == 2
    assert main(_parse(["--backends", "fastest", "--json", json_path])) == 2
    if not torch.cuda.is_available():
        assert main(_parse(["--device", "cuda", "--json", json_path])) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# ----------------------------------------------------------------------------- GRU


def test_gru_quick_cases_are_the_project_targets():
    got = {
        (c.op, c.mode, tuple(sorted(c.shape.items())), c.lengths)
        for c in select_cases(GRU_OPS, "targets")
    }
    cell_1, cell_64 = ((("B", b), ("H", 512), ("I", 512)) for b in (1, 64))
    seq = (("B", 16), ("H", 512), ("I", 512), ("T", 50))
    assert got == {
        ("gru_cell", FORWARD, cell_1, "full"),
        ("gru_cell", FORWARD, cell_64, "full"),
        ("gru_cell", FORWARD_BACKWARD, cell_64, "full"),
        ("gru_layer", FORWARD, seq, "full"),
        ("gru_layer", FORWARD_BACKWARD, seq, "full"),
        ("gru", FORWARD, tuple(sorted((*seq, ("L", 2), ("dirs", 2)))), "full"),
    }
    memory_bound = [c.id for c in select_cases(GRU_OPS, "full") if c.memory_bound]
    assert memory_bound == ["gru_cell-fwd-B1-I512-H512"]
    full = select_cases(GRU_OPS, "full")
    assert len({c.id for c in full}) == len(full), "case ids must be unique"
    assert {c.op for c in full if c.lengths == "ragged"} == {"gru_layer", "gru"}
    assert any(c.op == "gru" and c.mode == FORWARD_BACKWARD for c in full)
    assert "gru-fwd-T50-B16-I512-H512-L2-bidir" in {c.id for c in full}


def test_gru_inputs_share_parameters_and_take_every_gradient():
    cell = make_case_inputs(_tiny_case("gru_cell", FORWARD_BACKWARD), "cpu", torch.float32)
    assert len(cell.grad_inputs) == 6  # x, h, w_ih, w_hh, b_ih, b_hh
    assert all(t.requires_grad for t in cell.grad_inputs)
    assert all(isinstance(w, torch.nn.Parameter) for w in cell.args[2:])
    fwd = make_case_inputs(_tiny_case("gru_cell"), "cpu", torch.float32)
    assert fwd.grad_inputs == () and not any(t.requires_grad for t in fwd.args)
    assert fwd.read_bytes == 4 * sum(t.numel() for t in fwd.args)  # weights included
    module = make_case_inputs(_tiny_case("gru", FORWARD_BACKWARD), "cpu", torch.float32)
    names = list(module.extra["params"])
    assert names == list(torch.nn.GRU(6, 5, num_layers=2, bidirectional=True).state_dict())
    assert len(module.grad_inputs) == 2 + 16


@pytest.mark.parametrize("op", GRU_OPS)
def test_gru_peers_compute_the_same_output_as_the_reference(op):
    """torch.nn.GRUCell / GRU on the case's weights, fast_s2s.nn.GRU and the ops agree; with
    lengths the GRU peer returns the packed output's data."""
    from torch.nn.utils.rnn import pack_padded_sequence

    for case in select_cases([op], "tiny"):
        inputs = make_case_inputs(case, "cpu", torch.float64)
        impls = peers_mod.build_impls(case, "cpu", ["reference", "auto"], None)
        expected = impls[0].make(inputs)()  # fast_s2s[reference]
        assert impls[0].label == "fast_s2s[reference]"
        lengths = inputs.kwargs.get("lengths")
        for impl in impls[1:]:
            if impl.label == "compile":
                continue  # compiling takes seconds; its numerics are torch's business
            with torch.no_grad():
                got = impl.make(inputs)()
            want = expected
            if impl.label == "GRU" and lengths is not None:
                want = pack_padded_sequence(expected, lengths, enforce_sorted=False).data
            torch.testing.assert_close(got, want.detach(), msg=f"{case.id}: {impl.label}")


def test_gru_module_backends_follow_gru_layer():
    impl = peers_mod.fast_s2s_impl("gru", "auto", "cpu")
    assert impl.backend == resolve_backend("gru_layer", "auto", "cpu")
    assert impl.label == f"fast_s2s[auto->{impl.backend}]"
    chosen, _ = peers_mod.default_backends("gru", "cpu")
    assert chosen[-1] == "auto" and "reference" in chosen


@pytest.mark.parametrize(
    ("op", "peer"), [("gru_cell", "GRUCell"), ("gru_layer", "GRU"), ("gru", "GRU")]
)
@pytest.mark.parametrize("mode", [FORWARD, FORWARD_BACKWARD])
def test_gru_rows_carry_the_right_labels_and_numbers(op, peer, mode):
    case = _tiny_case(op, mode)
    peers = ["reference", peer] if op != "gru" else [peer]
    rows = run_case(
        case, "cpu", torch.float32, backends=["reference", "auto"], peers=peers,
        budget=TINY_BUDGET,
    )  # fmt: skip
    add_speedups(rows)
    auto = resolve_backend("gru_layer" if op == "gru" else op, "auto", "cpu")
    assert [r["impl"] for r in rows] == ["fast_s2s[reference]", f"fast_s2s[auto->{auto}]", *peers]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["median_us"] > 0 and row["repeats"] >= 3
        assert row["op"] == op and row["mode"] == mode and row["case_id"] == case.id
        if row["kind"] == "fast_s2s":
            assert set(row["speedup_vs"]) == set(peers)
        if case.memory_bound and mode == FORWARD:  # gru_cell at B=1
            assert row["gbps"] > 0 and row["roofline_gbps"] > 0
        else:
            assert row["gbps"] is None and row["roofline_gbps"] is None


def test_quick_leaves_compile_out_of_gru_layer_backward_with_a_reason():
    case = _tiny_case("gru_layer", FORWARD_BACKWARD)
    quick = peers_mod.build_impls(case, "cpu", ["auto"], ["compile"], quick=True)
    assert [(i.label, i.make) for i in quick[1:]] == [("compile", None)]
    assert "--quick leaves it out" in quick[1].reason
    full = peers_mod.build_impls(case, "cpu", ["auto"], ["compile"])
    assert full[1].make is not None and full[1].reason is None
    fwd = peers_mod.build_impls(_tiny_case("gru_layer"), "cpu", ["auto"], ["compile"], quick=True)
    assert fwd[1].make is not None


def test_main_gru_tiny_end_to_end(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = _parse(
        ["--quick", "--shapes", "tiny", "--json", str(path), "--ops", ",".join(GRU_OPS),
         "--peers", "reference,GRUCell,GRU", "--min-time", "0"]
    )  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "vs GRUCell" in out and "vs GRU " in out and "fast_s2s[auto->" in out
    results = json.loads(path.read_text())["results"]
    assert {r["case_id"] for r in results} == {c.id for c in select_cases(GRU_OPS, "tiny")}
    ran = [r for r in results if r["status"] == "ok"]
    assert all(r["median_us"] > 0 for r in ran)
    expected_peers = {"gru_cell": {"reference", "GRUCell"}, "gru_layer": {"reference", "GRU"}}
    expected_peers["gru"] = {"GRU"}
    for row in ran:
        if row["kind"] == "fast_s2s":
            assert set(row["speedup_vs"]) == expected_peers[row["op"]], row["case_id"]
        else:
            assert row["impl"] in expected_peers[row["op"]]


def test_results_print_one_table_per_family():
    rows = [
        _row("a", "fast_s2s[cpp]", "fast_s2s", 10.0),
        _row("a", "composite", "peer", 20.0),
    ]
    gru = _row("b", "fast_s2s[cpp]", "fast_s2s", 10.0)
    gru_peer = _row("b", "GRUCell", "peer", 30.0)
    for row in (gru, gru_peer):
        row["op"] = "gru_cell"
    add_speedups(rows := [*rows, gru, gru_peer])
    console = Console(file=io.StringIO(), width=250)
    print_results(console, rows, "t")
    out = console.file.getvalue()
    attention, gru_table = out.split("t: GRU")
    assert "t: attention" in attention and "vs composite" in attention
    assert "vs GRUCell" not in attention
    assert "vs GRUCell" in gru_table and "vs composite" not in gru_table
    assert "3.00x" in gru_table


# ----------------------------------------------------------------------------- model


def _tiny_model_case(label: str, variant: str | None = None):
    for case in select_cases(["model"], "tiny"):
        if case.label == label and (variant is None or case.variant == variant):
            return case
    raise AssertionError(f"no tiny model case {label} {variant}")


def test_model_quick_cases_are_the_project_targets():
    """Greedy and beam 5 at batch 1 and 32 (source 25, max_len 30) and a batch-32 training step
    of both wirings, at the dates model's size."""
    got = {
        (c.mode, c.label, c.variant, c.dim("B"), c.shape.get("beam", 1))
        for c in select_cases(["model"], "targets")
    }
    assert got == {
        (DECODE, "greedy", "bahdanau", 1, 1),
        (DECODE, "greedy", "bahdanau", 32, 1),
        (DECODE, "beam5", "bahdanau", 1, 5),
        (DECODE, "beam5", "bahdanau", 32, 5),
        (TRAIN_STEP, "train", "bahdanau", 32, 1),
        (TRAIN_STEP, "train", "luong-general", 32, 1),
    }
    for case in select_cases(["model"], "full"):
        assert (case.dim("E"), case.dim("H")) == (64, 128) and not case.memory_bound
        if case.mode == DECODE:
            assert (case.dim("S"), case.dim("maxlen")) == (25, 30)
    full = select_cases(["model"], "full")
    assert len({c.id for c in full}) == len(full), "case ids must be unique"
    assert "model-decode-bahdanau-B32x5-S25-maxlen30-E64-H128-V54" in {c.id for c in full}
    assert "model-train-luong-general-B32-S30-T31-E64-H128-V54-ragged" in {c.id for c in full}
    assert "model" in CASES


def test_model_inputs_fix_the_decode_length_and_share_the_weights():
    from fast_s2s.benchmark.model_cases import EOS_BIAS

    case = _tiny_model_case("beam2")
    a = make_case_inputs(case, "cpu", torch.float32)
    b = make_case_inputs(case, "cpu", torch.float32)
    for name, tensor in a.extra["state_dict"].items():
        torch.testing.assert_close(tensor, b.extra["state_dict"][name])  # fixed seed
    eos = a.extra["config"].eos_id
    assert a.extra["state_dict"]["decoder.out.bias"][eos] == EOS_BIAS
    B, S, maxlen = case.dim("B"), case.dim("S"), case.dim("maxlen")
    assert a.extra["src"].shape == (B, S) and a.extra["src_lengths"].tolist() == [S] * B
    assert (a.extra["work"], a.extra["work_unit"]) == (B * (maxlen + 1), "token")
    assert a.extra["hypothesis_tokens"] == B * case.dim("beam") * (maxlen + 1)
    train = make_case_inputs(_tiny_model_case("train", "bahdanau"), "cpu", torch.float32)
    lengths = train.extra["src_lengths"]
    assert int(lengths.max()) == train.extra["src"].shape[1] and int(lengths.min()) >= 1
    assert train.extra["tgt_in"].shape == train.extra["tgt_out"].shape
    assert (train.extra["work"], train.extra["work_unit"]) == (1, "step")


def test_model_backends_leave_reference_out_as_the_peer():
    chosen, left_out = peers_mod.default_backends("model", "cpu")
    assert chosen[-1] == "auto" and "reference" not in chosen
    assert "reference peer" in left_out["reference"]
    impl = peers_mod.fast_s2s_impl("model", "auto", "cpu")
    concrete = {resolve_backend(op, "auto", "cpu") for op in ("gru_cell", "dot_attention")}
    assert impl.backend in concrete and impl.label == f"fast_s2s[auto->{impl.backend}]"
    assert [p.label for p in peers_mod.peer_impls("model")] == ["reference"]


@pytest.mark.parametrize("label", ["greedy", "beam2"])
def test_model_decode_is_the_same_on_every_backend_and_runs_max_len_steps(label):
    case = _tiny_model_case(label)
    inputs = make_case_inputs(case, "cpu", torch.float64)
    impls = peers_mod.build_impls(case, "cpu", ["auto"], ["reference"])
    decoded = [impl.make(inputs)() for impl in impls]
    for hyps in decoded:
        assert len(hyps) == case.dim("B")
        assert all(len(h.tokens) == case.dim("maxlen") for h in hyps)
    assert [h.tokens for h in decoded[0]] == [h.tokens for h in decoded[1]]


@pytest.mark.parametrize("variant", ["bahdanau", "luong-general"])
def test_model_train_step_starts_from_the_same_loss_on_every_backend(variant):
    case = _tiny_model_case("train", variant)
    inputs = make_case_inputs(case, "cpu", torch.float64)
    impls = peers_mod.build_impls(case, "cpu", ["auto"], ["reference"])
    steps = [impl.make(inputs) for impl in impls]
    first = [step() for step in steps]
    torch.testing.assert_close(first[0], first[1])
    second = [step() for step in steps]  # Adam moved the weights: the loss changes
    assert all(float(s) != float(f) for s, f in zip(second, first, strict=True))


@pytest.mark.parametrize("label", ["greedy", "beam2", "train"])
def test_model_rows_carry_the_right_labels_and_throughput(label):
    case = _tiny_model_case(label)
    rows = run_case(
        case, "cpu", torch.float32, backends=["auto"], peers=["reference"], budget=TINY_BUDGET
    )
    add_speedups(rows)
    auto = peers_mod.fast_s2s_impl("model", "auto", "cpu").backend
    assert [r["impl"] for r in rows] == [f"fast_s2s[auto->{auto}]", "reference"]
    assert [r["kind"] for r in rows] == ["fast_s2s", "peer"]
    unit = "step" if case.mode == TRAIN_STEP else "token"
    for row in rows:
        assert row["status"] == "ok", row
        assert row["op"] == "model" and row["mode"] == case.mode and row["case_id"] == case.id
        assert row["variant"] == case.variant and row["threads"] == torch.get_num_threads()
        assert row["median_us"] > 0 and row["repeats"] >= 3
        assert row["work_unit"] == unit and row["work"] > 0
        assert row["throughput"] == pytest.approx(row["work"] / (row["median_us"] * 1e-6))
        assert row["gbps"] is None and row["roofline_gbps"] is None
    fast, ref = rows
    assert fast["speedup_vs"]["reference"] == pytest.approx(
        fast["throughput"] / ref["throughput"]
    )  # the time ratio is the speed ratio
    beam_rows = case.shape.get("beam", 1) * case.dim("B")
    expected = beam_rows * (case.dim("maxlen") + 1) if label == "beam2" else None
    assert fast["hypothesis_tokens"] == ref["hypothesis_tokens"] == expected


def test_model_decode_that_ends_early_is_a_failed_row(monkeypatch):
    from fast_s2s.benchmark import model_cases

    monkeypatch.setattr(model_cases, "EOS_BIAS", 1e4)  # eos always wins: 0 tokens
    rows = run_case(
        _tiny_model_case("greedy"), "cpu", torch.float32, backends=["auto"],
        peers=["reference"], budget=TINY_BUDGET,
    )  # fmt: skip
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "not max_len=4" in rows[0]["reason"] and rows[0]["throughput"] is None


def test_main_model_tiny_end_to_end(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = _parse(
        ["--quick", "--shapes", "tiny", "--json", str(path), "--ops", "model", "--threads", "1",
         "--min-time", "0"]
    )  # fmt: skip
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(THREADS)
    out = capsys.readouterr().out
    assert "torch threads 1" in out and "tokens/s" in out and "steps/s" in out
    tables = out.split("fast-s2s bench:", 1)[1]  # below the machine block (copy bandwidth)
    assert "vs reference" in out and "median ms" in out and "GB/s" not in tables
    data = json.loads(path.read_text())
    assert data["settings"]["threads"] == 1
    results = data["results"]
    assert {r["case_id"] for r in results} == {c.id for c in select_cases(["model"], "tiny")}
    ran = [r for r in results if r["status"] == "ok"]
    assert {r["impl"] for r in ran} >= {"reference"}
    for row in ran:
        assert row["threads"] == 1 and row["throughput"] > 0
        assert row["work_unit"] == ("step" if row["mode"] == TRAIN_STEP else "token")
        if row["kind"] == "fast_s2s":
            assert set(row["speedup_vs"]) == {"reference"} and row["speedup_vs"]["reference"] > 0
    skipped = {r["impl"]: r["reason"] for r in results if r["status"] == "skipped"}
    assert "reference peer" in skipped["fast_s2s[reference]"]


def test_model_family_prints_its_own_table():
    case = _tiny_model_case("greedy")
    fast = base_row(case, peers_mod.Impl("fast_s2s[cpp]", "fast_s2s", None), CPU, torch.float32)
    ref = base_row(case, peers_mod.Impl("reference", "peer", None), CPU, torch.float32)
    fast.update(status="ok", median_us=1000.0, iqr_us=10.0, work=31, work_unit="token")
    ref.update(status="ok", median_us=4000.0, iqr_us=10.0, work=31, work_unit="token")
    fast["throughput"], ref["throughput"] = 31_000.0, 7_750.0
    attention = _row("a", "fast_s2s[cpp]", "fast_s2s", 10.0)
    rows = add_speedups([attention, fast, ref])
    console = Console(file=io.StringIO(), width=250)
    print_results(console, rows, "t")
    out = console.file.getvalue()
    ops_part, model_part = out.split("t: model")
    assert "tokens/s" not in ops_part and "GB/s" in ops_part
    assert f"(torch threads {torch.get_num_threads()})" in model_part
    assert "31,000 tokens/s" in model_part and "4.00x" in model_part
    assert "GB/s" not in model_part.split("vs X =")[0]  # the model table has no GB/s column
    assert "tokens/s: B x (max_len + 1)" in model_part
