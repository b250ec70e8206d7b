"""The GRU benchmark cases and their inputs.

Ops: `gru_cell` (one decoder step, fast_s2s.ops.gru_cell), `gru_layer` (one layer, one direction
over a padded sequence, fast_s2s.ops.gru_layer) and `gru` (the fast_s2s.nn.GRU module as an
encoder: 2 layers, bidirectional). Dims: B batch, I input features, H hidden size, T steps; the
module adds L (layers) and dirs (2: bidirectional). All are compute-bound (matrix products over
the weights) except gru_cell at small batches, which reads every weight once for a few rows: on
the CPU only B=1 reports GB/s against the rooflines, on CUDA (CUDA_CASES: H=1024, issue 4's
targets) B=1 and B=16.

Weights are torch.nn.Parameter (torch.nn's initialisation, uniform(-1/sqrt(H), 1/sqrt(H))), so
the torch.nn peers use the very same tensors as their parameters: same numbers, and in
forward+backward every implementation's gradients land on the same leaves (x, h and every
weight and bias).
"""

from __future__ import annotations

import torch
from torch import nn

from fast_s2s.benchmark.spec import (
    FORWARD,
    FORWARD_BACKWARD,
    SPEEDUP,
    Case,
    Goal,
    Inputs,
    ragged_lengths,
    randn,
    uniform,
)

GRU_OPS = ("gru_cell", "gru_layer", "gru")
# Ops that are a fast_s2s.nn module rather than a fast_s2s.ops function: op -> (module class
# name in fast_s2s.nn, the op whose kernels it runs, which decides its backends).
MODULE_OPS: dict[str, tuple[str, str]] = {"gru": ("GRU", "gru_layer")}


def _cell(
    mode: str, label: str, *, B: int, I: int, H: int, target: bool = False,
    memory_bound: bool | None = None, goals: tuple[Goal, ...] = (),
) -> Case:  # fmt: skip
    dims = (("B", B), ("I", I), ("H", H))
    # One row reads all 3H * (I + H) weights once: memory-bound. Batched, it is a matrix product.
    memory_bound = B == 1 if memory_bound is None else memory_bound
    return Case(
        "gru_cell", mode, dims, label, target=target, memory_bound=memory_bound, goals=goals
    )


def _layer(
    mode: str, label: str, *, T: int, B: int, I: int, H: int, lengths: str = "full",
    target: bool = False, goals: tuple[Goal, ...] = (),
) -> Case:  # fmt: skip
    dims = (("T", T), ("B", B), ("I", I), ("H", H))
    return Case("gru_layer", mode, dims, label, lengths, target, memory_bound=False, goals=goals)


def _module(
    mode: str, label: str, *, T: int, B: int, I: int, H: int, L: int = 2, dirs: int = 2,
    lengths: str = "full", target: bool = False,
) -> Case:  # fmt: skip
    dims = (("T", T), ("B", B), ("I", I), ("H", H), ("L", L), ("dirs", dirs))
    return Case("gru", mode, dims, label, lengths, target, memory_bound=False)


def _cases() -> dict[str, list[Case]]:
    """The project's target shapes first (what --quick runs), then batch sizes of beam search,
    ragged lengths and longer sequences."""
    fwd, fwdbwd = FORWARD, FORWARD_BACKWARD
    d = {"I": 512, "H": 512}
    seq = {"T": 50, "B": 16, **d}
    return {
        "gru_cell": [
            _cell(fwd, "decode", B=1, **d, target=True),
            _cell(fwd, "decode", B=64, **d, target=True),
            _cell(fwdbwd, "train", B=64, **d, target=True),
            _cell(fwd, "decode", B=16, **d),
            _cell(fwd, "beam5", B=80, **d),  # 16 sentences x 5 hypotheses
        ],
        "gru_layer": [
            _layer(fwd, "encoder", **seq, target=True),
            _layer(fwdbwd, "train", **seq, target=True),
            _layer(fwd, "encoder", **seq, lengths="ragged"),
            _layer(fwdbwd, "train", **seq, lengths="ragged"),
            _layer(fwd, "long", T=200, B=32, I=256, H=256),
        ],
        "gru": [
            _module(fwd, "encoder", **seq, target=True),
            _module(fwdbwd, "train", **seq),
            _module(fwd, "encoder", **seq, lengths="ragged"),
        ],
    }


# Issue 4's CUDA goals: gru_cell at B <= 16 twice as fast as torch.nn.GRUCell, gru_layer at
# least as fast as torch.nn.GRU (cuDNN).
CELL_GOAL = Goal(SPEEDUP, 2.0, "GRUCell")
LAYER_GOAL = Goal(SPEEDUP, 1.0, "GRU")


