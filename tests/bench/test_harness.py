"""The figures of `fast-s2s bench` (fast_s2s.benchmark) on the CPU: medians, speedups the right
way round, bandwidths and throughput, the labels of which implementation ran, peers that compute
what the op computes, and the JSON file's fields. Tiny shapes and short budgets."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import pytest
import torch
from rich.console import Console

pytest.importorskip("fast_s2s.ops", reason="fast_s2s.ops is not importable yet")

from fast_s2s.backends import resolve_backend  # noqa: E402
from fast_s2s.benchmark import model_family  # noqa: E402
from fast_s2s.benchmark import registry as reg  # noqa: E402
from fast_s2s.benchmark.family import DECODE, FORWARD, FORWARD_BACKWARD, TRAIN_STEP  # noqa: E402
from fast_s2s.benchmark.measure import Budget, measure, measure_interleaved, summarize  # noqa: E402
from fast_s2s.benchmark.report import print_results  # noqa: E402
from fast_s2s.benchmark.rows import add_speedups, base_row, make_step, run_case  # noqa: E402
from fast_s2s.cli.bench import add_arguments, main  # noqa: E402

TINY_BUDGET = Budget(warmup=1, min_repeats=3, max_repeats=5, min_time_s=0.0)
CPU = torch.device("cpu")
ATTENTION = ["dot_attention", "additive_attention"]
GRU_OPS = ["gru_cell", "gru_layer", "gru"]
# The fields of every row of the JSON file, in order: what readers of the results rely on.
ROW_FIELDS = (
    "op", "case", "case_id", "label", "mode", "shape", "lengths", "variant", "target", "goals",
    "device", "dtype", "threads", "impl", "kind", "backend_requested", "backend",
    "implementation", "status", "reason", "median_us", "iqr_us", "q1_us", "q3_us", "min_us",
    "repeats", "first_call_s", "read_bytes", "write_bytes", "gbps", "roofline_gbps",
    "roofline_fraction", "copy_gbps", "copy_roofline_gbps", "copy_fraction", "flops", "gflops",
    "sgemm_fraction", "work", "work_unit", "throughput", "hypothesis_tokens", "speedup_vs",
    "decode_loop", "us_per_token", "weight_bytes", "weight_read_us",
)  # fmt: skip


def _tiny(op: str, mode: str = FORWARD, **attrs):
    for case in reg.select_cases([op], "tiny"):
        if case.mode == mode and all(getattr(case, k) == v for k, v in attrs.items()):
            return case
    raise AssertionError(f"no tiny {op} {mode} case with {attrs}")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def _row(case_id: str, impl: str, kind: str, median_us: float | None, op="dot_attention", **kw):
    row = base_row(_tiny(op), reg.Impl(impl, kind, None), CPU, torch.float32)
    row.update(case_id=case_id, status=kw.pop("status", "ok"), median_us=median_us, **kw)
    return row


# ----------------------------------------------------------------------------- timing


def test_measure_times_only_after_the_warmup_and_within_the_budget():
    calls = []
    budget = Budget(warmup=2, min_repeats=4, max_repeats=7, min_time_s=3600.0)
    t = measure(lambda: calls.append(1), "cpu", budget)
    assert t.repeats == 7 and len(calls) == 2 + 7  # warm-up calls are made but not timed
    assert measure(lambda: None, "cpu", Budget(0, 4, 100, 0.0)).repeats == 4
    t = measure(lambda: torch.ones(64).sum(), "cpu", TINY_BUDGET)
    assert 0 < t.min_us <= t.q1_us <= t.median_us <= t.q3_us
    assert t.iqr_us == pytest.approx(t.q3_us - t.q1_us)


def test_measure_interleaved_alternates_rounds_and_enters_each_scope_per_round():
    log = []

    @contextlib.contextmanager
    def scope(name):
        log.append(f"enter {name}")
        yield
        log.append(f"exit {name}")

    def call(name):
        return lambda: log.append(name)

    budget = Budget(warmup=2, min_repeats=6, max_repeats=6, min_time_s=3600.0)
    calls = [(call("a"), lambda: scope("a")), (call("b"), contextlib.nullcontext)]
    ta, tb = measure_interleaved(calls, "cpu", budget, rounds=3)
    assert ta.repeats == tb.repeats == 6  # 2 timed calls per round, pooled
    rounds = "".join(x[0] if len(x) == 1 else "[" if x.startswith("enter") else "]" for x in log)
    # round 1 warms up twice, later rounds once; each round of a runs inside its own scope
    assert rounds == "[aaaa]bbbb" + "[aaa]bbb" * 2


def test_measure_interleaved_drops_a_failing_call_and_returns_its_error():
    calls_made = []

    def flaky():
        calls_made.append(1)
        if len(calls_made) > 3:
            raise RuntimeError("broke in round 2")

    budget = Budget(warmup=0, min_repeats=3, max_repeats=3, min_time_s=3600.0)
    good, bad = measure_interleaved(
        [(lambda: None, contextlib.nullcontext), (flaky, contextlib.nullcontext)],
        "cpu", budget, rounds=3,
    )  # fmt: skip
    assert good.repeats == 3
    assert isinstance(bad, RuntimeError) and len(calls_made) == 4  # not called after failing


def test_summarize_takes_the_median_and_quartiles():
    t = summarize([5.0, 1.0, 3.0, 2.0, 100.0])  # one slow outlier: the median ignores it
    assert (t.median_us, t.q1_us, t.q3_us, t.min_us, t.iqr_us) == (3.0, 2.0, 5.0, 1.0, 3.0)
    with pytest.raises(ValueError):
        summarize([])


# ----------------------------------------------------------------------------- cases, inputs


def test_quick_cases_are_the_project_targets():
    def key(c):
        return (c.op, c.mode, tuple(sorted(c.shape.items())), c.lengths)

    got = {key(c) for c in reg.select_cases(list(reg.OPS), "targets")}
    attn = {"B": 64, "beam": 1, "D": 512, "Dv": 512}
    for op in ATTENTION:
        assert (op, FORWARD, tuple(sorted({**attn, "T": 1, "S": 50}.items())), "full") in got
        assert (
            op,
            FORWARD_BACKWARD,
            tuple(sorted({**attn, "T": 30, "S": 30}.items())),
            "full",
        ) in got
    cell = [(("B", b), ("H", 512), ("I", 512)) for b in (1, 64)]
    seq = (("B", 16), ("H", 512), ("I", 512), ("T", 50))
    module = tuple(sorted((*seq, ("L", 2), ("dirs", 2))))
    sentence = [(("B", 1), ("H", h), ("I", h), ("L", layers), ("T", 25), ("dirs", 2))
                for h, layers in ((64, 1), (256, 2))]  # fmt: skip
    assert {k for k in got if k[0] in GRU_OPS} == {
        ("gru_cell", FORWARD, cell[0], "full"),
        ("gru_cell", FORWARD, cell[1], "full"),
        ("gru_cell", FORWARD_BACKWARD, cell[1], "full"),
        ("gru_layer", FORWARD, seq, "full"),
        ("gru_layer", FORWARD_BACKWARD, seq, "full"),
        ("gru", FORWARD, module, "full"),
        ("gru", FORWARD, sentence[0], "full"),
        ("gru", FORWARD, sentence[1], "full"),
    }
    model = {
        (c.mode, c.label, c.variant, c.shape["B"], c.shape.get("beam", 1))
        for c in reg.select_cases(["model"], "targets")
    }
    assert model == {
        (DECODE, "greedy", "bahdanau", 1, 1),
        (DECODE, "greedy", "bahdanau", 32, 1),
        (DECODE, "beam5", "bahdanau", 1, 5),
        (DECODE, "beam5", "bahdanau", 32, 5),
        (TRAIN_STEP, "train", "bahdanau", 32, 1),
        (TRAIN_STEP, "train", "luong-general", 32, 1),
    }
    full = reg.select_cases(list(reg.OPS), "full")
    assert len({c.id for c in full}) == len(full), "case ids must be unique"
    ids = {c.id for c in full}
    assert {"gru-fwd-T50-B16-I512-H512-L2-bidir", "dot_attention-fwd-B16x5-T1-S50-D512",
            "model-decode-bahdanau-B32x5-S25-maxlen30-E64-H128-V54",
            "model-train-luong-general-B32-S30-T31-E64-H128-V54-ragged"} <= ids  # fmt: skip
    # GB/s only where the op streams its inputs: attention's forward cases, gru_cell at B=1
    bandwidth = {c.op for c in full if c.memory_bound}
    assert bandwidth == {*ATTENTION, "gru_cell"}
    assert [c.id for c in full if c.op == "gru_cell" and c.memory_bound] == [
        "gru_cell-fwd-B1-I512-H512",
        "gru_cell-fwd-frozen-B1-I512-H512",
    ]
    for case in reg.select_cases(["model"], "full"):
        assert (case.shape["E"], case.shape["H"]) == (64, 128)
        if case.mode == DECODE:
            assert (case.shape["S"], case.shape["maxlen"]) == (25, 30)


def test_inputs_count_reads_and_writes_and_take_every_gradient():
    fwd = reg.make_inputs(_tiny("dot_attention"), "cpu", torch.float32)
    assert not any(t.requires_grad for t in fwd.args) and fwd.grad_inputs == ()
    q, k, v = fwd.args
    d = _tiny("dot_attention").shape
    assert fwd.read_bytes == 4 * (q.numel() + k.numel() + v.numel())
    assert fwd.write_bytes == 4 * d["B"] * d["beam"] * d["T"] * (d["Dv"] + d["S"])
    assert fwd.moved_bytes == fwd.read_bytes + fwd.write_bytes
    bwd = reg.make_inputs(_tiny("additive_attention", FORWARD_BACKWARD), "cpu", torch.float32)
    assert len(bwd.grad_inputs) == 4 and all(t.requires_grad for t in bwd.grad_inputs)

    cell = reg.make_inputs(_tiny("gru_cell"), "cpu", torch.bfloat16)
    assert cell.read_bytes == 2 * sum(t.numel() for t in cell.args)  # the weights included
    assert cell.write_bytes == 2 * cell.args[1].numel()  # h'
    train = reg.make_inputs(_tiny("gru_cell", FORWARD_BACKWARD), "cpu", torch.float32)
    assert len(train.grad_inputs) == 6 and all(t.requires_grad for t in train.grad_inputs)
    assert all(isinstance(w, torch.nn.Parameter) for w in train.args[2:])
    layer_case = _tiny("gru_layer")
    T, B, H = (layer_case.shape[k] for k in ("T", "B", "H"))
    assert reg.make_inputs(layer_case, "cpu", torch.float32).write_bytes == 4 * (T * B * H + B * H)
    module_case = _tiny("gru", FORWARD_BACKWARD)
    module = reg.make_inputs(module_case, "cpu", torch.float32)
    assert list(module.extra["params"]) == list(
        torch.nn.GRU(6, 5, num_layers=2, bidirectional=True).state_dict()
    )
    assert len(module.grad_inputs) == 2 + 16
    L, dirs, T, B, H = (module_case.shape[k] for k in ("L", "dirs", "T", "B", "H"))
    assert module.write_bytes == 4 * (T * B * dirs * H + L * dirs * B * H)


def test_model_inputs_fix_the_decode_length_and_share_the_weights():
    case = _tiny("model", DECODE, label="beam2")
    a, b = (reg.make_inputs(case, "cpu", torch.float32) for _ in range(2))
    for name, tensor in a.extra["state_dict"].items():
        torch.testing.assert_close(tensor, b.extra["state_dict"][name])  # fixed seed
    eos = a.extra["config"].eos_id
    assert a.extra["state_dict"]["decoder.out.bias"][eos] == model_family.EOS_BIAS
    B, S, maxlen = case.shape["B"], case.shape["S"], case.shape["maxlen"]
    assert a.extra["src"].shape == (B, S) and a.extra["src_lengths"].tolist() == [S] * B
    assert (a.extra["work"], a.extra["work_unit"]) == (B * (maxlen + 1), "token")
    assert a.extra["hypothesis_tokens"] == B * case.shape["beam"] * (maxlen + 1)
    train = reg.make_inputs(_tiny("model", TRAIN_STEP, variant="bahdanau"), "cpu", torch.float32)
    lengths = train.extra["src_lengths"]
    assert int(lengths.max()) == train.extra["src"].shape[1] and int(lengths.min()) >= 1
    assert (train.extra["work"], train.extra["work_unit"]) == (1, "step")


# ----------------------------------------------------------------------------- peers


@pytest.mark.parametrize("op", ATTENTION)
def test_attention_peers_compute_the_reference_context(op):
    """A peer that computes something else would make its speedup meaningless."""
    from fast_s2s import reference

    case = _tiny(op, lengths="ragged")  # beam 2, ragged lengths, Dv != D
    inputs = reg.make_inputs(case, "cpu", torch.float64)
    expected = getattr(reference, op)(*inputs.args, **inputs.kwargs)[0]
    for impl in reg.build_impls(case, "cpu", ["reference", "auto"], None):
        if impl.label != "compile":  # compiling takes seconds; its numerics are torch's business
            torch.testing.assert_close(impl.make(inputs)(), expected, msg=impl.label)


def test_sdpa_peer_takes_the_fused_4d_path_and_differentiates_like_the_reference(monkeypatch):
    """torch's fused SDPA kernels take 4-D inputs only; a 3-D call would time the math path."""
    import torch.nn.functional as F

    real, dims = F.scaled_dot_product_attention, []

    def spy(q, k, v, **kwargs):
        dims.append((q.dim(), k.dim(), v.dim(), kwargs["attn_mask"].dim()))
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    case = _tiny("dot_attention", lengths="ragged")
    inputs = reg.make_inputs(case, "cpu", torch.float32)
    (impl,) = reg.build_impls(case, "cpu", [], ["sdpa"])
    impl.make(inputs)()
    assert dims == [(4, 4, 4, 4)]
    monkeypatch.undo()
    case, grads = _tiny("dot_attention", FORWARD_BACKWARD), {}
    for label in ("reference", "sdpa"):
        inputs = reg.make_inputs(case, "cpu", torch.float64)
        (impl,) = reg.build_impls(case, "cpu", [], [label])
        grads[label] = make_step(impl.make(inputs), case, inputs)()
    for got, want in zip(grads["sdpa"], grads["reference"], strict=True):
        torch.testing.assert_close(got, want)


