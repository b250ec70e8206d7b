"""Greedy decoding with the decoder step as a fixed sequence of device ops over static buffers:
on CUDA each kind of step is captured once as a CUDA graph and replayed per token, so a token
costs one graph launch instead of a few dozen kernel launches from Python, and the host never
waits on the device except every `check_every` steps. greedy_decode(native=True) runs this for
a model on CUDA (search.decode_path says "cuda-graph"); cuda_graph_beam.py is beam search's form,
on the shared pieces here (the kinds of step, capture, the host's replay loop).

How: encode once; allocate every tensor the loop touches as a static buffer (previous tokens,
decoder state, finished flags, scores, the (B, max_len + 1) token and (B, max_len + 1, S)
attention buffers and a device step counter); a step does decode_step, the search rules, argmax,
the score update and writes its row at the step counter, all in place. Three kinds of step (the
ordinary one, the one before min_len with eos blocked, the last one with eos forced) are three
graphs. The host replays them max_len + 1 times at most, reading the finished flags every
`check_every` steps. Rows that finished keep computing (their scores are masked), exactly as
search._greedy_loop does, so the tokens are the same.

With capture=False the same step runs eagerly on any device: that is how the loop is tested
without a GPU (tests/test_cuda_graph.py, on the CPU kernels and on the CUDA kernels under the
CPU emulation, token for token against the Python loop). Capture itself needs a GPU:
scripts/gpu_check.sh runs the captured form against greedy_decode(native=False). Should capture
fail on some GPU or op (an op that reads a value back to the host cannot be captured), the
searches warn and run the same steps eagerly; greedy_decode_graph(capture=True) raises instead.
"""

from __future__ import annotations

import warnings
from typing import Protocol

import torch
from torch import Tensor

from fast_s2s.models.search import Hypothesis, _check_args, _eval_mode, search_rules
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["CaptureFailedWarning", "greedy_decode_graph"]

# How often (in steps) the searches on CUDA read whether every row has finished: each read is a
# host synchronisation; finished rows keep computing masked steps until it.
DEFAULT_CHECK_EVERY = 8

# (force_eos, block_eos) of the three kinds of step
KINDS = {"block": (False, True), "plain": (False, False), "force": (True, False)}


def step_kind(t: int, max_len: int, min_len: int) -> str:
    """Which kind of step step t is: eos forced at the last, blocked before min_len."""
    return "force" if t == max_len else "block" if t < min_len else "plain"


class CaptureFailedWarning(RuntimeWarning):
    """A search's CUDA graph capture failed and it ran the same steps eagerly (what the bench's
    decode rows and `fast-s2s verify` look for)."""


class StaticState:
    """A static loop's decoder state: buffers the steps overwrite in place, and the state
    before the first step, which reset() restores."""

    def __init__(self, state: DecoderState) -> None:
        self.initial = (state.hidden.clone(), None if state.feed is None else state.feed.clone())
        self.hidden = state.hidden.clone()
        self.feed = None if state.feed is None else state.feed.clone()

    def reset(self) -> None:
        self.store(DecoderState(*self.initial))

    def current(self, step: Tensor) -> DecoderState:
        """The state to step from; step: the device step counter (local-m's centre)."""
        return DecoderState(self.hidden, self.feed, step)

    def store(self, new: DecoderState) -> None:
        self.hidden.copy_(new.hidden)
        if self.feed is not None:
            self.feed.copy_(new.feed)


class StaticLoop(Protocol):
    """A search loop over static buffers: step(kind) writes only in place; reset() restores the
    state before the first step; finished is a (B,) bool buffer, True once a row is done."""

    finished: Tensor

    def step(self, kind: str) -> None: ...

    def reset(self) -> None: ...


