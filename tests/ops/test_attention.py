"""dot_attention and additive_attention on every backend, against fast_s2s.reference.

Each shared test is written once and runs over the backends of tests/backends.py: cpp (the C++
kernels), triton (Triton's interpreter on the CPU), emu (the CUDA kernels' code emulated on the
CPU), cuda and triton_cuda (on a GPU: marked `cuda`, skipped without one), and reference where
the check is about the API. Test ids start with the backend: `-k cpp`, `-k emu`, `-m cuda`.
Which cases a backend runs is its own (the interpreter and the emulation are slow, so their
shapes are small but still reach every kernel path); tolerances are the table of
tests/backends.py.

This file holds the shared checks; each kernel family's own paths (the C++ kernels, Triton's
split-over-S forward, launch records and compilation for sm_90, the CUDA kernels, the compiled
ops' own argument checks) are in tests/ops/test_attention_kernels.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from fast_s2s import reference
from tests.attention_cases import CASES, Case, sample_inputs
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

OPS = ["dot_attention", "additive_attention"]
W, NW = "weights", "no_weights"  # need_weights=True / False

# --------------------------------------------------------------------------------------------
# Cases per backend
# --------------------------------------------------------------------------------------------

# cpp: the shared cases (tests/attention_cases.py) reach every C++ kernel path.
# triton (interpreter, slow): small shared cases (S = 1 with D = 1, a 2-D query, beam > 1 with
# lengths containing 0, 1 and S, T > 1 over several key blocks), plus one with beam * T = 20 >= 16
# query rows per source row, which takes the tl.dot path over two row blocks.
DOT_PATH_CASE = Case(B=3, beam=4, T=5, S=19, D=9, Dv=7, lengths="mixed")
TRITON_CASES = [CASES[0], CASES[1], CASES[3], CASES[4], CASES[5], DOT_PATH_CASE]
TRITON_CUDA_CASES = [*CASES, DOT_PATH_CASE]
# cuda: the shared cases, plus the CUDA kernels' own paths.
CUDA_CASES = [
    *CASES,
    Case(B=2, beam=2, T=1, S=40, D=512, Dv=512, lengths="mixed"),  # 16-byte loads, decode-like
    Case(B=1, beam=1, T=1, S=3000, D=64, Dv=72, lengths="none"),  # one row: split over S
    Case(B=3, beam=1, T=None, S=2500, D=40, Dv=24, lengths="mixed"),  # splits past the length
    Case(B=10, beam=5, T=6, S=2100, D=16, Dv=8, lengths="mixed"),  # S over one chunk, many rows
]
# emu (one OS thread per CUDA thread, slow): small shapes through the same paths.
EMU_CASES = [
    Case(B=1, beam=1, T=1, S=1, D=1, Dv=1, lengths="none"),  # scalar loads
    Case(B=3, beam=2, T=2, S=9, D=8, Dv=16, lengths="mixed"),  # 16-byte loads, beam, length 0
    Case(B=2, beam=1, T=None, S=7, D=5, Dv=3, lengths="mixed"),  # 2-D query, odd sizes
    Case(B=1, beam=1, T=1, S=300, D=8, Dv=8, lengths="none"),  # one row: split over S
    Case(B=5, beam=1, T=None, S=260, D=4, Dv=4, lengths="mixed"),  # splits past the length
    Case(B=1, beam=2, T=1, S=3, D=4, Dv=1100, lengths="none"),  # wide values: one group
]


@dataclass(frozen=True)
class KernelPath:
    """The Triton forward's path: attention_ops.NUM_SPLITS (None: choose_split decides) and
    MAX_BLOCK_N (None: the default). The other backends run AUTO, which changes nothing."""

    id: str
    n_splits: int | None = None
    max_block_n: int | None = None

    def apply(self, monkeypatch):
        if self.n_splits is None and self.max_block_n is None:
            return
        from fast_s2s.kernels import attention_ops

        if self.n_splits is not None:
            monkeypatch.setattr(attention_ops, "NUM_SPLITS", self.n_splits)
        if self.max_block_n is not None:
            monkeypatch.setattr(attention_ops, "MAX_BLOCK_N", self.max_block_n)


AUTO = KernelPath("")
SINGLE_PASS = KernelPath("single_pass", n_splits=1)  # whatever choose_split would pick


def split_path(case: Case, n_splits: int = 3) -> KernelPath:
    """The split forward with n_splits chunks over key blocks of 4 (16 on the tl.dot path), so
    that S spans several blocks and chunks; a chunk can also lie wholly past a length."""
    return KernelPath(f"split{n_splits}", n_splits, 16 if case is DOT_PATH_CASE else 4)


def reference_outputs(op, args):
    """(context, weights) of fast_s2s.reference (any dtype and device, no argument checks)."""
    return getattr(reference, op)(*args)


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------


def check_forward(backend, op, case, dtype, need_weights=True):
    """Context and (need_weights) weights against the reference, as the tolerance table says;
    without need_weights the weights come back as None."""
    args = sample_inputs(op, case, backend.device, dtype)
    context, weights = backend.attention(op, args, need_weights)
    assert context.device.type == backend.device and context.dtype == dtype
    if need_weights:
        assert weights.dtype == dtype
        outputs = (context, weights)
    else:
        assert weights is None
        outputs = (context,)
    low = reference_outputs(op, args)[: len(outputs)]
    exact = reference_outputs(op, cast(args, F64))[: len(outputs)]
    tol = tolerance(backend, "forward", dtype, "attention")
    for got, lo, ex in zip(outputs, low, exact, strict=True):
        assert_close_to_reference(got, lo, ex, tol)


LOSSES = {
    "context+weights": "need_weights, a loss on both outputs (grad_weights reaches the kernel)",
    "context": "need_weights, a loss on the context alone (no grad_weights)",
    NW: "need_weights=False, a loss on the context",
}


def check_backward(backend, op, case, dtype, loss):
    """The backend's gradients against autograd through the reference (in `dtype`, or in the
    tolerance's `against` dtype), for a random projection of the outputs LOSSES[loss] names."""
    tol = tolerance(backend, "attention_grad", dtype)
    acc = acc_dtype(dtype)
    grads = {}
    for impl in (backend, REFERENCE):
        torch.manual_seed(1)  # the same inputs for both
        args = sample_inputs(op, case, backend.device, dtype, requires_grad=True)
        if impl is REFERENCE:
            if tol.against is not None:
                args = cast(args, tol.against, requires_grad=True)
            context, weights = reference_outputs(op, args)
        else:
            context, weights = backend.attention(op, args, need_weights=loss != NW)
        torch.manual_seed(2)
        outputs = [context.to(acc)]
        grad_outputs = [torch.randn(context.shape, dtype=acc, device=backend.device)]
        if loss == "context+weights":
            outputs.append(weights.to(acc))
            grad_outputs.append(torch.randn(weights.shape, dtype=acc, device=backend.device))
        grads[impl] = torch.autograd.grad(outputs, diff_inputs(args), grad_outputs)
    for got, expected in zip(grads[backend], grads[REFERENCE], strict=True):
        assert got.dtype == dtype
        torch.testing.assert_close(got.to(acc), expected.to(acc), **tol.close)