ATTENTION_CASES = reg.select_cases(["dot_attention", "additive_attention"], "tiny")


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: c.id)
def test_attention_peers_compute_the_reference_output(case):
    """The composite and SDPA peers (fast_s2s/peers/attention.py) give the reference context on
    every tiny case: padded sources and beam rows (tiled keys and values) included."""
    inputs = reg.make_inputs(case, "cpu", torch.float64)
    impls = {
        i.label: i for i in reg.build_impls(case, "cpu", [], ["reference", "composite", "sdpa"])
    }
    with torch.no_grad():
        expected = impls.pop("reference").make(inputs)()
        assert set(impls) == (
            {"composite", "sdpa"} if case.op == "dot_attention" else {"composite"}
        )
        for label, impl in impls.items():
            torch.testing.assert_close(impl.make(inputs)(), expected, msg=f"{label} on {case.id}")


@pytest.mark.parametrize("op", GRU_OPS)
def test_gru_peers_compute_the_reference_output(op):
    """torch.nn.GRUCell / GRU on the case's weights, fast_s2s.nn.GRU and the ops agree; with
    lengths the GRU peer returns the packed output's data."""
    from torch.nn.utils.rnn import pack_padded_sequence

    for case in reg.select_cases([op], "tiny"):
        inputs = reg.make_inputs(case, "cpu", torch.float64)
        impls = reg.build_impls(case, "cpu", ["reference", "auto"], None)
        assert impls[0].label == "fast_s2s[reference]"
        expected = impls[0].make(inputs)().detach()
        lengths = inputs.kwargs.get("lengths")
        for impl in impls[1:]:
            if impl.label in ("compile", "onnxruntime", "openvino"):  # float64: not here
                continue  # (the runtimes' outputs: tests/bench/test_runtime_peers.py)
            with torch.no_grad():
                got = impl.make(inputs)()
            want = expected
            if impl.label == "GRU" and lengths is not None:
                want = pack_padded_sequence(expected, lengths, enforce_sorted=False).data
            torch.testing.assert_close(got, want, msg=f"{case.id}: {impl.label}")


