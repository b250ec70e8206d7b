"""Training and checkpoints (fast_s2s.training), per-side tokenisation, and --resume continuing
the run in the checkpoint and nothing else, on tiny generated tasks (seconds each). The command
line's own behaviour is in tests/cli/test_cli.py."""

from __future__ import annotations

import os

import pytest
import torch

from fast_s2s import cli
from fast_s2s.data.cmudict import lexicon_pairs, read_cmudict
from fast_s2s.models import Seq2Seq
from fast_s2s.training import TrainSettings, Translator, checkpoint, train
from fast_s2s.training.data import tokenization
from tests.cli.test_cli import (
    TINY_TRAIN,
    one_line_error,
)

TINY_MODEL = dict(embed_size=16, hidden_size=32, wiring="bahdanau", score="additive")


def tiny_settings(**over) -> TrainSettings:
    base = dict(task="copy", num_examples=300, valid_size=40, max_len=6, epochs=2, batch_size=16)
    base.update(over)
    return TrainSettings(**base)


def test_training_writes_an_atomic_checkpoint_per_epoch(trained):
    path, result = trained
    assert result.epochs_run == 2 and result.checkpoints_written == 2
    data = checkpoint.load_checkpoint(path)
    assert data["epoch"] == 1 and len(data["history"]) == 2
    assert {"config", "src_vocab", "tgt_vocab", "model", "optimizer"} <= data.keys()
    assert not [f for f in os.listdir(path.parent) if f.startswith(".tmp-")]  # no leftovers


def test_checkpoint_round_trip_gives_the_same_translations(trained):
    path, result = trained
    translator = Translator.from_checkpoint(str(path))
    texts = ["tuesday 3 march 1998", "03/03/98"]
    first = translator.translate(texts, beam=1)
    again = Translator.from_checkpoint(str(path)).translate(texts, beam=1)
    assert [t.output for t in first] == [t.output for t in again]
    for t in first:
        assert t.attention.shape == (len(t.output_tokens), len(t.source_tokens))
        torch.testing.assert_close(t.attention.sum(-1), torch.ones(len(t.output_tokens)))


def test_resume_continues_from_the_saved_epoch(tmp_path):
    path = tmp_path / "copy.pt"
    first = train(tiny_settings(epochs=1, patience=99), TINY_MODEL, str(path))
    assert first.epochs_run == 1
    resumed = train(tiny_settings(epochs=3, patience=99), TINY_MODEL, str(path), resume=True)
    assert resumed.epochs_run == 2  # epochs 2 and 3
    assert checkpoint.load_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not a readable fast_s2s checkpoint"),
        (b"hello, not a checkpoint", "not a readable fast_s2s checkpoint"),
    ],
)
def test_bad_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match=message):
        checkpoint.load_checkpoint(path)


def test_truncated_checkpoint_is_refused(trained, tmp_path):
    path, _ = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated"):
        checkpoint.load_checkpoint(cut)


def test_other_formats_and_versions_are_refused(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(checkpoint.CheckpointError, match="not a fast_s2s checkpoint"):
        checkpoint.load_checkpoint(plain)
    future = tmp_path / "future.pt"
    torch.save({"format": checkpoint.FORMAT, "format_version": 99, "fast_s2s": "9.0"}, future)
    with pytest.raises(checkpoint.CheckpointError, match="format version 99"):
        checkpoint.load_checkpoint(future)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load_checkpoint(tmp_path / "missing.pt")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    checkpoint.save_checkpoint(path, {"value": 1})

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(path, {"value": 2})
    monkeypatch.undo()
    assert checkpoint.load_checkpoint(path)["value"] == 1
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]


# --------------------------------------------------------------------------------------------
# Per-side tokenisation: characters in, phonemes (words) out
# --------------------------------------------------------------------------------------------

MINI_DICT = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "mini_cmudict.dict")


def test_tokenization_settings_per_side_and_both():
    both = TrainSettings(tokenize="char")
    assert tokenization(both, "word", "word") == ("char", "char")
    mixed = TrainSettings(tokenize="char", tgt_tokenize="word")
    assert tokenization(mixed, "word", "word") == ("char", "word")
    assert tokenization(TrainSettings(src_tokenize="char"), "word", "word") == ("char", "word")
    assert tokenization(TrainSettings(), "char", "word") == ("char", "word")  # the defaults


