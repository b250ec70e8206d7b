"""fast_s2s.training.gradient_sync: replicas on one machine average their gradients through shared
memory to exactly what DistributedDataParallel gives, share rank 0's clock, and leave no file
behind; replicas elsewhere keep DistributedDataParallel. Two CPU processes under torchrun."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from fast_s2s.training import distributed, gradient_sync

DRIVER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from fast_s2s.training import distributed, gradient_sync

    out = sys.argv[1]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world = distributed.launched_world()
    rank = world.rank

    def model():
        torch.manual_seed(rank)  # different weights per rank: the sync starts them from rank 0's
        return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))

    shared, reference = model(), model()
    sync = gradient_sync.for_replicas(shared, world, torch.device("cpu"))
    ddp = torch.nn.parallel.DistributedDataParallel(reference)  # broadcasts rank 0's weights too
    report = {"kind": type(sync).__name__, "same": [], "mean": [], "clock": []}
    first = shared[0]
    for step in range(5):  # odd and even steps use the two slots of the buffer
        torch.manual_seed(100 * step + rank)  # each rank its own batch
        x = torch.randn(4, 7) * (1 + step)
        for m in (shared, reference):
            m.zero_grad(set_to_none=True)
        ddp(x).square().sum().backward()
        shared_model_out = shared(x)
        if rank == 1 and step == 3:  # a parameter without a gradient on one rank: zero there
            shared_model_out = shared_model_out + 0 * first.bias.sum()
            first.weight.requires_grad_(False)
        shared_model_out.square().sum().backward()
        first.weight.requires_grad_(True)
        local = [None if p.grad is None else p.grad.clone() for p in shared.parameters()]
        gathered = [None] * world.size
        dist.all_gather_object(gathered, local)
        sync.exchange(10.0 + step if rank == 0 else -1.0)
        expected = [
            sum(torch.zeros_like(p) if g[i] is None else g[i] for g in gathered) / world.size
            for i, p in enumerate(shared.parameters())
        ]
        report["mean"].append(all(
            torch.allclose(p.grad, e, rtol=0, atol=1e-6)
            for p, e in zip(shared.parameters(), expected)
        ))
        if step != 3:  # DDP's replica had all its gradients at step 3
            report["same"].append(all(
                torch.equal(a.grad, b.grad)
                for a, b in zip(shared.parameters(), reference.parameters())
            ))
        report["clock"].append(sync.elapsed)
    report["weights"] = [p.detach().tolist() for p in shared.parameters()]
    directory = gradient_sync._shared_directory()
    report["files"] = [f for f in os.listdir(directory) if f.startswith("fast_s2s-gradients-")]
    os.environ["LOCAL_WORLD_SIZE"] = "1"  # as on two machines
    elsewhere = gradient_sync.for_replicas(model(), world, torch.device("cpu"))
    report["elsewhere"] = type(elsewhere).__name__
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(report, f)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
def test_shared_memory_averages_as_distributed_data_parallel(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(driver), str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for report in reports:
        assert report["kind"] == "SharedMemoryGradients"
        assert report["elsewhere"] == "DataParallel"
        assert report["mean"] == [True] * 5
        assert report["same"] == [True] * 4  # bit for bit, where DDP saw the same gradients
        assert report["clock"] == [10.0, 11.0, 12.0, 13.0, 14.0]  # rank 0's, on both
        assert report["files"] == []
    assert reports[0]["weights"] == reports[1]["weights"]  # rank 0's, on both


@pytest.fixture
def one_process_group():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield distributed.World(0, 1)
    dist.destroy_process_group()


def _ours(directory) -> list[str]:
    return [f for f in os.listdir(directory) if f.startswith("fast_s2s-gradients-")]


def test_the_buffer_is_mapped_zeroed_and_unlinked(one_process_group, tmp_path, monkeypatch):
    monkeypatch.setattr(gradient_sync, "_shared_directory", lambda: str(tmp_path))
    buffer = gradient_sync.map_shared(1000, one_process_group)
    assert buffer is not None and buffer.shape == (1000,) and not buffer.any()
    buffer += 1  # still mapped after the unlink
    assert buffer.sum() == 1000
    assert _ours(tmp_path) == []


def test_no_room_for_the_buffer_means_distributed_data_parallel(
    one_process_group, tmp_path, monkeypatch
):
    """A full /dev/shm (a container's is often 64 MB) must not crash the first write with
    SIGBUS: the space is reserved first, and where it cannot be the replicas keep DDP."""

    def full(handle, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gradient_sync, "_shared_directory", lambda: str(tmp_path))
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    assert gradient_sync.map_shared(1000, one_process_group) is None
    assert _ours(tmp_path) == []
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    model = torch.nn.Linear(3, 2)
    world = distributed.World(0, 2)
    monkeypatch.setattr(dist, "broadcast_object_list", lambda names, src: None)
    assert type(gradient_sync.for_replicas(model, world, torch.device("cpu"))).__name__ == (
        "DataParallel"
    )