@pytest.mark.parametrize("label", ["greedy", "beam2"])
def test_model_decode_is_the_same_on_every_backend_and_runs_max_len_steps(label):
    case = _tiny("model", DECODE, label=label)
    inputs = reg.make_inputs(case, "cpu", torch.float64)
    decoded = [i.make(inputs)() for i in reg.build_impls(case, "cpu", ["auto"], ["reference"])]
    for hyps in decoded:
        assert len(hyps) == case.shape["B"]
        assert all(len(h.tokens) == case.shape["maxlen"] for h in hyps)
    assert [h.tokens for h in decoded[0]] == [h.tokens for h in decoded[1]]


@pytest.mark.parametrize("variant", ["bahdanau", "luong-general"])
def test_model_train_step_starts_from_the_same_loss_on_every_backend(variant):
    case = _tiny("model", TRAIN_STEP, variant=variant)
    inputs = reg.make_inputs(case, "cpu", torch.float64)
    steps = [i.make(inputs) for i in reg.build_impls(case, "cpu", ["auto"], ["reference"])]
    first = [step() for step in steps]
    torch.testing.assert_close(first[0], first[1])
    second = [step() for step in steps]  # Adam moved the weights: the loss changes
    assert all(float(s) != float(f) for s, f in zip(second, first, strict=True))


