"""The GRU family: gru_cell (one decoder step), gru_layer (one layer, one direction over a padded
sequence) and gru (the fast_s2s.nn.GRU module as an encoder: 2 layers, bidirectional). The
weights are torch.nn.Parameters initialised as torch.nn does, and the torch.nn peers and
fast_s2s.nn.GRU take those very tensors as their parameters: every implementation computes with
the same weights and forward+backward differentiates the same leaves."""

from __future__ import annotations

import torch
from torch import nn

from fast_s2s.benchmark import family
from fast_s2s.benchmark.family import FORWARD, FORWARD_BACKWARD, SPEEDUP, Call, Case, Goal, Inputs
from fast_s2s.peers import onnx_gru, torch_gru

# A decoder loop's cell calls and a server's encoder calls: fast_s2s runs inside frozen_weights()
# (as greedy_decode, beam_search and the Translator do): the CPU kernels pack weights once.
FROZEN = "frozen"
BATCH1_ENCODERS = (
    {"T": 25, "B": 1, "I": 64, "H": 64, "L": 1, "dirs": 2},
    {"T": 25, "B": 1, "I": 256, "H": 256, "L": 2, "dirs": 2},
)
QUICK_COMPILE = (
    "--quick leaves it out of gru_layer forward+backward: compiling the 50-step loop and its "
    "backward takes 40-65 s on 2 cores with a cold inductor cache (timed in full mode)"
)


def _case(op: str, mode: str, label: str, dims: dict, small: bool = False, **fields) -> Case:
    """gru_cell is memory-bound at B=1 and on CUDA at B <= 16 (`small`, its GPU goal); the others
    are GEMM-bound. gru runs two layers, both directions, unless the case says otherwise."""
    if op == "gru_cell":
        fields.update(memory_bound=dims["B"] == 1 or small)
        fields.update(goals=(Goal(SPEEDUP, 2.0, "GRUCell"),) if small else ())
    if op == "gru":
        dims = {**dims, "L": dims.get("L", 2), "dirs": dims.get("dirs", 2)}
    return Case(op, mode, tuple(dims.items()), label, **{"memory_bound": False, **fields})


def _cases(cuda: bool) -> dict[str, list[Case]]:
    """The targets first (what --quick runs), then beam-search batches, ragged lengths and a
    longer sequence."""
    fwd, bwd, target, ragged = FORWARD, FORWARD_BACKWARD, {"target": True}, {"lengths": "ragged"}
    d = {"I": 1024, "H": 1024} if cuda else {"I": 512, "H": 512}
    seq, long = {"T": 50, "B": 16, **d}, 512 if cuda else 256
    layer_goal = {"goals": (Goal(SPEEDUP, 1.0, "GRU"),)} if cuda else {}
    frozen = {**target, "variant": FROZEN}
    # on the CPU: one sentence through the model's encoder and a wider two-layer one, also
    # served inside fast_s2s.frozen_weights() (W_hh prepared once, as the runtimes prepare
    # their weights once per session)
    sentences = [(fwd, "sentence", b1, f) for f in (target, frozen) for b1 in BATCH1_ENCODERS]
    specs = {
        "gru_cell": [
            (fwd, "decode", {"B": 1, **d}, {**target, "small": cuda}),
            (fwd, "decode", {"B": 16 if cuda else 64, **d}, {**target, "small": cuda}),
            *([] if cuda else [(fwd, "decode", {"B": b, **d}, frozen) for b in (1, 64)]),
            (bwd, "train", {"B": 64, **d}, target),
            (fwd, "decode", {"B": 64 if cuda else 16, **d}, {}),
            (fwd, "beam5", {"B": 80, **d}, {}),  # 16 sentences x 5 hypotheses
        ],
        "gru_layer": [
            (fwd, "encoder", seq, {**target, **layer_goal}),
            (bwd, "train", seq, target),
            (fwd, "encoder", seq, ragged),
            (bwd, "train", seq, ragged),
            (fwd, "long", {"T": 200, "B": 32, "I": long, "H": long}, {}),
        ],
        "gru": [
            (fwd, "encoder", seq, target),
            *([] if cuda else sentences),
            (bwd, "train", seq, {}),
            (fwd, "encoder", seq, ragged),
        ],
    }
    return family.build_cases(_case, specs)


def _tiny_cases() -> dict[str, list[Case]]:
    fwd, bwd, ragged = FORWARD, FORWARD_BACKWARD, {"lengths": "ragged", "target": True}
    d, target = {"I": 6, "H": 5}, {"target": True}
    seq = {"T": 4, "B": 3, **d}
    specs = {
        "gru_cell": [(fwd, "decode", {"B": 1, **d}, target), (bwd, "train", {"B": 3, **d}, target)],
        "gru_layer": [(fwd, "encoder", seq, target), (bwd, "train", seq, ragged)],
        "gru": [(fwd, "encoder", seq, ragged), (bwd, "train", seq, target)],
    }
    return family.build_cases(_case, specs)


