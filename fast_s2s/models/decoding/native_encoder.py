"""The native loop's encoder: Seq2Seq.encode as one C++ op call, torch.ops.fast_s2s.encode
(csrc/cpu/native_encoder.cpp), for the searches' native path. At one sentence the encoder's
modules spend more time in Python (argument checks, module calls, one op dispatch each) than in
the GRU; the op runs the same ATen ops and the same gru_stack recurrence, so the EncoderState
is the one Seq2Seq.encode returns (tests/models/test_native_encoder.py holds it to that, exactly).

The native engine (native_loop.py) encodes with it where the encoder is fast_s2s's own Encoder
on the cpp GRU (`unavailable` says why not otherwise; the engine then calls Seq2Seq.encode).
Module hooks on the encoder's submodules do not run in it, as they do not in the native
decoder loop.

Packing (the layout csrc/cpu/native_encoder.cpp checks; None where a model has no such tensor):
    params = [embedding weight | frame_proj weight, None | frame_proj bias,
              (weight_ih, weight_hh, bias_ih, bias_hh) per layer and direction,
              bridge weight, bridge bias, key_proj weight?, key_proj bias?]
    config = [frames, encoder layers, decoder state rows (the bridge's H-sized slices)]
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s.backends import BackendUnavailableError, resolve_backend
from fast_s2s.models.encoder import Encoder
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import EncoderState
from fast_s2s.nn import GRU, Attention, AttentionMemory
from fast_s2s.nn.gru import gru_weight_names

__all__ = ["encode", "pack", "unavailable"]


def unavailable(model: Seq2Seq) -> str | None:
    """None when encode can run `model`'s encoder (a model the native decoder runs), else why
    not (one sentence)."""
    encoder = model.encoder
    if type(encoder) is not Encoder or type(encoder.rnn) is not GRU:
        return "the encoder is not fast_s2s.models.Encoder over fast_s2s.nn.GRU"
    attention = model.decoder.attention
    if attention is not None and type(attention).precompute is not Attention.precompute:
        return "the attention's precompute is not fast_s2s.nn.Attention's"
    try:
        concrete = resolve_backend("gru_layer", encoder.rnn.backend, "cpu")
    except (BackendUnavailableError, ValueError) as exc:
        return str(exc)
    if concrete != "cpp":
        return f"the encoder's GRU runs on {concrete!r}, the native encoder on 'cpp'"
    return None


def pack(model: Seq2Seq) -> tuple[list[Tensor | None], list[int]]:
    """The op's params and config (the module docstring's layout)."""
    # Through the modules' own dicts: nn.Module.__getattr__ per name was most of a pack.
    encoder = model._modules["encoder"]
    modules = encoder._modules
    frames = model.config.source == "frames"
    if frames:
        proj = modules["frame_proj"]._parameters
        params: list[Tensor | None] = [proj["weight"], proj["bias"]]
    else:
        params = [modules["embedding"]._parameters["weight"], None]
    rnn = modules["rnn"]
    rnn_params = rnn._parameters
    params += [
        rnn_params.get(name) for name in gru_weight_names(rnn.num_layers, rnn.num_directions)
    ]
    bridge = modules["bridge"]._parameters
    params += [bridge["weight"], bridge["bias"]]
    attention = model._modules["decoder"]._modules.get("attention")
    key_proj = None if attention is None else attention._modules.get("key_proj")
    if key_proj is None:
        params += [None, None]
    else:
        params += [key_proj._parameters["weight"], key_proj._parameters.get("bias")]
    return params, [int(frames), rnn.num_layers, encoder.decoder_state_layers]


def encode(model: Seq2Seq, src: Tensor, src_lengths: Tensor) -> EncoderState:
    """Seq2Seq.encode(src, src_lengths) in one op (no gradient: the searches run under
    no_grad); the same arguments, checks and result."""
    src, src_lengths = model.encoder_inputs(src, src_lengths)
    params, config = pack(model)
    states, hidden, final, keys = torch.ops.fast_s2s.encode(params, config, src, src_lengths)
    memory = None if model.decoder.attention is None else AttentionMemory(keys, states)
    return EncoderState(states, memory, hidden, src_lengths, final)
