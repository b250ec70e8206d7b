"""The decoder as the native C++ ops take it: its weights and wiring by name, three dicts
(`params`: "embedding", "w_ih_l0", ..., "out_b"; `config`: "layers", "eos", ...; `kinds`:
"wiring", "score", "local"; the layout is written once, in csrc/cpu/decoder_model.h, and
csrc/cpu/decoder_params.cpp refuses a missing, unexpected or mis-shaped entry by name), and when
the native ops can run a model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from fast_s2s import _extension
from fast_s2s.backends import BackendUnavailableError, resolve_backend
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["Packed", "memory", "pack", "step", "unavailable"]

_DTYPES = (torch.float32, torch.float64)


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
    """None when the native ops can decode `model`, else why not (one sentence)."""
    if not _extension.extension_loaded():
        return _extension.EXTENSION_ERROR
    weight = model.decoder.embedding.weight
    if weight.device.type != "cpu":
        return (
            f"the model is on {weight.device.type}: the native C++ loop runs CPU models (on CUDA "
            "the searches run the static loop, replayed as CUDA graphs)"
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


def _kinds(model: Seq2Seq) -> dict[str, str]:
    cfg, classic = model.config, not model.has_attention
    return {
        "wiring": "classic" if classic else cfg.wiring,
        "score": "none" if classic else cfg.score,
        "local": cfg.local,
    }


def _config(model: Seq2Seq) -> dict[str, int]:
    cfg, dec = model.config, model.decoder
    return {
        "window": cfg.window if cfg.local != "none" else 0,
        "input_feeding": int(cfg.input_feeding),
        "layers": dec.num_layers,
        "post_gru": int(cfg.post_attention_gru),
        "tie_proj": int(dec.tie_proj is not None),
        "pad": cfg.pad_id,
        "bos": cfg.bos_id,
        "eos": cfg.eos_id,
    }


def _param_paths(model: Seq2Seq, kinds: dict, config: dict) -> dict[str, tuple[str, ...]]:
    """Each packed name -> where the tensor lives: the submodule names, then its own name."""
    paths = {"embedding": ("embedding", "weight")}
    gru_names = {name: name.replace("weight", "w").replace("bias", "b")
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}  # fmt: skip
    for layer in range(model.decoder.num_layers):
        for name, short in gru_names.items():
            paths[f"{short}_l{layer}"] = ("rnn", f"{name}_l{layer}")
    if config["post_gru"]:
        for name, short in gru_names.items():
            paths[f"{short}_post"] = ("post_rnn", f"{name}_l0")
    score = kinds["score"]
    if score in ("additive", "concat", "general"):
        paths["query_proj"] = ("attention", "query_proj", "weight")
    if score in ("additive", "concat"):
        paths["v"] = ("attention", "v")
    if kinds["local"] == "p":
        paths["position_proj"] = ("attention", "position_proj", "weight")
        paths["position_v"] = ("attention", "position_v")
    if kinds["wiring"] == "luong":
        paths["combine_w"] = ("combine", "weight")
    else:
        paths["readout_w"], paths["readout_b"] = ("readout", "weight"), ("readout", "bias")
    if config["tie_proj"]:
        paths["tie_proj"] = ("tie_proj", "weight")
    paths["out_w"], paths["out_b"] = ("out", "weight"), ("out", "bias")
    return paths


def _resolve(decoder: torch.nn.Module, path: tuple[str, ...]) -> Tensor:
    module = decoder
    for name in path[:-1]:
        module = module._modules[name]  # type: ignore[assignment]
    param = module._parameters.get(path[-1])
    return getattr(module, path[-1]) if param is None else param


class Packed(NamedTuple):
    """params (name -> weight), config (name -> int) and kinds (name -> str), each a
    torch.ScriptDict: it crosses into C++ as it is, where a dict is converted entry by entry."""

    params: torch.ScriptDict
    config: torch.ScriptDict
    kinds: torch.ScriptDict


@dataclass
class _Layout:
    structure: tuple  # the kinds and config values this layout was made for
    paths: dict[str, tuple[str, ...]]  # where each parameter lives
    config: torch.ScriptDict
    kinds: torch.ScriptDict
    tensors: tuple[Tensor, ...] = ()  # the parameters params was made from
    params: torch.ScriptDict | None = None


# model -> its layout: the parameters' paths found once per structure (through module
# attributes they took a tenth of a batch-1 decode) and the dicts the ops last got. The tensors
# are looked up again on every call (dict lookups): params is made again when one of them is
# another object (a replaced parameter or submodule); it holds the tensors themselves, so
# in-place writes and .data swaps are seen as they are.
_LAYOUT: weakref.WeakKeyDictionary[Seq2Seq, _Layout] = weakref.WeakKeyDictionary()


def pack(model: Seq2Seq) -> Packed:
    """The decoder's weights and wiring, by name (see the module docstring)."""
    kinds, config = _kinds(model), _config(model)
    structure = (*kinds.values(), *config.values())
    layout = _LAYOUT.get(model)
    if layout is None or layout.structure != structure:
        paths = _param_paths(model, kinds, config)
        layout = _LAYOUT[model] = _Layout(
            structure, paths, torch.ScriptDict(config), torch.ScriptDict(kinds)
        )
    decoder = model._modules["decoder"]
    tensors = tuple(_resolve(decoder, path) for path in layout.paths.values())
    if torch.is_grad_enabled():  # the search runs under no_grad; a direct call may not
        detached = {name: t.detach() for name, t in zip(layout.paths, tensors, strict=True)}
        return Packed(torch.ScriptDict(detached), layout.config, layout.kinds)
    if len(tensors) != len(layout.tensors) or any(
        a is not b for a, b in zip(tensors, layout.tensors, strict=True)
    ):
        layout.params = torch.ScriptDict(dict(zip(layout.paths, tensors, strict=True)))
        layout.tensors = tensors
    return Packed(layout.params, layout.config, layout.kinds)  # type: ignore[arg-type]


def memory(enc: EncoderState) -> tuple[Tensor | None, Tensor, Tensor | None, Tensor]:
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
    """One native decoder step with the search rules: python_loop.step's counterpart.

    prev (N,) int64, N = B * beam; returns log_probs (N, V), the new state and the attention
    weights (N, S) (zeros without attention)."""
    packed = pack(model)
    keys, values, context, lengths = memory(enc)
    steps = state.step  # the steps taken: local-m's centre
    if isinstance(steps, Tensor) and steps.numel() == 1:
        steps = int(steps)
    if not isinstance(steps, int):
        raise TypeError(
            "native step: state.step must be an int or a one-element tensor (the steps taken), "
            f"got {steps!r}"
        )
    log_probs, hidden, feed, weights = torch.ops.fast_s2s.decoder_step(
        *packed, keys, values, context, lengths, state.hidden, state.feed, prev, beam,
        force_eos, block_eos, steps,
    )  # fmt: skip
    feed = feed if state.feed is not None else None
    return log_probs, DecoderState(hidden, feed, state.step + 1), weights
