"""ONNX Runtime and OpenVINO as rows of `fast-s2s bench` (benchmark/gru_family.runtime_peer):
they run on the GRU rows' forward cases, compute what the case computes from the case's own
weights, name what ran, and are skipped with a reason where they cannot run."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fast_s2s.ops", reason="fast_s2s.ops is not importable yet")

from fast_s2s import ops  # noqa: E402
from fast_s2s.benchmark import gru_family  # noqa: E402
from fast_s2s.benchmark import registry as reg  # noqa: E402
from fast_s2s.benchmark.family import FORWARD, FORWARD_BACKWARD  # noqa: E402
from fast_s2s.benchmark.measure import Budget  # noqa: E402
from fast_s2s.benchmark.rows import add_speedups, run_case  # noqa: E402
from fast_s2s.peers import onnx_gru as runtimes  # noqa: E402

TINY_BUDGET = Budget(warmup=1, min_repeats=3, max_repeats=5, min_time_s=0.0)
GRU_OPS = ("gru_cell", "gru_layer", "gru")
RUNTIMES = list(runtimes.RUNTIMES)


def _installed(name: str) -> bool:
    return runtimes.runtime_unavailable(name) is None


needs_runtimes = pytest.mark.skipif(
    not all(map(_installed, RUNTIMES)), reason="onnxruntime / openvino / onnx not installed"
)


def _cases(op: str, mode: str, shapes: str = "tiny") -> list:
    return [c for c in reg.select_cases([op], shapes) if c.mode == mode]


def _reference_output(case, inputs) -> torch.Tensor:
    """What the case computes, from the reference backend: the output sequence (gru_layer, gru)
    or h' (gru_cell)."""
    x, h = inputs.args[:2]
    if case.op == "gru_cell":
        return ops.gru_cell(*inputs.args, backend="reference")
    if case.op == "gru_layer":
        return ops.gru_layer(*inputs.args, inputs.kwargs["lengths"], backend="reference")[0]
    from fast_s2s.nn import GRU

    params = inputs.extra["params"]
    dirs = 2 if any(name.endswith("_reverse") for name in params) else 1
    module = GRU(x.shape[2], h.shape[2], h.shape[0] // dirs, bidirectional=dirs == 2,
                 backend="reference")  # fmt: skip
    module.load_state_dict({k: v.detach() for k, v in params.items()})
    return module(x, h, lengths=inputs.kwargs["lengths"])[0]


@needs_runtimes
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("shapes", ["tiny", "full"])
@pytest.mark.parametrize("op", GRU_OPS)
def test_peer_computes_the_case_from_its_weights(op, shapes, runtime):
    """At tiny sizes and at the real rows' sizes (the batch-1 encoders, ragged lengths, a
    GRUCell at H=512), with inputs scaled to saturate the gates."""
    cases = [c for c in _cases(op, FORWARD, shapes) if shapes == "tiny" or c.shape["B"] <= 16]
    assert cases
    for case in cases[:3]:
        inputs = gru_family.make_inputs(case, "cpu", torch.float32)
        for scale in (1.0, 10.0):
            scaled = inputs.args[0] * scale
            inputs.args = (scaled, *inputs.args[1:])
            with torch.no_grad():
                want = _reference_output(case, inputs)
                got = torch.from_numpy(gru_family.runtime_peer(runtime)(inputs)()[0])
            assert got.shape == want.shape, case.id
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4, msg=case.id)


@needs_runtimes
@pytest.mark.parametrize("op", GRU_OPS)
def test_peer_rows_run_and_name_the_runtime(op):
    case = _cases(op, FORWARD)[0]
    rows = add_speedups(run_case(case, "cpu", torch.float32, backends=["auto"], peers=RUNTIMES,
                                 budget=TINY_BUDGET))  # fmt: skip
    assert [r["impl"] for r in rows[1:]] == RUNTIMES
    for row, name in zip(rows[1:], RUNTIMES, strict=True):
        assert row["status"] == "ok", row
        assert row["median_us"] > 0
        desc = row["implementation"]
        assert desc.startswith(f"{name} {runtimes.runtime_version(name)}") and "f32" in desc
        assert f"{torch.get_num_threads()} thread" in desc
    assert set(rows[0]["speedup_vs"]) == set(RUNTIMES)


@pytest.mark.parametrize("op", GRU_OPS)
def test_backward_rows_skip_the_runtimes_with_the_reason(op):
    case = _cases(op, FORWARD_BACKWARD)[0]
    rows = run_case(case, "cpu", torch.float32, backends=["auto"], peers=RUNTIMES,
                    budget=TINY_BUDGET)  # fmt: skip
    for row in rows[1:]:
        assert row["status"] == "skipped" and row["median_us"] is None
        missing = runtimes.runtime_unavailable(row["impl"])
        assert row["reason"] == (missing or f"{row['impl']} runs inference: no backward")


def test_a_missing_runtime_is_a_skipped_row_naming_the_extra(monkeypatch):
    reason = "onnxruntime is not installed: pip install 'fast_s2s[peers]'"
    monkeypatch.setattr(runtimes, "runtime_unavailable", lambda name: reason)
    case = _cases("gru", FORWARD)[0]
    rows = run_case(case, "cpu", torch.float32, backends=["auto"], peers=["onnxruntime"],
                    budget=TINY_BUDGET)  # fmt: skip
    assert rows[0]["status"] == "ok"
    assert (rows[1]["status"], rows[1]["reason"]) == ("skipped", reason)


@needs_runtimes
def test_bfloat16_rows_run_openvino_at_its_default_and_skip_onnxruntime():
    case = _cases("gru", FORWARD)[0]
    rows = run_case(case, "cpu", torch.bfloat16, backends=["auto"], peers=RUNTIMES,
                    budget=TINY_BUDGET)  # fmt: skip
    ort, ov = rows[1:]
    assert ort["status"] == "skipped" and "float32" in ort["reason"]
    assert ov["status"] == "ok", ov
    precision = runtimes.make_runner(
        "openvino", runtimes.gru_onnx_model(torch.nn.GRU(4, 4)), 1, precision="default"
    ).precision
    assert f", {precision}," in ov["implementation"]
