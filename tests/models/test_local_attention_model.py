"""The Luong decoder with local attention (config.local "m" / "p", issue 16): config and
checkpoints, teacher forcing against step decoding, greedy and beam search on long outputs
against a slow step-by-step decode and the teacher-forced scores, the native C++ loop against
the Python loop token for token, training, and `fast-s2s train --local`.

Small models, single-threaded; the sources are long (40-70 positions) so that the window (D = 4
here, 10 in the CLI test) covers a small part of them.
"""

from __future__ import annotations

import pytest
import torch

from fast_s2s import cli
from fast_s2s.backends import why_unavailable
from fast_s2s.models import (
    Seq2Seq,
    Seq2SeqConfig,
    beam_search,
    decode_path,
    greedy_decode,
)
from fast_s2s.models.decoding import native_params, python_loop
from fast_s2s.training import Translator, checkpoint

VOCAB, PAD, BOS, EOS = 12, 0, 1, 2
WINDOW = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def local_config(local: str = "p", score: str = "general", **over) -> Seq2SeqConfig:
    kw = dict(
        src_vocab_size=VOCAB,
        tgt_vocab_size=VOCAB,
        embed_size=16,
        hidden_size=32,
        wiring="luong",
        score=score,
        local=local,
        window=WINDOW,
        backend="reference",
    )
    kw.update(over)
    return Seq2SeqConfig(**kw)


def local_model(local: str = "p", seed: int = 0, **over) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(local_config(local, **over)).eval()


