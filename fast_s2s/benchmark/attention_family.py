"""The attention families: dot_attention and additive_attention (FAMILY) and local_attention
(LOCAL_FAMILY, Luong local-p: centres p = L_b * sigmoid(x)), their cases, inputs and peers. On
CUDA the large decode reads keys and values past the L2 (S=2048: 268 MB in 16-bit); local
attention's target is S = 2,000, where a row costs O(window), not O(S). sdpa gets 4-D one-head
views, the beam rows folded into the query length: torch's fused kernels take only 4-D inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fast_s2s.benchmark import family
from fast_s2s.benchmark.family import FORWARD, FORWARD_BACKWARD, SPEEDUP, Call, Case, Goal, Inputs

OPS = ("dot_attention", "additive_attention")
LOCAL = "local_attention"
WINDOW = 10
MEMORY_BOUND_GOAL = Goal(family.COPY_FRACTION, 0.8)
DECODE_GOALS: dict[str, tuple[Goal, ...]] = {
    "dot_attention": (
        Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),
        Goal(SPEEDUP, 1.0, "sdpa", ("bfloat16",)),
    ),
    "additive_attention": (Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),),
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


def _tile(t: torch.Tensor, beam: int) -> torch.Tensor:
    return t if beam == 1 else t.repeat_interleave(beam, dim=0)


def _composite(inputs: Inputs, scores) -> Call:
    """masked softmax(scores(keys)) @ values over keys and values tiled over the beam; the
    tiling is done once, unless it is part of the graph (forward+backward)."""
    keys, values = inputs.args[1], inputs.args[-1]
    beam, lengths = inputs.beam, inputs.kwargs["lengths"]
    pad = None  # (N, 1, S), True at padding, one row per beam row
    if lengths is not None:
        rows = _tile(lengths, beam)  # type: ignore[arg-type]
        pad = (torch.arange(keys.shape[1], device=keys.device)[None, :] >= rows[:, None])[:, None]

    def attend(k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        s = scores(k)
        return torch.bmm(torch.softmax(s if pad is None else s.masked_fill(pad, -torch.inf), -1), v)

    if keys.requires_grad or values.requires_grad:
        return lambda: attend(_tile(keys, beam), _tile(values, beam))
    k, v = _tile(keys, beam), _tile(values, beam)  # once per source batch
    return lambda: attend(k, v)


def dot_composite(inputs: Inputs) -> Call:
    query, scale = inputs.args[0], inputs.kwargs["scale"]
    return _composite(inputs, lambda k: torch.bmm(query, k.transpose(1, 2)) * scale)


def additive_composite(inputs: Inputs) -> Call:
    query_proj, _, v, _ = inputs.args
    return _composite(inputs, lambda kp: torch.tanh(query_proj.unsqueeze(2) + kp.unsqueeze(1)) @ v)


def dot_sdpa(inputs: Inputs) -> Call:
    query, keys, values = inputs.args
    lengths, scale, beam = inputs.kwargs["lengths"], inputs.kwargs["scale"], inputs.beam
    (B, S, _), (N, T, D), Dv = keys.shape, query.shape, values.shape[-1]
    mask = None  # True = may attend; (B, 1, 1, S) broadcasts over the beam * T query rows
    if lengths is not None:
        mask = (torch.arange(S, device=keys.device)[None, :] < lengths[:, None])[:, None, None, :]

    def call() -> torch.Tensor:
        q, k, v = query.reshape(B, 1, beam * T, D), keys.unsqueeze(1), values.unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return out.reshape(N, T, Dv)

    return call


def local_composite(inputs: Inputs) -> Call:
    """Gather the 2D + 1 keys and values around round(p), batched scores, mask what lies past
    |s - p| <= D or the length, softmax, Gaussian, weighted sum."""
    query, keys, values, centers = inputs.args
    window, lengths, scale = (inputs.kwargs[k] for k in ("window", "lengths", "scale"))
    (B, S, _), N, device = keys.shape, query.shape[0], keys.device
    rows = (torch.arange(N, device=device) // (N // B))[:, None, None]  # (N, 1, 1) source row
    offsets = torch.arange(-window, window + 1, device=device)  # (2D + 1,)
    limit = torch.full((B,), S, device=device) if lengths is None else lengths.to(device)
    row_limit, sigma = limit[rows], window / 2

    def call() -> torch.Tensor:
        positions = torch.round(centers).long()[:, :, None] + offsets  # (N, T, 2D + 1)
        index = positions.clamp(0, S - 1)
        k, v = keys[rows, index], values[rows, index]  # (N, T, 2D + 1, D), (N, T, 2D + 1, Dv)
        scores = torch.einsum("ntd,ntwd->ntw", query, k) * scale
        distance = positions.to(centers.dtype) - centers[:, :, None]
        inside = (distance.abs() <= window) & (positions >= 0) & (positions < row_limit)
        align = torch.softmax(scores.masked_fill(~inside, float("-inf")), dim=-1)
        align = torch.nan_to_num(align)  # an empty window: all -inf, softmax NaN -> 0
        gauss = torch.exp(-(distance**2) / (2 * sigma**2)).to(align.dtype)
        return torch.einsum("ntw,ntwv->ntv", align * gauss, v)

    return call


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
