"""Starting data-parallel replicas from inside the CLI (`fast-s2s train --processes N`), so a
user gets DistributedDataParallel on one machine without torchrun on the command line.

Each replica is a fresh process (the "spawn" start method: no forked OpenMP or BLAS state) that
gets the environment torchrun would give it (RANK, WORLD_SIZE, MASTER_ADDR...) and runs the same
entry point a plain run does; fast_s2s.training.distributed then joins the group from that
environment exactly as under torchrun. A user error raised in the replicas (the same one on
every rank, as their inputs are the same) is printed once by the launcher, as one line.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

from fast_s2s.training import distributed


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers narrow)."""
    with contextlib.suppress(AttributeError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def under_torchrun() -> bool:
    """Whether torchrun started this process as one of its replicas."""
    return distributed.launched_world().distributed


def rendezvous_store() -> dist.TCPStore:
    """The replicas' rendezvous store, served by the launcher on a port the system picks, so no
    other program can take that port between choosing it and binding it. The replicas join it
    as clients, as torchrun's replicas join its agent's store (TORCHELASTIC_USE_AGENT_STORE)."""
    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


def _replica(
    rank: int,
    entry: Callable[[Any], int],
    argument: Any,
    size: int,
    port: int,
    user_errors: tuple[type[BaseException], ...],
    messages: Any,
) -> None:
    # TORCHELASTIC_USE_AGENT_STORE makes every replica a client of the launcher's store
    # (rendezvous_store); older torch releases also read TORCHELASTIC_RESTART_COUNT, the
    # prefix they give the store's keys.
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size), LOCAL_WORLD_SIZE=str(size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE=str(True), TORCHELASTIC_RESTART_COUNT="0",
    )  # fmt: skip
    try:
        status = entry(argument)
    except user_errors as exc:
        messages.put(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C reaches every replica; the launcher says it once
        sys.exit(130)
    if status:
        sys.exit(status)


def run_replicas(
    entry: Callable[[Any], int],
    argument: Any,
    processes: int,
    *,
    user_errors: tuple[type[BaseException], ...],
    program: str,
) -> int:
    """Run entry(argument) in `processes` replicas; returns 0 when all returned 0, else the
    exit status of the first to fail (2 for an exception of `user_errors`, whose message is
    printed once on stderr after `program`). The others are stopped when one fails, as torchrun
    does: they would wait for it in the next collective."""
    spawn = mp.get_context("spawn")
    messages = spawn.SimpleQueue()
    store = rendezvous_store()  # held until the replicas end
    context = mp.start_processes(
        _replica,
        args=(entry, argument, processes, store.port, user_errors, messages),
        nprocs=processes,
        join=False,
        start_method="spawn",
    )
    # torch logs a warning for every replica it stops after another failed; the user's error
    # is the one line that matters, so only worse than warnings get through.
    spawn_log = logging.getLogger(mp.spawn.__module__)
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as exc:
        if not messages.empty():
            print(f"{program}: {messages.get()}", file=sys.stderr)
        return exc.exit_code if exc.exit_code and exc.exit_code > 0 else 1
    except KeyboardInterrupt:
        for process in context.processes:
            process.terminate()  # each checkpoint write is atomic: nothing half-written stays
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    finally:
        spawn_log.setLevel(level)
    return 0
