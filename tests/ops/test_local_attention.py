"""local_attention (Luong local-m / local-p) on every backend, against fast_s2s.reference.

Each shared test runs over the backends of tests/backends.py (cpp, triton in Triton's
interpreter, emu: the CUDA kernels emulated on the CPU, and the GPU backends cuda and
triton_cuda, skipped without a GPU); tolerances are the table of tests/backends.py. Besides
parity (forward, backward including the centres' gradient, gradcheck, opcheck, torch.compile),
the tests check what makes the op local: a kernel reads no key or value outside the window
(they are NaN there), a far, non-finite or empty window gives zeros, and D = 0 reads one
position; and the API (argument checks, need_weights). The Triton and CUDA kernels' own paths are
in tests/ops/test_local_attention_kernels.py; the modules in tests/nn/test_local_attention.py,
the model in tests/models/test_local_attention_model.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fast_s2s
from fast_s2s import reference
from tests.backends import (
    BF16,
    CPP,
    CUDA,
    EMU,
    F16,
    F32,
    F64,
    REFERENCE,
    TRITON,
    TRITON_CUDA,
    acc_dtype,
    assert_close_to_reference,
    cast,
    diff_inputs,
    grid,
    tolerance,
    transposed_storage,
)
from tests.compile_checks import assert_compiled_matches_eager
from tests.local_attention_cases import LOCAL_CASES, LocalCase, local_sample_inputs

W, NW = "weights", "no_weights"
OP = "local_attention"

# triton (interpreter) and emu (one OS thread per CUDA thread) are slow: small cases that still
# reach every path (D = 0, cut and empty windows, beam > 1, 2-D queries, lengths with 0).
SMALL = [LOCAL_CASES[i] for i in (0, 1, 2, 3, 5)]
LONG = LOCAL_CASES[-1]  # S = 2,000, window 10


def run(backend, args, need_weights=True):
    query, keys, values, centers, window, lengths, scale = args
    return backend.local_attention(
        query, keys, values, centers, window, lengths, scale, need_weights=need_weights
    )


def check_forward(backend, case, dtype, need_weights):
    args = local_sample_inputs(case, backend.device, dtype)
    context, weights = run(backend, args, need_weights)
    assert context.dtype == dtype and context.device.type == backend.device
    assert (weights is None) == (not need_weights)
    outputs = (context,) if weights is None else (context, weights)
    low = reference.local_attention(*args)[: len(outputs)]
    exact = reference.local_attention(*cast(args, F64))[: len(outputs)]
    tol = tolerance(backend, "forward", dtype, "attention")
    for got, lo, ex in zip(outputs, low, exact, strict=True):
        assert_close_to_reference(got, lo, ex, tol)


FORWARD = [
    *grid(CPP, CPP.dtypes, LOCAL_CASES, [W, NW]),
    *grid(TRITON, [F32, F64], SMALL, [W, NW]),
    *grid(TRITON, [F16, BF16], [LOCAL_CASES[3]], [W]),
    *grid(EMU, EMU.dtypes, SMALL, [W, NW]),
    *grid(CUDA, CUDA.dtypes, LOCAL_CASES, [W, NW]),
    *grid(TRITON_CUDA, TRITON_CUDA.dtypes, LOCAL_CASES, [W, NW]),
]


@pytest.mark.parametrize("backend,dtype,case,weights", FORWARD)
def test_forward(backend, dtype, case, weights, nan_filled_empty):
    check_forward(backend, case, dtype, weights == W)


def check_backward(backend, case, dtype, loss):
    """Gradients of query, keys, values and centres against autograd through the reference,
    for a random projection of the outputs."""
    tol = tolerance(backend, "attention_grad", dtype)
    acc = acc_dtype(dtype)
    grads = {}
    for impl in (backend, REFERENCE):
        torch.manual_seed(1)
        args = local_sample_inputs(case, backend.device, dtype, requires_grad=True)
        if impl is REFERENCE:
            if tol.against is not None:
                args = cast(args, tol.against, requires_grad=True)
                args[3].requires_grad_(case.centers != "integer")
            context, weights = reference.local_attention(*args)
        else:
            context, weights = run(backend, args, need_weights=loss != NW)
        torch.manual_seed(2)
        outputs = [context.to(acc)]
        grad_outputs = [torch.randn(context.shape, dtype=acc, device=backend.device)]
        if loss == "context+weights":
            outputs.append(weights.to(acc))
            grad_outputs.append(torch.randn(weights.shape, dtype=acc, device=backend.device))
        # allow_unused: the reference's graph has no path to the centres when no window is
        # non-empty (its gradient is then zero; the kernels return zeros).
        got = torch.autograd.grad(outputs, diff_inputs(args), grad_outputs, allow_unused=True)
        grads[impl] = [
            torch.zeros_like(a) if g is None else g
            for g, a in zip(got, diff_inputs(args), strict=True)
        ]
    for got, expected in zip(grads[backend], grads[REFERENCE], strict=True):
        torch.testing.assert_close(got.to(acc), expected.to(acc), **tol.close)


BACKWARD = [
    *grid(CPP, [F32, F64], LOCAL_CASES, ["context+weights", "context", NW]),
    *grid(CPP, [BF16], [LOCAL_CASES[3]], ["context+weights"]),
    *grid(TRITON, [F32], SMALL, ["context+weights", NW]),
    *grid(EMU, [F64], SMALL, ["context+weights", NW]),
    *grid(CUDA, [F32, BF16], LOCAL_CASES, ["context+weights", NW]),
    *grid(TRITON_CUDA, TRITON_CUDA.dtypes, LOCAL_CASES, ["context+weights", NW]),
]


@pytest.mark.parametrize("backend,dtype,case,loss", BACKWARD)
def test_backward(backend, dtype, case, loss, nan_filled_empty):
    if dtype == BF16 and backend is CPP:
        # bfloat16 gradients: against the reference in float32 at bfloat16's resolution.
        args = local_sample_inputs(case, "cpu", BF16, requires_grad=True)
        context, weights = run(backend, args)
        ((context.float() ** 2).sum() + weights.float().sum()).backward()
        ref = cast(args, F32, requires_grad=True)
        ref[3].requires_grad_(True)
        c, w = reference.local_attention(*ref)
        ((c**2).sum() + w.sum()).backward()
        for got, want in zip(diff_inputs(args), diff_inputs(ref), strict=True):
            assert got.grad.dtype == got.dtype
            torch.testing.assert_close(got.grad.float(), want.grad, atol=5e-2, rtol=5e-2)
        return
    check_backward(backend, case, dtype, loss)


GRADCHECK_CASES = [
    LocalCase(B=2, beam=2, T=2, S=9, D=5, Dv=3, window=2, lengths="mixed"),
    LocalCase(B=1, beam=3, T=None, S=6, D=4, Dv=2, window=1, lengths="none"),
    LocalCase(B=2, beam=1, T=3, S=5, D=3, Dv=2, window=0, lengths="full", centers="integer"),
]
GRADCHECK = [
    *grid(CPP, GRADCHECK_CASES, [W, NW]),
    *grid(TRITON, GRADCHECK_CASES[:1], [W, NW]),
    *grid(EMU, GRADCHECK_CASES[:1], [W]),
    *grid(CUDA, GRADCHECK_CASES, [W]),
]


@pytest.mark.parametrize("backend,case,weights", GRADCHECK)
def test_gradcheck_float64(backend, case, weights):
    """Finite differences in float64, the centres included (random reals are nowhere near a
    window boundary at gradcheck's step of 1e-6; integer centres for D = 0 are not perturbed)."""
    args = local_sample_inputs(case, backend.device, F64, requires_grad=True)
    diff = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    need_weights = weights == W

    def fn(*tensors):
        full = list(args)
        for i, t in zip(diff, tensors, strict=True):
            full[i] = t
        context, w = run(backend, tuple(full), need_weights)
        return (context, w) if need_weights else context

    assert torch.autograd.gradcheck(fn, tuple(args[i] for i in diff))


OPCHECK = [
    *grid(CPP, [LOCAL_CASES[i] for i in (2, 3, 4)], [W, NW]),
    *grid(TRITON, [LOCAL_CASES[3]], [W, NW]),
    *grid(CUDA, [LOCAL_CASES[3]], [W, NW]),
    *grid(TRITON_CUDA, [LOCAL_CASES[3]], [W]),
]


@pytest.mark.parametrize("backend,case,weights", OPCHECK)
def test_opcheck(backend, case, weights):
    """The custom op's schema, fake function and autograd registration."""
    args = local_sample_inputs(case, backend.device, requires_grad=True)
    torch.library.opcheck(backend.raw_op(OP), (*args, weights == W))


@pytest.mark.parametrize("backend", [CPP.param(), CUDA.param()])
def test_backward_op_opcheck(backend):
    args = local_sample_inputs(LOCAL_CASES[3], backend.device)
    query, keys, values, centers, window, lengths, scale = args
    grad_context = torch.randn(*query.shape[:-1], values.shape[-1], device=backend.device)
    grad_weights = torch.randn(*query.shape[:-1], keys.shape[1], device=backend.device)
    for gw in (grad_weights, None):
        torch.library.opcheck(
            backend.raw_op("local_attention_backward"),
            (grad_context, gw, query, keys, values, centers, window, lengths, scale),
        )


COMPILE = [
    *grid(CPP, [LOCAL_CASES[3]], [W, NW]),
    *grid(TRITON, [LOCAL_CASES[2]], [W]),
    *grid(CUDA, [LOCAL_CASES[3]], [W]),
    *grid(TRITON_CUDA, [LOCAL_CASES[3]], [W]),
]


@pytest.mark.parametrize("backend,case,weights", COMPILE)
def test_torch_compile_fullgraph_forward_and_backward(backend, case, weights):
    """A local-p style step under torch.compile(fullgraph=True): centres computed from the
    query in the graph, so their gradient flows back into it."""
    query, keys, values, _, window, lengths, scale = local_sample_inputs(
        case, backend.device, requires_grad=True
    )
    fn = backend.function(OP)
    need_weights = weights == W
    S = keys.shape[1]

    def step(query, keys, values, lengths):
        centers = S * torch.sigmoid(query.sum(-1))  # (N, T), differentiable in the query
        context, w = fn(
            query, keys, values, centers, window, lengths, scale, need_weights=need_weights
        )
        loss = (context**2).sum()
        return loss if w is None else loss + (w * w).sum()

    tol = tolerance(CUDA, "attention_grad", F32).close if backend is CUDA else None
    assert_compiled_matches_eager(
        step,
        (query, keys, values, lengths),
        (query, keys, values),
        backend=backend.compile_backend,
        grad_tol=tol,
    )


@pytest.mark.parametrize("backend", [CPP.param(), TRITON.param(), EMU.param()])
def test_non_contiguous_inputs(backend):
    case = LOCAL_CASES[3]
    args = local_sample_inputs(case, backend.device)
    noncontig = tuple(transposed_storage(a) for a in args)
    assert not noncontig[0].is_contiguous() and not noncontig[3].is_contiguous()
    got, contiguous = run(backend, noncontig), run(backend, args)
    for g, c, e in zip(got, contiguous, reference.local_attention(*args), strict=True):
        torch.testing.assert_close(g, c, atol=0, rtol=0)
        torch.testing.assert_close(g, e, **tolerance(backend, "forward", F32, "attention").close)


# --------------------------------------------------------------------------------------------
# What makes it local
# --------------------------------------------------------------------------------------------

READS_ONLY_THE_WINDOW = [
    *grid(CPP, [LONG, LOCAL_CASES[2]]),
    *grid(TRITON, [LOCAL_CASES[2]]),
    *grid(EMU, [LOCAL_CASES[2]]),
    *grid(CUDA, [LONG]),
    *grid(TRITON_CUDA, [LONG]),
]


@pytest.mark.parametrize("backend,case", READS_ONLY_THE_WINDOW)
def test_reads_only_the_window(backend, case):
    """Keys and values outside every row's window are NaN: a kernel that reads one (a global
    pass over S, a block past the window) returns NaN; one that reads only the window gives the
    reference's result on the finite inputs, forward and backward (the gradients of unread
    positions are exactly zero)."""
    args = local_sample_inputs(case, backend.device, requires_grad=True)
    query, keys, values, centers, window, lengths, scale = args
    S = keys.shape[1]
    offset = torch.arange(S, device=keys.device) - centers.detach().reshape(case.B, -1, 1)
    read = (offset.abs() <= window).any(dim=1)  # (B, S): inside some row's window
    assert not read.all()  # the test means something only if some positions are unread
    poisoned = [
        torch.where(
            read[:, :, None], t.detach(), torch.full((), math.nan, device=t.device)
        ).requires_grad_()
        for t in (keys, values)
    ]
    context, weights = run(backend, (query, *poisoned, centers, window, lengths, scale))
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    expected = reference.local_attention(*args)
    tol = tolerance(backend, "forward", F32, "attention").close
    torch.testing.assert_close(context, expected[0], **tol)
    torch.testing.assert_close(weights, expected[1], **tol)
    grad = torch.randn_like(context)
    got = torch.autograd.grad(context, [query, *poisoned, centers], grad)
    want = torch.autograd.grad(expected[0], [query, keys, values, centers], grad)
    gtol = tolerance(backend, "attention_grad", F32).close
    for g, w in zip(got, want, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, **gtol)
    assert (got[1][~read] == 0).all() and (got[2][~read] == 0).all()


EDGE = [
    *grid(REFERENCE, [W]),
    *grid(CPP, [W, NW]),
    *grid(TRITON, [W, NW]),
    *grid(EMU, [W]),
    *grid(CUDA, [W, NW]),
    *grid(TRITON_CUDA, [W]),
]


@pytest.mark.parametrize("backend,weights", EDGE)
def test_empty_windows_give_zeros_and_finite_gradients(backend, weights):
    """A length-0 source row, centres more than D past either end, NaN and infinite centres:
    zero context, zero weights, finite (zero) gradients; a window cut by either end keeps only
    its inside."""
    device = backend.device
    case = LocalCase(B=2, beam=4, T=None, S=12, D=8, Dv=5, window=2, lengths="none")
    query, keys, values, _, window, _, scale = local_sample_inputs(case, device, requires_grad=True)
    lengths = torch.tensor([0, 12], device=device)
    # rows 0-3 read the empty source row; rows 4-7: far left, far right, NaN, inf.
    centers = torch.tensor([5.0, -3.0, 20.0, 1.0, -2.5, 14.5, math.nan, math.inf], device=device)
    centers.requires_grad_()
    context, w = run(backend, (query, keys, values, centers, window, lengths, scale), weights == W)
    assert (context == 0).all()
    loss = context.sum()
    if w is not None:
        assert (w == 0).all()
        loss = loss + w.sum()
    loss.backward()
    for t in (query, keys, values, centers):
        assert torch.isfinite(t.grad).all() and (t.grad == 0).all()
    # Cut windows: centre -1.5 with D = 2 reads s = 0 only; 12.5 reads s = 11 only (S = 12).
    cut = torch.tensor([-1.5, 12.5] * 4, device=device)
    _, w = run(backend, (query.detach(), keys.detach(), values.detach(), cut, window, None, scale))
    nonzero = [tuple(torch.nonzero(row).flatten().tolist()) for row in w]
    assert nonzero == [(0,), (11,)] * 4
    # Softmax over one position is 1, times the Gaussian at distance 1.5, sigma = 1.
    torch.testing.assert_close(w.sum(-1), torch.full((8,), math.exp(-(1.5**2) / 2), device=device))


@pytest.mark.parametrize("backend", [REFERENCE.param(), CPP.param(), TRITON.param(), EMU.param(),
                                     CUDA.param(), TRITON_CUDA.param()])  # fmt: skip
def test_window_zero_reads_the_single_position_at_the_centre(backend):
    """D = 0: an integer centre reads exactly that position (weight 1, the context is that
    value row); a fractional centre reads nothing."""
    device = backend.device
    keys = torch.randn(1, 6, 4, device=device)
    values = torch.randn(1, 6, 3, device=device)
    query = torch.randn(3, 4, device=device)
    centers = torch.tensor([0.0, 4.0, 2.5], device=device)
    context, w = run(backend, (query, keys, values, centers, 0, None, 1.0))
    torch.testing.assert_close(context[:2], values[0, [0, 4]])
    assert (context[2] == 0).all()
    expected = torch.zeros(3, 6, device=device)
    expected[0, 0] = expected[1, 4] = 1
    torch.testing.assert_close(w, expected)


@pytest.mark.parametrize("backend", [CPP.param(), TRITON.param(), EMU.param(), CUDA.param()])
def test_window_boundary_is_inclusive_and_agrees_with_the_reference(backend):
    """Centres on the window's edge (|s - p| = D exactly) and one float32 ulp either side: the
    kernels select exactly the reference's positions."""
    device = backend.device
    S, window = 40, 3
    base = torch.tensor([10.0, 10.5, 0.0, 39.0, 20.25], dtype=torch.float32)
    ulp_up = torch.nextafter(base, torch.tensor(math.inf))
    ulp_down = torch.nextafter(base, torch.tensor(-math.inf))
    centers = torch.cat([base, ulp_up, ulp_down]).to(device)
    n = centers.shape[0]
    query = torch.randn(n, 8, device=device)
    keys, values = torch.randn(1, S, 8, device=device), torch.randn(1, S, 4, device=device)
    _, w = run(backend, (query, keys, values, centers, window, None, 1.0))
    _, expected = reference.local_attention(query, keys, values, centers, window)
    assert torch.equal(w != 0, expected != 0)
    assert (w[0] != 0).sum() == 2 * window + 1  # an integer centre: 2D + 1 positions


@pytest.mark.parametrize("backend", [CPP.param(), TRITON.param(), EMU.param(), CUDA.param(),
                                     TRITON_CUDA.param()])  # fmt: skip
def test_a_window_wider_than_the_source_costs_the_source(backend):
    """window = 10^9 over S = 30: every valid position takes part (the Gaussian is 1 to float
    precision), forward and backward, and no buffer is sized by the window (2 * 10^9 + 1
    positions would not fit in memory)."""
    case = LocalCase(B=2, beam=2, T=3, S=30, D=16, Dv=8, window=10**9, lengths="mixed")
    args = local_sample_inputs(case, backend.device, requires_grad=True)
    context, weights = run(backend, args)
    expected = reference.local_attention(*args)
    tol = tolerance(backend, "forward", F32, "attention").close
    torch.testing.assert_close(context, expected[0], **tol)
    torch.testing.assert_close(weights, expected[1], **tol)
    grad = torch.randn_like(context)
    got = torch.autograd.grad(context, diff_inputs(args), grad)
    want = torch.autograd.grad(expected[0], diff_inputs(args), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tolerance(backend, "attention_grad", F32).close)


@pytest.mark.parametrize("backend", [CPP.param(), TRITON.param(), EMU.param()])
def test_saturating_scores_stay_finite(backend):
    """Scores of order 1e4: the window's softmax subtracts its maximum."""
    case = LocalCase(B=2, beam=1, T=3, S=30, D=16, Dv=8, window=4, lengths="mixed")
    query, keys, values, centers, window, lengths, _ = local_sample_inputs(case, backend.device)
    query = query * 1e4 / query.norm(dim=-1, keepdim=True)
    keys = keys / keys.norm(dim=-1, keepdim=True)
    context, w = run(backend, (query, keys, values, centers, window, lengths, 1.0))
    assert torch.isfinite(context).all() and torch.isfinite(w).all()
    expected = reference.local_attention(query, keys, values, centers, window, lengths)
    torch.testing.assert_close(context, expected[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend", [CPP.param()])
@settings(max_examples=40, deadline=None)
@given(
    beam=st.integers(1, 3),
    T=st.integers(1, 4),
    S=st.integers(1, 80),
    window=st.integers(0, 12),
    shift=st.floats(-20, 20),
    data=st.data(),
)
def test_matches_the_reference_on_random_shapes(backend, beam, T, S, window, shift, data):
    """Property test: any window, any centres (the same integer-or-real mix users produce:
    t, t + shift, S * sigmoid), any lengths; forward and all four gradients."""
    B = 2
    lengths = torch.tensor([data.draw(st.integers(0, S)) for _ in range(B)])
    query = torch.randn(B * beam, T, 8, dtype=F64, requires_grad=True)
    keys = torch.randn(B, S, 8, dtype=F64, requires_grad=True)
    values = torch.randn(B, S, 3, dtype=F64, requires_grad=True)
    centers = (torch.arange(T, dtype=F64) + shift).expand(B * beam, T).clone()
    centers[::2] = S * torch.sigmoid(torch.randn(centers[::2].shape, dtype=F64))
    centers.requires_grad_()
    inputs = (query, keys, values, centers)
    outs = {}
    for impl in (backend, REFERENCE):
        c, w = run(impl, (*inputs, window, lengths, 0.5))
        loss = (c * torch.linspace(-1, 1, c.numel(), dtype=F64).view_as(c)).sum() + (w**2).sum()
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
        outs[impl] = [
            c,
            w,
            *(torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)),
        ]
    for got, want in zip(outs[backend], outs[REFERENCE], strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-9)


# --------------------------------------------------------------------------------------------
# The API
# --------------------------------------------------------------------------------------------


def test_cpp_runs_the_cpu_kernel():
    assert fast_s2s.resolve_backend(OP, "auto", "cpu") == "cpp"
    assert fast_s2s.available_backends(OP, "cpu")["cpp"] is None


def _good():
    case = LocalCase(B=2, beam=1, T=3, S=10, D=4, Dv=2, window=2, lengths="none")
    q, k, v, c, window, _, _ = local_sample_inputs(case)
    return dict(query=q, keys=k, values=v, centers=c, window=window)


@pytest.mark.parametrize(
    "change,error,message",
    [
        (
            dict(centers=torch.zeros(2, 4)),
            ValueError,
            r"centers must have shape \(N, T\) = \(2, 3\)",
        ),
        (dict(centers=torch.zeros(2, 3, dtype=torch.int64)), ValueError, "centers must be one of"),
        (dict(centers=[[0.0] * 3] * 2), TypeError, "centers must be a torch.Tensor"),
        (dict(window=-1), ValueError, "window must be a non-negative int, got -1"),
        (dict(window=2.5), TypeError, "window must be a non-negative int, got 2.5"),
        (dict(window=True), TypeError, "window must be a non-negative int, got True"),
        (
            dict(query=torch.zeros(3, 3, 4)),
            ValueError,
            r"the number of query rows \(3\) must be a multiple",
        ),
    ],
)
@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_bad_arguments_are_refused_with_a_message(backend, change, error, message):
    kwargs = {**_good(), **change}
    with pytest.raises(error, match=f"local_attention: {message}"):
        fast_s2s.local_attention(**kwargs, backend=backend)


@pytest.mark.parametrize(
    "what",
    ["centers shape", "window", "lengths past S", "grad_context shape"],
)
def test_compiled_op_refuses_bad_input_with_a_message(what):
    """torch.ops.fast_s2s.local_attention called directly (no Python checks) checks too."""
    good = _good()
    args = [good["query"], good["keys"], good["values"], good["centers"], 2, None, 1.0, True]
    op = torch.ops.fast_s2s.local_attention
    if what == "centers shape":
        args[3] = torch.zeros(6)
        match = r"local_attention: centers must have shape \(N, T\)"
    elif what == "window":
        args[4] = -3
        match = "local_attention: window must be a non-negative int, got -3"
    elif what == "lengths past S":
        args[5] = torch.tensor([3, 11])
        match = r"local_attention: lengths\[1\] = 11 is out of range"
    else:
        op = torch.ops.fast_s2s.local_attention_backward
        args = [torch.zeros(2, 3, 5), None, *args[:4], 2, None, 1.0]
        match = "local_attention_backward: grad_context must match the output shape"
    with pytest.raises(RuntimeError, match=match):
        op(*args)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_need_weights_false_gives_none_and_the_same_context_and_gradients(backend):
    results = {}
    for need_weights in (True, False):
        torch.manual_seed(3)
        args = local_sample_inputs(LOCAL_CASES[4], requires_grad=True)
        query, keys, values, centers, window, lengths, scale = args
        context, w = fast_s2s.local_attention(
            query, keys, values, centers, window, lengths, scale, backend=backend,
            need_weights=need_weights,
        )  # fmt: skip
        assert (w is None) == (not need_weights)
        grads = torch.autograd.grad(context.sum(), diff_inputs(args))
        results[need_weights] = (context, grads)
    assert torch.equal(results[True][0], results[False][0])
    for a, b in zip(results[True][1], results[False][1], strict=True):
        assert torch.equal(a, b)
