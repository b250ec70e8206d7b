"""The CUDA-graph greedy loop (fast_s2s.models.cuda_graph) held to the Python loop of
fast_s2s.models.search token for token: eagerly (capture=False, the very steps a graph captures)
on the CPU kernels and on the CUDA kernels' code under the CPU emulation, and captured on a GPU
(marked cuda: scripts/gpu_check.sh runs it). Every wiring and score, local attention (the step
counter on the device), min_len, max_len forcing, long outputs, and how often the host checks."""

from __future__ import annotations

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models import Seq2Seq, Seq2SeqConfig, greedy_decode
from fast_s2s.models.cuda_graph import greedy_decode_graph
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


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(MODELS))
def test_captured_graphs_match_the_python_loop_on_a_gpu(name):
    model = make_model(name, "auto", eos_bias=-2.0, seed=7).cuda()
    src, lengths = make_source(6, 8)
    src, lengths = src.cuda(), lengths.cuda()
    want = greedy_decode(model, src, lengths, 60, min_len=2, native=False)
    got = greedy_decode_graph(model, src, lengths, 60, min_len=2)
    assert_same(got, want)
