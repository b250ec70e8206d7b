"""The compiled attention ops against the reference: values, gradients, opcheck, compile, errors."""

from __future__ import annotations

import pytest
import torch

import fast_s2s
from fast_s2s import _extension, reference
from tests.attention_cases import (
    CASE_IDS,
    CASES,
    TOLERANCES,
    Case,
    additive_sample_inputs,
    dot_sample_inputs,
    transposed_storage,
)
from tests.compile_checks import assert_compiled_matches_eager

needs_ext = pytest.mark.skipif(
    not _extension.extension_loaded(), reason=str(_extension.EXTENSION_ERROR)
)
pytestmark = needs_ext

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


@pytest.fixture
def nan_filled_empty():
    """torch.empty / at::empty return NaN-filled memory: a kernel that leaves part of an output
    unwritten shows up as NaN in the comparison."""
    old = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(old)
    torch.utils.deterministic.fill_uninitialized_memory = old_fill


def _run(op: str, args, backend: str):
    fn = getattr(fast_s2s, op) if backend != "reference" else getattr(reference, op)
    if op == "dot_attention":
        query, keys, values, lengths, scale = args
        if backend == "reference":
            return fn(query, keys, values, lengths, scale)
        return fn(query, keys, values, lengths, scale, backend=backend)
    if backend == "reference":
        return fn(*args)
    return fn(*args, backend=backend)


def _inputs(op: str, case: Case, dtype=torch.float32, requires_grad=False):
    make = dot_sample_inputs if op == "dot_attention" else additive_sample_inputs
    return make(case, "cpu", dtype, requires_grad)


def _to(args, dtype):
    return tuple(
        a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
    )


OPS = ["dot_attention", "additive_attention"]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_forward_matches_reference(op, case, dtype, nan_filled_empty):
    args = _inputs(op, case, dtype)
    context, weights = _run(op, args, "cpp")
    assert context.dtype == dtype and weights.dtype == dtype
    if dtype == torch.bfloat16:
        # FlashAttention's criterion: the fused error against a float64 reference is at most
        # twice the error of the reference itself run in bfloat16 (plus a tiny floor).
        exact = _run(op, _to(args, torch.float64), "reference")
        low = _run(op, args, "reference")
        for fused, ref64, ref_low in zip((context, weights), exact, low, strict=True):
            fused_err = (fused.double() - ref64).abs().max().item()
            ref_err = (ref_low.double() - ref64).abs().max().item()
            assert fused_err <= 2 * ref_err + 1e-3, (fused_err, ref_err)
        return
    expected = _run(op, args, "reference")
    torch.testing.assert_close(context, expected[0], **TOLERANCES[dtype])
    torch.testing.assert_close(weights, expected[1], **TOLERANCES[dtype])


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("op", OPS)
def test_backward_matches_reference(op, case):
    """Fused backward against autograd through the reference, float32, with a loss on both
    outputs (so grad_weights reaches the kernel too)."""
    grads = {}
    for backend in ("cpp", "reference"):
        torch.manual_seed(1)
        args = _inputs(op, case, torch.float32, requires_grad=True)
        context, weights = _run(op, args, backend)
        torch.manual_seed(2)
        loss = (context * torch.randn_like(context)).sum() + (
            weights * torch.randn_like(weights)
        ).sum()
        loss.backward()
        grads[backend] = [a.grad for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    for fused, expected in zip(grads["cpp"], grads["reference"], strict=True):
        torch.testing.assert_close(fused, expected, atol=5e-5, rtol=5e-5)


GRADCHECK_CASES = [CASES[i] for i in (0, 2, 3, 4, 5, 6)]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=[c.id for c in GRADCHECK_CASES])
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op, case):
    small = Case(
        case.B, case.beam, case.T, min(case.S, 7), min(case.D, 9), min(case.Dv, 6), case.lengths
    )
    args = _inputs(op, small, torch.float64, requires_grad=True)
    if op == "dot_attention":
        query, keys, values, lengths, scale = args

        def fn(q, k, v):
            return fast_s2s.dot_attention(q, k, v, lengths, scale, backend="cpp")

        inputs = (query, keys, values)
    else:
        qp, kp, v, values, lengths = args

        def fn(q, k, vv, vals):
            return fast_s2s.additive_attention(q, k, vv, vals, lengths, backend="cpp")

        inputs = (qp, kp, v, values)
    assert torch.autograd.gradcheck(fn, inputs)