FORWARD = [
    *grid(CPP, OPS, CPP.dtypes, CASES, [W, NW], [AUTO]),
    *grid(TRITON, OPS, [F32, F64], TRITON_CASES, [W, NW], [SINGLE_PASS]),
    # 16 bits in the interpreter: one case (S = 17 over blocks of 16: choose_split picks 2).
    *grid(TRITON, OPS, [F16, BF16], [CASES[3]], [W], [AUTO]),
    *grid(EMU, OPS, EMU.dtypes, EMU_CASES, [W], [AUTO]),
    *grid(CUDA, OPS, CUDA.dtypes, CUDA_CASES, [W], [AUTO]),
    *grid(TRITON_CUDA, OPS, TRITON_CUDA.dtypes, TRITON_CUDA_CASES, [W], [AUTO]),
    *grid(TRITON_CUDA, OPS, [F32], TRITON_CUDA_CASES, [NW], [SINGLE_PASS]),
]


@pytest.mark.parametrize("backend,op,dtype,case,weights,path", FORWARD)
def test_forward(backend, op, dtype, case, weights, path, monkeypatch, nan_filled_empty):
    path.apply(monkeypatch)
    check_forward(backend, op, case, dtype, need_weights=weights == W)


BACKWARD = [
    *grid(CPP, OPS, [F32], CASES, ["context+weights", "context", NW], [AUTO]),
    *grid(TRITON, OPS, [F32], TRITON_CASES, ["context+weights", NW], [SINGLE_PASS]),
    # (Its need_weights=False gradients: test_need_weights_false_returns_none_and_the_same_context.)
    *grid(EMU, OPS, [F64], EMU_CASES, ["context+weights", "context"], [AUTO]),
    *grid(CUDA, OPS, [F32, BF16], CUDA_CASES, ["context+weights"], [AUTO]),
    *grid(TRITON_CUDA, OPS, TRITON_CUDA.dtypes, TRITON_CUDA_CASES, ["context+weights"], [AUTO]),
    *grid(TRITON_CUDA, OPS, [F32], TRITON_CUDA_CASES, [NW], [SINGLE_PASS]),
]


