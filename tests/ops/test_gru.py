"""gru_cell and gru_layer on every backend, against fast_s2s.reference.

Each shared test is written once and runs over the backends of tests/backends.py: cpp (the C++
kernels), triton (Triton's interpreter on the CPU), emu (the CUDA kernels' code emulated on the
CPU), cuda and triton_cuda (on a GPU: marked `cuda`, skipped without one), and reference where
the check is about the API. Test ids start with the backend: `-k cpp`, `-k emu`, `-m cuda`.
Which cases a backend runs is its own (the interpreter and the emulation are slow, so their
shapes are small but still reach every kernel path); tolerances are the table of
tests/backends.py.

Sections: the shared checks; the public API's argument checks. Each kernel family's own paths
(Triton's tl.dot form, dispatch and compilation for sm_90; the CUDA kernels; the compiled ops'
own argument checks) are in tests/ops/test_gru_kernels.py, the one-op GRU stack in
tests/ops/test_gru_stack.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import fast_s2s
from fast_s2s import reference
from tests.backends import (
    BF16,
    CPP,
    CUDA,
    EMU,
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
from tests.gru_cases import GruCase, cell_args, sample_inputs

GRU_OPS = ["gru_cell", "gru_layer"]
DIRECTIONS = ["forward", "reverse"]

# --------------------------------------------------------------------------------------------
# Cases per backend
# --------------------------------------------------------------------------------------------

# cpp: batch 1..4 (matrix-vector), 5 (a 4-row tile plus a remainder), 70 (over the 64-row
# chunk); feature sizes just over a SIMD block; T = 1; lengths with 0, 1 and T.
CPP_CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=4, B=3, I=17, H=16, bias=True, lengths="mixed"),
    GruCase(T=5, B=5, I=33, H=19, bias=False, lengths="mixed"),
    GruCase(T=3, B=70, I=8, H=17, bias=True, lengths="full"),
    GruCase(T=6, B=4, I=65, H=33, bias=True, lengths="none"),
]
# triton (interpreter, slow): small shapes through every path (odd sizes, H just over a 32-unit
# block, a batch row past its length, lengths 0 and T, no bias).
TRITON_CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=4, B=3, I=17, H=16, bias=True, lengths="mixed"),
    GruCase(T=3, B=5, I=33, H=19, bias=False, lengths="mixed"),
    GruCase(T=2, B=4, I=8, H=33, bias=True, lengths="full"),  # H just over a 32-unit block
]
TRITON_CUDA_CASES = [
    GruCase(T=5, B=3, I=17, H=19, bias=True, lengths="mixed"),  # matrix-vector, persistent
    GruCase(T=4, B=37, I=65, H=33, bias=False, lengths="mixed"),  # tl.dot, persistent
    GruCase(T=3, B=20, I=40, H=200, bias=True, lengths="mixed"),  # tl.dot, one launch per step
    GruCase(T=3, B=4, I=64, H=257, bias=True, lengths="none"),  # matrix-vector, per step
]
# cuda: B <= 16 takes the fused matrix-vector kernel, B > 16 cuBLAS + the gate kernel; H and I
# multiples of 8 take 16-byte loads.
CUDA_CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=4, B=3, I=17, H=16, bias=True, lengths="mixed"),
    GruCase(T=5, B=9, I=64, H=32, bias=False, lengths="mixed"),  # a tile of 8 + 1 row
    GruCase(T=3, B=16, I=256, H=128, bias=True, lengths="none"),
    GruCase(T=4, B=40, I=33, H=19, bias=True, lengths="mixed"),  # cuBLAS path
    GruCase(T=3, B=20, I=64, H=64, bias=False, lengths="full"),
]
# emu (slow): B <= 16 the fused small-batch kernel (tiles of 8 rows, 16-byte loads when I, H % 4
# == 0 in float32); B > 16 the cuBLAS-path products (at::mm here) and the gate kernel.
EMU_CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=3, B=3, I=8, H=12, bias=True, lengths="mixed"),
    GruCase(T=2, B=9, I=5, H=7, bias=False, lengths="mixed"),  # 8 + 1 rows, scalar loads
    GruCase(T=3, B=18, I=6, H=5, bias=True, lengths="mixed"),  # the large-batch path
]


@dataclass(frozen=True)
class Recurrence:
    """How Triton's gru_layer runs the recurrence: the persistent kernel or one launch per step
    (gru_ops.PERSISTENT_MAX_H; None: the default choice). The other backends run AUTO."""

    id: str
    persistent_max_h: int | None = None

    def apply(self, monkeypatch):
        if self.persistent_max_h is not None:
            from fast_s2s.kernels import gru_ops

            monkeypatch.setattr(gru_ops, "PERSISTENT_MAX_H", self.persistent_max_h)


AUTO = Recurrence("")
PERSISTENT = Recurrence("persistent", 1 << 30)
PER_STEP = Recurrence("per_step", 0)
RECURRENCES = [PERSISTENT, PER_STEP]


def loss_grads(outputs, args, seed=3):
    """Gradients of a random projection of `outputs` for every argument that needs one (None
    for one the outputs do not depend on)."""
    gen = torch.Generator().manual_seed(seed)
    grad_outputs = [torch.randn(o.shape, generator=gen, dtype=F64).to(o) for o in outputs]
    return torch.autograd.grad(outputs, diff_inputs(args), grad_outputs, allow_unused=True)


def assert_grads_close(got, expected, dtype, tol):
    acc = acc_dtype(dtype)
    for g, e in zip(got, expected, strict=True):
        if e is None:
            assert g is None or not g.any()
            continue
        assert g.dtype == dtype
        torch.testing.assert_close(g.to(acc), e.to(acc), **tol.close)


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------

CELL_FORWARD = [
    *grid(CPP, CPP.dtypes, CPP_CASES),
    *grid(TRITON, [F32, F64], TRITON_CASES),
    *grid(TRITON, [BF16], [TRITON_CASES[2]]),  # the matrix-vector form in bfloat16
    *grid(EMU, EMU.dtypes, EMU_CASES),
    *grid(CUDA, CUDA.dtypes, CUDA_CASES),
    *grid(TRITON_CUDA, TRITON_CUDA.dtypes, TRITON_CUDA_CASES),
]


@pytest.mark.parametrize("backend,dtype,case", CELL_FORWARD)
def test_gru_cell_forward(backend, dtype, case, nan_filled_empty):
    args = cell_args(sample_inputs(case, dtype, device=backend.device))
    got = backend.gru_cell(*args)
    assert got.device.type == backend.device and got.dtype == dtype
    assert got.shape == (case.B, case.H)
    assert_close_to_reference(got, reference.gru_cell(*args), reference.gru_cell(*cast(args, F64)),
                              tolerance(backend, "forward", dtype, "gru"))  # fmt: skip


LAYER_FORWARD = [
    *grid(CPP, CPP.dtypes, CPP_CASES, DIRECTIONS, [AUTO]),
    *grid(TRITON, [F32, F64], TRITON_CASES, DIRECTIONS, RECURRENCES),
    *grid(TRITON, [BF16], [TRITON_CASES[2]], ["reverse"], RECURRENCES),
    *grid(EMU, EMU.dtypes, EMU_CASES, DIRECTIONS, [AUTO]),
    *grid(CUDA, CUDA.dtypes, CUDA_CASES, DIRECTIONS, [AUTO]),
    *grid(TRITON_CUDA, TRITON_CUDA.dtypes, TRITON_CUDA_CASES, DIRECTIONS, [AUTO]),
]


@pytest.mark.parametrize("backend,dtype,case,direction,recurrence", LAYER_FORWARD)
def test_gru_layer_forward(backend, dtype, case, direction, recurrence, monkeypatch,
                           nan_filled_empty):  # fmt: skip
    recurrence.apply(monkeypatch)
    reverse = direction == "reverse"
    args = sample_inputs(case, dtype, device=backend.device)
    out, h_n = backend.gru_layer(*args, reverse=reverse)
    assert out.shape == (case.T, case.B, case.H) and h_n.shape == (case.B, case.H)
    for got in (out, h_n):
        assert got.device.type == backend.device and got.dtype == dtype
    low = reference.gru_layer(*args, reverse=reverse)
    exact = reference.gru_layer(*cast(args, F64), reverse=reverse)
    tol = tolerance(backend, "forward", dtype, "gru")
    for got, lo, ex in zip((out, h_n), low, exact, strict=True):
        assert_close_to_reference(got, lo, ex, tol)


CELL_BACKWARD = [
    *grid(CPP, [F64], CPP_CASES),
    *grid(TRITON, [F64], TRITON_CASES[1:]),
    *grid(EMU, [F64], EMU_CASES),
    *grid(CUDA, [F32], CUDA_CASES),
    *grid(TRITON_CUDA, TRITON_CUDA.dtypes, TRITON_CUDA_CASES),
]


@pytest.mark.parametrize("backend,dtype,case", CELL_BACKWARD)
def test_gru_cell_backward(backend, dtype, case):
    """The backend's gradients against autograd through the reference in the same dtype."""
    grads = {}
    for impl in (backend, REFERENCE):
        torch.manual_seed(1)  # the same inputs for both
        args = cell_args(sample_inputs(case, dtype, requires_grad=True, device=backend.device))
        out = backend.gru_cell(*args) if impl is backend else reference.gru_cell(*args)
        grads[impl] = loss_grads((out,), args)
    assert_grads_close(grads[backend], grads[REFERENCE], dtype,
                       tolerance(backend, "gru_grad", dtype))  # fmt: skip