OPCHECK_CASES = [CASES[i] for i in (2, 3, 4, 5)]


@pytest.mark.parametrize("case", OPCHECK_CASES, ids=[c.id for c in OPCHECK_CASES])
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, case):
    args = _inputs(op, case, torch.float32, requires_grad=True)
    torch.library.opcheck(getattr(torch.ops.fast_s2s, op).default, args)
    # need_weights=False: the CPU kernel still writes the weights, and its fake says so.
    torch.library.opcheck(getattr(torch.ops.fast_s2s, op).default, (*args, False))


def test_opcheck_backward_ops():
    case = CASES[3]
    query, keys, values, lengths, scale = _inputs("dot_attention", case)
    context, weights = torch.ops.fast_s2s.dot_attention(query, keys, values, lengths, scale)
    torch.library.opcheck(
        torch.ops.fast_s2s.dot_attention_backward.default,
        (
            torch.randn_like(context),
            torch.randn_like(weights),
            query,
            keys,
            values,
            weights,
            lengths,
            scale,
        ),
    )
    qp, kp, v, values, lengths = _inputs("additive_attention", case)
    context, weights = torch.ops.fast_s2s.additive_attention(qp, kp, v, values, lengths)
    torch.library.opcheck(
        torch.ops.fast_s2s.additive_attention_backward.default,
        (torch.randn_like(context), None, qp, kp, v, values, weights, lengths),
    )


def test_torch_compile_fullgraph_forward_and_backward():
    case = CASES[3]
    query, keys, values, lengths, scale = _inputs("dot_attention", case, requires_grad=True)
    qp, kp, v, _, _ = _inputs("additive_attention", case, requires_grad=True)

    def step(query, keys, values, qp, kp, v, lengths):
        c1, w1 = fast_s2s.dot_attention(query, keys, values, lengths, scale, backend="cpp")
        c2, w2 = fast_s2s.additive_attention(qp, kp, v, values, lengths, backend="cpp")
        return (c1 * c2).sum() + (w1 * w2).sum()

    assert_compiled_matches_eager(
        step, (query, keys, values, qp, kp, v, lengths), (query, keys, values, qp, kp, v)
    )


@pytest.mark.slow
def test_torch_compile_inductor():
    case = CASES[2]
    query, keys, values, lengths, scale = _inputs("dot_attention", case)

    def step(query, keys, values):
        context, _ = fast_s2s.dot_attention(query, keys, values, lengths, scale, backend="cpp")
        return torch.tanh(context) * 2

    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(query, keys, values), step(query, keys, values))


@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_inputs(op):
    case = Case(B=3, beam=2, T=4, S=11, D=19, Dv=7, lengths="mixed")
    args = _inputs(op, case)

    noncontig = tuple(transposed_storage(a) for a in args)
    assert any(
        isinstance(a, torch.Tensor) and a.dim() > 1 and not a.is_contiguous() for a in noncontig
    )
    for got, expected in zip(_run(op, noncontig, "cpp"), _run(op, args, "reference"), strict=True):
        torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])


