"""The GRU family: gru_cell (one decoder step), gru_layer (one layer, one direction over a padded
sequence) and gru (the fast_s2s.nn.GRU module as an encoder: 2 layers, bidirectional). On CUDA
the targets are the GPU ones: H=1024, gru_cell 2x torch.nn.GRUCell, gru_layer as fast as
torch.nn.GRU (cuDNN).

The weights are torch.nn.Parameter, initialised as torch.nn does, and the torch.nn peers and
fast_s2s.nn.GRU take those very tensors as their parameters: every implementation computes with
the same weights, and forward+backward differentiates the same leaves (x, h, every weight).

Peers besides the reference and torch.compile: GRUCell, called as cell(x, h); GRU (one layer for
gru_layer), called as gru(x, h0), with lengths over pack_padded_sequence(x, lengths,
enforce_sorted=False), packed outside the timed call unless x needs a gradient, returning the
packed data (the peer at its cheapest); on CUDA its row says whether torch ran it on cuDNN.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from fast_s2s.benchmark.family import (
    FORWARD,
    FORWARD_BACKWARD,
    SPEEDUP,
    Call,
    Case,
    Factory,
    Family,
    Goal,
    Inputs,
    kernel_peers,
    make_case,
    needs_grad,
    op_call,
    ragged_lengths,
    randn,
    uniform,
)

OPS = ("gru_cell", "gru_layer", "gru")
# A decoder loop's cell calls: fast_s2s runs inside fast_s2s.frozen_weights() (as greedy_decode
# and beam_search do), so the CPU kernel packs the weights once for all calls; the peers are the
# same calls as in the plain rows.
FROZEN = "frozen"
CELL_GOAL = Goal(SPEEDUP, 2.0, "GRUCell")
LAYER_GOAL = Goal(SPEEDUP, 1.0, "GRU")


def _cell(mode: str, label: str, *, small: bool = False, **kw) -> Case:
    # One row reads all 3H x (I + H) weights once: memory-bound; batched, a matrix product. On
    # CUDA (`small`) B <= 16 still streams the weights (12.6 MB in 16-bit at H=1024): a goal.
    goals = (CELL_GOAL,) if small else ()
    return make_case("gru_cell", mode, label, memory_bound=kw["B"] == 1 or small, goals=goals, **kw)


def _layer(mode: str, label: str, **kw) -> Case:
    return make_case("gru_layer", mode, label, memory_bound=False, **kw)


def _module(mode: str, label: str, **kw) -> Case:
    return make_case("gru", mode, label, memory_bound=False, **kw, L=2, dirs=2)


def _cases(cuda: bool) -> dict[str, list[Case]]:
    """The targets first (what --quick runs), then beam-search batches, ragged lengths and a
    longer sequence."""
    fwd, bwd = FORWARD, FORWARD_BACKWARD
    d = {"I": 1024, "H": 1024} if cuda else {"I": 512, "H": 512}
    seq = {"T": 50, "B": 16, **d}
    long = 512 if cuda else 256
    frozen = [_cell(fwd, "decode", B=b, **d, target=True, variant=FROZEN) for b in (1, 64)]
    return {
        "gru_cell": [
            _cell(fwd, "decode", B=1, **d, target=True, small=cuda),
            _cell(fwd, "decode", B=16 if cuda else 64, **d, target=True, small=cuda),
            *([] if cuda else frozen),
            _cell(bwd, "train", B=64, **d, target=True),
            _cell(fwd, "decode", B=64 if cuda else 16, **d),
            _cell(fwd, "beam5", B=80, **d),  # 16 sentences x 5 hypotheses
        ],
        "gru_layer": [
            _layer(fwd, "encoder", **seq, target=True, goals=(LAYER_GOAL,) if cuda else ()),
            _layer(bwd, "train", **seq, target=True),
            _layer(fwd, "encoder", **seq, lengths="ragged"),
            _layer(bwd, "train", **seq, lengths="ragged"),
            _layer(fwd, "long", T=200, B=32, I=long, H=long),
        ],
        "gru": [
            _module(fwd, "encoder", **seq, target=True),
            _module(bwd, "train", **seq),
            _module(fwd, "encoder", **seq, lengths="ragged"),
        ],
    }


def _tiny_cases() -> dict[str, list[Case]]:
    fwd, bwd, d = FORWARD, FORWARD_BACKWARD, {"I": 6, "H": 5}
    seq = {"T": 4, "B": 3, **d}
    return {
        "gru_cell": [_cell(fwd, "decode", B=1, **d, target=True),
                     _cell(bwd, "train", B=3, **d, target=True)],
        "gru_layer": [_layer(fwd, "encoder", **seq, target=True),
                      _layer(bwd, "train", **seq, lengths="ragged", target=True)],
        "gru": [_module(fwd, "encoder", **seq, lengths="ragged", target=True),
                _module(bwd, "train", **seq, target=True)],
    }  # fmt: skip


def _weights(I: int, H: int, gen: torch.Generator, device, dtype, grad: bool) -> list:
    """w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,), as torch.nn initialises them."""
    shapes = ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))
    return [nn.Parameter(uniform(s, gen, device, dtype, H**-0.5), grad) for s in shapes]


def module_param_names(num_layers: int, dirs: int) -> list[str]:
    """torch.nn.GRU's parameter names, in its registration order."""
    return [
        f"{kind}_l{layer}{'_reverse' if direction else ''}"
        for layer in range(num_layers)
        for direction in range(dirs)
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    ]


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """gru_cell: (x (B, I), h (B, H), w_ih, w_hh, b_ih, b_hh); gru_layer: (x (T, B, I), h0 (B, H),
    the weights) and `lengths`; gru: (x, h0 (L * dirs, B, H)) and `lengths`, its parameters in
    extra["params"] by torch.nn.GRU name. forward+backward takes gradients for x, h and every
    weight."""
    device = torch.device(device)
    d = case.shape
    B, I, H = d["B"], d["I"], d["H"]
    grad = case.mode == FORWARD_BACKWARD
    gen = torch.Generator().manual_seed(0)
    kwargs: dict[str, object] = {}
    if case.op != "gru_cell":
        kwargs["lengths"] = ragged_lengths(B, d["T"], device) if case.lengths == "ragged" else None
    extra: dict[str, object] = {"frozen_weights": case.variant == FROZEN}
    x = randn((B, I) if case.op == "gru_cell" else (d["T"], B, I), gen, device, dtype)
    if case.op == "gru":
        L, dirs = d["L"], d["dirs"]
        h = randn((L * dirs, B, H), gen, device, dtype, 0.5)
        params = [
            w
            for layer in range(L)
            for _ in range(dirs)
            for w in _weights(I if layer == 0 else dirs * H, H, gen, device, dtype, grad)
        ]
        extra["params"] = dict(zip(module_param_names(L, dirs), params, strict=True))
        args: tuple[torch.Tensor, ...] = (x, h)
        output_numel = d["T"] * B * dirs * H  # output (T, B, dirs * H)
    else:
        h = randn((B, H), gen, device, dtype, 0.5)
        params = _weights(I, H, gen, device, dtype, grad)
        args = (x, h, *params)
        output_numel = 0 if case.op == "gru_cell" else d["T"] * B * H  # h' is the final state
    return Inputs(
        args=args,
        kwargs=kwargs,
        grad_inputs=needs_grad(case, x, h, *params),
        extra=extra,
        write_bytes=(output_numel + h.numel()) * x.element_size(),  # the output and h_n
        flops=gemm_flops(case),
    )