LAYER_BACKWARD = [
    *grid(CPP, [F64, F32], CPP_CASES, DIRECTIONS, [AUTO]),
    *grid(TRITON, [F64], TRITON_CASES[1:], DIRECTIONS, RECURRENCES),
    *grid(TRITON, [F32], [TRITON_CASES[2]], ["reverse"], [AUTO]),
    *grid(EMU, [F64], EMU_CASES, DIRECTIONS, [AUTO]),
    *grid(CUDA, [F32], CUDA_CASES, DIRECTIONS, [AUTO]),
    *grid(TRITON_CUDA, TRITON_CUDA.dtypes, TRITON_CUDA_CASES, ["reverse"], [AUTO]),
]


@pytest.mark.parametrize("backend,dtype,case,direction,recurrence", LAYER_BACKWARD)
def test_gru_layer_backward(backend, dtype, case, direction, recurrence, monkeypatch):
    """Gradients of a loss on both outputs against autograd through the reference."""
    recurrence.apply(monkeypatch)
    reverse = direction == "reverse"
    grads = {}
    for impl in (backend, REFERENCE):
        torch.manual_seed(1)
        args = sample_inputs(case, dtype, requires_grad=True, device=backend.device)
        fn = backend.gru_layer if impl is backend else reference.gru_layer
        grads[impl] = loss_grads(fn(*args, reverse=reverse), args)
    assert_grads_close(grads[backend], grads[REFERENCE], dtype,
                       tolerance(backend, "gru_grad", dtype))  # fmt: skip


