"""The native decoder loop (fast_s2s.models.native, csrc/cpu/decoder_model.cpp, native_search.cpp)
held to the Python loop of fast_s2s.models.search, its reference: one step to float tolerance,
then greedy and beam search token for token (n-best, both length penalties, min_len, max_len
forcing, mixed source lengths, batches, every wiring and score, long outputs), scores to float
tolerance, attention maps, and bad input refused by name."""

from __future__ import annotations

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models import Seq2Seq, Seq2SeqConfig, beam_search, greedy_decode, native, search
from fast_s2s.models.search import decode_path

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason="the compiled extension is not built"
)

SRC_VOCAB, TGT_VOCAB, EOS = 11, 13, 2
# name -> Seq2SeqConfig keywords: every wiring and score the model has, tied embeddings
# (E != H: the tie projection) and a stacked decoder.
MODELS: dict[str, dict[str, object]] = {
    "bahdanau": {"wiring": "bahdanau", "score": "additive"},
    "luong-dot": {"wiring": "luong", "score": "dot"},
    "luong-general": {"wiring": "luong", "score": "general"},
    "luong-concat": {"wiring": "luong", "score": "concat"},
    "luong-general-feed": {"wiring": "luong", "score": "general", "input_feeding": True},
    "luong-concat-feed": {"wiring": "luong", "score": "concat", "input_feeding": True},
    "classic": {"attention": "none"},
    "bahdanau-tied-2layers": {"tie_embeddings": True, "decoder_layers": 2, "embed_size": 8},
    "luong-dot-tied": {"wiring": "luong", "score": "dot", "tie_embeddings": True},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(
    name: str, seed: int = 0, sharpness: float = 3.0, eos_bias: float = 0.0, dtype=torch.float32
) -> Seq2Seq:
    """A random model on the cpp backend with peaked output distributions (so the best token is
    not a near-tie) and, with eos_bias < 0, long outputs."""
    kw = dict(MODELS[name])
    embed = kw.pop("embed_size", 10)
    torch.manual_seed(seed)
    config = Seq2SeqConfig(
        src_vocab_size=SRC_VOCAB,
        tgt_vocab_size=TGT_VOCAB,
        embed_size=embed,
        hidden_size=12,
        backend="cpp",
        **kw,  # type: ignore[arg-type]
    )
    model = Seq2Seq(config).to(dtype).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(sharpness)
        model.decoder.out.bias[EOS] += eos_bias
    return model


def make_source(batch: int, seed: int, width: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=gen)
    lengths[0] = width
    src = torch.randint(3, SRC_VOCAB, (batch, width), generator=gen)
    return src.masked_fill(torch.arange(width) >= lengths[:, None], 0), lengths


def assert_same_hypotheses(got, want, tol: float = 1e-4) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.tokens == w.tokens
        assert g.score == pytest.approx(w.score, rel=tol, abs=tol)
        assert g.attention.shape == w.attention.shape
        torch.testing.assert_close(g.attention, w.attention, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_native_path_is_taken(name, monkeypatch):
    """decode_path says native, and the search runs without the Python step (which would
    raise here)."""
    model = make_model(name)
    assert decode_path(model) == "native"
    assert decode_path(model, native=False) == "python: native=False"

    def no_python_step(*args, **kwargs):
        raise AssertionError("the Python step ran")

    monkeypatch.setattr(search, "_step", no_python_step)
    src, lengths = make_source(2, 0)
    greedy_decode(model, src, lengths, 10)
    beam_search(model, src, lengths, 3, 10)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("force_eos,block_eos", [(False, False), (False, True), (True, False)])
def test_step_matches_the_python_step(name, force_eos, block_eos):
    model = make_model(name)
    src, lengths = make_source(3, 1)
    beam = 2
    with torch.no_grad():
        enc = model.encode(src, lengths)
        state = model.initial_state(enc, beam)
        gen = torch.Generator().manual_seed(2)
        prev = torch.randint(0, TGT_VOCAB, (3 * beam,), generator=gen)
        # a state that is not the initial one: one step in, then the rows reordered
        _, state, _ = search._step(model, enc, state, prev, beam, force_eos=False, block_eos=False)
        state = model.reorder_state(state, torch.tensor([1, 1, 2, 3, 5, 4]))
        want = search._step(model, enc, state, prev, beam, force_eos=force_eos, block_eos=block_eos)
        got = native.step(model, enc, state, prev, beam, force_eos=force_eos, block_eos=block_eos)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1].hidden, want[1].hidden, atol=1e-5, rtol=1e-5)
    if want[1].feed is None:
        assert got[1].feed is None
    else:
        torch.testing.assert_close(got[1].feed, want[1].feed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[2], want[2], atol=1e-6, rtol=1e-5)
    assert torch.equal(got[0].argmax(-1), want[0].argmax(-1))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("min_len", [0, 4])
