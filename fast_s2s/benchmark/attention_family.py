"""The attention families: dot_attention and additive_attention (FAMILY), and local_attention
(LOCAL_FAMILY, Luong local-p), their cases, inputs and peers.

Global attention: the decode step N64-T1-S50-D512 and the training step T=S=30 (the targets),
then ragged lengths, beam 5 and a longer source. CUDA adds the GPU goals on the decode step
(bfloat16: 2x the composite, and not slower than SDPA) and a large memory-bound decode read,
N64-T1-S2048-D512 (keys and values 268 MB in 16-bit, over 4x a 50-60 MB L2; goal: 80% of the
copy bandwidth). Local attention: the decode step (window 10) at S = 50 and at S = 2,000 (the
target: a row costs O(window), not O(S)), a training step, beam 5 and ragged lengths; centres
are local-p's, p = L_b * sigmoid(x) per row.

Peers besides the reference and torch.compile:
  composite        bmm + masked softmax + bmm as a user writes it, in the input dtype (additive:
                   tanh of the broadcast sum, times v), keys and values repeat_interleave'd over
                   the beam
  sdpa             F.scaled_dot_product_attention (dot only) on 4-D one-head views, beam rows
                   folded into the query length: torch's fused kernels take only 4-D inputs
  local-composite  gather the 2D + 1 keys and values around round(p), batched scores, mask what
                   lies past |s - p| <= D or the length, softmax, Gaussian, weighted sum
  global-fused     fast_s2s.dot_attention over every source position: what local replaces
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fast_s2s.benchmark.family import (
    COPY_FRACTION,
    FORWARD,
    FORWARD_BACKWARD,
    SPEEDUP,
    Call,
    Case,
    Family,
    Goal,
    Inputs,
    kernel_peers,
    needs_grad,
    op_call,
    primary_output,
    ragged_lengths,
    randn,
)

OPS = ("dot_attention", "additive_attention")
LOCAL = "local_attention"
WINDOW = 10
MEMORY_BOUND_GOAL = Goal(COPY_FRACTION, 0.8)
DECODE_GOALS: dict[str, tuple[Goal, ...]] = {
    "dot_attention": (
        Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),
        Goal(SPEEDUP, 1.0, "sdpa", ("bfloat16",)),
    ),
    "additive_attention": (Goal(SPEEDUP, 2.0, "composite", ("bfloat16",)),),
    LOCAL: (Goal(SPEEDUP, 20.0, "global-fused"), Goal(SPEEDUP, 5.0, "local-composite")),
}


def _case(
    op: str, mode: str, label: str, *, B: int, beam: int = 1, T: int, S: int, D: int,
    Dv: int | None = None, lengths: str = "full", target: bool = False,
    goals: tuple[Goal, ...] = (),
) -> Case:  # fmt: skip
    dims = (("B", B), ("beam", beam), ("T", T), ("S", S), ("D", D), ("Dv", D if Dv is None else Dv))
    if op == LOCAL:  # not memory_bound: a row reads only the window, not what GB/s would count
        return Case(op, mode, (*dims, ("W", WINDOW)), label, lengths, target, False, goals=goals)
    return Case(op, mode, dims, label, lengths, target, goals=goals)


def _cases(op: str, cuda: bool) -> list[Case]:
    fwd, bwd = FORWARD, FORWARD_BACKWARD
    decode = {"B": 64, "T": 1, "S": 50, "D": 512}
    train = {"B": 64, "T": 30, "S": 30, "D": 512}
    beam = {"B": 16, "beam": 5, "T": 1, "S": 50, "D": 512}
    large = {"B": 64, "T": 1, "S": 2048, "D": 512}  # `[...] * cuda`: on CUDA only
    return [
        _case(op, fwd, "decode", **decode, target=True, goals=DECODE_GOALS[op] if cuda else ()),
        *([_case(op, fwd, "large", **large, target=True, goals=(MEMORY_BOUND_GOAL,))] * cuda),
        _case(op, bwd, "train", **train, target=True),
        _case(op, fwd, "decode", **decode, lengths="ragged"),
        _case(op, fwd, "beam5", **beam),
        _case(op, fwd, "beam5", **beam, lengths="ragged"),
        *([_case(op, fwd, "large", **large, lengths="ragged")] * cuda),
        _case(op, fwd, "long-src", B=32, T=1, S=200, D=256),
        _case(op, fwd, "train", **train),
        _case(op, bwd, "train", **train, lengths="ragged"),
    ]


def _local_cases() -> list[Case]:
    fwd, bwd, op = FORWARD, FORWARD_BACKWARD, LOCAL
    decode = {"B": 64, "T": 1, "D": 512}
    return [
        _case(op, fwd, "decode", **decode, S=50, target=True),
        _case(op, fwd, "decode", **decode, S=2000, target=True, goals=DECODE_GOALS[op]),
        _case(op, bwd, "train", B=64, T=50, S=50, D=512, target=True),
        _case(op, fwd, "decode", **decode, S=2000, lengths="ragged"),
        _case(op, fwd, "beam5", B=16, beam=5, T=1, S=2000, D=512),
        _case(op, bwd, "train", B=16, T=50, S=2000, D=256),
    ]


def _tiny_cases(op: str) -> list[Case]:
    S = (30, 25, 40) if op == LOCAL else (5, 4, 5)
    return [
        _case(op, FORWARD, "decode", B=4, T=1, S=S[0], D=8, target=True),
        _case(op, FORWARD_BACKWARD, "train", B=2, T=3, S=S[1], D=8, target=True),
        _case(op, FORWARD, "beam2", B=2, beam=2, T=1, S=S[2], D=8,
              Dv=8 if op == LOCAL else 6, lengths="ragged"),
    ]  # fmt: skip


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """dot_attention: (query, keys, values) and `lengths`, `scale`; additive_attention:
    (query_proj, keys_proj, v, values) and `lengths`; local_attention: (query, keys, values,
    centers) and `window`, `lengths`, `scale`. Every tensor argument but the centres requires
    grad in forward+backward."""
    device = torch.device(device)
    d = case.shape
    B, beam, T, S, D, Dv = d["B"], d["beam"], d["T"], d["S"], d["D"], d["Dv"]
    N = B * beam
    gen = torch.Generator().manual_seed(0)
    lengths = ragged_lengths(B, S, device) if case.lengths == "ragged" else None
    kwargs: dict[str, object] = {"lengths": lengths}
    if case.op == "additive_attention":
        args = (
            randn((N, T, D), gen, device, dtype, 0.5),
            randn((B, S, D), gen, device, dtype, 0.5),
            randn((D,), gen, device, dtype, D**-0.5),
            randn((B, S, Dv), gen, device, dtype),
        )
    else:
        args = tuple(randn(s, gen, device, dtype) for s in ((N, T, D), (B, S, D), (B, S, Dv)))
        kwargs["scale"] = D**-0.5
    grad = needs_grad(case, *args)
    write_bytes = N * T * (Dv + S) * args[0].element_size()  # context and weights
    if case.op == LOCAL:
        rows = torch.full((N,), float(S)) if lengths is None else lengths.cpu().float()
        if lengths is not None and beam > 1:
            rows = rows.repeat_interleave(beam)
        centers = rows[:, None] * torch.sigmoid(torch.randn((N, T), generator=gen))
        args = (*args, centers.to(device))
        kwargs = {"window": d["W"], "lengths": lengths, "scale": D**-0.5}
    return Inputs(args, kwargs, grad_inputs=grad, beam=beam, write_bytes=write_bytes)


def _pad_mask(lengths: torch.Tensor | None, beam: int, S: int, device) -> torch.Tensor | None:
    """(N, 1, S) bool, True at padding, one row per beam row."""
    if lengths is None:
        return None
    rows = lengths.repeat_interleave(beam) if beam > 1 else lengths
    return (torch.arange(S, device=device)[None, :] >= rows[:, None])[:, None, :]


def _tile(t: torch.Tensor, beam: int) -> torch.Tensor:
    return t if beam == 1 else t.repeat_interleave(beam, dim=0)


def _composite(inputs: Inputs, scores) -> Call:
    """masked softmax(scores(query, keys)) @ values over keys and values tiled over the beam;
    the tiling is done once, unless it is part of the graph (forward+backward)."""
    keys, values = inputs.args[1], inputs.args[-1]
    beam, lengths = inputs.beam, inputs.kwargs["lengths"]
    pad = _pad_mask(lengths, beam, keys.shape[1], keys.device)  # type: ignore[arg-type]

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
    return lambda: primary_output(ops.dot_attention(query, keys, values, lengths, scale))


FAMILY = Family(
    name="attention",
    cases={
        "cpu": {op: _cases(op, cuda=False) for op in OPS},
        "cuda": {op: _cases(op, cuda=True) for op in OPS},
        "tiny": {op: _tiny_cases(op) for op in OPS},
    },
    make_inputs=make_inputs,
    peers={
        "dot_attention": kernel_peers("dot_attention", composite=dot_composite, sdpa=dot_sdpa),
        "additive_attention": kernel_peers("additive_attention", composite=additive_composite),
    },
    fast_s2s=op_call,
)
LOCAL_FAMILY = Family(
    name="local attention",
    cases={"cpu": {LOCAL: _local_cases()}, "tiny": {LOCAL: _tiny_cases(LOCAL)}},
    make_inputs=make_inputs,
    peers={
        LOCAL: kernel_peers(
            LOCAL, **{"local-composite": local_composite, "global-fused": global_fused}
        )
    },
    fast_s2s=op_call,
)