class _StaticGreedy:
    """The greedy loop's buffers and its step, every write in place (capturable)."""

    def __init__(self, model: Seq2Seq, enc: EncoderState, max_len: int) -> None:
        cfg, device = model.config, enc.states.device
        batch, src_len, steps = enc.batch_size, enc.states.shape[1], max_len + 1
        self.model, self.enc, self.cfg = model, enc, cfg
        state = model.initial_state(enc, beam=1)
        self.state = StaticState(state)
        self.prev = torch.empty(batch, dtype=torch.int64, device=device)
        self.finished = torch.empty(batch, dtype=torch.bool, device=device)
        self.scores = torch.empty(batch, dtype=torch.float32, device=device)
        self.tokens = torch.empty(batch, steps, dtype=torch.int64, device=device)
        self.attention = torch.empty(batch, steps, src_len, dtype=torch.float32, device=device)
        self.t_index = torch.empty(1, dtype=torch.int64, device=device)
        self.reset()

    def reset(self) -> None:
        """The state before the first step (after a warm-up or a capture ran steps)."""
        self.state.reset()
        self.prev.fill_(self.cfg.bos_id)
        self.finished.zero_()
        self.scores.zero_()
        self.tokens.fill_(self.cfg.pad_id)
        self.attention.zero_()
        self.t_index.zero_()

    def step(self, kind: str) -> None:
        """One token for every row: search._step's rules, then search._greedy_loop's updates."""
        cfg = self.cfg
        # t_index is the step of the state (local-m attention reads it on the device)
        current = self.state.current(self.t_index)
        log_probs, new, weights = self.model.decode_step(self.enc, current, self.prev)
        best, token = search_rules(log_probs, self.cfg, *KINDS[kind]).max(dim=-1)
        self.scores.copy_(torch.where(self.finished, self.scores, self.scores + best))
        self.tokens.index_copy_(1, self.t_index, token[:, None])
        self.attention.index_copy_(1, self.t_index, weights.float()[:, None, :])
        self.finished.logical_or_(token == cfg.eos_id)
        self.prev.copy_(token)
        self.state.store(new)
        self.t_index.add_(1)

    def hypotheses(self) -> list[Hypothesis]:
        eos = self.cfg.eos_id
        token_rows = self.tokens.cpu().tolist()
        attention = self.attention.cpu()
        lengths = self.enc.src_lengths.cpu().tolist()
        scores = self.scores.double().cpu().tolist()
        hyps = []
        for b, row in enumerate(token_rows):
            n = row.index(eos)
            weights = attention[b, : n + 1, : lengths[b]].clone()  # a view would keep all rows
            hyps.append(Hypothesis(row[:n], scores[b], weights))
        return hyps


def _captured(loop: StaticLoop, device: torch.device) -> dict[str, torch.cuda.CUDAGraph]:
    """The three kinds of step as CUDA graphs, after a warm-up on a side stream (allocator, lazy
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


def check_graph_args(check_every: object, capture: bool | None, device: torch.device) -> bool:
    """Whether to capture (the default: exactly on CUDA), after checking the two arguments."""
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
    if capture is None:
        return device.type == "cuda"
    if not isinstance(capture, bool):
        raise TypeError(f"capture must be a bool or None, got {capture!r}")
    if capture and device.type != "cuda":
        raise ValueError(
            f"capture=True needs the model on CUDA, it is on {device} "
            "(capture=False runs the same loop eagerly)"
        )
    return capture


def run_loop(
    loop: StaticLoop,
    max_len: int,
    min_len: int,
    check_every: int,
    capture: bool,
    eager_on_failure: bool = False,
) -> None:
    """Steps 0 .. max_len (fewer once every row has finished, read every check_every steps),
    replayed as graphs when capture, else run eagerly. eager_on_failure: when capture fails,
    warn and run the same steps eagerly (what greedy_decode / beam_search do on CUDA) instead
    of raising."""
    graphs = None
    if capture:
        try:
            graphs = _captured(loop, loop.finished.device)
        except RuntimeError as exc:
            if not eager_on_failure:
                raise
            warnings.warn(
                f"fast_s2s: capturing the decoder step as a CUDA graph failed ({exc}); this "
                "search runs the same steps eagerly",
                CaptureFailedWarning,
                stacklevel=3,
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


def greedy_decode_graph(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int = 100,
    *,
    min_len: int = 0,
    check_every: int = DEFAULT_CHECK_EVERY,
    capture: bool | None = None,
) -> list[Hypothesis]:
    """greedy_decode with the step loop over static buffers (see the module docstring); on
    CUDA, greedy_decode(native=True) runs this with capture.

    Args:
        model, src (B, S), src_lengths (B,), max_len, min_len: as greedy_decode.
        check_every: the host reads whether every row has finished once per this many steps
            (its one synchronisation); the tokens do not depend on it.
        capture: replay CUDA graphs (needs the model on CUDA); False runs the same steps
            eagerly, on any device. Default: capture exactly on CUDA.

    Returns:
        One Hypothesis per source row, the same as greedy_decode's.
    """
    _check_args(model, max_len, min_len)
    device = model.device
    capture = check_graph_args(check_every, capture, device)
    return _greedy(model, src, src_lengths, max_len, min_len, check_every, capture, False)


def decode_greedy_on_cuda(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_len: int, min_len: int
) -> list[Hypothesis]:
    """greedy_decode's CUDA path (arguments checked): captured, eager if capture fails."""
    return _greedy(model, src, src_lengths, max_len, min_len, DEFAULT_CHECK_EVERY, True, True)


def _greedy(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int,
    min_len: int,
    check_every: int,
    capture: bool,
    eager_on_failure: bool,
) -> list[Hypothesis]:
    device = model.device
    with _eval_mode(model):
        loop = _StaticGreedy(model, model.encode(src, src_lengths.to(device)), max_len)
        run_loop(loop, max_len, min_len, check_every, capture, eager_on_failure)
        return loop.hypotheses()