@pytest.fixture(scope="module")
def phoneme_tsv_model(tmp_path_factory):
    """A tiny model trained through the CLI on a TSV of word<TAB>phonemes lines."""
    folder = tmp_path_factory.mktemp("tsv")
    tsv, ckpt = folder / "lexicon.tsv", folder / "m.pt"
    pairs = lexicon_pairs(read_cmudict(MINI_DICT))
    tsv.write_text("".join(f"{w}\t{p}\n" for w, p in pairs), encoding="utf-8")
    rc = cli.main(
        ["train", "--data", str(tsv), "--src-tokenize", "char", "--tgt-tokenize", "word",
         "--valid-size", "5", "--epochs", "1", "--embed-size", "16", "--hidden-size", "32",
         "--checkpoint", str(ckpt)]
    )  # fmt: skip
    assert rc == 0
    return ckpt


def test_tsv_trains_with_characters_in_and_phonemes_out(phoneme_tsv_model):
    data = checkpoint.load_checkpoint(phoneme_tsv_model)
    assert (data["src_tokenize"], data["tgt_tokenize"]) == ("char", "word")
    assert data["tokenize"] is None  # the sides differ: no single mode for old readers
    src_tokens, tgt_tokens = data["src_vocab"]["tokens"][4:], data["tgt_vocab"]["tokens"][4:]
    assert all(len(t) == 1 for t in src_tokens) and {"p", "a", "s", "t", "e"} <= set(src_tokens)
    assert {"EY1", "AH0", "P", "T"} <= set(tgt_tokens) and "paste" not in tgt_tokens


def test_translate_uses_each_side_s_tokenisation(phoneme_tsv_model, capsys):
    translator = Translator.from_checkpoint(str(phoneme_tsv_model))
    (result,) = translator.translate(["paste"], beam=1, max_len=8)
    assert result.source_tokens == list("paste")
    assert result.output == " ".join(result.output_tokens[:-1])  # phonemes joined by spaces
    assert cli.main(["translate", "--checkpoint", str(phoneme_tsv_model), "paste"]) == 0
    source, output = capsys.readouterr().out.strip().split("\t")
    assert source == "paste" and all(p in translator.tgt_vocab for p in output.split())


@pytest.mark.parametrize(
    "legacy, src_tokens",
    [({"tokenize": "char"}, list("paste")), ({}, ["paste"])],
    ids=["one-mode-char", "no-mode-word"],
)
def test_checkpoints_with_one_tokenisation_mode_still_load(
    phoneme_tsv_model, tmp_path, legacy, src_tokens
):
    """Checkpoints written before per-side tokenisation: one "tokenize" (or none: word)."""
    data = checkpoint.load_checkpoint(phoneme_tsv_model)
    for key in ("src_tokenize", "tgt_tokenize", "tokenize"):
        del data[key]
    old = tmp_path / "old.pt"
    checkpoint.save_checkpoint(old, {**data, **legacy})
    translator = Translator.from_checkpoint(str(old))
    mode = legacy.get("tokenize", "word")
    assert (translator.src_mode, translator.tgt_mode) == (mode, mode)
    (result,) = translator.translate(["paste"], beam=1, max_len=8)
    assert result.source_tokens == src_tokens
    joiner = "" if mode == "char" else " "
    assert result.output == joiner.join(result.output_tokens[:-1])


def test_a_bad_tokenisation_mode_in_a_checkpoint_is_refused(phoneme_tsv_model, tmp_path, capsys):
    data = checkpoint.load_checkpoint(phoneme_tsv_model)
    bad = tmp_path / "bad.pt"
    checkpoint.save_checkpoint(bad, {**data, "tgt_tokenize": "phoneme"})
    assert cli.main(["translate", "--checkpoint", str(bad), "paste"]) == 2
    assert "tgt_tokenize must be one of ['char', 'word'], got 'phoneme'" in one_line_error(capsys)


def test_frames_source_refuses_a_source_tokenisation(tmp_path, capsys):
    args = ["train", "--task", "tones", "--src-tokenize", "char"]
    assert cli.main([*args, "--checkpoint", str(tmp_path / "m.pt")]) == 2
    assert "--src-tokenize: this source is frames" in one_line_error(capsys)