GRADCHECK = [
    *grid(CPP, GRU_OPS, CPP_CASES[:3]),
    *grid(CUDA, GRU_OPS, [GruCase(T=3, B=3, I=5, H=4, bias=True, lengths="mixed")]),
    *grid(TRITON_CUDA, ["gru_layer"], TRITON_CUDA_CASES[1:3]),
]


@pytest.mark.parametrize("backend,op,case", GRADCHECK)
def test_gru_gradcheck_float64(backend, op, case):
    """gru_layer (reverse) and gru_cell (on x[0]) against finite differences."""
    *tensors, lengths = sample_inputs(case, F64, requires_grad=True, device=backend.device)
    tensors = [t for t in tensors if t is not None]

    def fn(x, h0, w_ih, w_hh, *b):
        b_ih, b_hh = b if case.bias else (None, None)
        if op == "gru_layer":
            return backend.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, True)
        return backend.gru_cell(x[0], h0, w_ih, w_hh, b_ih, b_hh)

    assert torch.autograd.gradcheck(fn, tuple(tensors))


OPCHECK_LAYER_TRITON_CUDA = GruCase(T=3, B=17, I=16, H=16, bias=True, lengths="mixed")
OPCHECK = [
    *grid(CPP, ["gru_cell"], CPP_CASES[1:3], [""]),
    *grid(CPP, ["gru_layer"], CPP_CASES[1:3], ["reverse"]),
    *grid(TRITON, ["gru_cell"], [TRITON_CASES[2]], [""]),
    *grid(TRITON, ["gru_layer"], [TRITON_CASES[2]], ["reverse"]),
    *grid(CUDA, ["gru_cell"], [CUDA_CASES[1], CUDA_CASES[4]], [""]),
    *grid(CUDA, ["gru_layer"], [CUDA_CASES[1], CUDA_CASES[4]], ["reverse"]),
    *grid(TRITON_CUDA, ["gru_cell"], [OPCHECK_LAYER_TRITON_CUDA], [""]),
    *grid(TRITON_CUDA, ["gru_layer"], [OPCHECK_LAYER_TRITON_CUDA], ["forward"]),
]


