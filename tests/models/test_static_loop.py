"""The static engine's own behaviour (fast_s2s.models.decoding.static_loop, cuda_graphs); its
results against the Python loop over every wiring and option are test_search_engines.py's. Here:
how often the host checks changes nothing but the extra masked steps, the CUDA kernels' code
under the CPU emulation, the searches on CUDA taking this loop and falling back to eager when
capture fails, the arguments, and (marked cuda: scripts/gpu_check.sh runs them) the searches on
a GPU capturing."""

from __future__ import annotations

import warnings

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models import beam_search, decode_path, decoding, greedy_decode
from fast_s2s.models.decoding import SearchOptions, StaticLoop, api, cuda_graphs
from fast_s2s.models.decoding.cuda_graphs import DEFAULT_CHECK_EVERY, CaptureFailedWarning
from fast_s2s.models.decoding.python_loop import PythonLoop
from tests.models.engines import assert_same_hypotheses, assert_same_lists, make_model, make_source

CPU_BACKEND = "cpp" if _extension.extension_loaded() else "reference"


def greedy_decode_graph(
    model, src, lengths, max_len=100, *, min_len=0, check_every=DEFAULT_CHECK_EVERY, capture=None
):
    """greedy_decode on the static engine with its check interval and capture."""
    spec = SearchOptions(beam=1, max_len=max_len, min_len=min_len)
    engine = StaticLoop(check_every, capture)
    return [hyps[0] for hyps in decoding.search(model, src, lengths, spec, engine=engine)]


def beam_search_graph(
    model, src, lengths, beam_size=5, max_len=100, length_penalty=1.0, *, n_best=None,
    penalty="power", min_len=0, check_every=DEFAULT_CHECK_EVERY, capture=None,
):  # fmt: skip
    """beam_search on the static engine with its check interval and capture."""
    spec = SearchOptions(
        beam=beam_size, max_len=max_len, min_len=min_len, length_penalty=length_penalty,
        penalty=penalty, n_best=n_best or 1,
    )  # fmt: skip
    ranked = decoding.search(model, src, lengths, spec, engine=StaticLoop(check_every, capture))
    return [hyps[0] for hyps in ranked] if n_best is None else ranked


@pytest.mark.parametrize("check_every", [1, 5, 1000])
@pytest.mark.parametrize("name", ["bahdanau", "local-m", "luong-general-feed"])
def test_greedy_check_interval_long_outputs_min_len_and_forced_eos(name, check_every):
    """Outputs of up to 150 tokens, some cut by max_len (forced eos), some held by min_len; the
    host's check interval changes nothing but how many extra (masked) steps run."""
    model = make_model(name, CPU_BACKEND, eos_bias=-4.0, seed=3)
    src, lengths = make_source(5, 2, width=9)
    longest = {}
    for max_len, min_len in ((150, 0), (40, 25), (3, 3), (0, 0)):
        want = greedy_decode(model, src, lengths, max_len, min_len=min_len, native=False)
        got = greedy_decode_graph(
            model, src, lengths, max_len, min_len=min_len, check_every=check_every, capture=False
        )
        assert_same_hypotheses(got, want)
        longest[max_len] = max(len(h.tokens) for h in want)
    assert longest[150] >= 40, longest  # the test reaches the long outputs it is about


SEARCHES = [
    {"beam_size": 5, "max_len": 120, "length_penalty": 1.0},
    {"beam_size": 3, "max_len": 60, "length_penalty": 0.6, "penalty": "gnmt", "min_len": 20},
    {"beam_size": 4, "max_len": 80, "length_penalty": 0.0},
    {"beam_size": 2, "max_len": 2, "min_len": 2},
    {"beam_size": 3, "max_len": 0},
]


@pytest.mark.parametrize("check_every", [1, 7, 1000])
@pytest.mark.parametrize("name", ["bahdanau", "local-p", "luong-general-feed"])
def test_beam_check_interval_long_outputs_penalties_min_len_and_forced_eos(name, check_every):
    """Outputs from 0 to 120 tokens, some cut by max_len, some held by min_len; the check
    interval changes nothing but how many extra (masked) steps run."""
    model = make_model(name, CPU_BACKEND, eos_bias=-3.0, seed=3)
    src, lengths = make_source(5, 2, width=9)
    lengths_seen = []
    for search in SEARCHES:
        want = beam_search(model, src, lengths, n_best=2, native=False, **search)
        got = beam_search_graph(
            model, src, lengths, n_best=2, check_every=check_every, capture=False, **search
        )
        assert_same_lists(got, want)
        lengths_seen += [len(h.tokens) for hyps in want for h in hyps]
    assert max(lengths_seen) >= 40, lengths_seen  # the test reaches the long outputs
    assert len(set(lengths_seen)) >= 5, lengths_seen  # and outputs of many lengths


