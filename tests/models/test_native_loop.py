"""The native engine's own behaviour (fast_s2s.models.decoding.native_loop, native_params,
csrc/cpu/decoder_params.cpp, decoder_model.cpp, native_search.cpp); its results against the
Python loop over every wiring and option are test_search_engines.py's. Here: the path is taken
without the Python step, one step to float tolerance, float64, fallbacks, the named C++ boundary
(a missing, unexpected or mis-shaped entry refused by name), the current parameters read on
every call, and empty sources."""

from __future__ import annotations

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models import beam_search, decode_path, greedy_decode
from fast_s2s.models.decoding import native_params, python_loop
from tests.models.engines import (
    TGT_VOCAB,
    WIRINGS,
    assert_same_hypotheses,
    assert_same_lists,
    make_model,
    make_source,
)

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason="the compiled extension is not built"
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(WIRINGS))
def test_native_path_is_taken(name, monkeypatch):
    """decode_path says native, and the search runs without the Python step (which would
    raise here)."""
    model = make_model(name)
    assert decode_path(model) == "native"
    assert decode_path(model, native=False) == "python: native=False"

    def no_python_step(*args, **kwargs):
        raise AssertionError("the Python step ran")

    monkeypatch.setattr(python_loop, "step", no_python_step)
    src, lengths = make_source(2, 0)
    greedy_decode(model, src, lengths, 10)
    beam_search(model, src, lengths, 3, 10)


@pytest.mark.parametrize("name", list(WIRINGS))
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
        _, state, _ = python_loop.step(
            model, enc, state, prev, beam, force_eos=False, block_eos=False
        )
        state = model.reorder_state(state, torch.tensor([1, 1, 2, 3, 5, 4]))
        kinds = dict(force_eos=force_eos, block_eos=block_eos)
        want = python_loop.step(model, enc, state, prev, beam, **kinds)
        got = native_params.step(model, enc, state, prev, beam, **kinds)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1].hidden, want[1].hidden, atol=1e-5, rtol=1e-5)
    if want[1].feed is None:
        assert got[1].feed is None
    else:
        torch.testing.assert_close(got[1].feed, want[1].feed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[2], want[2], atol=1e-6, rtol=1e-5)
    assert torch.equal(got[0].argmax(-1), want[0].argmax(-1))


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
    kw = dict(n_best=4, penalty="gnmt", length_penalty=0.6)
    got = beam_search(model, src, lengths, 4, 20, **kw)
    assert_same_lists(got, beam_search(model, src, lengths, 4, 20, **kw, native=False), 1e-9)


def test_other_backends_fall_back_to_the_python_loop():
    model = make_model("bahdanau", backend="reference")
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


def _op_args(model):
    src, lengths = make_source(2, 19)
    with torch.no_grad():
        enc = model.encode(src, lengths)
    params, config, kinds = native_params.pack(model)
    keys, values = enc.memory.keys, enc.memory.values
    return dict(params), dict(config), dict(kinds), keys, values, lengths, enc.hidden