@pytest.mark.parametrize("backend,op,case,direction", OPCHECK)
def test_gru_opcheck(backend, op, case, direction):
    """The custom op's schema, fake function and autograd registration."""
    args = sample_inputs(case, requires_grad=True, device=backend.device)
    op_args = cell_args(args) if op == "gru_cell" else (*args, direction == "reverse")
    torch.library.opcheck(backend.raw_op(op), op_args)


COMPILE_CASE = GruCase(T=3, B=2, I=16, H=16, bias=True, lengths="mixed")  # I = H: see the step
COMPILE = [
    *grid(CPP, [COMPILE_CASE]),
    *grid(TRITON, [COMPILE_CASE]),
    *grid(CUDA, [GruCase(T=5, B=9, I=32, H=32, bias=False, lengths="mixed")]),  # 8 + 1 rows
    *grid(TRITON_CUDA, [GruCase(T=3, B=17, I=16, H=16, bias=True, lengths="mixed")]),
]


@pytest.mark.parametrize("backend,case", COMPILE)
def test_gru_torch_compile_fullgraph(backend, case):
    """A layer and a cell on its last output under torch.compile(fullgraph=True): the eager loss
    and gradients (aot_eager on the CPU, inductor on a GPU)."""
    args = sample_inputs(case, requires_grad=True, device=backend.device)
    layer, cell = backend.function("gru_layer"), backend.function("gru_cell")

    def step(x, h0, w_ih, w_hh, b_ih, b_hh, lengths):
        out, h_n = layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
        h2 = cell(out[-1], h_n, w_ih, w_hh, b_ih, b_hh)  # the cell reuses w_ih: I = H
        return h2.sum() + out.sum()

    # On a GPU, the backend's gradient tolerance (inductor may reorder the sums around the
    # ops): triton_cuda's as before the merge; the CUDA C++ kernels' compiled gradients are
    # compared for the first time.
    tol = tolerance(backend, "gru_grad", F32).close if backend.gpu else None
    assert_compiled_matches_eager(
        step, args, diff_inputs(args), backend=backend.compile_backend, grad_tol=tol
    )


LAYOUTS = {
    # x a (T, B, I) view of (B, T, I) storage, h0 and the weights transposed.
    "batch_major": lambda t: (
        t.transpose(0, 1).contiguous().transpose(0, 1) if t.dim() == 3 else transposed_storage(t)
    ),
    "transposed": transposed_storage,  # every dimension's order reversed in memory
}
NON_CONTIGUOUS = [
    *grid(CPP, [CPP_CASES[1]], LAYOUTS),
    *grid(TRITON, [GruCase(T=3, B=3, I=5, H=6, bias=True, lengths="mixed")], LAYOUTS),
    *grid(EMU, [EMU_CASES[1]], LAYOUTS),
]