def test_greedy_matches_the_python_loop(name, min_len):
    model = make_model(name, seed=3)
    # 3 rows: the single-thread matrix-vector products; 9 rows: the packed products
    src, lengths = make_source(3 if min_len else 9, 4)
    got = greedy_decode(model, src, lengths, 20, min_len=min_len)
    want = greedy_decode(model, src, lengths, 20, min_len=min_len, native=False)
    assert_same_hypotheses(got, want)
    assert all(len(h.tokens) >= min_len for h in got)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("beam", [1, 3, 5])
def test_beam_matches_the_python_loop(name, beam):
    model = make_model(name, seed=5)
    src, lengths = make_source(4, 6)
    # alpha < 0: lp falls with length, the bound is lp of the shortest finish (t + 2 tokens)
    for penalty, alpha in (("power", 1.0), ("power", 0.0), ("gnmt", 0.6), ("power", -0.5)):
        kw = dict(penalty=penalty, n_best=beam, min_len=2)
        got = beam_search(model, src, lengths, beam, 15, alpha, **kw)
        want = beam_search(model, src, lengths, beam, 15, alpha, **kw, native=False)
        assert [len(r) for r in got] == [len(r) for r in want]
        for g, w in zip(got, want, strict=True):
            assert_same_hypotheses(g, w)


@pytest.mark.parametrize("name", ["bahdanau", "luong-general-feed", "classic"])
def test_n_best_none_and_one(name):
    model = make_model(name, seed=7)
    src, lengths = make_source(3, 8)
    assert_same_hypotheses(
        beam_search(model, src, lengths, 4, 12),
        beam_search(model, src, lengths, 4, 12, native=False),
    )
    got = beam_search(model, src, lengths, 4, 12, n_best=1)
    want = beam_search(model, src, lengths, 4, 12, n_best=1, native=False)
    assert [len(r) for r in got] == [1, 1, 1]
    assert_same_hypotheses([r[0] for r in got], [r[0] for r in want])


@pytest.mark.parametrize("name", ["bahdanau", "luong-concat-feed", "classic"])
def test_long_outputs(name):
    """eos made improbable: outputs of 60+ tokens, where a small per-step difference in the
    state would compound into different tokens."""
    model = make_model(name, seed=9, sharpness=2.0, eos_bias=-4.0)
    src, lengths = make_source(4, 10)
    got = greedy_decode(model, src, lengths, 80)
    want = greedy_decode(model, src, lengths, 80, native=False)
    assert_same_hypotheses(got, want, tol=1e-4)
    assert max(len(h.tokens) for h in got) >= 60
    got_b = beam_search(model, src, lengths, 5, 70, n_best=2)
    want_b = beam_search(model, src, lengths, 5, 70, n_best=2, native=False)
    for g, w in zip(got_b, want_b, strict=True):
        assert_same_hypotheses(g, w, tol=1e-4)
    assert max(len(h.tokens) for r in got_b for h in r) >= 60