@pytest.mark.parametrize("backend,op,dtype,case,loss,path", BACKWARD)
def test_backward(backend, op, dtype, case, loss, path, monkeypatch, nan_filled_empty):
    path.apply(monkeypatch)
    check_backward(backend, op, case, dtype, loss)


def gradcheck_size(case: Case) -> Case:
    """The case cut to a size gradcheck's finite differences can afford."""
    return Case(case.B, case.beam, case.T, min(case.S, 7), min(case.D, 9), min(case.Dv, 6),
                case.lengths)  # fmt: skip


GRADCHECK = [
    *grid(CPP, OPS, [CASES[i] for i in (0, 2, 3, 4, 5, 6)], [W, NW]),
    *grid(TRITON, OPS, [Case(B=2, beam=2, T=2, S=3, D=3, Dv=2, lengths="mixed")], [W, NW]),
    *grid(CUDA, OPS, [Case(B=2, beam=2, T=2, S=6, D=5, Dv=3, lengths="mixed")], [W]),
]


@pytest.mark.parametrize("backend,op,case,weights", GRADCHECK)
def test_gradcheck_float64(backend, op, case, weights):
    args = sample_inputs(op, gradcheck_size(case), backend.device, F64, requires_grad=True)
    diff = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]
    need_weights = weights == W

    def fn(*tensors):
        full = list(args)
        for i, t in zip(diff, tensors, strict=True):
            full[i] = t
        out = backend.attention(op, tuple(full), need_weights)
        return out if need_weights else out[0]

    assert torch.autograd.gradcheck(fn, tuple(args[i] for i in diff))


OPCHECK = [
    *grid(CPP, OPS, [CASES[i] for i in (2, 3, 4, 5)], [W, NW]),
    *grid(TRITON, OPS, [CASES[3]], [W, NW]),
    *grid(CUDA, OPS, [CASES[3]], [W]),
    *grid(TRITON_CUDA, OPS, [DOT_PATH_CASE], [W]),
]


@pytest.mark.parametrize("backend,op,case,weights", OPCHECK)
def test_opcheck(backend, op, case, weights):
    """The custom op's schema, fake function and autograd registration. need_weights=False:
    the CPU kernel still writes the weights, and its fake says so; Triton writes none."""
    args = sample_inputs(op, case, backend.device, requires_grad=True)
    torch.library.opcheck(backend.raw_op(op), args if weights == W else (*args, False))


COMPILE = [
    *grid(CPP, [CASES[3]], [W, NW]),
    *grid(TRITON, [CASES[3]], [W, NW]),
    *grid(CUDA, [Case(B=2, beam=2, T=3, S=9, D=16, Dv=8, lengths="mixed")], [W]),
    *grid(TRITON_CUDA, [CASES[3]], [W]),
]