@pytest.mark.parametrize("backend,case,layout", NON_CONTIGUOUS)
def test_gru_non_contiguous_inputs(backend, case, layout):
    """Non-contiguous x, h0 and weights give the contiguous inputs' results and the
    reference's, in both directions and for the cell. Bit for bit where the host code makes
    the inputs contiguous (C++, CUDA); Triton reads them in place, and its products' summation
    order follows the strides (measured: 5e-8 apart)."""
    exact = dict(atol=0, rtol=0) if backend.kind != "triton" else {}
    args = sample_inputs(case, device=backend.device)
    x, h0, w_ih, w_hh, b_ih, b_hh, lengths = args
    relayout = LAYOUTS[layout]
    nc = (relayout(x), relayout(h0), relayout(w_ih), relayout(w_hh), b_ih, b_hh, lengths)
    assert not any(t.is_contiguous() for t in nc[:4])
    for reverse in (False, True):
        got = backend.gru_layer(*nc, reverse=reverse)
        contiguous = backend.gru_layer(*args, reverse=reverse)
        expected = reference.gru_layer(*args, reverse=reverse)
        for g, c, e in zip(got, contiguous, expected, strict=True):
            torch.testing.assert_close(g, c, **exact)
            torch.testing.assert_close(g, e)
    got = backend.gru_cell(nc[0][1], nc[1], nc[2], nc[3], b_ih, b_hh)
    torch.testing.assert_close(got, backend.gru_cell(x[1], h0, w_ih, w_hh, b_ih, b_hh), **exact)
    torch.testing.assert_close(got, reference.gru_cell(x[1], h0, w_ih, w_hh, b_ih, b_hh))


@pytest.mark.parametrize("backend", [CPP.param(), TRITON.param(), EMU.param()])
def test_gru_length_zero_rows_keep_h0_and_get_no_input_gradient(backend):
    """A row of length 0 keeps h0, outputs zeros and passes its gradient straight to h0; all
    rows of length 0 return h0; T = 0 returns h0."""
    device = backend.device
    case = GruCase(T=4, B=2, I=5, H=6, bias=True, lengths="none")
    x, h0, w_ih, w_hh, b_ih, b_hh, _ = sample_inputs(case, requires_grad=True, device=device)
    out, h_n = backend.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, torch.tensor([0, 4], device=device))
    assert torch.equal(h_n[0], h0[0]) and (out[:, 0] == 0).all()
    (out.sum() + h_n.sum()).backward()
    assert (x.grad[:, 0] == 0).all() and torch.equal(h0.grad[0], torch.ones(6, device=device))
    with torch.no_grad():
        zeros = torch.zeros(2, dtype=torch.int32, device=device)
        out, h_n = backend.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, zeros)
        assert (out == 0).all() and torch.equal(h_n, h0)
        out, h_n = backend.gru_layer(x[:0], h0, w_ih, w_hh, b_ih, b_hh)
        assert out.shape == (0, 2, 6) and torch.equal(h_n, h0)


# --------------------------------------------------------------------------------------------
# The public API's argument checks (fast_s2s.checks, before any backend runs)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "what,change,message",
    [
        ("x-rank", dict(x=torch.randn(4, 3)), r"x must be 3-D \(T, B, I\)"),
        ("h0-shape", dict(h0=torch.randn(2, 6)), r"h0 must have shape \(B, H\) with B = 3"),
        (
            "w_ih-shape",
            dict(w_ih=torch.randn(18, 4)),
            r"w_ih must have shape \(3H, I\) = \(18, 5\)",
        ),
        (
            "w_hh-shape",
            dict(w_hh=torch.randn(18, 5)),
            r"w_hh must have shape \(3H, H\) = \(18, 6\)",
        ),
        ("b_ih-shape", dict(b_ih=torch.randn(17)), r"b_ih must have shape \(3H,\) = \(18,\)"),
        ("len-too-long", dict(lengths=torch.tensor([1, 5, 2])), r"lengths must lie in \[0, T\]"),
        ("len-count", dict(lengths=torch.tensor([1, 2])), r"lengths must have shape \(3,\)"),
        (
            "mixed-dtype",
            dict(h0=torch.randn(3, 6, dtype=torch.float64)),
            r"h0 must have the dtype of x",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and "(" not in v else None,
)
@pytest.mark.parametrize("backend", [REFERENCE.param(), CPP.param()])
def test_gru_layer_bad_input(backend, what, change, message):
    args = dict(
        x=torch.randn(4, 3, 5),
        h0=torch.randn(3, 6),
        w_ih=torch.randn(18, 5),
        w_hh=torch.randn(18, 6),
        b_ih=torch.randn(18),
        b_hh=torch.randn(18),
        lengths=None,
    )
    args.update(change)
    with pytest.raises(ValueError, match=message):
        fast_s2s.gru_layer(**args, backend=backend.kind)
