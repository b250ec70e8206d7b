"""The runtime peers (fast_s2s.peers.onnx_gru): ONNX Runtime and OpenVINO, fed the ONNX model
written from a torch.nn.GRU / GRUCell, compute what torch computes (f32, 1e-5), also with
saturating inputs and ragged lengths; OpenVINO's f32 runner really runs f32; a missing runtime
is reported with the extra that installs it."""

from __future__ import annotations

import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

pytest.importorskip("onnx", reason="onnx is not installed: pip install 'fast_s2s[peers]'")

from fast_s2s.peers import onnx_gru as runtimes  # noqa: E402
from fast_s2s.peers.onnx_gru import gru_inputs, gru_onnx_model, make_runner  # noqa: E402

TOL = 1e-5
# (T, B, I, H, layers, bidirectional): the realistic sizes and the batch-1 encoder.
GRU_SHAPES = {
    "1 layer": (50, 16, 128, 128, 1, False),
    "2 layers bidirectional": (50, 16, 128, 128, 2, True),
    "batch-1 encoder": (25, 1, 64, 64, 1, True),
}


def _runtime(name: str) -> str:
    pytest.importorskip(name, reason=runtimes.runtime_unavailable(name))
    return name


@pytest.fixture(params=runtimes.RUNTIMES)
def runtime(request) -> str:
    return _runtime(request.param)


def _assert_close(outputs, expected) -> None:
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        torch.testing.assert_close(torch.from_numpy(got), want, atol=TOL, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 10.0], ids=["unit", "saturating"])
@pytest.mark.parametrize("shape", list(GRU_SHAPES))
@torch.no_grad()
def test_gru_matches_torch(runtime, shape, scale):
    steps, batch, features, hidden, layers, bi = GRU_SHAPES[shape]
    gru = torch.nn.GRU(features, hidden, layers, bidirectional=bi)
    x = torch.randn(steps, batch, features) * scale
    h0 = torch.randn(layers * (2 if bi else 1), batch, hidden)
    run = make_runner(runtime, gru_onnx_model(gru), threads=1)
    _assert_close(run(gru_inputs(x, h0)), gru(x, h0))


@pytest.mark.parametrize("scale", [1.0, 10.0], ids=["unit", "saturating"])
@torch.no_grad()
def test_gru_cell_matches_torch(runtime, scale):
    cell = torch.nn.GRUCell(128, 128)
    x, h = torch.randn(16, 128) * scale, torch.randn(16, 128)
    run = make_runner(runtime, gru_onnx_model(cell), threads=1)
    _assert_close(run(gru_inputs(x, h)), [cell(x, h)])


@torch.no_grad()
def test_ragged_lengths_match_packed_torch(runtime):
    """lengths give pack_padded_sequence's result: zero output past a row's length, h_n at its
    last step, the backward direction starting there (the harness's ragged rows)."""
    steps, batch, hidden = 50, 16, 128
    gru = torch.nn.GRU(hidden, hidden, 2, bidirectional=True)
    x, h0 = torch.randn(steps, batch, hidden) * 10, torch.randn(4, batch, hidden)
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[:2] = torch.tensor([steps, 1])
    packed, h_n = gru(pack_padded_sequence(x, lengths, enforce_sorted=False), h0)
    output, _ = pad_packed_sequence(packed, total_length=steps)
    model = gru_onnx_model(gru, with_lengths=True, steps=steps, batch=batch)
    run = make_runner(runtime, model, threads=1)
    _assert_close(run(gru_inputs(x, h0, lengths)), [output, h_n])


def test_openvino_refuses_lengths_with_symbolic_shapes():
    _runtime("openvino")
    model = gru_onnx_model(torch.nn.GRU(8, 8), with_lengths=True)
    with pytest.raises(ValueError, match="steps=T, batch=B"):
        make_runner("openvino", model, threads=1)


def test_openvino_f32_runner_reports_f32():
    _runtime("openvino")
    run = make_runner("openvino", gru_onnx_model(torch.nn.GRU(16, 16)), threads=1)
    assert run.precision == "f32"
    assert "openvino" in run.description and ", f32, 1 thread" in run.description


def test_onnxruntime_runs_f32_only():
    _runtime("onnxruntime")
    model = gru_onnx_model(torch.nn.GRU(16, 16))
    assert make_runner("onnxruntime", model, threads=2).precision == "f32"
    with pytest.raises(ValueError, match="f32 only"):
        make_runner("onnxruntime", model, threads=1, precision="default")


@pytest.mark.parametrize("missing", ["onnxruntime", "openvino", "onnx"])
def test_unavailable_names_the_extra(monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    for name in runtimes.RUNTIMES:
        reason = runtimes.runtime_unavailable(name)
        if missing in (name, "onnx"):
            assert reason == f"{missing} is not installed: pip install 'fast_s2s[peers]'"
        else:  # the other runtime does not depend on it
            assert reason is None or missing not in reason