@pytest.mark.parametrize("backend,case,weights", COMPILE)
def test_torch_compile_fullgraph_forward_and_backward(backend, case, weights):
    """One training step through both ops under torch.compile(fullgraph=True): the eager loss
    and gradients (aot_eager on the CPU, inductor on a GPU)."""
    query, keys, values, lengths, scale = sample_inputs(
        "dot_attention", case, backend.device, requires_grad=True
    )
    qp, kp, v, _, _ = sample_inputs("additive_attention", case, backend.device, requires_grad=True)
    dot, additive = backend.function("dot_attention"), backend.function("additive_attention")
    need_weights = weights == W

    def step(query, keys, values, qp, kp, v, lengths):
        c1, w1 = dot(query, keys, values, lengths, scale, need_weights=need_weights)
        c2, w2 = additive(qp, kp, v, values, lengths, need_weights=need_weights)
        loss = (c1 * c2).sum()
        if not need_weights:
            assert w1 is None and w2 is None
            return loss
        return loss + (w1 * w2).sum()

    # The CUDA C++ kernels' compiled gradients, compared here for the first time, get their
    # gradient tolerance; the others assert_close's defaults.
    tol = tolerance(CUDA, "attention_grad", F32).close if backend is CUDA else None
    assert_compiled_matches_eager(
        step,
        (query, keys, values, qp, kp, v, lengths),
        (query, keys, values, qp, kp, v),
        backend=backend.compile_backend,
        grad_tol=tol,
    )


NONCONTIG_CASE = Case(B=3, beam=2, T=4, S=11, D=19, Dv=7, lengths="mixed")
NON_CONTIGUOUS = [
    *grid(CPP, OPS, [NONCONTIG_CASE]),
    *grid(TRITON, OPS, [NONCONTIG_CASE]),
    *grid(EMU, OPS, [EMU_CASES[1]]),
]


@pytest.mark.parametrize("backend,op,case", NON_CONTIGUOUS)
def test_non_contiguous_inputs(backend, op, case):
    """Transposed storage gives the contiguous inputs' results, bit for bit, and the
    reference's. Kernels must not assume contiguity."""
    args = sample_inputs(op, case, backend.device)
    noncontig = tuple(transposed_storage(a) for a in args)
    assert any(
        isinstance(a, torch.Tensor) and a.dim() > 1 and not a.is_contiguous() for a in noncontig
    )
    got = backend.attention(op, noncontig)
    contiguous = backend.attention(op, args)
    tol = tolerance(backend, "forward", F32, "attention")
    for g, c, e in zip(got, contiguous, reference_outputs(op, args), strict=True):
        torch.testing.assert_close(g, c, atol=0, rtol=0)
        torch.testing.assert_close(g, e, **tol.close)


@pytest.mark.parametrize("backend", [CPP.param(), TRITON.param(), EMU.param()])
def test_extreme_scores_stay_finite(backend):
    """Scores of order 1e4 (dot) and tanh saturated at +-1 times 1e4 (additive): the softmax
    subtracts its maximum. (1e-4: the scores' own float32 rounding, 1e4 * 6e-8, moves the
    weights that much.)"""
    device = backend.device
    case = Case(B=2, beam=1, T=3, S=9, D=16, Dv=8, lengths="mixed")
    query, keys, values, lengths, _ = sample_inputs("dot_attention", case, device)
    query = query * 1e4 / query.norm(dim=-1, keepdim=True)  # scores of order 1e4
    keys = keys / keys.norm(dim=-1, keepdim=True)
    context, weights = backend.dot_attention(query, keys, values, lengths)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    expected = reference.dot_attention(query, keys, values, lengths)
    torch.testing.assert_close(context, expected[0], atol=1e-4, rtol=1e-4)
    qp = torch.full((2, 3, 16), 1e4, device=device)
    kp = -qp[:, :1].expand(2, 9, 16)  # an expanded (stride-0) input, too
    context, weights = backend.additive_attention(
        qp, kp, torch.full((16,), 1e4, device=device), values, lengths
    )
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()


