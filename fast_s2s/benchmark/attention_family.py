"""The attention families: dot_attention and additive_attention (FAMILY) and local_attention
(LOCAL_FAMILY, Luong local-p: centres p = L_b * sigmoid(x)), their cases, inputs and peers. On
CUDA the large decode reads keys and values past the L2 (S=2048: 268 MB in 16-bit); local
attention's target is S = 2,000, where a row costs O(window), not O(S). The peers that are more
than a call are in fast_s2s/peers/attention.py."""

from __future__ import annotations

import torch

from fast_s2s.benchmark import family
from fast_s2s.benchmark.family import FORWARD, FORWARD_BACKWARD, SPEEDUP, Call, Case, Goal, Inputs
from fast_s2s.peers import attention

OPS = ("dot_attention", "additive_attention")
LOCAL = "local_attention"
WINDOW = 10
MEMORY_BOUND_GOAL = Goal(family.COPY_FRACTION, 0.8)
BF16 = ("bfloat16",)
DECODE_GOALS: dict[str, tuple[Goal, ...]] = {
    "dot_attention": (Goal(SPEEDUP, 2.0, "composite", BF16), Goal(SPEEDUP, 1.0, "sdpa", BF16)),
    "additive_attention": (Goal(SPEEDUP, 2.0, "composite", BF16),),
    LOCAL: (Goal(SPEEDUP, 20.0, "global-fused"), Goal(SPEEDUP, 5.0, "local-composite")),
}
DECODE_DIMS = {"B": 64, "T": 1, "S": 50, "D": 512}
TRAIN_DIMS = {"B": 64, "T": 30, "S": 30, "D": 512}
BEAM_DIMS = {"B": 16, "beam": 5, "T": 1, "S": 50, "D": 512}
LARGE_DIMS = {"B": 64, "T": 1, "S": 2048, "D": 512}  # on CUDA only
RAGGED = {"lengths": "ragged"}


def _case(op: str, mode: str, label: str, dims: dict, **fields) -> Case:
    """dims B, beam (1), T, S, D, Dv (D), and local attention's W; local attention is not
    memory_bound: a row reads only the window, not what GB/s would count."""
    d = {"beam": 1, "Dv": dims["D"], **dims}
    dims = {k: d[k] for k in ("B", "beam", "T", "S", "D", "Dv")}
    if op == LOCAL:
        dims["W"], fields["memory_bound"] = WINDOW, False
    return Case(op, mode, tuple(dims.items()), label, **fields)


def _cases(op: str, cuda: bool) -> list[tuple]:
    fwd, bwd, target = FORWARD, FORWARD_BACKWARD, {"target": True}
    if op == LOCAL:
        decode = {"B": 64, "T": 1, "D": 512}
        return [
            (fwd, "decode", {**decode, "S": 50}, target),
            (fwd, "decode", {**decode, "S": 2000}, {**target, "goals": DECODE_GOALS[LOCAL]}),
            (bwd, "train", {"B": 64, "T": 50, "S": 50, "D": 512}, target),
            (fwd, "decode", {**decode, "S": 2000}, RAGGED),
            (fwd, "beam5", {"B": 16, "beam": 5, "T": 1, "S": 2000, "D": 512}, {}),
            (bwd, "train", {"B": 16, "T": 50, "S": 2000, "D": 256}, {}),
        ]
    large = {**target, "goals": (MEMORY_BOUND_GOAL,)}
    return [
        (fwd, "decode", DECODE_DIMS, {**target, "goals": DECODE_GOALS[op] if cuda else ()}),
        *[(fwd, "large", LARGE_DIMS, large)] * cuda,
        (bwd, "train", TRAIN_DIMS, target),
        (fwd, "decode", DECODE_DIMS, RAGGED),
        (fwd, "beam5", BEAM_DIMS, {}),
        (fwd, "beam5", BEAM_DIMS, RAGGED),
        *[(fwd, "large", LARGE_DIMS, RAGGED)] * cuda,
        (fwd, "long-src", {"B": 32, "T": 1, "S": 200, "D": 256}, {}),
        (fwd, "train", TRAIN_DIMS, {}),
        (bwd, "train", TRAIN_DIMS, RAGGED),
    ]


