"""Every search engine held to the Python loop, token for token: engines (tests/models/engines.py)
x wirings (every wiring and score, input feeding, local-m and local-p, tied, two layers) x search
options (greedy with and without min_len, beam 1 / 3 / 5 under both length penalties and
negative alpha with n-best, outputs of 60+ tokens, max_len forcing eos, long min_len, outputs
bounded by their sources), with
scores to float tolerance and the attention maps. Engine-specific behaviour (the native ops'
arguments, the static loop's check interval and capture) is in test_native_loop.py and
test_static_loop.py."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import pytest
import torch

from fast_s2s.models.decoding.python_loop import PythonLoop
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.decoding.static_loop import StaticLoop
from tests.models.engines import (
    ENGINES,
    WIRINGS,
    EngineCase,
    assert_same_lists,
    make_source,
    python_loop,
)
from tests.models.test_search import (
    EXHAUSTIVE_CASES,
    RANKINGS,
    case_id,
    enumerated,
    exhaustive_width,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class SearchCase:
    """What to decode: the options, the source batch, and the model's seed and eos bias (< 0:
    long outputs)."""

    name: str
    spec: SearchOptions
    batch: int = 4
    width: int = 7
    model_seed: int = 5
    source_seed: int = 6
    sharpness: float = 3.0
    eos_bias: float = 0.0
    # every output has exactly max_len tokens (eos made impossible before the forced one)
    forced: bool = False
    # outputs of at least this many tokens, on the wirings of LONG_WIRINGS (the claim that the
    # case reaches the long outputs it is about; the other wirings run it without the claim)
    long: int = 0


def _beam(beam: int, penalty: str, alpha: float) -> SearchCase:
    spec = SearchOptions(
        beam=beam, max_len=15, min_len=2, length_penalty=alpha, penalty=penalty, n_best=beam
    )
    return SearchCase(f"beam{beam}-{penalty}{alpha:g}", spec)


def _forced(max_len: int, beam: int) -> SearchCase:
    spec = SearchOptions(beam=beam, max_len=max_len, n_best=beam)
    return SearchCase(
        f"forced-eos-max{max_len}-beam{beam}", spec, batch=3, model_seed=11, source_seed=12,
        eos_bias=-1e4, forced=True,
    )  # fmt: skip


def _bounded(name: str, spec: SearchOptions, eos_bias: float = -1e4) -> SearchCase:
    """Outputs bounded by their sources (max_len_ratio), on sources of mixed lengths; with the
    default eos bias every output is exactly its sentence's limit."""
    return SearchCase(
        f"bounded-{name}", spec, batch=6, width=9, model_seed=11, source_seed=13,
        eos_bias=eos_bias, forced=eos_bias < -100,
    )  # fmt: skip


CASES = [
    # 9 rows: the native loop's packed products; 3 rows: its matrix-vector products
    SearchCase("greedy", SearchOptions(beam=1, max_len=20), batch=9, model_seed=3, source_seed=4),
    SearchCase(
        "greedy-min4",
        SearchOptions(beam=1, max_len=20, min_len=4),
        batch=3,
        model_seed=3,
        source_seed=4,
    ),  # fmt: skip
    # alpha < 0: lp falls with length, the bound is lp of the shortest finish (t + 2 tokens)
    *[
        _beam(beam, penalty, alpha)
        for beam in (1, 3, 5)
        for penalty, alpha in (("power", 1.0), ("power", 0.0), ("gnmt", 0.6), ("power", -0.5))
    ],
    SearchCase(
        "long-greedy",
        SearchOptions(beam=1, max_len=80),
        model_seed=9,
        source_seed=10,
        sharpness=2.0,
        eos_bias=-4.0,
        long=60,
    ),  # fmt: skip
    SearchCase(
        "long-beam5",
        SearchOptions(beam=5, max_len=70, n_best=2),
        model_seed=9,
        source_seed=10,
        sharpness=2.0,
        eos_bias=-4.0,
        long=60,
    ),  # fmt: skip
    SearchCase(
        "beam3-gnmt-min20",
        SearchOptions(beam=3, max_len=60, min_len=20, length_penalty=0.6, penalty="gnmt", n_best=2),
        batch=5,
        width=9,
        model_seed=3,
        source_seed=2,
        eos_bias=-3.0,
    ),  # fmt: skip
    SearchCase(
        "beam4-alpha0-max80",
        SearchOptions(beam=4, max_len=80, length_penalty=0.0, n_best=2),
        batch=5,
        width=9,
        model_seed=3,
        source_seed=2,
        eos_bias=-3.0,
    ),  # fmt: skip
    *[_forced(max_len, beam) for max_len in (0, 1, 5) for beam in (1, 3)],
    # outputs bounded by their sources: eos forced at each sentence's own limit
    _bounded("greedy", SearchOptions(beam=1, max_len=30, max_len_ratio=1.0, max_len_offset=2)),
    _bounded(
        "beam3-min2",
        SearchOptions(beam=3, max_len=9, min_len=2, max_len_ratio=1.5, max_len_offset=1, n_best=3),
    ),
    _bounded(
        "beam5-natural-eos",
        SearchOptions(beam=5, max_len=40, max_len_ratio=0.5, max_len_offset=3, n_best=2),
        eos_bias=-1.5,
    ),
]
LONG_WIRINGS = ("bahdanau", "luong-concat-feed", "classic", "luong-general-post")