def gemm_flops(case: Case) -> int:
    """The matrix products' operations of one call: 2 * rows * 3H * (I + H) per layer and
    direction, three times that with the backward (dx and dh, dW_ih and dW_hh); the O(H) gates
    are not counted."""
    d = case.shape
    B, I, H = d["B"], d["I"], d["H"]
    rows = B * d.get("T", 1)
    if case.op == "gru":
        L, dirs = d["L"], d["dirs"]
        inputs = I + (L - 1) * dirs * H  # layer 0 reads x, the others the directions' outputs
        forward = 2 * rows * 3 * H * dirs * (inputs + L * H)
    else:
        forward = 2 * rows * 3 * H * (I + H)
    return forward * (3 if case.mode == FORWARD_BACKWARD else 1)


def share_parameters(module: nn.Module, params: dict[str, nn.Parameter]) -> nn.Module:
    """Makes `params` (by name) the module's own parameters: the same tensors, no copies."""
    for name, param in params.items():
        setattr(module, name, param)  # nn.RNNBase keeps its _flat_weights in step
    if isinstance(module, nn.RNNBase):
        module.flatten_parameters()  # cuDNN's flat weight buffer; a no-op on the CPU
    return module


def _cell_params(inputs: Inputs, suffix: str = "") -> dict[str, nn.Parameter]:
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return {f"{n}{suffix}": p for n, p in zip(names, inputs.args[2:], strict=True)}  # type: ignore[misc]


