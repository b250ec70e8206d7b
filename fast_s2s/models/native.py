"""The native decoder: the decoder's weights packed for the C++ ops torch.ops.fast_s2s.decoder_step,
decode_greedy and decode_beam (csrc/cpu/decoder_model.h, native_search.cpp), and when they can run.

The search loop then runs in C++ (one op call per batch of sentences, no Python per token); the
Python loop in fast_s2s.models.search is the reference it is tested against token for token.
It runs for a model on the CPU whose decoder ops resolve to the "cpp" backend (config.backend
"cpp", or "auto" where the extension is built), in float32 or float64. Anything else (the
reference backend, Triton, CUDA, bfloat16) runs the Python loop; `unavailable` says why, and
fast_s2s.models.search.decode_path says which loop a search call takes.

Packing (the layout the C++ side checks, csrc/cpu/decoder_model.h):
    config = [wiring, score, input_feeding, layers, tie_proj, pad, bos, eos, local, window]
    params = [embedding, (w_ih, w_hh, b_ih, b_hh) per layer, query_proj?, v?,
              position_proj?, position_v? (local-p),
              readout_w, readout_b (bahdanau / classic) | combine_w (luong), tie_proj?,
              out_w, out_b]
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from fast_s2s import _extension
from fast_s2s.backends import BackendUnavailableError, resolve_backend
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["beam", "greedy", "pack", "step", "unavailable"]

_WIRING = {"bahdanau": 0, "luong": 1, "classic": 2}
_SCORE = {"none": 0, "additive": 1, "concat": 1, "dot": 2, "general": 3}
_LOCAL = {"none": 0, "m": 1, "p": 2}
_DTYPES = (torch.float32, torch.float64)


def _wiring(model: Seq2Seq) -> str:
    return "classic" if not model.has_attention else model.config.wiring


def _decoder_ops(model: Seq2Seq) -> tuple[str, ...]:
    if not model.has_attention:
        return ("gru_cell",)
    if model.config.local != "none":
        return ("gru_cell", "local_attention")
    score = model.config.score
    return (
        "gru_cell",
        "additive_attention" if score in ("additive", "concat") else "dot_attention",
    )


def unavailable(model: Seq2Seq) -> str | None:
    """None when the native loop can decode `model`, else why not (one sentence)."""
    if not _extension.extension_loaded():
        return _extension.EXTENSION_ERROR
    weight = model.decoder.embedding.weight
    if weight.device.type != "cpu":
        return (
            f"the model is on {weight.device.type}: the native C++ loop runs CPU models (on CUDA "
            "the searches run fast_s2s.models.cuda_graph's loop there)"
        )
    if weight.dtype not in _DTYPES:
        return f"the native loop runs float32 / float64 models, this one is {weight.dtype}"
    backend = model.config.backend
    for op in _decoder_ops(model):
        try:
            concrete = resolve_backend(op, backend, weight.device)
        except (BackendUnavailableError, ValueError) as exc:
            return str(exc)
        if concrete != "cpp":
            return (
                f"backend={backend!r} runs {op} on {concrete!r}; the native loop is the cpp "
                "backend's (backend='cpp' or 'auto' with the extension built)"
            )
    return None


def _param_paths(model: Seq2Seq, wiring: str, score: str) -> list[tuple[str, ...]]:
    """Where each packed parameter lives: the submodule names from the model, then its name."""
    dec = ("decoder",)
    paths = [(*dec, "embedding", "weight")]
    for layer in range(model.decoder.num_layers):
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            paths.append((*dec, "rnn", f"{name}_l{layer}"))
    if score in ("additive", "concat", "general"):
        paths.append((*dec, "attention", "query_proj", "weight"))
    if score in ("additive", "concat"):
        paths.append((*dec, "attention", "v"))
    if model.config.local == "p":
        paths += [(*dec, "attention", "position_proj", "weight"), (*dec, "attention", "position_v")]
    if wiring == "luong":
        paths.append((*dec, "combine", "weight"))
    else:
        paths += [(*dec, "readout", "weight"), (*dec, "readout", "bias")]
    if model.decoder.tie_proj is not None:
        paths.append((*dec, "tie_proj", "weight"))
    return paths + [(*dec, "out", "weight"), (*dec, "out", "bias")]


def _resolve(model: Seq2Seq, path: tuple[str, ...]) -> Tensor:
    module = model
    for name in path[:-1]:
        module = module._modules[name]  # type: ignore[assignment]
    param = module._parameters.get(path[-1])
    return getattr(module, path[-1]) if param is None else param


# model -> (the structure its paths were made for, the paths): finding the parameters through
# module attributes took a tenth of a batch-1 decode. The tensors are looked up again on every
# call (dict lookups), so replaced parameters and submodules are always the current ones.
_PATHS: weakref.WeakKeyDictionary[Seq2Seq, tuple[tuple, list[tuple[str, ...]]]] = (
    weakref.WeakKeyDictionary()
)


def pack(model: Seq2Seq) -> tuple[list[Tensor], list[int]]:
    """(params, config) of the decoder, in the layout of the module docstring."""
    dec, cfg = model.decoder, model.config
    wiring = _wiring(model)
    score = "none" if wiring == "classic" else cfg.score
    structure = (wiring, score, cfg.local, dec.num_layers, dec.tie_proj is not None)
    cached = _PATHS.get(model)
    if cached is None or cached[0] != structure:
        cached = _PATHS[model] = (structure, _param_paths(model, wiring, score))
    params = [_resolve(model, path) for path in cached[1]]
    if torch.is_grad_enabled():  # the search runs under no_grad; a direct call may not
        params = [p.detach() for p in params]
    config = [
        _WIRING[wiring],
        _SCORE[score],
        int(cfg.input_feeding),
        dec.num_layers,
        int(dec.tie_proj is not None),
        cfg.pad_id,
        cfg.bos_id,
        cfg.eos_id,
        _LOCAL[cfg.local],
        cfg.window if cfg.local != "none" else 0,
    ]
    return params, config


def _memory(enc: EncoderState) -> tuple[Tensor | None, Tensor, Tensor | None, Tensor]:
    """keys, values, context and CPU lengths for the ops. The classic decoder reads the fixed
    context; its values (the states) only give S, the width of its all-zero weights."""
    lengths = enc.src_lengths.cpu()
    if enc.memory is None:
        return None, enc.states, enc.context, lengths
    return enc.memory.keys, enc.memory.values, None, lengths


def step(
    model: Seq2Seq,
    enc: EncoderState,
    state: DecoderState,
    prev: Tensor,
    beam: int = 1,
    *,
    force_eos: bool = False,
    block_eos: bool = False,
) -> tuple[Tensor, DecoderState, Tensor]:
    """One native decoder step with the search rules: the counterpart of search._step.

    prev (N,) int64, N = B * beam; returns log_probs (N, V), the new state and the attention
    weights (N, S) (zeros without attention)."""
    params, config = pack(model)
    keys, values, context, lengths = _memory(enc)
    steps = state.step  # the steps taken: local-m's centre
    if isinstance(steps, Tensor) and steps.numel() == 1:
        steps = int(steps)
    if not isinstance(steps, int):
        raise TypeError(
            "native.step: state.step must be an int or a one-element tensor (the steps taken), "
            f"got {steps!r}"
        )
    log_probs, hidden, feed, weights = torch.ops.fast_s2s.decoder_step(
        params, config, keys, values, context, lengths, state.hidden, state.feed, prev, beam,
        force_eos, block_eos, steps,
    )  # fmt: skip
    feed = feed if state.feed is not None else None
    return log_probs, DecoderState(hidden, feed, state.step + 1), weights


def greedy(
    model: Seq2Seq, enc: EncoderState, max_len: int, min_len: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The whole greedy search in one op: tokens (B, steps) int64 (eos included), lengths (B,)
    (tokens before eos), scores (B,), attention (B, steps, S) float32."""
    params, config = pack(model)
    keys, values, context, lengths = _memory(enc)
    return torch.ops.fast_s2s.decode_greedy(
        params, config, keys, values, context, lengths, enc.hidden, max_len, min_len
    )


def beam(
    model: Seq2Seq,
    enc: EncoderState,
    beam_size: int,
    max_len: int,
    min_len: int,
    length_penalty: float,
    penalty: str,
    n_best: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The whole beam search in one op: per sentence its n_best best hypotheses, ranked:
    tokens (B, n_best, max(max_len, 1)) int64 padded with -1, lengths (B, n_best) (-1: none),
    scores (B, n_best) float64, attention (B, n_best, max_len + 1, S) float32."""
    params, config = pack(model)
    keys, values, context, lengths = _memory(enc)
    return torch.ops.fast_s2s.decode_beam(
        params, config, keys, values, context, lengths, enc.hidden, beam_size, max_len, min_len,
        float(length_penalty), penalty, n_best,
    )  # fmt: skip