@pytest.mark.parametrize("max_len", [0, 1, 5])
def test_max_len_forces_eos(max_len):
    model = make_model("bahdanau", seed=11, eos_bias=-1e4)
    src, lengths = make_source(3, 12)
    got = greedy_decode(model, src, lengths, max_len)
    assert_same_hypotheses(got, greedy_decode(model, src, lengths, max_len, native=False), 1e-3)
    assert [len(h.tokens) for h in got] == [max_len] * 3
    got_b = beam_search(model, src, lengths, 3, max_len, n_best=3)
    want_b = beam_search(model, src, lengths, 3, max_len, n_best=3, native=False)
    for g, w in zip(got_b, want_b, strict=True):
        assert_same_hypotheses(g, w, 1e-3)
        assert all(len(h.tokens) == max_len for h in g)


def test_batch_rows_are_independent():
    """A sentence decodes the same alone and in a batch of mixed lengths."""
    model = make_model("luong-general-feed", seed=13)
    src, lengths = make_source(6, 14)
    batch = beam_search(model, src, lengths, 3, 15, n_best=2)
    for b in range(6):
        alone = beam_search(model, src[b : b + 1], lengths[b : b + 1], 3, 15, n_best=2)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in batch[b]]


def test_float64_model():
    model = make_model("luong-concat-feed", seed=15, dtype=torch.float64)
    assert decode_path(model) == "native"
    src, lengths = make_source(3, 16)
    assert_same_hypotheses(
        greedy_decode(model, src, lengths, 20),
        greedy_decode(model, src, lengths, 20, native=False),
        1e-9,
    )
    got = beam_search(model, src, lengths, 4, 20, n_best=4, penalty="gnmt", length_penalty=0.6)
    want = beam_search(
        model, src, lengths, 4, 20, n_best=4, penalty="gnmt", length_penalty=0.6, native=False
    )
    for g, w in zip(got, want, strict=True):
        assert_same_hypotheses(g, w, 1e-9)


def test_other_backends_fall_back_to_the_python_loop():
    model = make_model("bahdanau")
    model.config.backend = "reference"
    for module in model.modules():
        if hasattr(module, "backend"):
            module.backend = "reference"
    path = decode_path(model)
    assert path.startswith("python: ") and "reference" in path
    src, lengths = make_source(2, 17)
    assert_same_hypotheses(
        greedy_decode(model, src, lengths, 10), greedy_decode(model, src, lengths, 10, native=False)
    )
    bf16 = make_model("bahdanau").to(torch.bfloat16)
    assert "bfloat16" in decode_path(bf16)


