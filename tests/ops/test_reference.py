"""The reference ops held to independent definitions.

fast_s2s.reference defines "correct" for every fused kernel, so it is checked here
against definitions that share no code with it: naive per-row Python loops with an
explicit softmax, torch.nn.functional.scaled_dot_product_attention, torch.nn.GRUCell
and torch.nn.GRU over packed sequences. The attention ops and the bad-input checks are
here; gru_cell and gru_layer in tests/ops/test_reference_gru.py.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from fast_s2s import ops
from fast_s2s import reference as ref
from tests.backends import TOLERANCES

DTYPES = [torch.float64, torch.float32, torch.bfloat16]
DTYPE_IDS = ["f64", "f32", "bf16"]
# The shared tolerance table's forward entries (tests/backends.py), here for the output of the
# reference (and its float64 gradients) against a float64 independent definition.
TOL = {dtype: TOLERANCES["forward"][dtype].close for dtype in DTYPES}


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class AttnCase:
    B: int
    beam: int
    T: int | None  # None: 2-D query (N, D)
    S: int
    D: int
    Dv: int
    lengths: str  # "none", "full" (all S) or "mixed" (contains 0 and S when B allows)

    @property
    def id(self) -> str:
        t = "2D" if self.T is None else f"T{self.T}"
        return f"B{self.B}-beam{self.beam}-{t}-S{self.S}-D{self.D}-Dv{self.Dv}-len_{self.lengths}"


ATTN_CASES = [
    AttnCase(B=4, beam=2, T=3, S=37, D=65, Dv=33, lengths="mixed"),
    AttnCase(B=1, beam=1, T=1, S=1, D=1, Dv=1, lengths="full"),
    AttnCase(B=2, beam=1, T=1, S=1, D=3, Dv=2, lengths="mixed"),  # one row of length 0
    AttnCase(B=3, beam=1, T=1, S=16, D=32, Dv=32, lengths="none"),
    AttnCase(B=2, beam=3, T=5, S=7, D=9, Dv=5, lengths="mixed"),
    AttnCase(B=2, beam=4, T=None, S=37, D=65, Dv=17, lengths="mixed"),
    AttnCase(B=3, beam=2, T=None, S=5, D=4, Dv=6, lengths="none"),
    AttnCase(B=5, beam=1, T=2, S=129, D=16, Dv=8, lengths="mixed"),
]


def make_lengths(B: int, S: int, kind: str) -> torch.Tensor | None:
    """Row 0 has length S, row 1 (if any) length 0, the rest random in [1, S]."""
    if kind == "none":
        return None
    if kind == "full":
        return torch.full((B,), S, dtype=torch.int64)
    lengths = torch.randint(1, S + 1, (B,), dtype=torch.int64)
    lengths[0] = S
    if B > 1:
        lengths[1] = 0
    return lengths


def dot_inputs(c: AttnCase, dtype=torch.float64, requires_grad=False):
    N = c.B * c.beam
    qshape = (N, c.D) if c.T is None else (N, c.T, c.D)
    query = torch.randn(qshape, dtype=torch.float64) / math.sqrt(c.D)
    keys = torch.randn(c.B, c.S, c.D, dtype=torch.float64)
    values = torch.randn(c.B, c.S, c.Dv, dtype=torch.float64)
    tensors = [t.to(dtype).requires_grad_(requires_grad) for t in (query, keys, values)]
    return (*tensors, make_lengths(c.B, c.S, c.lengths))


def additive_inputs(c: AttnCase, dtype=torch.float64, requires_grad=False):
    N, A = c.B * c.beam, c.D
    qshape = (N, A) if c.T is None else (N, c.T, A)
    query_proj = torch.randn(qshape, dtype=torch.float64)
    keys_proj = torch.randn(c.B, c.S, A, dtype=torch.float64)
    v = torch.randn(A, dtype=torch.float64)
    values = torch.randn(c.B, c.S, c.Dv, dtype=torch.float64)
    tensors = [
        t.to(dtype).requires_grad_(requires_grad) for t in (query_proj, keys_proj, v, values)
    ]
    return (*tensors, make_lengths(c.B, c.S, c.lengths))


# The parameters of a one-layer torch.nn.GRU in one direction, in gru_layer's order.
def gru_params(gru: torch.nn.GRU, reverse: bool):
    sfx = "_l0_reverse" if reverse else "_l0"
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return [getattr(gru, n + sfx, None) for n in names]


# --------------------------------------------------------------------------- #
# Independent definitions
# --------------------------------------------------------------------------- #


def naive_attention(score_fn, query, values, lengths, B):
    """Loop over every query row (n, t); softmax with math.exp on Python floats.

    score_fn(n, t, b, s) -> float. Returns float64 context (N, T, Dv), weights (N, T, S).
    """
    N, T = query.shape[0], query.shape[1]
    S, Dv = values.shape[1], values.shape[2]
    beam = N // B
    context = torch.zeros(N, T, Dv, dtype=torch.float64)
    weights = torch.zeros(N, T, S, dtype=torch.float64)
    for n in range(N):
        b = n // beam
        L = S if lengths is None else int(lengths[b])
        for t in range(T):
            if L == 0:
                continue  # nothing to attend to: zero context, zero weights
            scores = [score_fn(n, t, b, s) for s in range(L)]
            m = max(scores)
            exps = [math.exp(x - m) for x in scores]
            total = sum(exps)
            for s in range(L):
                w = exps[s] / total
                weights[n, t, s] = w
                context[n, t] += w * values[b, s].detach().double()
    return context, weights


def naive_dot_attention(query, keys, values, lengths=None, scale=1.0):
    squeeze = query.dim() == 2
    q = (query[:, None] if squeeze else query).detach().double()
    k = keys.detach().double()

    def score(n, t, b, s):
        return scale * sum(float(q[n, t, d]) * float(k[b, s, d]) for d in range(k.shape[2]))

    context, weights = naive_attention(score, q, values, lengths, keys.shape[0])
    return (context[:, 0], weights[:, 0]) if squeeze else (context, weights)


def naive_additive_attention(query_proj, keys_proj, v, values, lengths=None):
    squeeze = query_proj.dim() == 2
    q = (query_proj[:, None] if squeeze else query_proj).detach().double()
    k, vv = keys_proj.detach().double(), v.detach().double()

    def score(n, t, b, s):
        return float((vv * torch.tanh(q[n, t] + k[b, s])).sum())

    context, weights = naive_attention(score, q, values, lengths, keys_proj.shape[0])
    return (context[:, 0], weights[:, 0]) if squeeze else (context, weights)


def sdpa_attention(query, keys, values, lengths, scale):
    """torch's scaled_dot_product_attention with keys expanded per beam row.

    Returns float64 context (N, T, Dv) and weights (N, T, S); the weights are read
    out by attending over the identity matrix as values.
    """
    q = (query[:, None] if query.dim() == 2 else query).double()
    B, S = keys.shape[:2]
    beam = q.shape[0] // B
    k = keys.double().repeat_interleave(beam, dim=0)  # (N, S, D)
    v = values.double().repeat_interleave(beam, dim=0)  # (N, S, Dv)
    eye = torch.eye(S, dtype=torch.float64).expand(q.shape[0], S, S)
    L = torch.full((B,), S) if lengths is None else lengths
    mask = torch.arange(S)[None, :] < L.repeat_interleave(beam)[:, None]  # (N, S)
    mask = mask[:, None, :].expand(q.shape[0], q.shape[1], S)  # (N, T, S)
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    weights = F.scaled_dot_product_attention(q, k, eye, attn_mask=mask, scale=scale)
    return context, weights


def squeeze_like(query, *outs):
    return tuple(o[:, 0] for o in outs) if query.dim() == 2 else outs


# --------------------------------------------------------------------------- #
# dot_attention
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", ATTN_CASES, ids=[c.id for c in ATTN_CASES])
def test_dot_attention_matches_naive_loop(case):
    query, keys, values, lengths = dot_inputs(case)
    scale = 0.7
    context, weights = ref.dot_attention(query, keys, values, lengths, scale=scale)
    exp_context, exp_weights = naive_dot_attention(query, keys, values, lengths, scale)
    assert context.shape == exp_context.shape and weights.shape == exp_weights.shape
    torch.testing.assert_close(weights, exp_weights, **TOL[torch.float64])
    torch.testing.assert_close(context, exp_context, **TOL[torch.float64])


@pytest.mark.parametrize("case", ATTN_CASES, ids=[c.id for c in ATTN_CASES])
def test_dot_attention_matches_sdpa(case):
    query, keys, values, lengths = dot_inputs(case)
    scale = 1.0 / math.sqrt(case.D)
    context, weights = ref.dot_attention(query, keys, values, lengths, scale=scale)
    exp_context, exp_weights = squeeze_like(
        query, *sdpa_attention(query, keys, values, lengths, scale)
    )
    # SDPA has no defined answer for a fully masked row: compare rows with length > 0.
    rows = torch.ones(query.shape[0], dtype=torch.bool)
    if lengths is not None:
        rows = lengths.repeat_interleave(case.beam) > 0
    assert rows.any()
    torch.testing.assert_close(context[rows], exp_context[rows], **TOL[torch.float64])
    torch.testing.assert_close(weights[rows], exp_weights[rows], **TOL[torch.float64])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dot_attention_dtypes(dtype):
    case = ATTN_CASES[0]
    query, keys, values, lengths = dot_inputs(case, dtype=dtype)
    context, weights = ref.dot_attention(query, keys, values, lengths, scale=0.5)
    assert context.dtype == dtype and weights.dtype == dtype
    # The float64 definition on the same (already rounded) inputs.
    exp_context, exp_weights = naive_dot_attention(query, keys, values, lengths, 0.5)
    torch.testing.assert_close(context.double(), exp_context, **TOL[dtype])
    torch.testing.assert_close(weights.double(), exp_weights, **TOL[dtype])


def test_dot_attention_zero_length_row():
    B, beam, T, S, D, Dv = 3, 2, 2, 6, 5, 4
    query = torch.randn(B * beam, T, D, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(B, S, D, dtype=torch.float64, requires_grad=True)
    values = torch.randn(B, S, Dv, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 0, S])
    context, weights = ref.dot_attention(query, keys, values, lengths)
    zero_rows = slice(1 * beam, 2 * beam)  # query rows reading source row 1
    assert torch.equal(context[zero_rows], torch.zeros_like(context[zero_rows]))
    assert torch.equal(weights[zero_rows], torch.zeros_like(weights[zero_rows]))
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    # Valid rows sum to one; masked positions get exactly zero.
    torch.testing.assert_close(weights[:beam].sum(-1), torch.ones(beam, T, dtype=torch.float64))
    assert torch.equal(weights[:beam, :, 4:], torch.zeros(beam, T, 2, dtype=torch.float64))

    (context * torch.randn_like(context)).sum().add(
        (weights * torch.randn_like(weights)).sum()
    ).backward()
    for t in (query, keys, values):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(query.grad[zero_rows], torch.zeros_like(query.grad[zero_rows]))
    assert torch.equal(keys.grad[1], torch.zeros_like(keys.grad[1]))
    assert torch.equal(values.grad[1], torch.zeros_like(values.grad[1]))
    # Masked positions of row 0 get no gradient either.
    assert torch.equal(keys.grad[0, 4:], torch.zeros_like(keys.grad[0, 4:]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_dot_attention_extreme_scores(dtype):
    B, beam, T, S, D = 2, 2, 3, 9, 8
    query = (torch.randn(B * beam, T, D) * 3e3).to(dtype).requires_grad_()
    keys = torch.randn(B, S, D).to(dtype).requires_grad_()
    values = torch.randn(B, S, 4).to(dtype).requires_grad_()
    lengths = torch.tensor([S, 3])
    context, weights = ref.dot_attention(query, keys, values, lengths)
    scores = torch.einsum("nktd,nsd->nkts", query.double().view(B, beam, T, D), keys.double())
    assert scores.abs().max() > 1e4  # the case is really extreme
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    torch.testing.assert_close(weights.float().sum(-1), torch.ones(B * beam, T), atol=1e-2, rtol=0)
    exp_context, exp_weights = naive_dot_attention(query, keys, values, lengths)
    torch.testing.assert_close(weights.double(), exp_weights, atol=2e-2, rtol=0)
    torch.testing.assert_close(context.double(), exp_context, atol=5e-2, rtol=2e-2)
    (context.float().sum() + (weights.float() * torch.randn(weights.shape)).sum()).backward()
    for t in (query, keys, values):
        assert torch.isfinite(t.grad.float()).all()


def test_dot_attention_lengths_int32_and_noncontiguous():
    B, beam, T, S, D, Dv = 2, 3, 4, 7, 6, 5
    query = torch.randn(T, B * beam, D, dtype=torch.float64).transpose(0, 1)  # non-contiguous
    keys = torch.randn(B, D, S, dtype=torch.float64).transpose(1, 2)
    values = torch.randn(B, S, Dv, dtype=torch.float64)[:, :, :]
    lengths32 = torch.tensor([5, 2], dtype=torch.int32)
    out32 = ref.dot_attention(query, keys, values, lengths32)
    out64 = ref.dot_attention(query.contiguous(), keys.contiguous(), values, lengths32.long())
    exp = naive_dot_attention(query, keys, values, lengths32)
    for got, want, other in zip(out32, exp, out64, strict=True):
        torch.testing.assert_close(got, want, **TOL[torch.float64])
        torch.testing.assert_close(got, other, **TOL[torch.float64])


def test_dot_attention_gradcheck():
    B, beam, T, S, D, Dv = 2, 2, 2, 4, 3, 2
    query = torch.randn(B * beam, T, D, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(B, S, D, dtype=torch.float64, requires_grad=True)
    values = torch.randn(B, S, Dv, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 0])
    assert torch.autograd.gradcheck(
        lambda q, k, v: ref.dot_attention(q, k, v, lengths, scale=0.8), (query, keys, values)
    )
    assert torch.autograd.gradgradcheck(
        lambda q, k, v: ref.dot_attention(q, k, v, lengths, scale=0.8), (query, keys, values)
    )


def test_dot_attention_empty_source():
    query = torch.randn(4, 2, 3)
    keys, values = torch.randn(2, 0, 3), torch.randn(2, 0, 5)
    context, weights = ref.dot_attention(query, keys, values, torch.zeros(2, dtype=torch.int64))
    assert context.shape == (4, 2, 5) and weights.shape == (4, 2, 0)
    assert torch.equal(context, torch.zeros(4, 2, 5))


# --------------------------------------------------------------------------- #
# additive_attention
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("case", ATTN_CASES, ids=[c.id for c in ATTN_CASES])
def test_additive_attention_matches_naive_loop(case):
    query_proj, keys_proj, v, values, lengths = additive_inputs(case)
    context, weights = ref.additive_attention(query_proj, keys_proj, v, values, lengths)
    exp_context, exp_weights = naive_additive_attention(query_proj, keys_proj, v, values, lengths)
    assert context.shape == exp_context.shape and weights.shape == exp_weights.shape
    torch.testing.assert_close(weights, exp_weights, **TOL[torch.float64])
    torch.testing.assert_close(context, exp_context, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_additive_attention_dtypes(dtype):
    case = ATTN_CASES[4]
    query_proj, keys_proj, v, values, lengths = additive_inputs(case, dtype=dtype)
    context, weights = ref.additive_attention(query_proj, keys_proj, v, values, lengths)
    assert context.dtype == dtype and weights.dtype == dtype
    exp_context, exp_weights = naive_additive_attention(query_proj, keys_proj, v, values, lengths)
    torch.testing.assert_close(context.double(), exp_context, **TOL[dtype])
    torch.testing.assert_close(weights.double(), exp_weights, **TOL[dtype])


def test_additive_attention_zero_length_row_and_extreme_scores():
    B, beam, T, S, A, Dv = 2, 3, 2, 5, 4, 3
    query_proj = torch.randn(B * beam, T, A, requires_grad=True)
    keys_proj = torch.randn(B, S, A, requires_grad=True)
    v = (torch.randn(A) * 1e4).requires_grad_()  # scores ~ 1e4
    values = torch.randn(B, S, Dv, requires_grad=True)
    lengths = torch.tensor([0, S])
    context, weights = ref.additive_attention(query_proj, keys_proj, v, values, lengths)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    assert torch.equal(context[:beam], torch.zeros(beam, T, Dv))
    assert torch.equal(weights[:beam], torch.zeros(beam, T, S))
    torch.testing.assert_close(weights[beam:].sum(-1), torch.ones(beam, T))
    (context * torch.randn_like(context)).sum().backward()
    for t in (query_proj, keys_proj, v, values):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(query_proj.grad[:beam], torch.zeros(beam, T, A))
    assert torch.equal(keys_proj.grad[0], torch.zeros(S, A))


def test_additive_attention_gradcheck():
    B, beam, T, S, A, Dv = 2, 2, 2, 3, 3, 2
    args = [
        torch.randn(B * beam, T, A, dtype=torch.float64, requires_grad=True),
        torch.randn(B, S, A, dtype=torch.float64, requires_grad=True),
        torch.randn(A, dtype=torch.float64, requires_grad=True),
        torch.randn(B, S, Dv, dtype=torch.float64, requires_grad=True),
    ]
    lengths = torch.tensor([0, 2])
    assert torch.autograd.gradcheck(lambda *a: ref.additive_attention(*a, lengths), args)


# --------------------------------------------------------------------------- #
# Bad input
# --------------------------------------------------------------------------- #

BAD_LENGTHS = {
    "too-long": lambda B, S: torch.full((B,), S + 1),
    "negative": lambda B, S: torch.tensor([-1] + [S] * (B - 1)),
    "wrong-shape": lambda B, S: torch.full((B + 1,), S),
    "2-D": lambda B, S: torch.full((B, 1), S),
    "float": lambda B, S: torch.full((B,), float(S)),
    "bool": lambda B, S: torch.ones(B, dtype=torch.bool),
}


@pytest.mark.parametrize("kind", list(BAD_LENGTHS), ids=list(BAD_LENGTHS))
@pytest.mark.parametrize("op", ["dot_attention", "additive_attention", "gru_layer"])
def test_bad_lengths_raise(op, kind):
    """The reference checks nothing itself: its arguments are checked by fast_s2s.ops
    (fast_s2s.checks) before it runs, as for every backend."""
    B, beam, S, D = 2, 2, 4, 3
    lengths = BAD_LENGTHS[kind](B, S)
    with pytest.raises(ValueError, match="lengths"):
        if op == "dot_attention":
            q, k, v = torch.randn(B * beam, 1, D), torch.randn(B, S, D), torch.randn(B, S, D)
            ops.dot_attention(q, k, v, lengths, backend="reference")
        elif op == "additive_attention":
            q, k = torch.randn(B * beam, D), torch.randn(B, S, D)
            ops.additive_attention(
                q, k, torch.randn(D), torch.randn(B, S, 2), lengths, backend="reference"
            )
        else:
            H = 3
            x, h0 = torch.randn(S, B, D), torch.randn(B, H)
            ops.gru_layer(
                x, h0, torch.randn(3 * H, D), torch.randn(3 * H, H), lengths=lengths,
                backend="reference",
            )  # fmt: skip


def test_bad_shapes_raise():
    q, k, v = torch.randn(5, 1, 3), torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    dot = functools.partial(ops.dot_attention, backend="reference")
    with pytest.raises(ValueError, match="multiple"):
        dot(q, k, v)  # N = 5 not divisible by B = 2
    with pytest.raises(ValueError, match="keys"):
        dot(torch.randn(4, 1, 3), torch.randn(2, 4, 2), v)
    with pytest.raises(ValueError, match="values"):
        dot(torch.randn(4, 1, 3), k, torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="dtype"):
        dot(torch.randn(4, 1, 3), k.double(), v)
    with pytest.raises(ValueError, match="w_ih"):
        ops.gru_cell(
            torch.randn(2, 3), torch.randn(2, 4), torch.randn(12, 2), torch.randn(12, 4),
            backend="reference",
        )  # fmt: skip


@pytest.mark.cuda
def test_cpu_lengths_with_cuda_inputs():
    case = ATTN_CASES[0]
    query, keys, values, lengths = dot_inputs(case)
    cpu = ref.dot_attention(query, keys, values, lengths)
    gpu = ref.dot_attention(query.cuda(), keys.cuda(), values.cuda(), lengths)
    for c, g in zip(cpu, gpu, strict=True):
        assert g.is_cuda
        torch.testing.assert_close(g.cpu(), c, **TOL[torch.float64])
    gru = torch.nn.GRU(3, 4, dtype=torch.float64)
    x, h0, lens = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(2, 4).double(), [5, 2]
    params = gru_params(gru, False)
    out, h_n = ref.gru_layer(
        x.cuda(), h0.cuda(), *[p.cuda() for p in params], lengths=torch.tensor(lens)
    )
    exp_out, exp_h_n = ref.gru_layer(x, h0, *params, lengths=torch.tensor(lens))
    torch.testing.assert_close(out.cpu(), exp_out)
    torch.testing.assert_close(h_n.cpu(), exp_h_n)