def test_extreme_scores_stay_finite():
    case = Case(B=2, beam=1, T=3, S=9, D=16, Dv=8, lengths="mixed")
    query, keys, values, lengths, _ = _inputs("dot_attention", case)
    query = query * 1e4 / query.norm(dim=-1, keepdim=True)  # scores of order 1e4
    keys = keys / keys.norm(dim=-1, keepdim=True)
    context, weights = fast_s2s.dot_attention(query, keys, values, lengths, backend="cpp")
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    expected = reference.dot_attention(query, keys, values, lengths)
    torch.testing.assert_close(context, expected[0], atol=1e-4, rtol=1e-4)
    qp = torch.full((2, 3, 16), 1e4)
    context, weights = fast_s2s.additive_attention(
        qp, -qp[:, :1].expand(2, 9, 16), torch.full((16,), 1e4), values, lengths, backend="cpp"
    )
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()


@pytest.mark.parametrize("op", OPS)
def test_zero_length_rows_give_zeros_not_nan(op):
    case = Case(B=2, beam=2, T=2, S=5, D=4, Dv=3, lengths="none")
    args = list(_inputs(op, case, requires_grad=True))
    lengths = torch.tensor([0, 3])
    if op == "dot_attention":
        args[3] = lengths
    else:
        args[4] = lengths
    context, weights = _run(op, tuple(args), "cpp")
    assert (context[:2] == 0).all() and (weights[:2] == 0).all()
    (context.sum() + weights.sum()).backward()
    for a in args:
        if isinstance(a, torch.Tensor) and a.requires_grad:
            assert torch.isfinite(a.grad).all()
    assert (args[0].grad[:2] == 0).all()  # rows reading the empty source get no gradient


NEED_WEIGHTS_CASES = [CASES[0], CASES[1], CASES[3], CASES[4]]


@pytest.mark.parametrize("backend", ["cpp", "reference"])
@pytest.mark.parametrize("case", NEED_WEIGHTS_CASES, ids=[c.id for c in NEED_WEIGHTS_CASES])
@pytest.mark.parametrize("op", OPS)
def test_need_weights_false_returns_none_and_the_same_context(op, case, backend):
    """need_weights=False (torch.nn.MultiheadAttention's convention): weights None, the
    context and its gradients those of need_weights=True. These backends compute the weights
    anyway (the C++ op schema has no flag) and drop them."""
    fn = getattr(fast_s2s, op)
    results = {}
    for need_weights in (True, False):
        torch.manual_seed(1)
        args = _inputs(op, case, torch.float32, requires_grad=True)
        context, weights = fn(*args, backend=backend, need_weights=need_weights)
        assert (weights is None) == (not need_weights)
        context.backward(torch.ones_like(context))
        grads = [a.grad for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        results[need_weights] = (context, grads)
    (context, grads), (context_w, grads_w) = results[False], results[True]
    assert torch.equal(context, context_w)
    for g, g_w in zip(grads, grads_w, strict=True):
        assert torch.equal(g, g_w)
    expected = _run(op, args, "reference")[0]  # args: the inputs of the last run
    torch.testing.assert_close(context, expected, **TOLERANCES[torch.float32])


def test_need_weights_false_under_torch_compile():
    case = CASES[3]
    query, keys, values, lengths, scale = _inputs("dot_attention", case, requires_grad=True)
    qp, kp, v, _, _ = _inputs("additive_attention", case, requires_grad=True)

    def step(query, keys, values, qp, kp, v, lengths):
        c1, w1 = fast_s2s.dot_attention(
            query, keys, values, lengths, scale, backend="cpp", need_weights=False
        )
        c2, w2 = fast_s2s.additive_attention(
            qp, kp, v, values, lengths, backend="cpp", need_weights=False
        )
        assert w1 is None and w2 is None
        return (c1 * c2).sum()

    assert_compiled_matches_eager(
        step, (query, keys, values, qp, kp, v, lengths), (query, keys, values, qp, kp, v)
    )


def test_cpp_backend_available_and_labelled():
    assert fast_s2s.resolve_backend("dot_attention", "auto", "cpu") == "cpp"
    assert fast_s2s.available_backends("additive_attention", "cpu")["cpp"] is None
    assert _extension.cpu_capability() in ("default", "avx2", "avx512")
