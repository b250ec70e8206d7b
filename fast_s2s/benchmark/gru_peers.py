"""The GRU implementations: the torch.nn peers and the fast_s2s.nn.GRU module rows.

Peers (labels; the reference and torch.compile peers are fast_s2s.benchmark.peers'):
  GRUCell  torch.nn.GRUCell, built once per case, called as cell(x, h)
  GRU      torch.nn.GRU (1 layer for gru_layer; the case's layers and directions for gru), built
           once per case, called as gru(x, h0). With lengths, it runs over
           pack_padded_sequence(x, lengths, enforce_sorted=False), packed in the set-up (inside
           the timed call only when x needs a gradient), and returns the packed output's data:
           no pad_packed_sequence is timed, so the peer gets the packed path at its cheapest.
           On CUDA the call says whether cuDNN runs it (gru_implementation).

The torch.nn modules and the fast_s2s.nn.GRU rows take the case's own Parameters as theirs (the
same tensors: as load_state_dict, but without copies), so every implementation computes with the
same weights and forward+backward differentiates with respect to the same leaves.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from fast_s2s.benchmark.spec import FORWARD_BACKWARD, Case, Inputs

Call = Callable[[], torch.Tensor]

# Peers that --quick leaves out of a case, with the reason (printed under "not timed").
_QUICK_LEFT_OUT: dict[tuple[str, str], dict[str, str]] = {
    ("gru_layer", FORWARD_BACKWARD): {
        "compile": "--quick leaves it out of gru_layer forward+backward: compiling the 50-step "
        "reference loop and its backward takes 40-65 s on a 2-core machine when the inductor "
        "cache is cold (timed in full mode)",
    },
}


def quick_left_out(case: Case) -> dict[str, str]:
    """Peer label -> why --quick does not time it on `case`."""
    return _QUICK_LEFT_OUT.get((case.op, case.mode), {})


def share_parameters(module: nn.Module, params: dict[str, nn.Parameter]) -> nn.Module:
    """Makes `params` (by name) the parameters of `module`; returns the module."""
    for name, param in params.items():
        setattr(module, name, param)  # nn.RNNBase keeps its _flat_weights in step
    if isinstance(module, nn.RNNBase):
        module.flatten_parameters()  # cuDNN's flat weight buffer; a no-op on the CPU
    return module


def _cell_params(inputs: Inputs) -> dict[str, nn.Parameter]:
    _, _, w_ih, w_hh, b_ih, b_hh = inputs.args
    return {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih, "bias_hh": b_hh}


def torch_gru_cell(inputs: Inputs) -> Call:
    x, h, *_ = inputs.args
    cell = nn.GRUCell(x.shape[1], h.shape[1], device=x.device, dtype=x.dtype)
    share_parameters(cell, _cell_params(inputs))
    return lambda: cell(x, h)


def _packed(x: torch.Tensor, lengths: torch.Tensor):
    return pack_padded_sequence(x, lengths, enforce_sorted=False)


def _torch_gru_call(
    gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, lengths, *, one_layer: bool = False
) -> Call:
    """gru(x, h0)[0]; over the packed sequence (its data) when there are lengths. `one_layer`:
    h0 is (B, H), viewed as (1, B, H) (in the timed call only when h0 needs a gradient)."""
    if one_layer and not h0.requires_grad:
        h0, one_layer = h0.unsqueeze(0), False

    def state() -> torch.Tensor:
        return h0.unsqueeze(0) if one_layer else h0

    if lengths is None:
        call = lambda: gru(x, state())[0]  # noqa: E731
    else:
        lengths = lengths.cpu()  # pack_padded_sequence takes CPU lengths
        if x.requires_grad:  # packing is part of the graph
            call = lambda: gru(_packed(x, lengths), state())[0].data  # noqa: E731
        else:
            packed = _packed(x, lengths)  # once per batch, outside the timed call
            call = lambda: gru(packed, state())[0].data  # noqa: E731
    if x.is_cuda:
        call.implementation = gru_implementation(x)  # type: ignore[attr-defined]
    return call


def gru_implementation(x: torch.Tensor) -> str:
    """Whether torch runs torch.nn.GRU on `x` with cuDNN: its RNNs take cuDNN exactly when
    torch.cudnn_is_acceptable(input) (aten/src/ATen/native/RNN.cpp)."""
    if torch.cudnn_is_acceptable(x):
        return "torch.nn.GRU (cuDNN)"
    return "torch.nn.GRU (torch's own kernels: torch.cudnn_is_acceptable is False)"


def torch_gru_layer(inputs: Inputs) -> Call:
    """torch.nn.GRU with one layer: x (T, B, I), h0 (B, H) as (1, B, H)."""
    x, h, *_ = inputs.args
    gru = nn.GRU(x.shape[2], h.shape[1], device=x.device, dtype=x.dtype)
    share_parameters(gru, {f"{name}_l0": p for name, p in _cell_params(inputs).items()})
    return _torch_gru_call(gru, x, h, inputs.kwargs["lengths"], one_layer=True)


def torch_gru_module(inputs: Inputs) -> Call:
    """torch.nn.GRU with the case's layers and directions: x (T, B, I), h0 (L * dirs, B, H)."""
    x, h0 = inputs.args
    params: dict[str, nn.Parameter] = inputs.extra["params"]  # type: ignore[assignment]
    layers = sum(1 for name in params if name.startswith("weight_ih_l") and "reverse" not in name)
    bidirectional = any(name.endswith("_reverse") for name in params)
    gru = nn.GRU(
        x.shape[2], h0.shape[2], num_layers=layers, bidirectional=bidirectional,
        device=x.device, dtype=x.dtype,
    )  # fmt: skip
    share_parameters(gru, params)
    return _torch_gru_call(gru, x, h0, inputs.kwargs["lengths"])


def fast_s2s_module(op: str, backend: str) -> Callable[[Inputs], Call]:
    """The fast_s2s.nn module of a module op (see gru_cases.MODULE_OPS) with `backend=...`,
    built once per case on the case's parameters, called as module(x, h0, lengths=lengths)."""
    if op != "gru":
        raise ValueError(f"fast_s2s_module: not a module op: {op!r}")

    def make(inputs: Inputs) -> Call:
        from fast_s2s.nn import GRU

        x, h0 = inputs.args
        params: dict[str, nn.Parameter] = inputs.extra["params"]  # type: ignore[assignment]
        bidirectional = any(name.endswith("_reverse") for name in params)
        layers = h0.shape[0] // (2 if bidirectional else 1)
        gru = GRU(
            x.shape[2], h0.shape[2], num_layers=layers, bidirectional=bidirectional,
            backend=backend, device=x.device, dtype=x.dtype,
        )  # fmt: skip
        share_parameters(gru, params)
        lengths = inputs.kwargs["lengths"]
        return lambda: gru(x, h0, lengths=lengths)[0]

    return make