def _drop(d: dict, key: str) -> None:
    del d[key]


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: _drop(a["params"], "out_b"), r"params is missing 'out_b'"),
        (lambda a: a["params"].update(extra=a["params"]["out_b"]), "unexpected entry 'extra'"),
        (lambda a: _drop(a["config"], "layers"), r"config is missing 'layers'"),
        (lambda a: a["config"].update(colour=1), r"config has an unknown entry 'colour'"),
        (lambda a: _drop(a["kinds"], "wiring"), r"kinds is missing 'wiring'"),
        (lambda a: a["kinds"].update(wiring="transformer"), r"kinds\['wiring'\] must be one of"),
        (lambda a: a["kinds"].update(score="dot"), r"kinds\['score'\] must be 'additive'"),
        (lambda a: a["config"].update(tie_proj=2), r"config\['tie_proj'\] must be 0 or 1"),
        (lambda a: a["config"].update(layers=2), r"params is missing 'w_ih_l1'"),
        (lambda a: a["config"].update(tie_proj=1), r"params is missing 'tie_proj'"),
        (lambda a: a["config"].update(post_gru=1), r"config\['post_gru'\] needs the luong"),
        (lambda a: a["config"].update(post_gru=2), r"config\['post_gru'\] must be 0 or 1"),
        (lambda a: a["config"].update(eos=TGT_VOCAB), r"config\['pad'\], \['bos'\] and \['eos'\]"),
        (
            lambda a: a["params"].update(w_hh_l0=a["params"]["w_hh_l0"][:, :5]),
            r"params\['w_hh_l0'\] must have shape",
        ),
        (
            lambda a: a["params"].update(embedding=a["params"]["embedding"].double()),
            r"params\['w_ih_l0'\] must have the embedding's dtype",
        ),
        (lambda a: a.update(keys=a["keys"][:, :, :3]), "keys"),
        (lambda a: a.update(values=a["values"][:1]), "values"),
        (lambda a: a.update(lengths=torch.tensor([8, 1])), "src_lengths"),
        (lambda a: a.update(hidden=a["hidden"][:, :1]), "hidden"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_op_arguments_are_refused_by_name(change, message):
    model = make_model("bahdanau")
    params, config, kinds, keys, values, lengths, hidden = _op_args(model)
    a = dict(params=params, config=config, kinds=kinds, keys=keys, values=values)
    a.update(lengths=lengths, hidden=hidden)
    change(a)
    tables = torch.ones(6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fast_s2s.decode_beam(
            a["params"], a["config"], a["kinds"], a["keys"], a["values"], None, a["lengths"],
            a["hidden"],
            beam=1, max_len=5, min_len=0, n_best=1, finish_lp=tables, reach_lp=tables,
        )  # fmt: skip


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda a: _drop(a["params"], "w_hh_post"), r"params is missing 'w_hh_post'"),
        (lambda a: a.update(hidden=a["hidden"][:1]), r"hidden must have shape \(state rows"),
        (lambda a: a["config"].update(post_gru=0), r"unexpected entry '\w+_post'"),
    ],
    ids=["weights", "state-rows", "config"],
)
def test_a_post_attention_gru_needs_its_weights_and_its_state_row(change, message):
    model = make_model("luong-general-post")
    params, config, kinds, keys, values, lengths, hidden = _op_args(model)
    assert hidden.shape[0] == 2  # the decoder layer's row, then the post-attention GRU's
    a = dict(params=params, config=config, kinds=kinds, hidden=hidden)
    change(a)
    tables = torch.ones(6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fast_s2s.decode_beam(
            a["params"], a["config"], a["kinds"], keys, values, None, lengths, a["hidden"],
            beam=1, max_len=5, min_len=0, n_best=1, finish_lp=tables, reach_lp=tables,
        )  # fmt: skip


@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(beam=0), "beam"),
        (dict(n_best=4), "n_best"),
        (dict(max_len=-1), "max_len"),
        (dict(min_len=6), "min_len"),
        (dict(finish_lp=torch.ones(5, dtype=torch.float64)), "finish_lp must be a"),
        (dict(reach_lp=torch.ones(6)), "reach_lp must be a"),
        (dict(finish_lp=torch.full((6,), float("nan"), dtype=torch.float64)), "finish_lp must"),
        (dict(reach_lp=torch.zeros(6, dtype=torch.float64)), "reach_lp must hold finite positive"),
        (dict(beam=2**62, n_best=1), r"beam \* batch \* \(max_len \+ 1\) must be at most 2\^40"),
        (dict(max_len=2**62), r"max_len must lie in \[0, 2\^40\)"),
        (dict(max_lens=torch.tensor([3])), r"max_lens must be a \(B,\) = \(2,\) int64"),
        (dict(max_lens=torch.tensor([3.0, 4.0])), "max_lens must be a"),
        (dict(max_lens=torch.tensor([3, 6])), r"max_lens must lie in \[min_len = 0, max_len = 5"),
        (dict(min_len=2, max_lens=torch.tensor([3, 1])), r"got 1 at sentence 1"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_search_arguments_are_refused_by_name(kw, message):
    model = make_model("bahdanau")
    params, config, kinds, keys, values, lengths, hidden = _op_args(model)
    tables = torch.ones(6, dtype=torch.float64)
    a = dict(beam=3, max_len=5, min_len=0, n_best=3, finish_lp=tables, reach_lp=tables)
    a.update(kw)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fast_s2s.decode_beam(
            params, config, kinds, keys, values, None, lengths, hidden, **a
        )


@pytest.mark.parametrize("name", ["bahdanau", "luong-general-feed", "bahdanau-tied-2layers"])
def test_native_loop_reads_the_current_parameters(name):
    """native_params.pack finds the parameters once per model structure and looks them up on
    every call: a replaced parameter, a replaced submodule, a swapped .data and an in-place
    write are all seen by the next native decode (a stale pack would decode the old weights)."""
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
    params, config, kinds, keys, values, lengths, hidden = _op_args(model)
    feed = torch.zeros(2, 12)
    args = (params, config, kinds, keys, values, None, lengths, hidden)
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
    assert_same_lists(got, beam_search(model, src, lengths, 3, 10, n_best=2, native=False))


@pytest.mark.parametrize("name", list(WIRINGS))
@pytest.mark.parametrize("beam,n_best,ratio", [(1, 1, None), (3, 2, None), (4, 3, 1.5)])
def test_search_op_is_encode_decode_beam_and_assemble(name, beam, n_best, ratio):
    """torch.ops.fast_s2s.search (the searches' one call) returns exactly what its three ops
    return in sequence: the native encoder, decode_beam, assemble_trace."""
    from fast_s2s.models.decoding import native_encoder
    from fast_s2s.models.decoding.spec import SearchOptions

    model = make_model(name, seed=5, eos_bias=-2.0)
    src, lengths = make_source(4, 21, width=30)
    spec = SearchOptions(beam=beam, max_len=40, n_best=n_best, max_len_ratio=ratio)
    tables = spec.tables
    limits = None
    if ratio is not None:
        limits = torch.tensor(spec.sentence_max_lens(lengths.tolist()), dtype=torch.int64)
    options = dict(
        beam=beam, max_len=40, min_len=0, n_best=n_best, finish_lp=tables.finish_tensor,
        reach_lp=tables.reach_tensor, max_lens=limits,
    )  # fmt: skip
    with torch.no_grad():
        encoder_args, decoder_args = native_encoder.pack(model), native_params.pack(model)
        got = torch.ops.fast_s2s.search(*encoder_args, src, lengths, *decoder_args, **options)
        encoded = native_encoder.encode(model, src, lengths)
        keys, values, context, host_lengths = native_params.memory(encoded)
        trace = torch.ops.fast_s2s.decode_beam(
            *decoder_args, keys, values, context, host_lengths, encoded.hidden, **options
        )
        want = torch.ops.fast_s2s.assemble_trace(*trace, tables.finish_tensor, n_best)
    assert len(got) == len(want) == 5
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and torch.equal(g, w)
    assert int(got[1].max()) >= 20  # long outputs: eos held back


def test_the_search_op_refuses_a_decoder_that_does_not_fit_the_encoder():
    """The decoder's arguments are checked against the encoder's output by name, as decode_beam
    checks them against the memory it is given."""
    from fast_s2s.models.decoding import native_encoder
    from fast_s2s.models.decoding.spec import SearchOptions

    model, other = make_model("bahdanau"), make_model("bahdanau-2layers")
    src, lengths = make_source(2, 3)
    tables = SearchOptions(max_len=5).tables
    with torch.no_grad(), pytest.raises(RuntimeError, match="search: "):
        torch.ops.fast_s2s.search(
            *native_encoder.pack(model), src, lengths, *native_params.pack(other), beam=1,
            max_len=5, min_len=0, n_best=1, finish_lp=tables.finish_tensor,
            reach_lp=tables.reach_tensor,
        )  # fmt: skip


def test_the_plan_follows_the_model(monkeypatch):
    """What the native engine keeps per model (native_plan) is made again when the model
    changes: replaced encoder and decoder parameters and submodules, the config edited in place,
    the encoder GRU's backend, the weights' dtype, AUTO_PREFERENCE; each search agrees with the
    Python loop on the model as it is then (a stale plan would decode the old model or claim
    the native path)."""
    import fast_s2s.backends
    from fast_s2s.models.decoding.native_plan import plan_for

    model = make_model("bahdanau", seed=13)
    src, lengths = make_source(3, 8)

    def agree(path: str = "native"):
        assert decode_path(model).startswith(path)
        want = greedy_decode(model, src, lengths, 12, native=False)
        assert_same_hypotheses(greedy_decode(model, src, lengths, 12), want)
        assert_same_lists(
            beam_search(model, src, lengths, 3, 12, n_best=2),
            beam_search(model, src, lengths, 3, 12, n_best=2, native=False),
        )
        return [h.score for h in want]

    first = agree()
    enc = model.encoder
    enc.rnn.weight_hh_l0 = torch.nn.Parameter(torch.randn_like(enc.rnn.weight_hh_l0) * 3)
    enc.embedding = torch.nn.Embedding(enc.embedding.num_embeddings, enc.embedding.embedding_dim)
    assert agree() != pytest.approx(first, abs=1e-3)  # the new encoder weights were read
    model.decoder.readout = torch.nn.Linear(
        model.decoder.readout.in_features, model.decoder.readout.out_features
    )
    agree()
    enc.rnn.backend = "reference"  # the encoder on the reference GRU: not the native encoder
    assert plan_for(model).encoder_unavailable is not None
    agree()
    enc.rnn.backend = "cpp"
    assert plan_for(model).encoder_unavailable is None
    model.config.backend = "reference"  # edited in place: the searches leave the native path
    agree("python")
    model.config.backend = "cpp"
    monkeypatch.setitem(fast_s2s.backends.AUTO_PREFERENCE, "cpu", ("reference",))
    model.config.backend = "auto"
    agree("python")
    monkeypatch.undo()
    agree()
    model.to(torch.float64)  # the same Parameter objects, float64 data
    assert greedy_decode(model, src, lengths, 12)[0].attention.dtype == torch.float32
    agree()
    model.to(torch.bfloat16)
    agree("python")


def test_the_plan_does_not_keep_the_model_alive():
    import gc
    import weakref

    model = make_model("luong-general")
    greedy_decode(model, *make_source(2, 1), 5)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