# ----------------------------------------------------------------------------- rows


@pytest.mark.parametrize(
    ("op", "peers"),
    [("dot_attention", ["reference", "composite", "sdpa"]), ("additive_attention", ["composite"]),
     ("gru_cell", ["reference", "GRUCell"]), ("gru_layer", ["reference", "GRU"]),
     ("gru", ["GRU"])],
)  # fmt: skip
@pytest.mark.parametrize("mode", [FORWARD, FORWARD_BACKWARD])
def test_rows_name_what_ran_and_carry_its_numbers(op, peers, mode):
    case = _tiny(op, mode)
    rows = add_speedups(run_case(case, "cpu", torch.float32, backends=["reference", "auto"],
                                 peers=peers, budget=TINY_BUDGET))  # fmt: skip
    auto = resolve_backend("gru_layer" if op == "gru" else op, "auto", "cpu")
    assert [r["impl"] for r in rows] == ["fast_s2s[reference]", f"fast_s2s[auto->{auto}]", *peers]
    assert [r["kind"] for r in rows] == ["fast_s2s"] * 2 + ["peer"] * len(peers)
    assert [r["backend"] for r in rows[:2]] == ["reference", auto]
    assert rows[0]["implementation"] == "fast_s2s.reference (PyTorch)"
    assert rows[1]["implementation"] == {"cpp": "C++ (fast_s2s._C)"}.get(
        auto, rows[0]["implementation"]
    )
    for row in rows:
        assert row["status"] == "ok", row
        assert row["median_us"] > 0 and row["repeats"] >= 3
        assert (row["op"], row["mode"], row["case_id"], row["dtype"]) == (
            op,
            mode,
            case.id,
            "float32",
        )
        if row["kind"] == "fast_s2s":
            assert set(row["speedup_vs"]) == set(peers)
        if case.memory_bound and mode == FORWARD:  # attention; gru_cell at B=1
            seconds = row["median_us"] * 1e-6
            assert row["gbps"] == pytest.approx(row["read_bytes"] / seconds / 1e9)
            assert row["copy_gbps"] == pytest.approx(
                (row["read_bytes"] + row["write_bytes"]) / seconds / 1e9
            )
            assert row["roofline_fraction"] == pytest.approx(row["gbps"] / row["roofline_gbps"])
            assert row["copy_fraction"] == pytest.approx(
                row["copy_gbps"] / row["copy_roofline_gbps"]
            )
        else:
            assert row["gbps"] is None and row["roofline_gbps"] is None


