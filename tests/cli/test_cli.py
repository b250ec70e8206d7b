"""The command line end to end (fast_s2s.cli), on tiny generated tasks (seconds each): train and
translate, stdin, n-best lists, and user errors: one line on stderr, exit code 2, nothing lost;
searches and models too large for memory refused before any work. The small dates model these
tests translate with is the `trained` fixture of tests/conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from fast_s2s import cli
from fast_s2s.training import Translator, checkpoint


def test_cli_train_and_translate_end_to_end(tmp_path, capsys):
    ckpt, png = tmp_path / "c.pt", tmp_path / "attn.png"
    rc = cli.main(
        ["train", "--task", "reverse", "--num-examples", "200", "--valid-size", "20",
         "--max-len", "5", "--epochs", "1", "--embed-size", "16", "--hidden-size", "32",
         "--checkpoint", str(ckpt)]
    )  # fmt: skip
    assert rc == 0 and ckpt.exists()
    rc = cli.main(["translate", "--checkpoint", str(ckpt), "t1 t2 t3", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and "t1 t2 t3\t" in out
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_bad_inputs(tmp_path, capsys):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("a b\tc d\nno tab here\n", encoding="utf-8")
    assert cli.main(["train", "--data", str(tsv), "--checkpoint", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "pairs.tsv:2" in err and "tab" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert cli.main(["translate", "--checkpoint", str(bad), "hello"]) == 2
    assert "not a readable fast_s2s checkpoint" in capsys.readouterr().err


def test_translate_reads_stdin(trained):
    path, _ = trained
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fast_s2s.cli",
            "translate",
            "--checkpoint",
            str(path),
            "--beam",
            "1",
        ],
        input="1 Jan 2001\n\n3 March 1998\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("1 Jan 2001\t")


def test_translate_n_best_prints_ranked_lines(trained, capsys):
    path, _ = trained
    args = ["translate", "--checkpoint", str(path), "03/03/98", "1 Jan 2001", "--beam", "4"]
    assert cli.main([*args, "--n-best", "3"]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [(f[0], f[1]) for f in lines] == [
        (src, str(rank)) for src in ("03/03/98", "1 Jan 2001") for rank in (1, 2, 3)
    ]
    for source in ("03/03/98", "1 Jan 2001"):
        ranks = [float(f[2]) for f in lines if f[0] == source]
        assert ranks == sorted(ranks, reverse=True)
        assert len({f[4] for f in lines if f[0] == source}) == 3  # three different outputs
    assert all(float(f[3]) <= 0 for f in lines)  # total log-probabilities
    # the first of the n-best is what plain translate prints
    assert cli.main(args) == 0
    best = dict(line.split("\t") for line in capsys.readouterr().out.strip().splitlines())
    assert best == {f[0]: f[4] for f in lines if f[1] == "1"}
    # the same with the GNMT penalty and a minimum length
    assert cli.main([*args, "--penalty", "gnmt", "--length-penalty", "0.6", "--min-len", "8"]) == 0
    outputs = [line.split("\t")[1] for line in capsys.readouterr().out.strip().splitlines()]
    assert all(len(o) >= 8 for o in outputs)  # character tokens: at least 8 characters


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--n-best", "6"], "--n-best must be in [1, --beam=5]"),
        (["--n-best", "0"], "--n-best"),
        (["--min-len", "9", "--max-len", "4"], "--min-len"),
        (["--max-len", "-1"], "--max-len"),
        (["--beam", "0"], "--beam"),
    ],
)
def test_translate_refuses_bad_search_options(trained, capsys, extra, message):
    path, _ = trained
    assert cli.main(["translate", "--checkpoint", str(path), "03/03/98", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------------------------
# User errors: one line on stderr, exit code 2, nothing lost
# --------------------------------------------------------------------------------------------


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


TINY_TRAIN = ["train", "--task", "copy", "--num-examples", "60", "--max-len", "4", "--epochs",
              "1", "--embed-size", "8", "--hidden-size", "16"]  # fmt: skip


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--valid-size", "0"], "--valid-size: must be an integer in [1, 10000000], got 0"),
        (["--eval-beam", "0"], "--eval-beam: must be an integer in [1, 2147483647], got 0"),
        (["--lr", "nan"], "--lr: must be a finite number in [0, 10], got nan"),
        (["--clip", "-inf"], "--clip: must be a finite number > 0, got -inf"),
        (["--resume", "--overwrite"], "not both"),
        (["--label-smoothing", "1"], "--label-smoothing: must be a finite number in [0, 1), got 1"),
        (["--label-smoothing", "x"], "--label-smoothing"),
        (["--lr-schedule", "linear"], "--lr-schedule: invalid choice: 'linear'"),
        (["--post-attention-gru"], "--post-attention-gru runs over Luong's attentional states"),
        (["--wiring", "luong", "--attention", "none", "--post-attention-gru"], "needs --wiring"),
    ],
)
def test_train_refuses_bad_options_before_any_work(tmp_path, capsys, extra, message):
    ckpt = tmp_path / "m.pt"
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt), *extra]) == 2
    assert message in one_line_error(capsys)
    assert not ckpt.exists()


@pytest.mark.parametrize(
    "extra,post",
    [
        ([], True),  # the g2p default
        (["--no-post-attention-gru"], False),
        (["--wiring", "bahdanau"], False),  # the default is Luong's: left out, not refused
        (["--attention", "none"], False),
    ],
)
def test_g2p_defaults_to_the_post_attention_gru_where_the_wiring_has_one(extra, post):
    from fast_s2s.cli import train as train_cli

    args = cli.build_parser().parse_args(["train", "--task", "g2p", *extra])
    assert train_cli.check_args(args) is None
    assert train_cli.config_from_args(args)["post_attention_gru"] is post
    dates = cli.build_parser().parse_args(["train", "--task", "dates", *extra])
    assert train_cli.config_from_args(dates)["post_attention_gru"] is False


def test_train_refuses_tiny_empty_and_directory_corpora(tmp_path, capsys):
    one = tmp_path / "one.tsv"
    one.write_text("a b\tc d\n", encoding="utf-8")
    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    for data, message in ((one, "only 1 pair"), (empty, "the corpus is empty"),
                          (folder, "is a directory")):  # fmt: skip
        assert cli.main(["train", "--data", str(data), "--checkpoint", str(tmp_path / "x.pt")]) == 2
        assert message in one_line_error(capsys)
    assert not (tmp_path / "x.pt").exists()


def test_train_never_overwrites_a_checkpoint_silently(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt)]) == 0
    before = ckpt.read_bytes()
    capsys.readouterr()
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt)]) == 2
    assert "exists: give --resume" in one_line_error(capsys)
    assert ckpt.read_bytes() == before
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt), "--overwrite", "--seed", "1"]) == 0
    assert ckpt.read_bytes() != before
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(tmp_path)]) == 2
    assert "is a directory" in one_line_error(capsys)


def test_training_removes_temporary_files_of_an_interrupted_write(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    stale = tmp_path / ".tmp-m.pt-abc123.pt"  # what save_checkpoint(m.pt) leaves when killed
    other = tmp_path / ".tmp-other.pt-abc123.pt"  # another checkpoint's: not ours to delete
    stale.write_bytes(b"x" * 100)
    other.write_bytes(b"x")
    assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt)]) == 0
    assert not stale.exists() and other.exists() and ckpt.exists()
    assert "removed" in capsys.readouterr().out


def test_translate_refuses_unreadable_input_with_one_line(trained, tmp_path, capsys):
    path, _ = trained
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"03/03/98\n\xff\xfe\n")
    cases = [
        (["--file", str(tmp_path / "missing.txt")], "no such file"),
        (["--file", str(tmp_path)], "is a directory"),
        (["--file", str(bad)], "bad.txt:2: not UTF-8"),
    ]
    for extra, message in cases:
        assert cli.main(["translate", "--checkpoint", str(path), *extra]) == 2
        assert message in one_line_error(capsys)
    assert cli.main(["translate", "--checkpoint", str(tmp_path), "x"]) == 2
    assert "is a directory" in one_line_error(capsys)


@pytest.mark.parametrize("stdin", [None, b"03/03/98\n\xff\n"], ids=["closed", "not-utf8"])
def test_translate_with_closed_or_binary_stdin(trained, stdin):
    path, _ = trained
    command = [sys.executable, "-m", "fast_s2s.cli", "translate", "--checkpoint", str(path)]
    if stdin is None:  # the shell's `<&-`: no file descriptor 0 at all
        proc = subprocess.run(
            ["bash", "-c", 'exec "$@" <&-', "bash", *command],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        expected = "nothing to translate"
    else:
        proc = subprocess.run(command, input=stdin, capture_output=True, timeout=120)
        proc = subprocess.CompletedProcess(proc.args, proc.returncode, "", proc.stderr.decode())
        expected = "stdin:2: not UTF-8"
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr


def test_bad_checkpoint_contents_are_refused(trained, tmp_path, capsys):
    path, _ = trained
    data = checkpoint.load_checkpoint(path)
    string_config = tmp_path / "string-config.pt"
    checkpoint.save_checkpoint(string_config, {**data, "config": "bahdanau"})
    nan_weights = tmp_path / "nan.pt"
    weights = dict(data["model"])
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name] = torch.full_like(weights[name], float("nan"))
    checkpoint.save_checkpoint(nan_weights, {**data, "model": weights})
    for bad, message in ((string_config, "model config must be a dict"), (nan_weights, "NaN")):
        assert cli.main(["translate", "--checkpoint", str(bad), "03/03/98"]) == 2
        assert message in one_line_error(capsys)
    assert (
        cli.main(["train", "--task", "dates", "--checkpoint", str(string_config), "--resume"]) == 2
    )
    assert "model config must be a dict" in one_line_error(capsys)


def test_missing_matplotlib_is_reported_before_any_work(trained, tmp_path, capsys, monkeypatch):
    from fast_s2s.training import plotting

    monkeypatch.setattr(plotting.importlib.util, "find_spec", lambda name: None)
    path, _ = trained
    png = tmp_path / "a.png"
    assert cli.main(["translate", "--checkpoint", str(path), "03/03/98", "--plot", str(png)]) == 2
    assert "needs matplotlib" in one_line_error(capsys)
    ckpt = tmp_path / "m.pt"
    assert (
        cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt), "--demo", "t1", "--plot", str(png)]) == 2
    )
    assert "needs matplotlib" in one_line_error(capsys)
    assert not ckpt.exists() and not png.exists()


# --------------------------------------------------------------------------------------------
# Searches and models too large for memory: one line naming the option, before any work
# --------------------------------------------------------------------------------------------

GB = 10**9


@pytest.fixture
def sixteen_gigabytes(monkeypatch):
    """The machine has 16 GB free, whatever this one has: the refusals do not depend on it."""
    from fast_s2s.training import memory

    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": 16 * GB)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--beam", "1000000000"], "--beam 1000000000 with --max-len 100: the search would need"),
        (["--beam", "3", "--max-len", "1000000000"], "--beam 3 with --max-len 1000000000: the s"),
        (["--beam", "1", "--max-len", "2147483647"], "--beam 1 with --max-len 2147483647: the s"),
        (["--max-len", "100000000000"], "--max-len: must be an integer in [0, 2147483647]"),
    ],
    ids=["beam", "max-len", "greedy-max-len", "max-len-past-int32"],
)
def test_translate_refuses_a_search_larger_than_memory(
    trained, capsys, sixteen_gigabytes, extra, message
):
    """These ended in allocator tracebacks (std::bad_alloc, "DefaultCPUAllocator: can't
    allocate memory: you tried to allocate 64000000000 bytes")."""
    path, _ = trained
    assert cli.main(["translate", "--checkpoint", str(path), "03/03/98", *extra]) == 2
    err = one_line_error(capsys)
    assert err.startswith(f"fast-s2s translate: {message}"), err
    if "search would need" in err:
        assert "more than the 16 GB available" in err


def test_train_refuses_searches_and_models_larger_than_memory(tmp_path, capsys, sixteen_gigabytes):
    ckpt = tmp_path / "m.pt"
    cases = [
        (["--eval-beam", "100000000"], "--eval-beam 100000000: the search would need about"),
        (["--hidden-size", "65536"], "--embed-size 8, --hidden-size 65536: training this model"),
    ]
    for extra, message in cases:
        assert cli.main([*TINY_TRAIN, "--checkpoint", str(ckpt), *extra]) == 2
        err = one_line_error(capsys)
        assert message in err and "more than the 16 GB available" in err, err
        assert not ckpt.exists()


def test_search_memory_estimate_and_the_largest_beam_it_names(trained):
    from fast_s2s.training import memory

    config = Translator.from_checkpoint(str(trained[0])).model.config
    sizes = dict(batch=3, max_len=50, src_len=20)

    def need(beam, **over):
        return memory.search_bytes(config, beam=beam, **{**sizes, **over})

    # linear in the beam (rows) and in the steps, and the history dominates long searches
    assert need(3) - need(2) == need(2) - need(1) > 0
    assert need(4, max_len=201) - need(4, max_len=101) == need(4, max_len=101) - need(4, max_len=1)
    assert need(5, loop="native") < need(5, loop="python")
    available = need(1000) + 1
    memory.check_search(config, beam=1000, available=available, **sizes)  # fits: no error
    with pytest.raises(memory.MemoryLimitError) as info:
        memory.check_search(config, beam=2000, available=available, **sizes)
    fits = int(str(info.value).split("the largest --beam that fits is about ")[1])
    assert fits >= 1000
    memory.check_search(config, beam=fits, available=available, **sizes)
    with pytest.raises(memory.MemoryLimitError):
        memory.check_search(config, beam=fits + 1, available=available, **sizes)
    with pytest.raises(memory.MemoryLimitError, match="; lower --max-len$"):
        memory.check_search(config, beam=1, available=need(1) // 100, **sizes)


def test_available_memory_is_the_machine_s():
    from fast_s2s.training import memory

    available = memory.available_memory("cpu")
    assert available is not None and 0 < available <= os.sysconf("SC_PHYS_PAGES") * os.sysconf(
        "SC_PAGE_SIZE"
    )
    assert memory.available_memory("meta") is None
