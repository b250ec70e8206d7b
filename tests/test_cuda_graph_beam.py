"""The static-buffer beam loop (fast_s2s.models.cuda_graph_beam) held to the Python beam loop of
fast_s2s.models.search: the same n-best lists (tokens, scores, attention), eagerly
(capture=False, the very steps a graph captures) on the CPU kernels and on the CUDA kernels' code
under the CPU emulation, and captured on a GPU (marked cuda: scripts/gpu_check.sh runs it).
Every wiring and score, local attention, both length penalties, min_len, forced eos, outputs of
up to 120 tokens, how often the host checks, and exhaustive beams where the stopping rule alone
ends a sentence (it must stop at the Python loop's step)."""

from __future__ import annotations

import pytest
import torch

from fast_s2s.models import beam_search
from fast_s2s.models.cuda_graph_beam import beam_search_graph
from tests.test_cuda_graph import CPU_BACKENDS, MODELS, assert_same, make_model
from tests.test_native_search import make_source
from tests.test_search import EXHAUSTIVE_CASES, RANKINGS, case_id, enumerated, exhaustive_width


def assert_same_lists(got, want) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert_same(g, w)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_eager_static_beam_matches_the_python_loop(name, backend):
    model = make_model(name, backend, eos_bias=-1.0, seed=1)
    src, lengths = make_source(4, 1)
    for n_best in (None, 3):
        want = beam_search(model, src, lengths, 4, 20, n_best=n_best, native=False)
        got = beam_search_graph(model, src, lengths, 4, 20, n_best=n_best, capture=False)
        if n_best is None:
            assert_same(got, want)
        else:
            assert_same_lists(got, want)


SEARCHES = [
    {"beam_size": 5, "max_len": 120, "length_penalty": 1.0},
    {"beam_size": 3, "max_len": 60, "length_penalty": 0.6, "penalty": "gnmt", "min_len": 20},
    {"beam_size": 4, "max_len": 80, "length_penalty": 0.0},
    {"beam_size": 2, "max_len": 2, "min_len": 2},
    {"beam_size": 3, "max_len": 0},
]


@pytest.mark.parametrize("check_every", [1, 7, 1000])
@pytest.mark.parametrize("name", ["bahdanau", "local-p", "luong-general-feed"])
def test_long_outputs_penalties_min_len_and_forced_eos(name, check_every):
    """Outputs from 0 to 120 tokens, some cut by max_len, some held by min_len; the check
    interval changes nothing but how many extra (masked) steps run."""
    model = make_model(name, CPU_BACKENDS[-1], eos_bias=-3.0, seed=3)
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


@pytest.mark.parametrize("penalty,alpha", [*RANKINGS, ("power", -0.5)], ids=str)
@pytest.mark.parametrize("case", EXHAUSTIVE_CASES[::3], ids=case_id)
def test_the_stopping_rule_on_exhaustive_beams(case, penalty, alpha, monkeypatch):
    """A beam that keeps every prefix (tests/test_search.py's exhaustive cases), where the
    stopping rule alone decides when a sentence ends: the same n-best lists, with the k-th best
    finished hypothesis gathered over several steps (n_best 3). A negative alpha makes the
    shortest reachable length the bound's."""
    wiring, vocab, max_len, _ = case
    model, src, lengths, _, _ = enumerated(*case)
    width = exhaustive_width(vocab - 3, max_len, vocab)
    steps = count_steps(model, monkeypatch)
    for n_best, min_len in ((1, 0), (3, 0), (3, 2)):
        kwargs = {"n_best": n_best, "penalty": penalty, "min_len": min_len}
        steps.clear()
        want = beam_search(model, src, lengths, width, max_len, alpha, native=False, **kwargs)
        python_steps = len(steps)
        steps.clear()
        got = beam_search_graph(
            model, src, lengths, width, max_len, alpha, check_every=1, capture=False, **kwargs
        )
        assert_same_lists(got, want)
        # Stopping late returns the same lists; checked every step, it stops where Python does.
        assert len(steps) == python_steps


def count_steps(model, monkeypatch) -> list[None]:
    """A list that grows by one at every model.decode_step call."""
    steps: list[None] = []
    decode_step = model.decode_step

    def counted(*args, **kwargs):
        steps.append(None)
        return decode_step(*args, **kwargs)

    monkeypatch.setattr(model, "decode_step", counted)
    return steps


@pytest.mark.parametrize("name", ["bahdanau", "luong-general-feed", "local-m", "classic"])
def test_eager_static_beam_on_the_emulated_cuda_kernels(name, emulated_cuda_kernels):
    model = make_model(name, "reference", eos_bias=-1.0, seed=5)
    src, lengths = make_source(3, 4)
    want = beam_search(model, src, lengths, 3, 12, n_best=2, native=False)  # before the patch ran
    emulated_cuda_kernels.update(dict.fromkeys(emulated_cuda_kernels, 0))
    got = beam_search_graph(model, src, lengths, 3, 12, n_best=2, check_every=4, capture=False)
    assert_same_lists(got, want)
    assert emulated_cuda_kernels["gru_cell"] > 0  # the decoder's steps ran the CUDA kernels


def test_bad_arguments_are_refused():
    model = make_model("bahdanau", "reference")
    src, lengths = make_source(1, 0)
    with pytest.raises(ValueError, match="capture=True needs the model on CUDA"):
        beam_search_graph(model, src, lengths, 3, 5, capture=True)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="check_every"):
            beam_search_graph(model, src, lengths, 3, 5, check_every=bad, capture=False)
    with pytest.raises(ValueError, match="n_best"):
        beam_search_graph(model, src, lengths, 3, 5, n_best=4, capture=False)
    with pytest.raises(ValueError, match="penalty"):
        beam_search_graph(model, src, lengths, 3, 5, penalty="linear", capture=False)


def test_a_model_without_finite_scores_is_refused():
    model = make_model("bahdanau", "reference")
    with torch.no_grad():
        model.decoder.out.bias.fill_(float("nan"))
    src, lengths = make_source(2, 0)
    with pytest.raises(ValueError, match="no hypothesis of sentence 0"):
        beam_search_graph(model, src, lengths, 3, 5, capture=False)


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(MODELS))
def test_captured_beam_graphs_match_the_python_loop_on_a_gpu(name):
    model = make_model(name, "auto", eos_bias=-2.0, seed=7).cuda()
    src, lengths = make_source(6, 8)
    src, lengths = src.cuda(), lengths.cuda()
    want = beam_search(model, src, lengths, 4, 60, n_best=2, min_len=2, native=False)
    got = beam_search_graph(model, src, lengths, 4, 60, n_best=2, min_len=2)
    assert_same_lists(got, want)