@pytest.mark.parametrize("label", ["greedy", "beam2", "train"])
def test_model_rows_carry_throughput_and_leave_the_reference_backend_to_the_peer(label):
    case = next(c for c in reg.select_cases(["model"], "tiny") if c.label == label)
    rows = add_speedups(run_case(case, "cpu", torch.float32, backends=["auto"],
                                 peers=["reference"], budget=TINY_BUDGET))  # fmt: skip
    # auto resolves per op of the model; the label names every backend it picked
    picked = dict.fromkeys(
        resolve_backend(op, "auto", "cpu") for op in model_family.MODEL_KERNEL_OPS
    )
    assert [r["impl"] for r in rows] == [f"fast_s2s[auto->{'+'.join(picked)}]", "reference"]
    chosen, left_out = reg.default_backends("model", "cpu")
    assert "reference" not in chosen and "reference peer" in left_out["reference"]
    fast, ref = rows
    unit = "step" if case.mode == TRAIN_STEP else "token"
    for row in rows:
        assert row["status"] == "ok" and row["gbps"] is None
        assert row["work_unit"] == unit and row["work"] > 0
        assert row["throughput"] == pytest.approx(row["work"] / (row["median_us"] * 1e-6))
        assert row["variant"] == case.variant and row["threads"] == torch.get_num_threads()
    # the time ratio is the speed ratio
    assert fast["speedup_vs"]["reference"] == pytest.approx(fast["throughput"] / ref["throughput"])
    beam_rows = case.shape.get("beam", 1) * case.shape["B"]
    expected = beam_rows * (case.shape["maxlen"] + 1) if label == "beam2" else None
    assert fast["hypothesis_tokens"] == ref["hypothesis_tokens"] == expected


