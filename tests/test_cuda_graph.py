"""The CUDA-graph greedy loop (fast_s2s.models.cuda_graph) held to the Python loop of
fast_s2s.models.search token for token: eagerly (capture=False, the very steps a graph captures)
on the CPU kernels and on the CUDA kernels' code under the CPU emulation, and captured on a GPU
(marked cuda: scripts/gpu_check.sh runs it). Every wiring and score, local attention (the step
counter on the device), min_len, max_len forcing, long outputs, and how often the host checks."""

from __future__ import annotations

import warnings

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models import (
    Seq2Seq,
    Seq2SeqConfig,
    beam_search,
    cuda_graph,
    decode_path,
    greedy_decode,
    search,
)
from fast_s2s.models.cuda_graph import CaptureFailedWarning, greedy_decode_graph
from tests.test_native_search import SRC_VOCAB, TGT_VOCAB, make_source

EOS = 2
MODELS: dict[str, dict[str, object]] = {
    "bahdanau": {"wiring": "bahdanau", "score": "additive"},
    "luong-general-feed": {"wiring": "luong", "score": "general", "input_feeding": True},
    "luong-dot": {"wiring": "luong", "score": "dot"},
    "classic": {"attention": "none"},
    "local-m": {"wiring": "luong", "score": "dot", "local": "m", "window": 2},
    "local-p": {"wiring": "luong", "score": "general", "local": "p", "window": 2},
    "bahdanau-2layers": {"decoder_layers": 2},
}


def make_model(name: str, backend: str, eos_bias: float = 0.0, seed: int = 0) -> Seq2Seq:
    """A random model with peaked outputs (no near-ties); eos_bias < 0 gives long outputs."""
    torch.manual_seed(seed)
    config = Seq2SeqConfig(
        src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB, embed_size=10, hidden_size=12,
        backend=backend, **MODELS[name],  # type: ignore[arg-type]
    )  # fmt: skip
    model = Seq2Seq(config).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(3.0)
        model.decoder.out.bias[EOS] += eos_bias
    return model


def assert_same(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.tokens == w.tokens
        assert g.score == pytest.approx(w.score, rel=1e-4, abs=1e-4)
        torch.testing.assert_close(g.attention, w.attention, atol=1e-5, rtol=1e-4)


CPU_BACKENDS = ["reference"] + (["cpp"] if _extension.extension_loaded() else [])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_eager_static_loop_matches_the_python_loop(name, backend):
    model = make_model(name, backend)
    src, lengths = make_source(4, 1)
    want = greedy_decode(model, src, lengths, 12, native=False)
    assert_same(greedy_decode_graph(model, src, lengths, 12, capture=False), want)


@pytest.mark.parametrize("check_every", [1, 5, 1000])
@pytest.mark.parametrize("name", ["bahdanau", "local-m", "luong-general-feed"])
def test_long_outputs_min_len_and_forced_eos(name, check_every):
    """Outputs of up to 150 tokens, some cut by max_len (forced eos), some held by min_len; the
    host's check interval changes nothing but how many extra (masked) steps run."""
    model = make_model(name, CPU_BACKENDS[-1], eos_bias=-4.0, seed=3)
    src, lengths = make_source(5, 2, width=9)
    longest = {}
    for max_len, min_len in ((150, 0), (40, 25), (3, 3), (0, 0)):
        want = greedy_decode(model, src, lengths, max_len, min_len=min_len, native=False)
        got = greedy_decode_graph(
            model, src, lengths, max_len, min_len=min_len, check_every=check_every, capture=False
        )
        assert_same(got, want)
        longest[max_len] = max(len(h.tokens) for h in want)
    assert longest[150] >= 40, longest  # the test reaches the long outputs it is about


@pytest.mark.parametrize("name", ["bahdanau", "luong-general-feed", "local-m", "classic"])
def test_eager_static_loop_on_the_emulated_cuda_kernels(name, emulated_cuda_kernels):
    model = make_model(name, "reference", eos_bias=-1.0, seed=5)
    src, lengths = make_source(3, 4)
    with torch.no_grad():
        want = greedy_decode(model, src, lengths, 10, native=False)  # before the patch ran
    emulated_cuda_kernels.update(dict.fromkeys(emulated_cuda_kernels, 0))
    got = greedy_decode_graph(model, src, lengths, 10, check_every=4, capture=False)
    assert_same(got, want)
    assert emulated_cuda_kernels["gru_cell"] > 0  # the decoder's steps ran the CUDA kernels
    if name != "classic":
        assert sum(n for op, n in emulated_cuda_kernels.items() if op != "gru_cell") > 0


def test_capture_needs_cuda_and_check_every_is_checked():
    model = make_model("bahdanau", "reference")
    src, lengths = make_source(1, 0)
    with pytest.raises(ValueError, match="capture=True needs the model on CUDA"):
        greedy_decode_graph(model, src, lengths, 5, capture=True)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="check_every"):
            greedy_decode_graph(model, src, lengths, 5, check_every=bad, capture=False)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode_graph(model, src, lengths, -1, capture=False)