def _cuda_cases() -> dict[str, list[Case]]:
    """Issue 4's GPU shapes (H=1024; I=H) first, then ragged lengths, beam-search batches and a
    longer sequence. On a GPU, gru_cell at B <= 16 streams its 3H x (I + H) weights (12.6 MB in
    16-bit) for a few rows: memory-bound, so it reports GB/s and the copy-roofline fraction."""
    fwd, fwdbwd = FORWARD, FORWARD_BACKWARD
    d = {"I": 1024, "H": 1024}
    seq = {"T": 50, "B": 16, **d}
    small = {"memory_bound": True, "goals": (CELL_GOAL,)}
    return {
        "gru_cell": [
            _cell(fwd, "decode", B=1, **d, target=True, **small),
            _cell(fwd, "decode", B=16, **d, target=True, **small),
            _cell(fwdbwd, "train", B=64, **d, target=True),
            _cell(fwd, "decode", B=64, **d),
            _cell(fwd, "beam5", B=80, **d),  # 16 sentences x 5 hypotheses
        ],
        "gru_layer": [
            _layer(fwd, "encoder", **seq, target=True, goals=(LAYER_GOAL,)),
            _layer(fwdbwd, "train", **seq, target=True),
            _layer(fwd, "encoder", **seq, lengths="ragged"),
            _layer(fwdbwd, "train", **seq, lengths="ragged"),
            _layer(fwd, "long", T=200, B=32, I=512, H=512),
        ],
        "gru": [
            _module(fwd, "encoder", **seq, target=True),
            _module(fwdbwd, "train", **seq),
            _module(fwd, "encoder", **seq, lengths="ragged"),
        ],
    }


def _tiny_cases() -> dict[str, list[Case]]:
    fwd, fwdbwd = FORWARD, FORWARD_BACKWARD
    return {
        "gru_cell": [
            _cell(fwd, "decode", B=1, I=6, H=5, target=True),
            _cell(fwdbwd, "train", B=3, I=6, H=5, target=True),
        ],
        "gru_layer": [
            _layer(fwd, "encoder", T=4, B=3, I=6, H=5, target=True),
            _layer(fwdbwd, "train", T=4, B=3, I=6, H=5, lengths="ragged", target=True),
        ],
        "gru": [
            _module(fwd, "encoder", T=4, B=3, I=6, H=5, lengths="ragged", target=True),
            _module(fwdbwd, "train", T=4, B=3, I=6, H=5, target=True),
        ],
    }


CASES: dict[str, list[Case]] = _cases()
CUDA_CASES: dict[str, list[Case]] = _cuda_cases()
TINY_CASES: dict[str, list[Case]] = _tiny_cases()


def _weights(
    I: int, H: int, gen: torch.Generator, device, dtype, requires_grad: bool
) -> list[nn.Parameter]:
    """w_ih (3H, I), w_hh (3H, H), b_ih (3H,), b_hh (3H,), as torch.nn initialises them."""
    bound = H**-0.5
    shapes = ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))
    return [
        nn.Parameter(uniform(s, gen, device, dtype, bound), requires_grad=requires_grad)
        for s in shapes
    ]


def module_param_names(num_layers: int, dirs: int) -> list[str]:
    """torch.nn.GRU's parameter names, in its registration order."""
    names = []
    for layer in range(num_layers):
        for direction in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
            names += [
                f"{kind}{suffix}" for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
    return names


def make_gru_inputs(
    case: Case, device: torch.device | str, dtype: torch.dtype, requires_grad: bool
) -> Inputs:
    """gru_cell: (x (B, I), h (B, H), w_ih, w_hh, b_ih, b_hh). gru_layer: (x (T, B, I), h0 (B, H),
    w_ih, w_hh, b_ih, b_hh) and `lengths`. gru: (x (T, B, I), h0 (L * dirs, B, H)) and `lengths`,
    the parameters in extra["params"] by torch.nn.GRU name. Gradients (forward+backward) are
    taken for x, h and every weight and bias."""
    device = torch.device(device)
    d = case.shape
    B, I, H = d["B"], d["I"], d["H"]
    gen = torch.Generator().manual_seed(0)
    lengths = ragged_lengths(B, d["T"], device) if case.lengths == "ragged" else None
    extra: dict[str, object] = {}
    if case.op == "gru_cell":
        x, h = randn((B, I), gen, device, dtype), randn((B, H), gen, device, dtype, 0.5)
        params = _weights(I, H, gen, device, dtype, requires_grad)
        args, kwargs = (x, h, *params), {}
    elif case.op == "gru_layer":
        x, h = randn((d["T"], B, I), gen, device, dtype), randn((B, H), gen, device, dtype, 0.5)
        params = _weights(I, H, gen, device, dtype, requires_grad)
        args, kwargs = (x, h, *params), {"lengths": lengths}
    elif case.op == "gru":
        L, dirs = d["L"], d["dirs"]
        x = randn((d["T"], B, I), gen, device, dtype)
        h = randn((L * dirs, B, H), gen, device, dtype, 0.5)
        params = []
        for layer in range(L):
            for _ in range(dirs):
                params += _weights(
                    I if layer == 0 else dirs * H, H, gen, device, dtype, requires_grad
                )
        extra["params"] = dict(zip(module_param_names(L, dirs), params, strict=True))
        args, kwargs = (x, h), {"lengths": lengths}
    else:
        raise ValueError(f"make_gru_inputs: not a GRU op: {case.op!r}")
    grad_inputs: tuple[torch.Tensor, ...] = ()
    if requires_grad:
        x.requires_grad_(True)
        h.requires_grad_(True)
        grad_inputs = (x, h, *params)
    # Outputs: h' (B, H); gru_layer output (T, B, H) and h_n (B, H); the module output
    # (T, B, dirs * H) and h_n (L * dirs, B, H). The final states are h-shaped.
    if case.op == "gru_cell":
        output_numel = 0  # h' is the final state
    elif case.op == "gru_layer":
        output_numel = d["T"] * B * H
    else:
        output_numel = d["T"] * B * d["dirs"] * H
    written = (output_numel + h.numel()) * x.element_size()
    return Inputs(
        args=args, kwargs=kwargs, grad_inputs=grad_inputs, extra=extra, write_bytes=written
    )