@pytest.mark.parametrize(
    "change, first",
    [
        ({"hidden_size": 64}, "encoder.rnn.weight_ih_l0 has shape (72, 16), the config needs "
         "(96, 16)"),
        ({"decoder_layers": 2}, "encoder.bridge.weight has shape (48, 48), the config needs "
         "(96, 48)"),
        ({"tie_embeddings": True}, "decoder.tie_proj.weight is missing"),
    ],
    ids=["hidden-size", "more-layers", "tied"],
)  # fmt: skip
def test_a_config_that_disagrees_with_the_weights_is_one_line(trained, tmp_path, capsys, change,
                                                             first):  # fmt: skip
    """The first mismatched tensor and how many there are, not one line per tensor."""
    path, _ = trained
    data = checkpoint.load_checkpoint(path)
    bad = tmp_path / "bad.pt"
    checkpoint.save_checkpoint(bad, {**data, "config": {**data["config"], **change}})
    model = Seq2Seq(checkpoint.model_config(checkpoint.load_checkpoint(bad), bad))
    saved, wanted = data["model"], model.state_dict()
    count = sum(
        k not in saved or k not in wanted or saved[k].shape != wanted[k].shape
        for k in {*saved, *wanted}
    )
    assert count > 1  # several tensors disagree: the message still has one line
    assert cli.main(["translate", "--checkpoint", str(bad), "03/03/98"]) == 2
    err = one_line_error(capsys)
    assert "inconsistent checkpoint" in err and first in err, err
    assert f"{count} tensors disagree" in err, err
    before = bad.read_bytes()
    same_run = ["--num-examples", "1500", "--valid-size", "100", "--embed-size", "16",
                "--hidden-size", "48"]  # fmt: skip
    argv = ["train", "--task", "dates", *same_run, "--checkpoint", str(bad), "--resume"]
    assert cli.main(argv) == 2
    err = one_line_error(capsys)
    assert first in err and f"{count} tensors disagree" in err, err
    assert bad.read_bytes() == before


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e400", "11"])
def test_translate_refuses_a_length_penalty_that_is_not_a_number_in_range(trained, capsys, value):
    """NaN or infinity used to reach the search and end in a 38-line traceback."""
    path, _ = trained
    argv = ["translate", "--checkpoint", str(path), "03/03/98", "--beam", "3"]
    assert cli.main([*argv, "--length-penalty", value]) == 2
    err = one_line_error(capsys)
    assert err == (
        f"fast-s2s translate: --length-penalty: must be a finite number in [0, 10], got {value}"
    )


# --------------------------------------------------------------------------------------------
# --resume continues the run in the checkpoint and nothing else (fast_s2s.training.resume)
# --------------------------------------------------------------------------------------------

G2P_TRAIN = ["train", "--data", MINI_DICT, "--epochs", "1", "--embed-size", "8", "--hidden-size",
             "16", "--test-beam", "1", "--processes", "1"]  # fmt: skip


