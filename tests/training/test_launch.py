"""`fast-s2s train --processes N` (fast_s2s.training.launch): replicas started by the CLI itself
train what torchrun's would, print once, report a user error as one line, and decode the
validation set in shares; and the g2p default of two replicas where there are two cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fast_s2s import cli
from fast_s2s.cli import train as train_cli
from fast_s2s.models import Seq2Seq
from fast_s2s.training import TrainSettings, distributed, evaluate, launch, prepare_data
from fast_s2s.training.evaluation import translate_examples
from fast_s2s.training.trainer import _model_config

COPY = ["train", "--task", "copy", "--num-examples", "200", "--valid-size", "37", "--max-len",
        "5", "--epochs", "2", "--batch-size", "16", "--embed-size", "8", "--hidden-size", "16",
        "--threads", "1"]  # fmt: skip


def _parse(argv: list[str]):
    return cli.build_parser().parse_args(argv)


@pytest.mark.slow
def test_processes_trains_what_torchrun_trains(tmp_path):
    """The same options through --processes 2 and through torchrun --nproc-per-node 2 end with
    the same weights (gloo's averaging is deterministic); one process ends with others."""
    runs = {
        "processes": [sys.executable, "-m", "fast_s2s.cli", *COPY, "--processes", "2"],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone",
                     "--nproc-per-node", "2", "-m", "fast_s2s.cli", *COPY],
        "one": [sys.executable, "-m", "fast_s2s.cli", *COPY, "--processes", "1"],
    }  # fmt: skip
    # On auto the GEMM layer times its backends in each process, and at this model's tiny
    # products two of them can be within a timing blip (gru_layer.grad_w_hh: blas 1.5-2.3 us,
    # panel 2.0-2.1 us in three runs here): a run that picks the other rounds its gradients
    # differently. A pinned backend computes the same in every run (docs/DESIGN.md).
    env = {**os.environ, "FAST_S2S_GEMM": "blas"}
    weights = {}
    for name, cmd in runs.items():
        path = tmp_path / f"{name}.pt"
        proc = subprocess.run([*cmd, "--checkpoint", str(path)], capture_output=True, text=True,
                              timeout=300, env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        processes = 1 if name == "one" else 2
        assert proc.stdout.count(f"; {processes} process(es)") == 1, proc.stdout  # rank 0 only
        weights[name] = torch.load(path, weights_only=False)["last_model"]
    for key, value in weights["processes"].items():
        assert torch.equal(value, weights["torchrun"][key]), key
    assert any(not torch.equal(v, weights["one"][k]) for k, v in weights["processes"].items())


def test_a_user_error_in_the_replicas_is_one_line(tmp_path, capfd):
    """Found inside train() (after the launch), by both replicas: printed once, exit status 2."""
    ckpt = tmp_path / "m.pt"
    argv = [*COPY, "--batch-size", "5000", "--processes", "2", "--checkpoint", str(ckpt)]
    assert cli.main(argv) == 2
    err = capfd.readouterr().err.strip()
    assert err.splitlines() == [
        "fast-s2s train: only 1 batch(es) of --batch-size 5000 for 2 processes: lower "
        "--batch-size or give more data"
    ]
    assert not ckpt.exists()


@pytest.mark.parametrize(
    "extra,environment,message",
    [
        (["--device", "cuda"], {}, "--processes 2 starts CPU replicas (gloo); on GPUs"),
        ([], {"WORLD_SIZE": "2"}, "--processes 2: this process is one of torchrun's replicas"),
    ],
)
def test_processes_refused_where_it_cannot_apply(monkeypatch, capsys, extra, environment, message):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert cli.main([*COPY, "--processes", "2", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_g2p_defaults_to_two_replicas_on_the_cpu(monkeypatch):
    monkeypatch.setattr(launch, "usable_cores", lambda: 16)
    g2p = ["train", "--task", "g2p"]
    assert train_cli.processes_of(_parse(g2p)) == 2
    assert train_cli.processes_of(_parse([*g2p, "--processes", "3"])) == 3
    assert train_cli.processes_of(_parse([*g2p, "--device", "cuda"])) == 1
    assert train_cli.processes_of(_parse([*g2p, "--device", "cpu:0"])) == 2
    assert train_cli.processes_of(_parse(["train", "--task", "dates"])) == 1
    monkeypatch.setattr(launch, "usable_cores", lambda: 1)
    assert train_cli.processes_of(_parse(g2p)) == 1  # no core for a second replica
    monkeypatch.setattr(launch, "usable_cores", lambda: 16)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert train_cli.processes_of(_parse(g2p)) == 1  # torchrun started this one as a replica


def _settings() -> TrainSettings:
    return TrainSettings(task="copy", num_examples=200, valid_size=37, max_len=5, seed=1)


def _evaluate_in_shares(folder: str) -> int:
    """A replica of test_validation_in_shares: joins the group, evaluates its share."""
    torch.set_num_threads(1)
    world = distributed.init_from_env(torch.device("cpu"))
    data = prepare_data(_settings())
    model = Seq2Seq(_model_config(data, dict(embed_size=8, hidden_size=16)))
    model.load_state_dict(torch.load(os.path.join(folder, "model.pt")))
    metrics = evaluate(model, data, 1, "cpu", world)
    share = data.valid[world.rank :: world.size]
    hyps = translate_examples(model, share, data.tgt_vocab, data.tgt_mode)
    hyps = distributed.gather_strided(hyps, len(data.valid), world)
    with open(os.path.join(folder, f"rank{world.rank}.json"), "w", encoding="utf-8") as f:
        json.dump({"metrics": metrics, "hyps": hyps}, f)
    distributed.shutdown(world)
    return 0


def test_validation_in_shares_scores_the_whole_set(tmp_path):
    """Two replicas each decode half of the 37 validation pairs: every rank gets the whole set's
    outputs in order and the same scores as one process decoding all of it."""
    torch.manual_seed(0)
    data = prepare_data(_settings())
    model = Seq2Seq(_model_config(data, dict(embed_size=8, hidden_size=16)))
    torch.save(model.state_dict(), tmp_path / "model.pt")
    status = launch.run_replicas(
        _evaluate_in_shares, str(tmp_path), 2, user_errors=(), program="test"
    )
    assert status == 0
    hyps = translate_examples(model, data.valid, data.tgt_vocab, data.tgt_mode)
    assert len(set(hyps)) > 5  # outputs differ, so a misplaced share would show
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text(encoding="utf-8"))
        assert got["hyps"] == hyps
        assert got["metrics"] == pytest.approx(evaluate(model, data, 1, "cpu"))