def long_batch(lengths=(70, 41, 63), seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    src = torch.randint(3, VOCAB, (len(lengths), max(lengths)), generator=g)
    src = src.masked_fill(torch.arange(max(lengths)) >= lens[:, None], PAD)
    return src, lens


# name -> (local, score, input_feeding)
MODELS = {
    "local-p-general": ("p", "general", False),
    "local-p-dot": ("p", "dot", False),
    "local-m-general": ("m", "general", False),
    "local-m-dot-feed": ("m", "dot", True),
    "local-p-general-feed": ("p", "general", True),
}


def model_of(name: str, seed: int = 0) -> Seq2Seq:
    local, score, feed = MODELS[name]
    return local_model(local, seed, score=score, input_feeding=feed)


# -- config and checkpoints ----------------------------------------------------------------------


def test_config_fields_defaults_and_round_trip():
    plain = Seq2SeqConfig(src_vocab_size=5, tgt_vocab_size=5)
    assert (plain.local, plain.window) == ("none", 10)
    cfg = local_config("m", window=7)
    d = cfg.to_dict()
    assert d["local"] == "m" and d["window"] == 7
    assert Seq2SeqConfig.from_dict(d) == cfg
    old = {k: v for k, v in local_config("none").to_dict().items() if k not in ("local", "window")}
    loaded = Seq2SeqConfig.from_dict(old)  # a checkpoint from before local attention
    assert (loaded.local, loaded.window) == ("none", 10)


@pytest.mark.parametrize(
    "over,message",
    [
        (dict(local="q"), "local must be one of"),
        (dict(local=True), "local must be one of"),
        (dict(window=-1), "window must be a non-negative integer"),
        (dict(window=2.5), "window must be a non-negative integer"),
        (dict(window=True), "window must be a non-negative integer"),
        (dict(local="none", window=-3), "window must be a non-negative integer"),
        (dict(wiring="bahdanau", score="additive"), "local='p' .*needs wiring='luong'"),
        (dict(score="concat"), r"local='p' needs score one of \('dot', 'general'\)"),
        (dict(attention="none", score="general"), "local='p' .*needs attention='on'"),
    ],
)
def test_config_rejects_bad_local_settings_naming_the_field(over, message):
    over = {"local": "p", **over}
    with pytest.raises(ValueError, match=f"Seq2SeqConfig: {message}"):
        local_config(**over)


def test_checkpoint_round_trip_keeps_local_fields(tmp_path):
    model = model_of("local-m-general")
    path = tmp_path / "m.pt"
    checkpoint.save_checkpoint(
        path, {"config": model.config.to_dict(), "model": model.state_dict()}
    )
    data = checkpoint.load_checkpoint(path)
    config = checkpoint.model_config(data, path)
    assert (config.local, config.window, config.score) == ("m", WINDOW, "general")
    again = Seq2Seq(config).eval()
    again.load_state_dict(data["model"])
    src, lens = long_batch()
    a = greedy_decode(model, src, lens, max_len=20)
    b = greedy_decode(again, src, lens, max_len=20)
    assert [h.tokens for h in a] == [h.tokens for h in b]
    assert [h.score for h in a] == [h.score for h in b]


def test_model_has_the_local_attention_module():
    p = model_of("local-p-general")
    att = p.decoder.attention
    assert (att.kind, att.score, att.window) == ("local_p", "general", WINDOW)
    keys = {k for k in p.state_dict() if k.startswith("decoder.attention.")}
    assert keys == {
        "decoder.attention.query_proj.weight",
        "decoder.attention.position_proj.weight",
        "decoder.attention.position_v",
    }
    assert "local='p', window=4" in repr(p)
    assert model_of("local-m-dot-feed").decoder.attention.kind == "local_m"


# -- teacher forcing and step decoding ------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_teacher_forcing_equals_decode_step_loop(name):
    """The 3-D teacher-forced attention (local-m centres 0..T-1) equals the step loop, where
    local-m reads DecoderState.step; for beam rows (N = B * beam) as well."""
    model = model_of(name)
    src, lens = long_batch()
    g = torch.Generator().manual_seed(3)
    tgt_in = torch.randint(3, VOCAB, (3, 66), generator=g)
    tgt_in[:, 0] = BOS
    with torch.no_grad():
        want = torch.log_softmax(model(src, lens, tgt_in), dim=-1)  # (B, T, V)
        enc = model.encode(src, lens)
        for beam in (1, 5):
            state = model.initial_state(enc, beam=beam)
            assert state.step == 0
            got = []
            for t in range(tgt_in.shape[1]):
                prev = tgt_in[:, t].repeat_interleave(beam)
                log_probs, state, _ = model.decode_step(enc, state, prev, beam)
                got.append(log_probs.view(3, beam, -1)[:, 0])
            assert state.step == tgt_in.shape[1]
            torch.testing.assert_close(torch.stack(got, dim=1), want, atol=2e-5, rtol=0)


def test_local_m_step_weights_sit_around_the_step():
    model = model_of("local-m-general")
    src, lens = long_batch()
    with torch.no_grad():
        enc = model.encode(src, lens)
        state = model.initial_state(enc)
        prev = torch.full((3,), BOS)
        for t in range(50):
            _, state, weights = model.decode_step(enc, state, prev)
            nonzero = (weights != 0).nonzero()
            cols = nonzero[:, 1]
            assert int(cols.min()) >= t - WINDOW and int(cols.max()) <= t + WINDOW, t
            for b in range(3):  # the window past the row's end reads nothing
                assert int((weights[b] != 0).sum()) == max(
                    0, min(t + WINDOW, int(lens[b]) - 1) - max(0, t - WINDOW) + 1
                )
            prev = weights.argmax(-1) % (VOCAB - 3) + 3


def slow_greedy(model: Seq2Seq, src, lens, max_len: int, min_len: int):
    """Greedy decoding one sentence at a time, with the step index counted here and the
    search rules (no pad / bos, no eos before min_len, eos forced after max_len)."""
    out = []
    with torch.no_grad():
        for b in range(src.shape[0]):
            n = int(lens[b])
            enc = model.encode(src[b : b + 1, :n], lens[b : b + 1])
            state = model.initial_state(enc)
            prev, tokens, score = torch.tensor([BOS]), [], 0.0
            for t in range(max_len + 1):
                assert state.step == t
                log_probs, state, _ = model.decode_step(enc, state, prev)
                lp = log_probs[0].clone()
                lp[PAD] = lp[BOS] = float("-inf")
                if t < min_len:
                    lp[EOS] = float("-inf")
                if t == max_len:
                    lp = torch.full_like(lp, float("-inf"))
                    lp[EOS] = log_probs[0, EOS]
                token = int(lp.argmax())
                score += float(lp[token])
                if token == EOS:
                    break
                tokens.append(token)
                prev = torch.tensor([token])
            out.append((tokens, score))
    return out


def teacher_forced_score(model: Seq2Seq, src, lens, b: int, tokens: list[int]) -> float:
    """log P(tokens + eos | source b) by one teacher-forced call."""
    n = int(lens[b])
    tgt_in = torch.tensor([[BOS, *tokens]])
    tgt_out = torch.tensor([[*tokens, EOS]])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(src[b : b + 1, :n], lens[b : b + 1], tgt_in), -1)
    return float(log_probs[0].gather(1, tgt_out[0, :, None]).sum())


