"""torch.distributed for training: set up from torchrun's environment, one writer, equal shards.

Launched with `fast-s2s train --processes N` (fast_s2s.training.launch) or `torchrun
--nproc-per-node N -m fast_s2s.cli train ...`, every process trains a
replica (gloo on CPU, nccl on GPU) on its own share of the batches; gradients are averaged
(fast_s2s.training.gradient_sync), so the replicas stay identical. Only rank 0 prints and writes
checkpoints. Launched plainly, everything here is a no-op and the world has one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched_world() -> World:
    """The rank and size the launcher (torchrun, or `--processes`) put in this process's
    environment, before joining any group; World() when it was started plainly."""
    return World(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def replica_device(device: torch.device) -> torch.device:
    """The device this replica trains on. Under a launcher a bare "cuda" means the GPU of the
    replica's LOCAL_RANK, one GPU per replica as `torchrun --nproc-per-node` expects; otherwise
    every replica would share GPU 0. A device with an index is taken as given."""
    if device.type != "cuda" or device.index is not None or not launched_world().distributed:
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(device: torch.device) -> World:
    """Join the process group torchrun describes (WORLD_SIZE, RANK, MASTER_ADDR...), if any.
    `device` is the replica's (replica_device); on CUDA it becomes the current device, which
    NCCL and the object collectives use."""
    if not launched_world().distributed:
        return World()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def shard(items: list, world: World) -> list:
    """This rank's share, every rank getting the same count (DDP needs equal step counts)."""
    if not world.distributed:
        return items
    usable = len(items) - len(items) % world.size
    return items[world.rank : usable : world.size]


def gather_strided(share: list, total: int, world: World) -> list:
    """The whole list, on every rank, from each rank's items[rank::size] share."""
    if not world.distributed:
        return share
    shares: list = [None] * world.size
    dist.all_gather_object(shares, share)
    return [shares[i % world.size][i // world.size] for i in range(total)]


def broadcast_float(value: float, world: World) -> float:
    """Rank 0's value, on every rank (a flag, or the clock a schedule follows)."""
    if not world.distributed:
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def broadcast_flag(flag: bool, world: World) -> bool:
    """Rank 0's decision, on every rank (so all stop at the same epoch)."""
    return bool(broadcast_float(float(flag), world))


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
