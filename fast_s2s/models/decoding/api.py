"""The searches' front: greedy_decode, beam_search and search build the SearchOptions, pick the
engine (decode_path says which), and run it in eval mode without gradients; result.assemble
turns the engine's Trace into hypotheses. search(..., engine=StaticLoop(check_every, capture))
runs the static engine with its own knobs."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import overload

import torch
from torch import Tensor, nn

from fast_s2s.models.decoding.engine import Engine
from fast_s2s.models.decoding.native_loop import NativeLoop
from fast_s2s.models.decoding.native_plan import plan_for
from fast_s2s.models.decoding.python_loop import PythonLoop
from fast_s2s.models.decoding.result import Hypothesis, assemble
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.decoding.static_loop import StaticLoop
from fast_s2s.models.seq2seq import Seq2Seq

__all__ = ["beam_search", "decode_path", "engine_for", "greedy_decode", "run_search", "search"]

PYTHON_LOOP, NATIVE_LOOP = PythonLoop(), NativeLoop()


def engine_for(model: Seq2Seq, native: bool) -> tuple[Engine, str]:
    """The engine a search with native=native runs on `model`, and decode_path's word for it."""
    if not isinstance(native, bool):
        raise TypeError(f"native must be a bool, got {native!r}")
    if not native:
        return PYTHON_LOOP, "python: native=False"
    why = NATIVE_LOOP.unavailable(model)  # first: the common case, a CPU model on cpp
    if why is None:
        return NATIVE_LOOP, "native"
    if model.device.type == "cuda":
        return StaticLoop(capture=True, eager_on_failure=True), "cuda-graph"
    return PYTHON_LOOP, f"python: {why}"


def decode_path(model: Seq2Seq, native: bool = True) -> str:
    """Which engine greedy_decode / beam_search(model, ..., native=native) run:
    "native" (the C++ loop, one op call per batch; CPU models on the cpp backend),
    "cuda-graph" (the step over static buffers replayed as CUDA graphs; models on CUDA), or
    "python: <why neither>" (the Python loop, the reference; e.g. a CPU model on the
    reference backend)."""
    return engine_for(model, native)[1]


def _check_model(model: object) -> None:
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a fast_s2s.models.Seq2Seq, got {type(model).__name__}")


def _any_training(model: nn.Module) -> bool:
    """Whether the model or any submodule is in training mode: model.modules() without its
    generator chain and memo set (a third of a batch-1 native decode's Python time)."""
    stack, seen = [model], {id(model)}
    while stack:
        module = stack.pop()
        if module.training:
            return True
        for child in module._modules.values():
            if child is not None and id(child) not in seen:  # shared or cyclic submodules
                seen.add(id(child))
                stack.append(child)
    return False


@contextlib.contextmanager
def _inference(model: Seq2Seq) -> Iterator[None]:
    """Eval mode and no gradients; each submodule's mode is restored (a model in training with
    a part held in eval mode keeps it so). Walking every submodule costs as much as a native
    batch-1 decode: skipped when all are in eval mode."""
    switch = _any_training(model)
    if switch:
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if switch:
            for module, training in modes:
                module.training = training


def run_search(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, spec: SearchOptions, engine: Engine
) -> list[list[Hypothesis]]:
    """Decode a batch with `engine` (one that can run the model): per source row its up to
    spec.n_best hypotheses, best first. Raises ValueError for a sentence without a
    finite-scored hypothesis."""
    _check_model(model)
    if isinstance(engine, NativeLoop):
        plan = plan_for(model)
        if plan.encoder_unavailable is None:  # encoder, search and assembly in one op call
            # no mode to set: the native ops compute the model in eval mode (no dropout)
            with torch.no_grad():
                return engine.search(model, src, src_lengths, spec, plan)
    with _inference(model):
        encoded = engine.encode(model, src, src_lengths)
        trace = engine.run(model, encoded, spec)
        lengths = encoded.src_lengths.cpu().tolist()
    return assemble(trace, lengths, spec.n_best, spec.tables)


def search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    options: SearchOptions,
    *,
    engine: Engine | None = None,
) -> list[list[Hypothesis]]:
    """Decode a batch as `options` says: per source row, a ranked list of up to
    options.n_best hypotheses (one, the greedy one, when options.beam == 1). engine: None runs
    the one decode_path names; or an engine of fast_s2s.models.decoding (e.g. StaticLoop with
    its check interval and capture)."""
    _check_model(model)
    if not isinstance(options, SearchOptions):
        raise TypeError(f"options must be a SearchOptions, got {type(options).__name__}")
    if engine is None:
        engine, _ = engine_for(model, options.native)  # an engine that can run the model
    elif (why := engine.unavailable(model)) is not None:
        raise ValueError(why)
    return run_search(model, src, src_lengths, options, engine)