@functools.cache
def reference(engine: EngineCase, wiring: str, case: SearchCase):
    """The Python loop's result on the model and source the engine decodes (cached: the
    engines on one backend share it)."""
    model, src, lengths = inputs(engine, wiring, case)
    return python_loop(model, src, lengths, case.spec)


@functools.cache
def inputs(engine: EngineCase, wiring: str, case: SearchCase):
    model = engine.model(
        wiring, seed=case.model_seed, sharpness=case.sharpness, eos_bias=case.eos_bias
    )
    src, lengths = make_source(case.batch, case.source_seed, case.width)
    return model, src.to(engine.device), lengths.to(engine.device)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("wiring", list(WIRINGS))
@pytest.mark.parametrize("engine", [e.param for e in ENGINES])
def test_engine_matches_the_python_loop(engine, wiring, case):
    model, src, lengths = inputs(engine, wiring, case)
    want = reference(engine, wiring, case)
    got = engine.decode(model, src, lengths, case.spec)
    assert_same_lists(got, want)
    spec = case.spec
    lengths_out = [len(h.tokens) for hyps in got for h in hyps]
    limits = spec.sentence_max_lens(lengths.tolist()) or [spec.max_len] * len(got)
    for hyps, limit in zip(got, limits, strict=True):
        assert all(spec.min_len <= len(h.tokens) <= limit for h in hyps)
        if case.forced:
            assert [len(h.tokens) for h in hyps] == [limit] * len(hyps)
    if case.long and wiring in LONG_WIRINGS:
        assert max(lengths_out) >= case.long  # the case reaches the long outputs it is about


def _on(engine: EngineCase, model):
    """The same model (weights and configuration) on the engine's backend and device."""
    config = dataclasses.replace(model.config, backend=engine.backend)
    twin = type(model)(config)
    twin.load_state_dict(model.state_dict())
    return twin.eval().to(engine.device)


def _trace(engine, model, src, lengths, spec: SearchOptions):
    with torch.no_grad():
        encoded = engine.encode(model, src, lengths)
        return engine.run(model, encoded, spec)


@pytest.mark.parametrize("penalty,alpha", [*RANKINGS, ("power", -0.5)], ids=str)
@pytest.mark.parametrize("case", EXHAUSTIVE_CASES[::3], ids=case_id)
@pytest.mark.parametrize("engine", [e.param for e in ENGINES])
def test_the_stopping_rule_on_exhaustive_beams(engine, case, penalty, alpha):
    """A beam that keeps every prefix (test_search.py's exhaustive cases), where the stopping
    rule alone decides when a sentence ends: the same n-best lists, with the k-th best finished
    hypothesis gathered over several steps (n_best 3), and the search stops at the Python loop's
    step (the static loop checking every step). A negative alpha makes the shortest reachable
    length the bound's."""
    wiring, vocab, max_len, _ = case
    reference_model, src, lengths, _, _ = enumerated(*case)
    model = _on(engine, reference_model)
    src, lengths = src.to(engine.device), lengths.to(engine.device)
    width = exhaustive_width(vocab - 3, max_len, vocab)
    fast = engine.make()
    if isinstance(fast, StaticLoop):
        fast.check_every = 1
    for n_best, min_len in ((1, 0), (3, 0), (3, 2)):
        spec = SearchOptions(
            beam=width, max_len=max_len, min_len=min_len, length_penalty=alpha, penalty=penalty,
            n_best=n_best,
        )  # fmt: skip
        assert_same_lists(
            engine.decode(model, src, lengths, spec), python_loop(model, src, lengths, spec)
        )
        want = _trace(PythonLoop(), model, src, lengths, spec)
        got = _trace(fast, model, src, lengths, spec)
        # Stopping late returns the same lists; it must stop where the Python loop does.
        assert got.tokens.shape[0] == want.tokens.shape[0]


@pytest.mark.parametrize("fill", [float("nan"), float("inf"), float("-inf")], ids=str)
@pytest.mark.parametrize("engine", [e.param for e in ENGINES])
def test_a_model_without_finite_scores_is_refused_by_every_engine(engine, fill):
    """Non-finite output weights: no hypothesis has a finite score, and every engine (the
    Python loop too) refuses the model with the same message, for greedy and beam search."""
    model = engine.model("bahdanau")
    with torch.no_grad():
        model.decoder.out.bias.fill_(fill)
    src, lengths = make_source(2, 0)
    for spec in (SearchOptions(beam=1, max_len=5), SearchOptions(beam=3, max_len=5, n_best=2)):
        for decode in (engine.decode, python_loop):
            with pytest.raises(ValueError, match="no hypothesis of sentence 0 has a finite"):
                decode(model, src.to(engine.device), lengths.to(engine.device), spec)