def test_model_decode_that_ends_early_is_a_failed_row(monkeypatch):
    monkeypatch.setattr(model_family, "EOS_BIAS", 1e4)  # eos always wins: 0 tokens
    case = _tiny("model", DECODE, label="greedy")
    rows = run_case(case, "cpu", torch.float32, backends=["auto"], peers=["reference"],
                    budget=TINY_BUDGET)  # fmt: skip
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert "not max_len=4" in rows[0]["reason"] and rows[0]["throughput"] is None


def test_a_backend_that_cannot_run_or_a_peer_that_fails_gets_no_figures(monkeypatch):
    import fast_s2s.backends as backends

    real = backends.why_unavailable

    def why_unavailable(op, backend, device):
        return "not built in this test" if backend == "cpp" else real(op, backend, device)

    monkeypatch.setattr(backends, "why_unavailable", why_unavailable)

    def broken_compile(*args, **kwargs):
        raise RuntimeError("inductor exploded\nsecond line")

    monkeypatch.setattr(torch, "compile", broken_compile)
    rows = add_speedups(run_case(_tiny("dot_attention"), "cpu", torch.float32,
                                 backends=["cpp", "reference"], peers=["composite", "compile"],
                                 budget=TINY_BUDGET))  # fmt: skip
    cpp, ref, composite, compiled = rows
    assert (cpp["impl"], cpp["status"], cpp["median_us"]) == ("fast_s2s[cpp]", "skipped", None)
    assert "not built in this test" in cpp["reason"]
    assert (compiled["status"], compiled["reason"]) == ("failed", "RuntimeError: inductor exploded")
    assert ref["status"] == composite["status"] == "ok"
    assert set(ref["speedup_vs"]) == {"composite"}  # no ratio against a peer that failed


def test_speedup_is_peer_time_over_fast_s2s_time():
    rows = [
        _row("a", "fast_s2s[cpp]", "fast_s2s", 10.0),
        _row("a", "reference", "peer", 20.0),  # 2x slower -> 2.0
        _row("a", "composite", "peer", 5.0),  # 2x faster -> 0.5
        _row("a", "sdpa", "peer", None, status="failed"),  # not a peer time
        _row("b", "reference", "peer", 1000.0),  # another case: not compared
        _row("b", "fast_s2s[cpp]", "fast_s2s", 100.0),
        _row("b", "composite", "peer", 300.0, dtype="bfloat16"),  # another dtype: not compared
    ]
    add_speedups(rows)
    assert rows[0]["speedup_vs"] == {"reference": pytest.approx(2.0), "composite": 0.5}
    assert rows[5]["speedup_vs"] == {"reference": pytest.approx(10.0)}
    assert rows[1]["speedup_vs"] == {}  # peers get no ratios