def greedy_decode(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int = 100,
    *,
    min_len: int = 0,
    max_len_ratio: float | None = None,
    max_len_offset: int = 0,
    native: bool = True,
) -> list[Hypothesis]:
    """Greedy decoding of a batch (beam search with beam 1): the most probable token at every
    step; one Hypothesis per source row, in order.

    model: run in eval mode and without gradients (its mode is restored). src: (B, S) int64
    padded source (or (B, S, F) frames for source="frames"); src_lengths: (B,). max_len,
    min_len: at most / at least this many tokens before eos. max_len_ratio, max_len_offset: with
    a ratio a, each sentence of source length S stops after floor(a * S) + b tokens (within
    [min_len, max_len]; SearchOptions.sentence_max_lens). native: run the native engine where it
    can (decode_path says which runs); False: the Python loop, the reference.
    """
    bounds = (max_len_ratio, max_len_offset)
    spec = _options(1, max_len, min_len, 1.0, "power", 1, native, *bounds)
    return [hyps[0] for hyps in search(model, src, src_lengths, spec)]


@overload
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = ...,
    max_len: int = ...,
    length_penalty: float = ...,
    *,
    n_best: None = ...,
    penalty: str = ...,
    min_len: int = ...,
    max_len_ratio: float | None = ...,
    max_len_offset: int = ...,
    native: bool = ...,
) -> list[Hypothesis]: ...
@overload
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = ...,
    max_len: int = ...,
    length_penalty: float = ...,
    *,
    n_best: int,
    penalty: str = ...,
    min_len: int = ...,
    max_len_ratio: float | None = ...,
    max_len_offset: int = ...,
    native: bool = ...,
) -> list[list[Hypothesis]]: ...
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = 5,
    max_len: int = 100,
    length_penalty: float = 1.0,
    *,
    n_best: int | None = None,
    penalty: str = "power",
    min_len: int = 0,
    max_len_ratio: float | None = None,
    max_len_offset: int = 0,
    native: bool = True,
) -> list[Hypothesis] | list[list[Hypothesis]]:
    """Batched beam search: B sentences x beam_size hypotheses = N decoder rows per step (the
    search and its stopping rule: python_loop; the ranking and the bound: rules). With
    beam_size=1 this is exactly greedy_decode.

    model, src, src_lengths, max_len, min_len, max_len_ratio, max_len_offset, native: as
    greedy_decode. beam_size: hypotheses kept per sentence. length_penalty: alpha, a finite real
    (0: rank by total log-prob); penalty: its form, "power" (L ** alpha) or "gnmt"
    (((5 + L) / 6) ** alpha). n_best: None returns the best Hypothesis per source row; k in
    [1, beam_size] returns per row a list of its k best finished hypotheses, best first (fewer
    when fewer finished). Hypothesis.score is the total log-probability.
    """
    best = 1 if n_best is None else n_best
    bounds = (max_len_ratio, max_len_offset)
    spec = _options(beam_size, max_len, min_len, length_penalty, penalty, best, native, *bounds)
    ranked = search(model, src, src_lengths, spec)
    return [hyps[0] for hyps in ranked] if n_best is None else ranked


@functools.lru_cache(maxsize=256, typed=True)  # typed: True, 1 and 1.0 are different options
def _cached_options(*args: object) -> SearchOptions:
    beam, max_len, min_len, length_penalty, penalty, n_best, native, ratio, offset = args
    return SearchOptions(
        beam=beam, max_len=max_len, min_len=min_len, length_penalty=length_penalty,
        penalty=penalty, n_best=n_best, native=native, max_len_ratio=ratio,
        max_len_offset=offset,
    )  # type: ignore[arg-type]  # fmt: skip


def _options(*args: object) -> SearchOptions:
    """SearchOptions of the searches' arguments, made once per distinct arguments (their checks
    are a tenth of a batch-1 native decode's Python time); an unhashable argument is checked
    (and refused) without the cache."""
    try:
        return _cached_options(*args)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return _cached_options.__wrapped__(*args)
