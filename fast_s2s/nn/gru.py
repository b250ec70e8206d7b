"""GRUCell and GRU: drop-in replacements for torch.nn.GRUCell / torch.nn.GRU on the fused ops.

Parameter names, shapes and initialisation are those of torch.nn, so state_dicts load both ways:

    GRUCell: weight_ih (3H, I), weight_hh (3H, H), bias_ih (3H,), bias_hh (3H,)
    GRU:     weight_ih_l{k}{suffix} (3H, I or D*H), weight_hh_l{k}{suffix} (3H, H),
             bias_ih_l{k}{suffix}, bias_hh_l{k}{suffix} (3H,); suffix "" or "_reverse"

all drawn from uniform(-1/sqrt(H), 1/sqrt(H)) in registration order, so the same seed gives the
same weights as torch.nn. Gate order r, z, n as in torch. GRU runs each layer and direction
through fast_s2s.ops.gru_layer (one fused op over the whole sequence), GRUCell through
fast_s2s.ops.gru_cell.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fast_s2s import checks, ops
from fast_s2s.backends import resolve_backend

__all__ = ["GRU", "GRUCell"]


def _check_sizes(cls: str, input_size: int, hidden_size: int) -> None:
    for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{cls}: {name} must be a positive integer, got {value!r}")


class GRUCell(nn.Module):
    """One GRU step, torch.nn.GRUCell semantics, through the fused fast_s2s.ops.gru_cell.

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    Args:
        input_size: I, features of the input x.
        hidden_size: H, features of the state h.
        bias: if False, no bias_ih / bias_hh (as torch.nn.GRUCell).
        backend: "auto", "reference", "cpp" or "triton", passed to fast_s2s.ops.gru_cell.
        device, dtype: of the parameters.

    Shapes: input (B, I) or unbatched (I,); hx (B, H) / (H,) or None (zeros); returns h' like hx.

    In a decoding loop, call it inside ``with fast_s2s.frozen_weights():``: the C++ CPU kernel
    then packs the weights once for all the loop's steps instead of at every call (the weights
    must not be written through ``.data`` meanwhile; see fast_s2s.frozen_weights).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes("GRUCell", input_size, hidden_size)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.backend = checks.check_backend("GRUCell", backend)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch.nn.GRUCell."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        """h' = GRUCell(input, hx); input (B, I) or (I,), hx (B, H) / (H,) or None (zeros)."""
        if input.dim() not in (1, 2):
            raise ValueError(
                f"GRUCell: input must be 2-D (B, I) or 1-D (I,), got shape {tuple(input.shape)}"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"GRUCell: input must have {self.input_size} features (input_size), "
                f"got shape {tuple(input.shape)}"
            )
        batched = input.dim() == 2
        x = input if batched else input.unsqueeze(0)
        if hx is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            expected = (x.shape[0], self.hidden_size) if batched else (self.hidden_size,)
            if tuple(hx.shape) != expected:
                raise ValueError(
                    f"GRUCell: hx must have shape {expected} for input of shape "
                    f"{tuple(input.shape)}, got {tuple(hx.shape)}"
                )
            h = hx if batched else hx.unsqueeze(0)
        out = ops.gru_cell(
            x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, backend=self.backend
        )
        return out if batched else out.squeeze(0)


@functools.cache
def gru_weight_names(num_layers: int, num_directions: int) -> tuple[str, ...]:
    """The parameter names of a torch.nn.GRU of this many layers and directions, in the order
    of its flat weights (layer, then direction, then w_ih, w_hh, b_ih, b_hh; the bias names
    too, which a bias=False module lacks). Cached: a one-sentence forward would otherwise spend
    3 us formatting them."""
    return tuple(
        f"{name}_l{layer}" + ("_reverse" if direction == 1 else "")
        for layer in range(num_layers)
        for direction in range(num_directions)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    )