def test_native_must_be_a_bool():
    model = make_model("bahdanau")
    src, lengths = make_source(1, 18)
    with pytest.raises(TypeError, match="native"):
        greedy_decode(model, src, lengths, 5, native="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="native"):
        beam_search(model, src, lengths, 2, 5, native=1)  # type: ignore[arg-type]


def _op_args(model: Seq2Seq):
    src, lengths = make_source(2, 19)
    with torch.no_grad():
        enc = model.encode(src, lengths)
    params, config = native.pack(model)
    keys, values = enc.memory.keys, enc.memory.values
    return params, config, keys, values, lengths, enc.hidden


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: a.update(params=a["params"][:-1]), "params must hold"),
        (lambda a: a.update(config=a["config"][:5]), "config"),
        (lambda a: a.update(config=[7] + a["config"][1:]), r"config\[0\] \(wiring\)"),
        (lambda a: a.update(config=a["config"][:1] + [2] + a["config"][2:]), "score"),
        (lambda a: a["params"].__setitem__(2, a["params"][2][:, :5]), "w_hh"),
        (lambda a: a["params"].__setitem__(0, a["params"][0].double()), "dtype"),
        (lambda a: a.update(keys=a["keys"][:, :, :3]), "keys"),
        (lambda a: a.update(values=a["values"][:1]), "values"),
        (lambda a: a.update(lengths=torch.tensor([8, 1])), "src_lengths"),
        (lambda a: a.update(hidden=a["hidden"][:, :1]), "hidden"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_op_arguments_are_refused_by_name(change, message):
    model = make_model("bahdanau")
    params, config, keys, values, lengths, hidden = _op_args(model)
    a = dict(params=list(params), config=list(config), keys=keys, values=values)
    a.update(lengths=lengths, hidden=hidden)
    change(a)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fast_s2s.decode_greedy(
            a["params"], a["config"], a["keys"], a["values"], None, a["lengths"], a["hidden"], 5, 0
        )


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(beam=0), "beam"),
        (dict(n_best=4), "n_best"),
        (dict(penalty="linear"), "penalty"),
        (dict(max_len=-1), "max_len"),
        (dict(min_len=6), "min_len"),
        (dict(alpha=float("nan")), "length_penalty"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_search_arguments_are_refused_by_name(kw, message):
    model = make_model("bahdanau")
    params, config, keys, values, lengths, hidden = _op_args(model)
    a = {"beam": 3, "max_len": 5, "min_len": 0, "alpha": 1.0, "penalty": "power", "n_best": 3}
    a.update(kw)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fast_s2s.decode_beam(
            params, config, keys, values, None, lengths, hidden, a["beam"], a["max_len"],
            a["min_len"], a["alpha"], a["penalty"], a["n_best"],
        )  # fmt: skip


@pytest.mark.parametrize("name", ["bahdanau", "luong-general-feed", "bahdanau-tied-2layers"])
def test_native_loop_reads_the_current_parameters(name):
    """native.pack finds the parameters once per model structure and looks them up on every
    call: a replaced parameter, a replaced submodule, a swapped .data and an in-place write are
    all seen by the next native decode (a stale pack would decode the old weights)."""
    model = make_model(name, seed=11)
    src, lengths = make_source(3, 12)

    def agree():
        want = greedy_decode(model, src, lengths, 12, native=False)
        assert_same_hypotheses(greedy_decode(model, src, lengths, 12), want)
        return [h.tokens for h in want]

    agree()
    dec = model.decoder
    dec.out.bias = torch.nn.Parameter(torch.randn_like(dec.out.bias) * 4)
    agree()
    dec.rnn.weight_hh_l0.data = torch.randn_like(dec.rnn.weight_hh_l0) * 2
    agree()
    with torch.no_grad():
        dec.embedding.weight.mul_(-1.0)
    agree()
    old = dec.out
    dec.out = torch.nn.Linear(old.in_features, old.out_features)
    with torch.no_grad():
        dec.out.weight.copy_(torch.randn_like(old.weight) * 5)
    agree()


def test_step_refuses_bad_tokens_and_missing_feed():
    model = make_model("luong-general-feed")
    params, config, keys, values, lengths, hidden = _op_args(model)
    feed = torch.zeros(2, 12)
    args = (params, config, keys, values, None, lengths, hidden)
    with pytest.raises(RuntimeError, match="prev"):
        torch.ops.fast_s2s.decoder_step(*args, feed, torch.tensor([0, TGT_VOCAB]), 1)
    with pytest.raises(RuntimeError, match="feed"):
        torch.ops.fast_s2s.decoder_step(*args, None, torch.tensor([0, 1]), 1)


@pytest.mark.parametrize("name", ["bahdanau", "luong-dot", "classic"])
def test_empty_source_rows(name):
    """A source of length 0 gives zero attention weights and context; both loops agree."""
    model = make_model(name, seed=21)
    src, lengths = make_source(3, 22)
    lengths[1] = 0
    src[1] = 0
    assert_same_hypotheses(
        greedy_decode(model, src, lengths, 10), greedy_decode(model, src, lengths, 10, native=False)
    )
    got = beam_search(model, src, lengths, 3, 10, n_best=2)
    want = beam_search(model, src, lengths, 3, 10, n_best=2, native=False)
    for g, w in zip(got, want, strict=True):
        assert_same_hypotheses(g, w)