@pytest.mark.parametrize("name", ["local-p-general", "local-m-general", "local-m-dot-feed"])
def test_greedy_long_outputs_agree_with_slow_decode(name):
    model = model_of(name)
    src, lens = long_batch()
    hyps = greedy_decode(model, src, lens, max_len=72, min_len=62)
    slow = slow_greedy(model, src, lens, max_len=72, min_len=62)
    for b, (hyp, (tokens, score)) in enumerate(zip(hyps, slow, strict=True)):
        assert len(hyp.tokens) >= 62
        assert hyp.tokens == tokens
        assert hyp.score == pytest.approx(score, abs=1e-3)
        assert hyp.score == pytest.approx(
            teacher_forced_score(model, src, lens, b, tokens), abs=2e-3
        )
        assert hyp.attention.shape == (len(tokens) + 1, int(lens[b]))


@pytest.mark.parametrize("name", ["local-p-general", "local-m-general", "local-p-general-feed"])
def test_beam_long_outputs_score_as_teacher_forced_and_batch_independent(name):
    """Every beam-5 hypothesis's score is its teacher-forced log-probability (the step index
    and the beam rows' lengths were right at every step), the batch gives each sentence what
    it gets alone, and beam 1 is greedy."""
    model = model_of(name)
    src, lens = long_batch()
    ranked = beam_search(model, src, lens, beam_size=5, max_len=70, min_len=60, n_best=3)
    for b, hyps in enumerate(ranked):
        assert len(hyps) == 3
        for hyp in hyps:
            assert len(hyp.tokens) >= 60
            want = teacher_forced_score(model, src, lens, b, hyp.tokens)
            assert hyp.score == pytest.approx(want, abs=2e-3)
        alone = beam_search(
            model, src[b : b + 1, : int(lens[b])], lens[b : b + 1], 5, 70, min_len=60, n_best=3
        )[0]
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
    greedy = greedy_decode(model, src, lens, max_len=70, min_len=60)
    beam1 = beam_search(model, src, lens, beam_size=1, max_len=70, min_len=60)
    assert [h.tokens for h in beam1] == [h.tokens for h in greedy]


