"""How data-parallel replicas agree after each backward pass: their gradients averaged, and rank
0's clock (which the learning-rate schedule and the time budget follow) given to every replica.

    sync = gradient_sync.for_replicas(model, world, device)
    step_module = sync.wrap(loss_module)
    train_step(loss, optimizer, params, clip, after_backward=lambda: sync.exchange(seconds()))
    sync.elapsed  # rank 0's seconds() as of that step, the same on every replica

Three ways, chosen by where the replicas run (DESIGN.md, "Data-parallel training"):

- One process: nothing to average; the clock is the process's own.
- Replicas on the CPUs of one machine (`fast-s2s train --processes N`, or torchrun on one node):
  SharedMemoryGradients. Each replica writes its gradients into its row of a buffer every
  replica maps, one all-reduce of a single number (rank 0's clock) tells each that all rows are
  written, and each sums the rows itself. DistributedDataParallel sends the 2.7 MB of the g2p
  model's gradients through gloo's TCP ring instead: with two one-thread replicas on two cores
  that took 42 ms a step against 33 ms for the same replicas not communicating at all, and this
  37 ms (docs/results.md, "Grapheme to phoneme on CMUdict").
- Otherwise (GPUs, several machines, no room for the buffer): DistributedDataParallel, and the
  clock broadcast from rank 0.

Both averages are the mean over replicas of the same gradients; with two replicas they are equal
bit for bit (a / 2 + b / 2 and (a + b) / 2 round alike). Every replica sums the same rows in the
same order, so the replicas stay identical.
"""

from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist

from fast_s2s.training import distributed


class SingleProcess:
    """No replicas: the gradients are the process's own, and so is the clock."""

    def __init__(self) -> None:
        self.elapsed = 0.0  # rank 0's clock as of the last exchange

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return module

    def exchange(self, elapsed: float) -> None:
        """After a backward pass: average the gradients; `elapsed` is this replica's clock."""
        self.elapsed = elapsed


class DataParallel(SingleProcess):
    """DistributedDataParallel averages the gradients during the backward pass; rank 0's clock
    is broadcast after it."""

    def __init__(self, world: distributed.World) -> None:
        super().__init__()
        self._world = world

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        return torch.nn.parallel.DistributedDataParallel(module)

    def exchange(self, elapsed: float) -> None:
        self.elapsed = distributed.broadcast_float(elapsed, self._world)


def _shared_directory() -> str:
    """Where the buffer's file lives: memory (/dev/shm) where the system has it."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _reserved_file(size: int) -> str | None:
    """A new file of `size` bytes in _shared_directory(), its space reserved, or None."""
    try:
        handle, path = tempfile.mkstemp(prefix="fast_s2s-gradients-", dir=_shared_directory())
    except OSError:
        return None
    try:
        reserve = getattr(os, "posix_fallocate", None)  # not on macOS, which has no /dev/shm
        if reserve is not None:
            reserve(handle, 0, size)
        else:
            os.ftruncate(handle, size)
    except OSError:
        os.unlink(path)
        return None
    finally:
        os.close(handle)
    return path


def map_shared(count: int, world: distributed.World) -> torch.Tensor | None:
    """A float32 buffer of `count` zeros that every replica maps, or None on every replica where
    the directory cannot hold it (a container's /dev/shm is often 64 MB). Rank 0 creates the
    file and reserves its space (a full tmpfs fails here, not with SIGBUS at the first write),
    the others map it by name, and it is unlinked once all have (the mappings stay)."""
    names = [_reserved_file(4 * count) if world.is_main else None]
    dist.broadcast_object_list(names, src=0)
    if names[0] is None:
        return None
    try:
        buffer = torch.from_file(names[0], shared=True, size=count, dtype=torch.float32)
        dist.barrier()
    finally:
        if world.is_main:
            os.unlink(names[0])
    return buffer


class SharedMemoryGradients(SingleProcess):
    """Replicas on one machine average their gradients through shared memory (map_shared).

    The buffer holds two slots of (replicas, parameters) float32 values, used on alternate
    steps: a replica writes step k + 2's row only after the all-reduce of step k + 1, which
    every replica enters after reading step k's rows, so no row is overwritten while read.
    The all-reduce is a system call on every replica between the writes and the reads, so
    they are ordered on any CPU.
    """

    def __init__(
        self, parameters: list[torch.nn.Parameter], buffer: torch.Tensor, world: distributed.World
    ) -> None:
        super().__init__()
        self._world = world
        self._parameters = parameters
        self._sizes = [p.numel() for p in parameters]
        self._slots = buffer.view(2, world.size, sum(self._sizes))
        self._mean = torch.empty(sum(self._sizes))
        self._clock = torch.zeros(1, dtype=torch.float64)
        self._step = 0
        for p in parameters:  # every replica starts from rank 0's weights, as DDP's would
            dist.broadcast(p.data, src=0)

    def exchange(self, elapsed: float) -> None:
        slot = self._slots[self._step % 2]
        self._step += 1
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._parameters]
        torch.cat([g.reshape(-1) for g in grads], out=slot[self._world.rank])
        self._clock.fill_(elapsed if self._world.is_main else 0.0)
        dist.all_reduce(self._clock)  # every row is written; the sum is rank 0's clock
        self.elapsed = float(self._clock)
        torch.sum(slot, dim=0, out=self._mean).div_(self._world.size)
        for p, mean in zip(self._parameters, self._mean.split(self._sizes), strict=True):
            if p.grad is None:
                p.grad = mean.view_as(p).clone()
            else:
                p.grad.copy_(mean.view_as(p))


def one_machine() -> bool:
    """Whether every replica runs on this machine (the launcher's and torchrun's
    LOCAL_WORLD_SIZE is the whole world)."""
    local = os.environ.get("LOCAL_WORLD_SIZE")
    return local is not None and int(local) == distributed.launched_world().size


def for_replicas(
    model: torch.nn.Module, world: distributed.World, device: torch.device
) -> SingleProcess:
    """The way this run's replicas agree (module docstring)."""
    if not world.distributed:
        return SingleProcess()
    parameters = [p for p in model.parameters() if p.requires_grad]
    # Buffers (none in Seq2Seq) would need DDP's broadcast before every forward.
    shareable = not any(True for _ in model.buffers()) and all(
        p.device.type == "cpu" and p.dtype == torch.float32 for p in parameters
    )
    if device.type == "cpu" and shareable and one_machine():
        buffer = map_shared(2 * world.size * sum(p.numel() for p in parameters), world)
        if buffer is not None:
            return SharedMemoryGradients(parameters, buffer, world)
    return DataParallel(world)