def _tiny_cases(op: str) -> list[tuple]:
    S = (30, 25, 40) if op == LOCAL else (5, 4, 5)
    beam2 = {"B": 2, "beam": 2, "T": 1, "S": S[2], "D": 8, "Dv": 8 if op == LOCAL else 6}
    return [
        (FORWARD, "decode", {"B": 4, "T": 1, "S": S[0], "D": 8}, {"target": True}),
        (FORWARD_BACKWARD, "train", {"B": 2, "T": 3, "S": S[1], "D": 8}, {"target": True}),
        (FORWARD, "beam2", beam2, RAGGED),
    ]


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """dot_attention: (query, keys, values), `lengths`, `scale`; additive_attention:
    (query_proj, keys_proj, v, values), `lengths`; local_attention: (query, keys, values,
    centers), `window`, `lengths`, `scale`. All but the centres require grad in fwd+bwd."""
    device = torch.device(device)
    d = case.shape
    B, beam, T, S, D, Dv = d["B"], d["beam"], d["T"], d["S"], d["D"], d["Dv"]
    N = B * beam
    gen = torch.Generator().manual_seed(0)
    lengths = family.ragged_lengths(B, S, device) if case.lengths == "ragged" else None
    kwargs: dict[str, object] = {"lengths": lengths}
    if case.op == "additive_attention":
        scales = ((N, T, D), 0.5), ((B, S, D), 0.5), ((D,), D**-0.5), ((B, S, Dv), 1.0)
        args = tuple(family.randn(shape, gen, device, dtype, scale) for shape, scale in scales)
    else:
        shapes = ((N, T, D), (B, S, D), (B, S, Dv))
        args = tuple(family.randn(shape, gen, device, dtype) for shape in shapes)
        kwargs["scale"] = D**-0.5
    grad = family.needs_grad(case, *args)
    write_bytes = N * T * (Dv + S) * args[0].element_size()  # context and weights
    if case.op == LOCAL:
        rows = torch.full((N,), float(S)) if lengths is None else lengths.cpu().float()
        if lengths is not None and beam > 1:
            rows = rows.repeat_interleave(beam)
        centers = rows[:, None] * torch.sigmoid(torch.randn((N, T), generator=gen))
        args = (*args, centers.to(device))
        kwargs = {"window": d["W"], "lengths": lengths, "scale": D**-0.5}
    return Inputs(args, kwargs, grad_inputs=grad, beam=beam, write_bytes=write_bytes)


def _tiled(inputs: Inputs, attend) -> Call:
    """attend(keys, values) with keys and values tiled over the beam, one row per query row: the
    tiling is done once per source batch, unless it is part of the graph (forward+backward)."""
    keys, values, beam = inputs.args[1], inputs.args[-1], inputs.beam

    def tile(t: torch.Tensor) -> torch.Tensor:
        return t if beam == 1 else t.repeat_interleave(beam, dim=0)

    if keys.requires_grad or values.requires_grad:
        return lambda: attend(tile(keys), tile(values))
    k, v = tile(keys), tile(values)
    return lambda: attend(k, v)


def _padding(inputs: Inputs) -> torch.Tensor | None:
    lengths = inputs.kwargs["lengths"]
    rows = None if lengths is None else lengths.repeat_interleave(inputs.beam)  # type: ignore[union-attr]
    return attention.padding_mask(rows, inputs.args[1].shape[1])


def dot_composite(inputs: Inputs) -> Call:
    query, pad, scale = inputs.args[0], _padding(inputs), inputs.kwargs["scale"]
    return _tiled(inputs, lambda k, v: attention.dot_composite(query, k, v, pad, scale))


def additive_composite(inputs: Inputs) -> Call:
    query_proj, _, v, _ = inputs.args
    pad = _padding(inputs)
    return _tiled(inputs, lambda kp, x: attention.additive_composite(query_proj, kp, v, x, pad))


def dot_sdpa(inputs: Inputs) -> Call:
    query, keys, values = inputs.args
    mask = attention.sdpa_mask(inputs.kwargs["lengths"], keys.shape[1])  # type: ignore[arg-type]
    scale = inputs.kwargs["scale"]
    return lambda: attention.dot_sdpa(query, keys, values, mask, scale)  # type: ignore[arg-type]


def local_composite(inputs: Inputs) -> Call:
    query, keys, values, centers = inputs.args
    window, lengths, scale = (inputs.kwargs[k] for k in ("window", "lengths", "scale"))
    index = attention.local_source_index(query.shape[0], keys, lengths, window)  # once per batch
    return lambda: attention.local_composite(query, keys, values, centers, window, scale, index)  # type: ignore[arg-type]


def global_fused(inputs: Inputs) -> Call:
    from fast_s2s import ops

    query, keys, values, _ = inputs.args
    lengths, scale = inputs.kwargs["lengths"], inputs.kwargs["scale"]
    return lambda: family.primary_output(ops.dot_attention(query, keys, values, lengths, scale))


FAMILY = family.Family(
    name="attention",
    cases={
        "cpu": family.build_cases(_case, {op: _cases(op, cuda=False) for op in OPS}),
        "cuda": family.build_cases(_case, {op: _cases(op, cuda=True) for op in OPS}),
        "tiny": family.build_cases(_case, {op: _tiny_cases(op) for op in OPS}),
    },
    make_inputs=make_inputs,
    peers={
        "dot_attention": family.kernel_peers(
            "dot_attention", composite=dot_composite, sdpa=dot_sdpa
        ),
        "additive_attention": family.kernel_peers(
            "additive_attention", composite=additive_composite
        ),
    },
)
LOCAL_FAMILY = family.Family(
    name="local attention",
    cases={
        "cpu": family.build_cases(_case, {LOCAL: _cases(LOCAL, cuda=False)}),
        "tiny": family.build_cases(_case, {LOCAL: _tiny_cases(LOCAL)}),
    },
    make_inputs=make_inputs,
    peers={
        LOCAL: family.kernel_peers(
            LOCAL, **{"local-composite": local_composite, "global-fused": global_fused}
        )
    },
)