def test_resume_with_another_task_is_refused_and_the_checkpoint_kept(tmp_path, capsys):
    """Issue 26: `cp g2p.pt mix.pt; fast-s2s train --task dates ... --checkpoint mix.pt
    --resume` said "resumed from mix.pt after epoch 1", trained the g2p model on dates and
    wrote over it."""
    g2p = tmp_path / "g2p.pt"
    assert cli.main([*G2P_TRAIN, "--checkpoint", str(g2p)]) == 0
    mix = tmp_path / "mix.pt"
    mix.write_bytes(g2p.read_bytes())
    capsys.readouterr()
    argv = ["train", "--task", "dates", "--num-examples", "300", "--time-budget", "5"]
    assert cli.main([*argv, "--checkpoint", str(mix), "--resume"]) == 2
    err = one_line_error(capsys)
    assert err.startswith(
        f"fast-s2s train: --resume: {mix} is another run: it was trained with --task g2p, this "
        "command line gives --task dates ("
    ), err
    assert "nothing was written" in err
    assert mix.read_bytes() == g2p.read_bytes()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    # the same command line as the run continues it
    assert cli.main([*G2P_TRAIN, "--epochs", "2", "--checkpoint", str(mix), "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert checkpoint.load_checkpoint(mix)["epoch"] == 1


def test_resume_refuses_other_data_in_the_same_file_or_another(tmp_path, capsys):
    pairs = [(f"t{i} t{i + 1}", f"t{i + 1} t{i}") for i in range(40)]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    ckpt = tmp_path / "m.pt"
    argv = ["train", "--valid-size", "5", "--epochs", "1", "--embed-size", "8", "--hidden-size",
            "16", "--checkpoint", str(ckpt)]  # fmt: skip
    assert cli.main([*argv, "--data", str(tsv)]) == 0
    before = ckpt.read_bytes()
    other = tmp_path / "other.tsv"
    other.write_text("".join(f"{t}\t{s}\n" for s, t in pairs), encoding="utf-8")
    capsys.readouterr()
    assert cli.main([*argv, "--data", str(other), "--resume"]) == 2
    err = one_line_error(capsys)
    assert f"it was trained on --data {tsv} (sha256 " in err
    assert f"this command line gives --data {other} (sha256 " in err
    tsv.write_text(other.read_text(encoding="utf-8"), encoding="utf-8")  # new contents, same path
    assert cli.main([*argv, "--data", str(tsv), "--resume"]) == 2
    assert f"--data {tsv} changed since it was trained on (sha256 " in one_line_error(capsys)
    assert ckpt.read_bytes() == before
    # the same contents under another name are the same data
    tsv.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    moved = tmp_path / "moved.tsv"
    moved.write_bytes(tsv.read_bytes())
    assert cli.main([*argv, "--epochs", "2", "--data", str(moved), "--resume"]) == 0


def _without_run_record(path, tmp_path, name="old.pt"):
    """The checkpoint as fast_s2s wrote it before the run record."""
    data = checkpoint.load_checkpoint(path)
    del data["run"]
    old = tmp_path / name
    checkpoint.save_checkpoint(old, data)
    return old


def test_older_checkpoints_are_checked_on_their_saved_settings(tmp_path, capsys):
    """A checkpoint without the record is compared on the settings and config it saved; one
    trained on a --data file, whose contents it cannot vouch for, is refused."""
    ckpt = tmp_path / "m.pt"
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt)]) == 0
    old = _without_run_record(ckpt, tmp_path)
    before = old.read_bytes()
    capsys.readouterr()
    assert cli.main([*TINY_TRAIN, "--hidden-size", "32", "--checkpoint", str(old), "--resume"]) == 2
    err = one_line_error(capsys)
    assert "it was trained with --hidden-size 16, this command line gives --hidden-size 32" in err
    assert "an older checkpoint: compared on the settings it saved" in err
    assert old.read_bytes() == before
    assert cli.main([*TINY_TRAIN, "--epochs", "2", "--checkpoint", str(old), "--resume"]) == 0
    assert "run" in checkpoint.load_checkpoint(old)  # rewritten with the record
    # trained on a file: the file's contents cannot be checked
    g2p = tmp_path / "g2p.pt"
    assert cli.main([*G2P_TRAIN, "--checkpoint", str(g2p)]) == 0
    old_g2p = _without_run_record(g2p, tmp_path, "old-g2p.pt")
    before = old_g2p.read_bytes()
    capsys.readouterr()
    assert cli.main([*G2P_TRAIN, "--epochs", "2", "--checkpoint", str(old_g2p), "--resume"]) == 2
    err = one_line_error(capsys)
    assert "written before checkpoints recorded their data's contents" in err
    assert f"--data {MINI_DICT} cannot be checked" in err and "nothing was written" in err
    assert old_g2p.read_bytes() == before


def test_resume_refuses_an_optimizer_state_of_another_shape(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt)]) == 0
    data = checkpoint.load_checkpoint(ckpt)
    moments = data["optimizer"]["state"][0]
    moments["exp_avg"] = torch.zeros(3, 3)
    checkpoint.save_checkpoint(ckpt, data)
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert cli.main([*TINY_TRAIN, "--epochs", "2", "--checkpoint", str(ckpt), "--resume"]) == 2
    err = one_line_error(capsys)
    assert "the optimizer's exp_avg of parameter 0 has shape (3, 3)" in err, err
    assert ckpt.read_bytes() == before
