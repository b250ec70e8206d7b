"""Replaying a static search loop (StaticLoopState: static_loop.py's) as CUDA graphs: each kind
of step (rules.KINDS) is captured once and replayed per token, one graph launch instead of a few
dozen kernel launches, the host reading the device every `check_every` steps. capture=False runs
the same steps eagerly on any device (how the loop is tested without a GPU). A failed capture
(an op that reads a value back to the host) warns with CaptureFailedWarning and runs eagerly."""

from __future__ import annotations

import warnings
from typing import Protocol

import torch
from torch import Tensor

from fast_s2s.models.decoding.rules import KINDS, step_kind

__all__ = [
    "DEFAULT_CHECK_EVERY",
    "CaptureFailedWarning",
    "StaticLoopState",
    "capture_steps",
    "run_steps",
]

# How often (in steps) a search on CUDA reads whether every sentence is done: each read is a
# host synchronisation; done sentences keep computing masked steps until it.
DEFAULT_CHECK_EVERY = 8


class CaptureFailedWarning(RuntimeWarning):
    """A search's CUDA graph capture failed and it ran the same steps eagerly (what the bench's
    decode rows and `fast-s2s verify` look for)."""


class StaticLoopState(Protocol):
    """A search loop over static buffers: step(kind) writes only in place; reset() restores the
    state before the first step; finished is a (B,) bool buffer, True once a sentence is done."""

    finished: Tensor

    def step(self, kind: str) -> None: ...

    def reset(self) -> None: ...


def capture_steps(loop: StaticLoopState, device: torch.device) -> dict[str, torch.cuda.CUDAGraph]:
    """The kinds of step as CUDA graphs, after a warm-up on a side stream (allocator, lazy
    initialisation, cuBLAS handles), as torch.cuda.graph asks; the buffers are then reset."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for kind in KINDS:
            loop.step(kind)
    torch.cuda.current_stream(device).wait_stream(stream)
    graphs = {}
    for kind in KINDS:
        graphs[kind] = graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loop.step(kind)
    loop.reset()
    return graphs


def run_steps(
    loop: StaticLoopState,
    max_len: int,
    min_len: int,
    check_every: int,
    capture: bool,
    eager_on_failure: bool = False,
) -> None:
    """Steps 0 .. max_len (fewer once every sentence is done, read every check_every steps),
    replayed as graphs when capture, else run eagerly. eager_on_failure: when capture fails,
    warn and run the same steps eagerly instead of raising."""
    graphs = None
    if capture:
        try:
            graphs = capture_steps(loop, loop.finished.device)
        except RuntimeError as exc:
            if not eager_on_failure:
                raise
            warnings.warn(
                f"fast_s2s: capturing the decoder step as a CUDA graph failed ({exc}); this "
                "search runs the same steps eagerly",
                CaptureFailedWarning,
                stacklevel=4,
            )
            loop.reset()
    for t in range(max_len + 1):
        kind = step_kind(t, max_len, min_len)
        if graphs is None:
            loop.step(kind)
        else:
            graphs[kind].replay()
        if (t + 1) % check_every == 0 and bool(loop.finished.all()):
            break