def torch_gru_cell(inputs: Inputs) -> Call:
    x, h = inputs.args[:2]
    cell = nn.GRUCell(x.shape[1], h.shape[1], device=x.device, dtype=x.dtype)
    share_parameters(cell, _cell_params(inputs))
    return lambda: cell(x, h)


def gru_implementation(x: torch.Tensor) -> str:
    """Whether torch runs torch.nn.GRU on `x` with cuDNN: exactly when
    torch.cudnn_is_acceptable(input) (aten/src/ATen/native/RNN.cpp)."""
    if torch.cudnn_is_acceptable(x):
        return "torch.nn.GRU (cuDNN)"
    return "torch.nn.GRU (torch's own kernels: torch.cudnn_is_acceptable is False)"


def _module_shape(inputs: Inputs) -> tuple[int, bool]:
    bidirectional = any(name.endswith("_reverse") for name in inputs.extra["params"])  # type: ignore[attr-defined]
    return inputs.args[1].shape[0] // (2 if bidirectional else 1), bidirectional


def _gru(inputs: Inputs, cls, **kw) -> Call:
    """`cls` (torch.nn.GRU or fast_s2s.nn.GRU) on the case's parameters, called as gru(x, h0):
    gru_layer's one layer (h0 (B, H) viewed as (1, B, H), inside the timed call only when h0
    needs a gradient: a view made once would be freed by the first backward), or the module's
    layers and directions. torch.nn.GRU takes the lengths as a packed sequence and returns its
    data; fast_s2s.nn.GRU takes `lengths=`."""
    x, h0 = inputs.args[:2]
    lengths = inputs.kwargs["lengths"]
    if "params" in inputs.extra:
        layers, bidirectional = _module_shape(inputs)
        params, H = inputs.extra["params"], h0.shape[2]
        gru = cls(x.shape[2], H, num_layers=layers, bidirectional=bidirectional, **kw,
                  device=x.device, dtype=x.dtype)  # fmt: skip
    else:
        params, H = _cell_params(inputs, "_l0"), h0.shape[1]
        gru = cls(x.shape[2], H, device=x.device, dtype=x.dtype)
        if not h0.requires_grad:
            h0 = h0.unsqueeze(0)
    share_parameters(gru, params)  # type: ignore[arg-type]
    state = (lambda: h0.unsqueeze(0)) if h0.dim() == 2 else (lambda: h0)
    if cls is not nn.GRU:
        return lambda: gru(x, state(), lengths=lengths)[0]
    if lengths is None:
        call = lambda: gru(x, state())[0]  # noqa: E731
    elif x.requires_grad:  # packing is part of the graph
        lengths = lengths.cpu()  # pack_padded_sequence takes CPU lengths
        call = lambda: gru(pack_padded_sequence(x, lengths, enforce_sorted=False), state())[0].data  # noqa: E731
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)  # once per batch
        call = lambda: gru(packed, state())[0].data  # noqa: E731
    if x.is_cuda:
        call.implementation = gru_implementation(x)  # type: ignore[attr-defined]
    return call


def fast_s2s_call(op: str, backend: str) -> Factory:
    """fast_s2s.ops.gru_cell (inside fast_s2s.frozen_weights() for the FROZEN cases) /
    gru_layer, or for "gru" the fast_s2s.nn.GRU module on the case's parameters."""
    plain = op_call(op, backend)

    def make(inputs: Inputs) -> Call:
        import fast_s2s
        from fast_s2s.nn import GRU

        if op == "gru":
            return _gru(inputs, GRU, backend=backend)
        call = plain(inputs)
        if inputs.extra.get("frozen_weights"):
            call.scope = fast_s2s.frozen_weights  # type: ignore[attr-defined]
        return call

    return make


FAMILY = Family(
    name="GRU",
    cases={"cpu": _cases(cuda=False), "cuda": _cases(cuda=True), "tiny": _tiny_cases()},
    make_inputs=make_inputs,
    peers={
        "gru_cell": kernel_peers("gru_cell", GRUCell=torch_gru_cell),
        "gru_layer": kernel_peers("gru_layer", GRU=lambda inputs: _gru(inputs, nn.GRU)),
        "gru": {"GRU": lambda inputs: _gru(inputs, nn.GRU)},
    },
    fast_s2s=fast_s2s_call,
    kernel_ops={"gru": ("gru_layer",)},  # the module runs gru_layer's kernels
    quick_left_out={
        ("gru_layer", FORWARD_BACKWARD): {
            "compile": "--quick leaves it out of gru_layer forward+backward: compiling the "
            "50-step reference loop and its backward takes 40-65 s on a 2-core machine when the "
            "inductor cache is cold (timed in full mode)",
        },
    },
)