# ----------------------------------------------------------------------------- tables, JSON


def test_each_family_prints_its_own_table_with_its_own_figures():
    attention = [_row("a", "fast_s2s[cpp]", "fast_s2s", 10.0), _row("a", "composite", "peer", 20.0),
                 _row("a", "reference", "peer", 50.0)]  # fmt: skip
    gru = [_row("b", "fast_s2s[cpp]", "fast_s2s", 10.0, op="gru_cell"),
           _row("b", "GRUCell", "peer", 30.0, op="gru_cell")]  # fmt: skip
    case = _tiny("model", DECODE, label="greedy")
    model = [base_row(case, reg.Impl(i, k, None), CPU, torch.float32) for i, k in
             (("fast_s2s[cpp]", "fast_s2s"), ("reference", "peer"))]  # fmt: skip
    for row, median in zip(model, (1000.0, 4000.0), strict=True):
        row.update(status="ok", median_us=median, iqr_us=10.0, work=31, work_unit="token",
                   throughput=31 / (median * 1e-6))  # fmt: skip
    console = Console(file=io.StringIO(), width=250)
    print_results(console, add_speedups([*attention, *gru, *model]), "t")
    out = console.file.getvalue()
    attention_part, rest = out.split("t: GRU")
    gru_part, model_part = rest.split("t: model")
    assert "t: attention" in attention_part and "vs composite" in attention_part
    assert "2.00x" in attention_part and "fast_s2s[cpp]" in attention_part  # not eaten as markup
    assert attention_part.index("vs reference") < attention_part.index("vs composite")  # order
    assert "vs GRUCell" in gru_part and "vs composite" not in gru_part and "3.00x" in gru_part
    assert f"(torch threads {torch.get_num_threads()})" in model_part
    assert "31,000 tokens/s" in model_part and "4.00x" in model_part and "median ms" in model_part
    assert "GB/s" not in model_part.split("vs X =")[0]  # the model table has no GB/s column


