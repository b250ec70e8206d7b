"""torch.nn's GRU run as a user runs it on weights they already have: `gru_module` builds a
torch.nn.GRU or GRUCell (or a drop-in such as fast_s2s.nn.GRU) whose parameters are the given
tensors themselves, so forward+backward differentiates those very leaves; `gru_call` runs a GRU
on a padded batch the way torch.nn.GRU takes one, as pack_padded_sequence(x, lengths,
enforce_sorted=False) packed once per batch (inside the call only when x needs a gradient),
returning the packed data: the peer at its cheapest."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

GATES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # torch.nn's names, in its order


def gru_module(
    params: dict[str, torch.Tensor], input_size: int, hidden_size: int, cls: type = nn.GRU, **kw
) -> nn.Module:
    """`cls` holding `params` (torch.nn's names, e.g. weight_ih_l1_reverse; a GRUCell's have no
    suffix), its layers and directions read from the names; `kw` goes to the constructor."""
    if cls is nn.GRUCell:
        module = nn.GRUCell(input_size, hidden_size, **kw)
    else:
        dirs = 2 if any(name.endswith("_reverse") for name in params) else 1
        layers = len(params) // (len(GATES) * dirs)
        module = cls(input_size, hidden_size, num_layers=layers, bidirectional=dirs == 2, **kw)
    for name, param in params.items():
        setattr(module, name, param)  # nn.RNNBase keeps its _flat_weights in step
    if isinstance(module, nn.RNNBase):
        module.flatten_parameters()  # cuDNN's flat weight buffer; a no-op on the CPU
    return module


def gru_call(
    gru: nn.Module, x: torch.Tensor, h0: Callable[[], torch.Tensor], lengths: torch.Tensor | None
) -> Callable[[], torch.Tensor]:
    """A call returning torch.nn.GRU `gru`'s output on x (T, B, I) from h0() (L * dirs, B, H),
    the rows of a padded batch cut at `lengths` (B,) as packed data."""
    if lengths is None:
        return lambda: gru(x, h0())[0]
    if x.requires_grad:  # packing is part of the graph
        cpu_lengths = lengths.cpu()  # pack_padded_sequence takes CPU lengths

        def call() -> torch.Tensor:
            return gru(pack_padded_sequence(x, cpu_lengths, enforce_sorted=False), h0())[0].data

        return call
    packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)  # once per batch
    return lambda: gru(packed, h0())[0].data


def gru_implementation(x: torch.Tensor) -> str:
    """Whether torch runs torch.nn.GRU on `x` with cuDNN: exactly when
    torch.cudnn_is_acceptable(input) (aten/src/ATen/native/RNN.cpp)."""
    if torch.cudnn_is_acceptable(x):
        return "torch.nn.GRU (cuDNN)"
    return "torch.nn.GRU (torch's own kernels: torch.cudnn_is_acceptable is False)"