@pytest.fixture
def as_if_on_cuda(monkeypatch):
    """greedy_decode / beam_search on a CPU model take their CUDA path (decode_path says
    "cuda-graph"), where capture fails as it would on an op that cannot be captured; returns
    the captures tried."""
    tried = []

    def capture_fails(loop, device):
        tried.append(device)
        loop.step("plain")  # a capture that failed midway has run part of a step
        raise RuntimeError("operation not permitted when stream is capturing")

    def path(model, native=True):
        return "cuda-graph" if native else "python: native=False"

    monkeypatch.setattr(search, "decode_path", path)
    monkeypatch.setattr(cuda_graph, "_captured", capture_fails)
    return tried


@pytest.mark.parametrize("name", ["bahdanau", "local-m", "luong-general-feed"])
def test_searches_on_cuda_run_the_static_loops_and_fall_back_to_eager(name, as_if_on_cuda):
    model = make_model(name, CPU_BACKENDS[-1], eos_bias=-2.0, seed=2)
    src, lengths = make_source(4, 3)
    with pytest.warns(
        CaptureFailedWarning, match="CUDA graph failed .* runs the same steps eagerly"
    ):
        got = greedy_decode(model, src, lengths, 30, min_len=3)
    assert_same(got, greedy_decode(model, src, lengths, 30, min_len=3, native=False))
    with pytest.warns(CaptureFailedWarning, match="CUDA graph failed"):
        got_beam = beam_search(model, src, lengths, 3, 30, n_best=2)
    want_beam = beam_search(model, src, lengths, 3, 30, n_best=2, native=False)
    for g, w in zip(got_beam, want_beam, strict=True):
        assert_same(g, w)
    assert len(as_if_on_cuda) == 2  # both searches took the static loops and tried to capture


def test_explicit_capture_failure_is_raised(monkeypatch):
    def capture_fails(loop, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graph, "_captured", capture_fails)
    monkeypatch.setattr(cuda_graph, "check_graph_args", lambda *args: True)
    model = make_model("bahdanau", "reference")
    src, lengths = make_source(1, 0)
    with pytest.raises(RuntimeError, match="not permitted when stream is capturing"):
        greedy_decode_graph(model, src, lengths, 5)


@pytest.mark.cuda
def test_decode_path_on_cuda_is_the_graph_loop():
    model = make_model("bahdanau", "auto").cuda()
    assert decode_path(model) == "cuda-graph"
    assert decode_path(model, native=False) == "python: native=False"


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_decode_on_a_gpu_captures_without_falling_back(name):
    model = make_model(name, "auto", eos_bias=-2.0, seed=7).cuda()
    src, lengths = make_source(6, 8)
    src, lengths = src.cuda(), lengths.cuda()
    want = greedy_decode(model, src, lengths, 60, min_len=2, native=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns: fail on it
        got = greedy_decode(model, src, lengths, 60, min_len=2)
        got_beam = beam_search(model, src, lengths, 4, 60, n_best=2)
    assert_same(got, want)
    want_beam = beam_search(model, src, lengths, 4, 60, n_best=2, native=False)
    for g, w in zip(got_beam, want_beam, strict=True):
        assert_same(g, w)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(MODELS))
def test_captured_graphs_match_the_python_loop_on_a_gpu(name):
    model = make_model(name, "auto", eos_bias=-2.0, seed=7).cuda()
    src, lengths = make_source(6, 8)
    src, lengths = src.cuda(), lengths.cuda()
    want = greedy_decode(model, src, lengths, 60, min_len=2, native=False)
    got = greedy_decode_graph(model, src, lengths, 60, min_len=2)
    assert_same(got, want)