def test_main_writes_every_family_s_rows_and_the_json_fields(tmp_path, capsys):
    path, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    ops = ["dot_attention", "gru_cell", "gru", "model"]
    threads = torch.get_num_threads()
    args = _parse(["--quick", "--shapes", "tiny", "--json", str(path), "--plot", str(plot),
                   "--ops", ",".join(ops),
                   "--peers", "reference,python-loop,torch.nn,composite,sdpa,GRUCell,GRU",
                   "--min-time", "0", "--threads", "1"])  # fmt: skip
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "fast_s2s[auto->" in out and "vs composite" in out and "vs GRUCell" in out
    assert "torch threads 1" in out and "tokens/s" in out and "steps/s" in out
    data = json.loads(path.read_text())
    assert list(data) == [
        "machine", "settings", "results", "gemm_choices", "fastest_backends", "goals"
    ]  # fmt: skip
    for key in ("cpu", "torch", "torch_threads", "cpu_capability", "device", "copy_gbps",
                "torch_cpu_capability", "blas", "sgemm_gflops"):  # fmt: skip
        assert key in data["machine"]
    assert data["machine"]["sgemm_gflops"] > 0 and "sgemm rate (GFLOP/s)" in out
    # The C++ GRU ops ran through the GEMM layer, and the run says what it chose.
    assert any(line.startswith("gru_cell ") for line in data["gemm_choices"])
    assert "GEMM backend per product site" in out
    assert data["settings"]["threads"] == 1 and data["settings"]["complete"] is True
    results = data["results"]
    assert {r["case_id"] for r in results} == {c.id for c in reg.select_cases(ops, "tiny")}
    expected_peers = {"dot_attention": {"reference", "composite", "sdpa"},
                      "gru_cell": {"reference", "GRUCell"}, "gru": {"GRU"},
                      "model": {"reference", "python-loop", "torch.nn"}}  # fmt: skip
    for row in results:
        assert tuple(row) == ROW_FIELDS
        if row["status"] != "ok":
            continue
        assert row["threads"] == 1 and row["median_us"] > 0
        decode = row["mode"] == "decode"
        # the decode rows say which search loop ran, and the time to read the weights once
        assert (row["decode_loop"] is not None) == (decode and row["impl"] != "torch.nn")
        assert (row["weight_read_us"] is not None and row["weight_read_us"] > 0) == decode
        if row["impl"] == "python-loop":
            assert row["decode_loop"] == "python: native=False"
        if row["kind"] == "fast_s2s" and decode and row["backend"] == "cpp":
            assert row["decode_loop"] == "native"
        if row["kind"] == "fast_s2s":
            peers = expected_peers[row["op"]] if decode or row["op"] != "model" else {"reference"}
            assert set(row["speedup_vs"]) == peers, row["case_id"]
            assert row["impl"] in (
                f"fast_s2s[auto->{row['backend']}]",
                f"fast_s2s[{row['backend']}]",
            )
        else:
            assert row["impl"] in expected_peers[row["op"]]
        assert (row["throughput"] is not None) == (row["op"] == "model")
        # GEMM-bound rows (the GRU ops) report GFLOP/s against the machine's sgemm rate.
        gemm_bound = row["op"] in ("gru_cell", "gru")
        assert (row["gflops"] is not None) == gemm_bound, row["case_id"]
        if gemm_bound:
            ratio = row["gflops"] / data["machine"]["sgemm_gflops"]
            assert row["sgemm_fraction"] == pytest.approx(ratio)
        assert (row["us_per_token"] is not None) == decode
    assert set(data["fastest_backends"]["ops"]) == {"dot_attention", "gru_cell"}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in out and not plot.exists()
    else:
        assert plot.stat().st_size > 0


@pytest.mark.parametrize("variant", ["bahdanau", "luong-general", "luong-general-feed"])
def test_torch_nn_peer_decodes_the_same_model(variant):
    """The torch.nn peer is the same architecture with the same weights: its greedy output is
    the fast_s2s model's (decoder weights scaled so the tokens are not near-ties)."""
    from dataclasses import replace

    from fast_s2s.benchmark.model_family import decode_case, make_inputs
    from fast_s2s.models import Seq2Seq, greedy_decode
    from fast_s2s.peers.torch_nn_seq2seq import TorchNNSeq2Seq

    case = decode_case(variant, B=3, S=9, maxlen=12, E=16, H=24, V=20)
    x = make_inputs(case, "cpu", torch.float32).extra
    weights = {k: v * 3 if k.startswith("decoder") else v for k, v in x["state_dict"].items()}
    model = Seq2Seq(replace(x["config"], backend="reference"))
    model.load_state_dict(weights)
    peer = TorchNNSeq2Seq(x["config"])
    peer.load_fast_s2s(weights)
    src, lengths = x["src"], x["src_lengths"].clone()
    lengths[1] = 4
    expected = [h.tokens for h in greedy_decode(model, src, lengths, 12)]
    assert peer.greedy(src, lengths, 12) == expected


@pytest.mark.parametrize("case", reg.select_cases(["local_attention"], "tiny"), ids=lambda c: c.id)
def test_local_attention_peers_compute_what_the_op_computes(case):
    """The local-composite peer (gather the window) gives the op's context, so the bench compares
    like with like; the global-fused peer reads every position and so differs."""
    import fast_s2s
    from fast_s2s.benchmark import attention_family as local_family

    inputs = reg.make_inputs(case, "cpu", torch.float64)
    expected = fast_s2s.local_attention(*inputs.args, **inputs.kwargs, backend="reference")[0]
    composite = local_family.local_composite(inputs)()
    torch.testing.assert_close(composite, expected.detach())
    fused = reg.fast_s2s_impl("local_attention", "cpp", "cpu").make(inputs)()
    torch.testing.assert_close(fused, expected.detach())
    assert not torch.allclose(local_family.global_fused(inputs)(), expected)