def _weights(I: int, H: int, gen: torch.Generator, device, dtype, grad: bool) -> list:
    """w_ih (3H, I), w_hh (3H, H), b_ih, b_hh (3H,) drawn as torch.nn initialises them."""
    shapes = ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))
    draws = [(torch.rand(s, generator=gen, dtype=torch.float32) * 2 - 1) * H**-0.5 for s in shapes]
    return [nn.Parameter(w.to(device, dtype), grad) for w in draws]


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """gru_cell: (x (B, I), h (B, H), w_ih, w_hh, b_ih, b_hh); gru_layer: (x (T, B, I), h0 (B, H),
    the weights), `lengths`; gru: (x, h0 (L * dirs, B, H)), `lengths`, its parameters by
    torch.nn.GRU name in extra["params"]. fwd+bwd differentiates x, h and every weight."""
    device, d = torch.device(device), case.shape
    B, I, H = d["B"], d["I"], d["H"]
    grad = case.mode == FORWARD_BACKWARD
    gen = torch.Generator().manual_seed(0)
    kwargs: dict[str, object] = {}
    if case.op != "gru_cell":
        ragged = case.lengths == "ragged"
        kwargs["lengths"] = family.ragged_lengths(B, d["T"], device) if ragged else None
    extra: dict[str, object] = {"frozen_weights": case.variant == FROZEN}
    x = family.randn((B, I) if case.op == "gru_cell" else (d["T"], B, I), gen, device, dtype)
    if case.op == "gru":
        L, dirs = d["L"], d["dirs"]
        h = family.randn((L * dirs, B, H), gen, device, dtype, 0.5)
        params, names = [], []
        for layer in range(L):
            for direction in ("", "_reverse")[:dirs]:
                params += _weights(I if layer == 0 else dirs * H, H, gen, device, dtype, grad)
                names += [f"{name}_l{layer}{direction}" for name in torch_gru.GATES]
        extra["params"] = dict(zip(names, params, strict=True))
        args: tuple[torch.Tensor, ...] = (x, h)
        output_numel = d["T"] * B * dirs * H  # output (T, B, dirs * H)
    else:
        h = family.randn((B, H), gen, device, dtype, 0.5)
        params = _weights(I, H, gen, device, dtype, grad)
        args = (x, h, *params)
        output_numel = 0 if case.op == "gru_cell" else d["T"] * B * H  # h' is the final state
    return Inputs(
        args=args,
        kwargs=kwargs,
        grad_inputs=family.needs_grad(case, x, h, *params),
        extra=extra,
        write_bytes=(output_numel + h.numel()) * x.element_size(),  # the output and h_n
        flops=gemm_flops(case),
    )


def gemm_flops(case: Case) -> int:
    """The matrix products of one call: 2 * rows * 3H * (I + H) per layer and direction, three
    times that with the backward (dx, dh, dW_ih, dW_hh); the O(H) gates are not counted."""
    d = case.shape
    L, dirs, H = d.get("L", 1), d.get("dirs", 1), d["H"]
    inputs = d["I"] + (L - 1) * dirs * H
    forward = 2 * d["B"] * d.get("T", 1) * 3 * H * dirs * (inputs + L * H)
    return forward * (3 if case.mode == FORWARD_BACKWARD else 1)


def _module(inputs: Inputs, cls: type = nn.GRU, twin: bool = False, **kw) -> nn.Module:
    """torch.nn.GRUCell for gru_cell, else `cls` (torch.nn.GRU or fast_s2s.nn.GRU), holding the
    case's parameters themselves (gru_layer's as layer 0). `twin`: float32 copies on the CPU
    instead, what the ONNX graph of a runtime peer is built from."""
    x, h = inputs.args[:2]
    suffix = "_l0" if x.dim() == 3 else ""
    params = inputs.extra.get("params") or {
        name + suffix: p for name, p in zip(torch_gru.GATES, inputs.args[2:], strict=True)
    }
    if twin:
        params = {k: nn.Parameter(p.detach().float().cpu()) for k, p in params.items()}
    device, dtype = ("cpu", torch.float32) if twin else (x.device, x.dtype)
    cls = nn.GRUCell if x.dim() == 2 else cls
    size = x.shape[-1], h.shape[-1]
    return torch_gru.gru_module(params, *size, cls, device=device, dtype=dtype, **kw)