@pytest.mark.parametrize("name", ["bahdanau", "luong-general-feed", "local-m", "classic"])
def test_eager_static_loop_on_the_emulated_cuda_kernels(name, emulated_cuda_kernels):
    model = make_model(name, "reference", eos_bias=-1.0, seed=5)
    src, lengths = make_source(3, 4)
    with torch.no_grad():  # before the patch ran
        want = greedy_decode(model, src, lengths, 10, native=False)
        want_beam = beam_search(model, src, lengths, 3, 12, n_best=2, native=False)
    emulated_cuda_kernels.update(dict.fromkeys(emulated_cuda_kernels, 0))
    got = greedy_decode_graph(model, src, lengths, 10, check_every=4, capture=False)
    assert_same_hypotheses(got, want)
    got_beam = beam_search_graph(model, src, lengths, 3, 12, n_best=2, check_every=4, capture=False)
    assert_same_lists(got_beam, want_beam)
    assert emulated_cuda_kernels["gru_cell"] > 0  # the decoder's steps ran the CUDA kernels
    if name != "classic":
        assert sum(n for op, n in emulated_cuda_kernels.items() if op != "gru_cell") > 0


def test_bad_arguments_are_refused():
    model = make_model("bahdanau", "reference")
    src, lengths = make_source(1, 0)
    for search in (greedy_decode_graph, beam_search_graph):
        with pytest.raises(ValueError, match="capture=True needs the model on CUDA"):
            search(model, src, lengths, capture=True)
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match="check_every"):
                search(model, src, lengths, check_every=bad, capture=False)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode_graph(model, src, lengths, -1, capture=False)
    with pytest.raises(ValueError, match="n_best"):
        beam_search_graph(model, src, lengths, 3, 5, n_best=4, capture=False)
    with pytest.raises(ValueError, match="penalty"):
        beam_search_graph(model, src, lengths, 3, 5, penalty="linear", capture=False)


@pytest.fixture
def as_if_on_cuda(monkeypatch):
    """greedy_decode / beam_search on a CPU model take their CUDA engine (decode_path says
    "cuda-graph"), where capture fails as it would on an op that cannot be captured; returns
    the captures tried."""
    tried = []

    def capture_fails(loop, device):
        tried.append(device)
        loop.step("plain")  # a capture that failed midway has run part of a step
        raise RuntimeError("operation not permitted when stream is capturing")

    def engine_for(model, native):
        if not native:
            return PythonLoop(), "python: native=False"
        return StaticLoop(capture=True, eager_on_failure=True), "cuda-graph"

    monkeypatch.setattr(api, "engine_for", engine_for)
    monkeypatch.setattr(StaticLoop, "unavailable", lambda self, model: None)
    monkeypatch.setattr(cuda_graphs, "capture_steps", capture_fails)
    return tried


@pytest.mark.parametrize("name", ["bahdanau", "local-m", "luong-general-feed"])
def test_searches_on_cuda_run_the_static_loop_and_fall_back_to_eager(name, as_if_on_cuda):
    model = make_model(name, CPU_BACKEND, eos_bias=-2.0, seed=2)
    src, lengths = make_source(4, 3)
    with pytest.warns(
        CaptureFailedWarning, match="CUDA graph failed .* runs the same steps eagerly"
    ):
        got = greedy_decode(model, src, lengths, 30, min_len=3)
    assert_same_hypotheses(got, greedy_decode(model, src, lengths, 30, min_len=3, native=False))
    with pytest.warns(CaptureFailedWarning, match="CUDA graph failed"):
        got_beam = beam_search(model, src, lengths, 3, 30, n_best=2)
    assert_same_lists(got_beam, beam_search(model, src, lengths, 3, 30, n_best=2, native=False))
    assert len(as_if_on_cuda) == 2  # both searches took the static loop and tried to capture


def test_explicit_capture_failure_is_raised(monkeypatch):
    def capture_fails(loop, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graphs, "capture_steps", capture_fails)
    monkeypatch.setattr(StaticLoop, "unavailable", lambda self, model: None)
    model = make_model("bahdanau", "reference")
    src, lengths = make_source(1, 0)
    with pytest.raises(RuntimeError, match="not permitted when stream is capturing"):
        greedy_decode_graph(model, src, lengths, 5, capture=True)


@pytest.mark.cuda
def test_decode_path_on_cuda_is_the_graph_loop():
    model = make_model("bahdanau", "auto").cuda()
    assert decode_path(model) == "cuda-graph"
    assert decode_path(model, native=False) == "python: native=False"


@pytest.mark.cuda
@pytest.mark.parametrize(
    "name",
    ["bahdanau", "luong-general-feed", "luong-dot", "classic", "local-m", "local-p",
     "bahdanau-2layers"],
)  # fmt: skip
def test_searches_on_a_gpu_capture_without_falling_back(name):
    model = make_model(name, "auto", eos_bias=-2.0, seed=7).cuda()
    src, lengths = make_source(6, 8)
    src, lengths = src.cuda(), lengths.cuda()
    want = greedy_decode(model, src, lengths, 60, min_len=2, native=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns: fail on it
        got = greedy_decode(model, src, lengths, 60, min_len=2)
        got_beam = beam_search(model, src, lengths, 4, 60, n_best=2)
    assert_same_hypotheses(got, want)
    assert_same_lists(got_beam, beam_search(model, src, lengths, 4, 60, n_best=2, native=False))