@pytest.mark.skipif(
    why_unavailable("local_attention", "cpp", "cpu") is not None,
    reason=f"cpp local_attention: {why_unavailable('local_attention', 'cpp', 'cpu')}",
)
@pytest.mark.parametrize("name", ["local-p-general", "local-m-dot-feed"])
def test_cpp_and_reference_backends_agree(name):
    """The same weights on backend cpp (fused GRU and local_attention ops) and reference: the
    loss, its gradients and the greedy decode."""
    ref = model_of(name)
    local, score, feed = MODELS[name]
    cpp = Seq2Seq(local_config(local, score=score, input_feeding=feed, backend="cpp")).eval()
    cpp.load_state_dict(ref.state_dict())
    src, lens = long_batch()
    g = torch.Generator().manual_seed(4)
    tgt = torch.randint(3, VOCAB, (3, 40), generator=g)
    tgt_in = torch.cat([torch.full((3, 1), BOS), tgt], dim=1)
    tgt_out = torch.cat([tgt, torch.full((3, 1), EOS)], dim=1)
    grads = []
    for model in (ref, cpp):
        model.zero_grad()
        loss, _ = model.loss(src, lens, tgt_in, tgt_out)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-3, rtol=1e-5)
    for got, want in zip(grads[1][1], grads[0][1], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    a = greedy_decode(ref, src, lens, max_len=60, min_len=50)
    b = greedy_decode(cpp, src, lens, max_len=60, min_len=50)
    assert [h.tokens for h in a] == [h.tokens for h in b]


# -- the native loop ------------------------------------------------------------------------------


def _assert_same(got, want):
    assert [h.tokens for h in got] == [h.tokens for h in want]
    for g, w in zip(got, want, strict=True):
        assert g.score == pytest.approx(w.score, rel=1e-4, abs=1e-4)
        torch.testing.assert_close(g.attention, w.attention, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(MODELS))
def test_native_loop_decodes_local_models_as_the_python_loop(name, monkeypatch):
    """The native C++ loop runs local-m and local-p (decoder_model.cpp's attend_local, over the
    local_attention op's own row weights) and gives the Python loop's hypotheses token for
    token: greedy with outputs of 40-60 tokens, beam search with n-best, on 41-70 position
    sources that a window of 2D + 1 = 9 covers a small part of."""
    local, score, feed = MODELS[name]
    model = local_model(local, 3, score=score, input_feeding=feed, backend="cpp")
    with torch.no_grad():  # peaked outputs: no near-tie between two beams' scores
        model.decoder.out.weight.mul_(4.0)
    assert decode_path(model) == "native"
    src, lens = long_batch()
    want = greedy_decode(model, src, lens, max_len=60, min_len=40, native=False)
    want_beam = beam_search(
        model, src, lens, beam_size=3, max_len=45, min_len=30, n_best=2, native=False
    )

    def python_step(*args, **kwargs):
        raise AssertionError("the Python step ran")

    monkeypatch.setattr(python_loop, "step", python_step)
    _assert_same(greedy_decode(model, src, lens, max_len=60, min_len=40), want)
    got_beam = beam_search(model, src, lens, beam_size=3, max_len=45, min_len=30, n_best=2)
    for got, ref in zip(got_beam, want_beam, strict=True):
        _assert_same(got, ref)


@pytest.mark.parametrize("local", ["m", "p"])
def test_native_step_takes_the_step_index(local):
    """native_params.step at decoder step t matches python_loop.step at t (local-m centres the
    window on t, so a wrong index moves it): log-probs, state and weights."""
    model = local_model(local, 5, backend="cpp")
    src, lens = long_batch((50, 23))
    with torch.no_grad():
        enc = model.encode(src, lens)
        state = model.initial_state(enc, beam=2)
        state = state._replace(hidden=torch.randn_like(state.hidden), step=17)
        prev = torch.tensor([3, 4, 5, 6])
        want = python_loop.step(model, enc, state, prev, 2, force_eos=False, block_eos=False)
        got = native_params.step(model, enc, state, prev, 2)
    torch.testing.assert_close(got[0], want[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got[1].hidden, want[1].hidden, atol=1e-5, rtol=1e-4)
    assert got[1].step == want[1].step == 18
    torch.testing.assert_close(got[2], want[2], atol=1e-5, rtol=1e-4)
    if local == "m":
        assert got[2][:, :10].abs().sum() == 0 and got[2][:, 13:22].abs().sum() > 0


# -- training ------------------------------------------------------------------------------------


def copy_batch(n: int, g: torch.Generator, low: int = 8, high: int = 16):
    """src (n, S) and tgt = src (the copy task: a monotonic alignment, p_t = t)."""
    lens = torch.randint(low, high + 1, (n,), generator=g)
    steps = int(lens.max())
    valid = torch.arange(steps) < lens[:, None]
    src = torch.randint(3, VOCAB, (n, steps), generator=g).masked_fill(~valid, PAD)
    tgt_in = torch.cat([torch.full((n, 1), BOS), src], dim=1)
    tgt_out = torch.cat([src, torch.full((n, 1), PAD)], dim=1)
    tgt_out[torch.arange(n), lens] = EOS
    return src, lens, tgt_in, tgt_out


@pytest.mark.parametrize("local", ["m", "p"])
def test_local_models_train(local):
    """Adam on the copy task: the loss falls well below its start, and the gradient reaches the
    attention's parameters (W_a; W_p and v_p for local-p). local-m, whose window follows the
    copy's alignment, learns to copy."""
    torch.manual_seed(0)
    model = Seq2Seq(local_config(local, window=3, hidden_size=48, embed_size=24)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(150):
        src, lens, tgt_in, tgt_out = copy_batch(32, g)
        loss, n = model.loss(src, lens, tgt_in, tgt_out)
        optimizer.zero_grad()
        (loss / n).backward()
        if step == 0:
            for pname, p in model.decoder.attention.named_parameters():
                assert p.grad is not None and float(p.grad.abs().max()) > 0, pname
        optimizer.step()
        losses.append(float(loss.detach() / n))
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    if local == "m":
        src, lens, _, tgt_out = copy_batch(50, torch.Generator().manual_seed(9))
        hyps = greedy_decode(model, src, lens, max_len=20)
        exact = sum(h.tokens == src[i, : int(lens[i])].tolist() for i, h in enumerate(hyps))
        assert exact / 50 >= 0.6


# -- the CLI --------------------------------------------------------------------------------------

TINY_TRAIN = ["train", "--task", "copy", "--num-examples", "80", "--max-len", "8", "--epochs",
              "1", "--embed-size", "8", "--hidden-size", "16"]  # fmt: skip


def test_cli_train_local_p_writes_the_fields(tmp_path, capsys):
    ckpt = tmp_path / "local.pt"
    args = [*TINY_TRAIN, "--local", "p", "--window", "3", "--checkpoint", str(ckpt)]
    assert cli.main(args) == 0
    assert "luong/general local-p (D=3)" in capsys.readouterr().out
    config = checkpoint.model_config(checkpoint.load_checkpoint(ckpt), ckpt)
    assert (config.wiring, config.score, config.local, config.window) == (
        "luong",
        "general",
        "p",
        3,
    )
    translations = Translator.from_checkpoint(str(ckpt)).translate(["t1 t2 t3"], beam=3)
    assert len(translations) == 1


def test_cli_train_local_m_dot(tmp_path):
    ckpt = tmp_path / "m.pt"
    args = [*TINY_TRAIN, "--local", "m", "--score", "dot", "--wiring", "luong"]
    assert cli.main([*args, "--checkpoint", str(ckpt)]) == 0
    config = checkpoint.model_config(checkpoint.load_checkpoint(ckpt), ckpt)
    assert (config.local, config.window, config.score) == ("m", 10, "dot")


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--local", "p", "--score", "concat"], "--local p scores its window with --score dot"),
        (["--local", "m", "--score", "additive"], "--local m scores its window with --score dot"),
        (["--local", "m", "--wiring", "bahdanau"], "--local m: local attention is Luong's"),
        (["--local", "p", "--attention", "none"], "--local p: a model without attention"),
        (["--window", "5"], "--window is the window of local attention"),
        (["--local", "p", "--window", "-1"], "--window: must be an integer in [0, 1000000]"),
    ],
)
def test_cli_refuses_bad_local_combinations_with_one_line(tmp_path, capsys, extra, message):
    ckpt = tmp_path / "m.pt"
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("fast-s2s train: ") and message in err
    assert not ckpt.exists()


def test_cli_local_choices_are_checked_by_argparse(capsys):
    assert cli.main([*TINY_TRAIN, "--local", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("fast-s2s train: --local: invalid choice")