def torch_gru_cell(inputs: Inputs) -> Call:
    cell, (x, h) = _module(inputs), inputs.args[:2]
    return lambda: cell(x, h)


def _gru(inputs: Inputs, cls=nn.GRU, **kw) -> Call:
    """`cls` (torch.nn.GRU or fast_s2s.nn.GRU) on the case's parameters as gru(x, h0): gru_layer's
    h0 (B, H) is viewed as (1, B, H), inside the timed call only when it needs a gradient (a
    view made once would be freed by the first backward)."""
    x, h0 = inputs.args[:2]
    lengths, gru = inputs.kwargs["lengths"], _module(inputs, cls, **kw)
    if h0.dim() == 2 and not h0.requires_grad:
        h0 = h0.unsqueeze(0)
    state = (lambda: h0.unsqueeze(0)) if h0.dim() == 2 else (lambda: h0)
    if cls is not nn.GRU:
        return lambda: gru(x, state(), lengths=lengths)[0]
    call = torch_gru.gru_call(gru, x, state, lengths)  # type: ignore[arg-type]
    if x.is_cuda:
        call.implementation = torch_gru.gru_implementation(x)  # type: ignore[attr-defined]
    return call


def fast_s2s_call(op: str, backend: str) -> family.Factory:
    """fast_s2s.ops.gru_cell or gru_layer, or for "gru" the fast_s2s.nn.GRU module on the case's
    parameters; inside fast_s2s.frozen_weights() for the FROZEN cases."""
    plain = family.op_call(op, backend)

    def make(inputs: Inputs) -> Call:
        import fast_s2s
        from fast_s2s.nn import GRU

        call = _gru(inputs, GRU, backend=backend) if op == "gru" else plain(inputs)
        if inputs.extra.get("frozen_weights"):
            call.scope = fast_s2s.frozen_weights  # type: ignore[attr-defined]
        return call

    return make


def runtime_peer(runtime: str) -> family.Factory:
    """ONNX Runtime or OpenVINO running an ONNX graph of GRU nodes built from the case's weights
    (fast_s2s/peers/onnx_gru.py), forward on the CPU at torch's thread count: pinned to float32,
    or for a bfloat16 case OpenVINO at its own default precision (bf16 where the CPU has it)."""

    def make(inputs: Inputs) -> Call:
        x, h = inputs.args[:2]
        bf16 = x.dtype == torch.bfloat16
        if x.dtype not in (torch.float32, torch.bfloat16) or bf16 and runtime == "onnxruntime":
            raise family.PeerSkipped(
                f"{runtime} is measured on float32 inputs (OpenVINO also at its bf16 default)"
            )
        if h.dim() == 2 and x.dim() == 3:  # gru_layer's h0 (B, H) is the GRU's (1, B, H)
            h = h.unsqueeze(0)
        threads, precision = torch.get_num_threads(), "default" if bf16 else "f32"
        twin, lengths = _module(inputs, twin=True), inputs.kwargs.get("lengths")
        return onnx_gru.runtime_call(runtime, twin, x, h, lengths, threads, precision)  # type: ignore[arg-type]

    return make


def left_out(case: Case, device_type: str, quick: bool) -> dict[str, str]:
    """The peers not timed on `case`: a runtime that is missing, or not on the CPU, or asked for
    a backward (it runs inference); with --quick, compile on gru_layer forward+backward."""
    reasons = {}
    if quick and (case.op, case.mode) == ("gru_layer", FORWARD_BACKWARD):
        reasons["compile"] = QUICK_COMPILE
    for name in onnx_gru.RUNTIMES:
        why = onnx_gru.runtime_unavailable(name)
        if why is None and device_type != "cpu":
            why = f"{name} is measured on the CPU"
        if why is None and case.mode == FORWARD_BACKWARD:
            why = f"{name} runs inference: no backward"
        if why is not None:
            reasons[name] = why
    return reasons


RUNTIME_PEERS = {name: runtime_peer(name) for name in onnx_gru.RUNTIMES}
FAMILY = family.Family(
    name="GRU",
    cases={"cpu": _cases(cuda=False), "cuda": _cases(cuda=True), "tiny": _tiny_cases()},
    make_inputs=make_inputs,
    peers={
        "gru_cell": family.kernel_peers("gru_cell", GRUCell=torch_gru_cell, **RUNTIME_PEERS),
        "gru_layer": family.kernel_peers("gru_layer", GRU=_gru, **RUNTIME_PEERS),
        "gru": {"GRU": _gru, **RUNTIME_PEERS},
    },
    fast_s2s=fast_s2s_call,
    kernel_ops={"gru": ("gru_layer",)},  # the module runs gru_layer's kernels
    left_out=left_out,
)