class GRU(nn.Module):
    """Multi-layer, optionally bidirectional GRU with torch.nn.GRU's interface and parameters.

    Each layer and direction is one fused fast_s2s.ops.gru_layer call over the whole sequence
    (reverse=True for the backward direction); the directions' outputs are concatenated on the
    feature dim and feed the next layer, with dropout between layers (not after the last) in
    training mode, as torch.nn.GRU.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional: as
            torch.nn.GRU.
        backend: "auto", "reference", "cpp" or "triton", passed to fast_s2s.ops.gru_layer.
        device, dtype: of the parameters.

    forward(input, h0=None, lengths=None) -> (output, h_n):
        input: (T, B, I), (B, T, I) with batch_first, unbatched (T, I), or a PackedSequence.
        h0: (num_layers * D, B, H) (or (num_layers * D, H) unbatched), zeros if None; D = 2 if
            bidirectional else 1. In the original batch order, also for a PackedSequence.
        lengths: optional (B,) int32/int64 in [0, T], any order, for padded input: steps
            t >= lengths[b] leave row b's state unchanged and output zeros, i.e. the result of
            pack_padded_sequence(enforce_sorted=False) -> torch.nn.GRU -> pad_packed_sequence
            (and a length of 0 is allowed: zero output, h_n = h0).
        output: (T, B, D * H) (batch_first: (B, T, D * H)), or a PackedSequence for a
            PackedSequence input (same batch_sizes and indices).
        h_n: (num_layers * D, B, H), index layer * D + direction, original batch order.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        *,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_sizes("GRU", input_size, hidden_size)
        if not isinstance(num_layers, numbers.Integral) or num_layers <= 0:
            raise ValueError(f"GRU: num_layers must be a positive integer, got {num_layers!r}")
        if (
            not isinstance(dropout, numbers.Number)
            or isinstance(dropout, bool)
            or not 0 <= dropout <= 1
        ):
            raise ValueError(f"GRU: dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=2,
            )
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.backend = checks.check_backend("GRU", backend)

        num_directions = 2 if bidirectional else 1
        gate_size = 3 * hidden_size
        # Registration order as torch.nn.GRU (layer, direction, w_ih, w_hh, b_ih, b_hh), so the
        # same seed draws the same weights and state_dict keys come in the same order.
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                params = {
                    "weight_ih" + suffix: torch.empty(gate_size, layer_input, **factory),
                    "weight_hh" + suffix: torch.empty(gate_size, hidden_size, **factory),
                }
                if bias:
                    params["bias_ih" + suffix] = torch.empty(gate_size, **factory)
                    params["bias_hh" + suffix] = torch.empty(gate_size, **factory)
                for name, tensor in params.items():
                    self.register_parameter(name, nn.Parameter(tensor))
                    self._flat_weights_names.append(name)
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """uniform(-1/sqrt(H), 1/sqrt(H)) for every parameter, as torch.nn.GRU."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """No-op, for code written against torch.nn.GRU (there is no cuDNN weight buffer)."""

    def _layer_params(
        self, layer: int, direction: int
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        return (
            getattr(self, "weight_ih" + suffix),
            getattr(self, "weight_hh" + suffix),
            getattr(self, "bias_ih" + suffix) if self.bias else None,
            getattr(self, "bias_hh" + suffix) if self.bias else None,
        )

    def _weight_names(self) -> tuple[str, ...]:
        """gru_weight_names of this module; with bias=False the bias names are absent from
        _parameters, so a lookup gives None in their place."""
        return gru_weight_names(self.num_layers, self.num_directions)

    def _runs_as_one_op(self, x: Tensor, h0: Tensor) -> bool:
        """Whether the forward can be the single inference op torch.ops.fast_s2s.gru_stack
        (csrc/cpu/gru_stack.cpp): no gradient wanted, no dropout between layers, the C++
        kernel on the CPU. It computes what the per-layer loop does, without the Python per
        layer and direction that dominates a one-sentence encoder, and runs the two directions
        of a layer on two threads at once."""
        if not x.is_cpu or (self.training and self.dropout > 0 and self.num_layers > 1):
            return False
        if torch.is_grad_enabled() and (
            x.requires_grad or h0.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return False
        return resolve_backend("gru_layer", self.backend, x.device) == "cpp"

    def _forward_one_op(
        self, x: Tensor, h0: Tensor, lengths: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        # forward() has checked x's features, h0's shape and the lengths. What is left to check
        # is what a user can get wrong per call: x's and h0's dtype and device against the
        # weights'. When they agree (the common case) the full Python checks are skipped: at one
        # sentence they cost as much as a fifth of the call; the op checks every layer's weight
        # shapes itself. When they disagree, the per-layer path's checks name what is wrong.
        weights = [self._parameters.get(name) for name in self._weight_names()]
        w = weights[0]
        if not (
            x.dtype == h0.dtype == w.dtype
            and x.dtype in checks.CPU_DTYPES
            and x.device == h0.device == w.device
        ):
            checks.check_gru_layer(x, h0[0], *weights[:4], None)
        return torch.ops.fast_s2s.gru_stack.default(
            x, h0, weights, lengths, self.num_layers, self.bidirectional
        )

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def _check_lengths(self, lengths: Tensor | None, x: Tensor) -> Tensor | None:
        """(B,) int lengths in [0, T] for time-major x (T, B, I), on the CPU or x's device
        (fast_s2s.checks.check_lengths); lists are accepted. Returned on the device of the
        input by the caller."""
        if lengths is not None and not isinstance(lengths, Tensor):
            lengths = torch.as_tensor(lengths, dtype=torch.int64)
        checks.check_lengths("GRU", lengths, x.shape[1], x.shape[0], "T", x, "input")
        return lengths

    def forward(
        self,
        input: Tensor | PackedSequence,
        h0: Tensor | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        """Run the stacked GRU; see the class docstring for shapes."""
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError(
                    "GRU: lengths must be None for a PackedSequence input (it has its own)"
                )
            return self._forward_packed(input, h0)

        if not isinstance(input, Tensor):
            raise TypeError(
                f"GRU: input must be a Tensor or a PackedSequence, got {type(input).__name__}"
            )
        if input.dim() not in (2, 3):
            raise ValueError(
                "GRU: input must be 3-D ((T, B, I), or (B, T, I) with batch_first) or 2-D "
                f"unbatched (T, I), got shape {tuple(input.shape)}"
            )
        if input.dim() == 2:  # unbatched (T, I): batch_first does not apply
            if lengths is not None:
                raise ValueError("GRU: lengths must be None for an unbatched 2-D input")
            if h0 is not None and h0.dim() != 2:
                raise ValueError(
                    f"GRU: h0 must be 2-D (num_layers * num_directions, H) = "
                    f"({self.num_layers * self.num_directions}, {self.hidden_size}) for an "
                    f"unbatched input, got shape {tuple(h0.shape)}"
                )
            output, h_n = self._forward_time_major(
                input.unsqueeze(1), None if h0 is None else h0.unsqueeze(1), None
            )
            return output.squeeze(1), h_n.squeeze(1)

        x = input.transpose(0, 1) if self.batch_first else input  # (T, B, I)
        lengths = self._check_lengths(lengths, x)
        output, h_n = self._forward_time_major(x, h0, lengths)
        if self.batch_first:
            output = output.transpose(0, 1)
        return output, h_n

    def _forward_packed(
        self, packed: PackedSequence, h0: Tensor | None
    ) -> tuple[PackedSequence, Tensor]:
        # pad_packed_sequence returns the rows (and lengths) in the original batch order, the
        # order of h0 and h_n; the output is repacked with the input's own indices.
        padded, lengths = pad_packed_sequence(packed)  # (T, B, I), lengths (B,) on the CPU
        output, h_n = self._forward_time_major(padded, h0, lengths)
        sorted_indices = packed.sorted_indices
        if sorted_indices is not None:
            output = output.index_select(1, sorted_indices.to(output.device))
            lengths = lengths.index_select(0, sorted_indices.cpu())
        repacked = pack_padded_sequence(output, lengths, enforce_sorted=True)
        out = PackedSequence(
            repacked.data, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        )
        return out, h_n

    def _forward_time_major(
        self, x: Tensor, h0: Tensor | None, lengths: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """x (T, B, I), h0 (L * D, B, H) or None, lengths (B,) or None -> (T, B, D * H), h_n."""
        steps, batch, features = x.shape
        num_directions = self.num_directions
        if features != self.input_size:
            raise ValueError(
                f"GRU: input must have {self.input_size} features (input_size) in its last "
                f"dimension, got shape {tuple(x.shape)}"
            )
        state_shape = (self.num_layers * num_directions, batch, self.hidden_size)
        if h0 is None:
            h0 = x.new_zeros(state_shape)
        elif tuple(h0.shape) != state_shape:
            raise ValueError(
                f"GRU: h0 must have shape (num_layers * num_directions, B, H) = {state_shape}, "
                f"got {tuple(h0.shape)}"
            )
        if lengths is not None:
            lengths = lengths.to(x.device)  # one copy per call, not per layer
        if self._runs_as_one_op(x, h0):
            return self._forward_one_op(x, h0, lengths)

        layer_input = x
        h_n: list[Tensor] = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = F.dropout(layer_input, p=self.dropout, training=True)
            outputs = []
            for direction in range(num_directions):
                w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, direction)
                out, h_last = ops.gru_layer(
                    layer_input,
                    h0[layer * num_directions + direction],
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                    lengths,
                    reverse=direction == 1,
                    backend=self.backend,
                )
                outputs.append(out)
                h_n.append(h_last)
            layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=2)
        return layer_input, torch.stack(h_n, dim=0)
