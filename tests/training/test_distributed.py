"""Training under torch.distributed: 2 CPU processes (gloo) launched with torchrun.

The driver calls the real fast_s2s.training.train() in each process; afterwards every rank saves
its parameters, and the test checks the replicas ended identical and that only rank 0 wrote the
checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from fast_s2s.training import TrainSettings, train

    out, lr_schedule = sys.argv[1], sys.argv[2]
    epochs, budget = int(sys.argv[3]), float(sys.argv[4])
    torch.set_num_threads(1)
    settings = TrainSettings(task="copy", num_examples=320, valid_size=32, max_len=5,
                             epochs=epochs, batch_size=16, patience=99, lr_schedule=lr_schedule,
                             time_budget=budget or None)
    result = train(settings, dict(embed_size=16, hidden_size=32), os.path.join(out, "ckpt.pt"))
    rank = int(os.environ["RANK"])
    torch.save(result.model.state_dict(), os.path.join(out, f"params{rank}.pt"))
    with open(os.path.join(out, f"result{rank}.json"), "w") as f:
        json.dump({"written": result.checkpoints_written, "epochs": result.epochs_run}, f)
    """
)


@pytest.mark.slow
# cosine with a budget that ends the run: the rate follows the clock, so ranks reading their
# own clocks would step their replicas at different rates
@pytest.mark.parametrize("lr_schedule,epochs,budget", [("plateau", 2, 0.0), ("cosine", 99, 1.0)])
def test_two_cpu_processes_train_identical_replicas(tmp_path, lr_schedule, epochs, budget):
    import json

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(driver), str(tmp_path), lr_schedule, str(epochs), str(budget)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    params = [torch.load(tmp_path / f"params{r}.pt") for r in (0, 1)]
    assert params[0].keys() == params[1].keys()
    for name in params[0]:
        assert torch.equal(params[0][name], params[1][name]), name
    results = [json.loads((tmp_path / f"result{r}.json").read_text()) for r in (0, 1)]
    if budget:  # both ranks stop at the epoch where rank 0 saw the budget run out
        epochs = results[0]["epochs"]
        assert 1 <= epochs < 99
    assert results[0] == {"written": epochs, "epochs": epochs}
    assert results[1] == {"written": 0, "epochs": epochs}  # rank 1 trained but wrote nothing
    assert (tmp_path / "ckpt.pt").exists()
    from fast_s2s.training import load_checkpoint

    assert load_checkpoint(tmp_path / "ckpt.pt")["epoch"] == epochs - 1


@pytest.mark.parametrize(
    "given,environment,expected",
    [
        ("cuda", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:1"),
        ("cuda", {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}, "cuda:0"),  # node 2 of 2
        ("cuda:0", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:0"),  # as given
        ("cpu", {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cpu"),
        ("cuda", {}, "cuda"),  # started plainly
    ],
)
def test_each_replica_trains_on_its_own_gpu(monkeypatch, given, environment, expected):
    from fast_s2s.training import distributed

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert distributed.replica_device(torch.device(given)) == torch.device(expected)


def test_the_launchers_rendezvous_port_cannot_be_taken():
    """The launcher serves the store itself, so the port is bound from the moment it is known
    (the replicas join as clients: test_launch's runs would fail if rank 0 tried to bind it)."""
    import socket

    from fast_s2s.training import launch

    store = launch.rendezvous_store()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", store.port))
    store.set("key", "value")
    assert store.get("key") == b"value"