ZERO_LENGTH = [
    *grid(CPP, OPS, [W, NW], [AUTO]),
    # 3 key blocks of 2 over S = 5, so that none of 3 chunks is empty.
    *grid(TRITON, OPS, [W, NW], [KernelPath("single", 1, 2), KernelPath("split", 3, 2)]),
    *grid(EMU, OPS, [W, NW], [AUTO]),
]


@pytest.mark.parametrize("backend,op,weights,path", ZERO_LENGTH)
def test_zero_length_rows_give_zeros_not_nan(backend, op, weights, path, monkeypatch):
    path.apply(monkeypatch)
    case = Case(B=2, beam=2, T=2, S=5, D=4, Dv=3, lengths="none")
    args = list(sample_inputs(op, case, backend.device, requires_grad=True))
    lengths_dtype = torch.int32 if backend is TRITON else torch.int64
    args[3 if op == "dot_attention" else 4] = torch.tensor(
        [0, 3], dtype=lengths_dtype, device=backend.device
    )
    context, weights_out = backend.attention(op, tuple(args), weights == W)
    assert (context[:2] == 0).all() and torch.isfinite(context).all()
    loss = context.sum()
    if weights == W:
        assert (weights_out[:2] == 0).all() and torch.isfinite(weights_out).all()
        assert (weights_out[2:, :, 3:] == 0).all()  # past the length of source row 1
        loss = loss + weights_out.sum()
    loss.backward()
    for a in diff_inputs(args):
        assert torch.isfinite(a.grad).all()
    assert (args[0].grad[:2] == 0).all()  # rows reading the empty source get no gradient


NEED_WEIGHTS_CASES = [CASES[0], CASES[1], CASES[3], CASES[4]]
NEED_WEIGHTS = [
    *grid(REFERENCE, OPS, NEED_WEIGHTS_CASES),
    *grid(CPP, OPS, NEED_WEIGHTS_CASES),
    *grid(TRITON, OPS, [CASES[3]]),
    *grid(EMU, OPS, EMU_CASES[1:5]),  # one split and several
    *grid(CUDA, OPS, CUDA_CASES[-4:]),
]


@pytest.mark.parametrize("backend,op,case", NEED_WEIGHTS)
def test_need_weights_false_returns_none_and_the_same_context(backend, op, case):
    """need_weights=False (torch.nn.MultiheadAttention's convention): weights None; the context
    and its gradients those of the reference and of need_weights=True. The C++ CPU kernels and
    the reference compute the weights anyway and drop them, Triton recomputes them from the LSE
    in both cases (bitwise the same gradients); the CUDA kernels write none and their backward
    recomputes them (close gradients). The emulation shows that the CUDA kernels' context does
    not change; on a GPU that is not asserted (a compiler may contract the two paths apart)."""
    results = {}
    for need_weights in (True, False):
        torch.manual_seed(1)  # the same inputs for both
        args = sample_inputs(op, case, backend.device, requires_grad=True)
        context, weights = backend.attention(op, args, need_weights)
        assert (weights is None) == (not need_weights)
        grad = torch.randn(context.shape, generator=torch.Generator().manual_seed(2))
        grad = grad.to(backend.device)
        # (The CUDA kernels' gradients with weights are not compared: not computed, they are
        # slow to emulate.)
        grads = None
        if not (need_weights and backend.cuda_kernels):
            grads = torch.autograd.grad(context, diff_inputs(args), grad)
        results[need_weights] = (context, grads)
    (context, grads), (context_w, grads_w) = results[False], results[True]
    expected = reference_outputs(op, args)[0]  # args: the inputs of the last run
    expected_grads = torch.autograd.grad(expected, diff_inputs(args), grad)
    torch.testing.assert_close(
        context, expected, **tolerance(backend, "forward", F32, "attention").close
    )
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e, **tolerance(backend, "attention_grad", F32).close)
    if backend is not CUDA:
        assert torch.equal(context, context_w)
    if not backend.cuda_kernels:
        for g, g_w in zip(grads, grads_w, strict=True):
            assert torch.equal(g, g_w)
