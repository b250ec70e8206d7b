"""The Triton GRU ops (kernels/gru_ops.py) against the reference: values, gradients, opcheck,
torch.compile and the backend switch.

On the CPU they run in Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py), which
executes every program in numpy, slowly: shapes here are small but hit every path (odd sizes,
H just over a 32-unit block, a batch row past its length, lengths 0 and T, no bias). Both
recurrence forms of gru_layer run (the persistent kernel and one launch per step), and the tl.dot
form of the product is forced once, since the device choice never picks it on the CPU.
Without a GPU, every kernel form is also compiled to a cubin for sm_90 (Triton's NVIDIA back
end needs no device for that). The `cuda` tests run the same code on a GPU in float16, bfloat16
and float32.
"""

from __future__ import annotations

import os

import pytest
import torch

import fast_s2s
from fast_s2s import backends, reference
from tests.compile_checks import assert_compiled_matches_eager
from tests.gru_cases import GruCase, cast, cell_args, sample_inputs

pytest.importorskip("triton")

from fast_s2s.kernels import gru_ops  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
cpu_only_in_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="Triton runs on CPU tensors only with TRITON_INTERPRET=1"
)


CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=4, B=3, I=17, H=16, bias=True, lengths="mixed"),
    GruCase(T=3, B=5, I=33, H=19, bias=False, lengths="mixed"),
    GruCase(T=2, B=4, I=8, H=33, bias=True, lengths="full"),  # H just over a 32-unit block
]
IDS = [c.id for c in CASES]
# float32 against the float32 reference; float64 against the float64 reference.
TOL = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float64: dict(atol=1e-12, rtol=1e-10),
}


def _close_low_precision(got, low_ref, exact):
    """FlashAttention-style: the fused error against float64 is at most twice the reference's
    own error in the same low precision (plus a floor for values that round identically)."""
    fused_err = (got.double() - exact).abs().max().item()
    ref_err = (low_ref.double() - exact).abs().max().item()
    assert fused_err <= 2 * ref_err + 1e-3, (fused_err, ref_err)


@pytest.fixture(params=["persistent", "per_step"])
def recurrence(request, monkeypatch):
    """Runs gru_layer with the persistent kernel or with one launch per step."""
    monkeypatch.setattr(
        gru_ops, "PERSISTENT_MAX_H", 1 << 30 if request.param == "persistent" else 0
    )
    return request.param


def _loss_grads(fn, args, seed=3):
    """Gradients of a random projection of fn's outputs for every argument that needs one."""
    outs = fn(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    gen = torch.Generator().manual_seed(seed)
    loss = sum(
        (o * torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o)).sum() for o in outs
    )
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    return torch.autograd.grad(loss, diff)


# ---------------------------------------------------------------------------------------------
# CPU, interpreter
# ---------------------------------------------------------------------------------------------


@cpu_only_in_interpreter
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gru_cell_matches_reference(case, dtype):
    args = cell_args(sample_inputs(case, dtype))
    got = gru_ops.gru_cell(*args)
    assert got.dtype == dtype and got.shape == (case.B, case.H)
    torch.testing.assert_close(got, reference.gru_cell(*args), **TOL[dtype])


@cpu_only_in_interpreter
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_gru_layer_matches_reference(case, dtype, reverse, recurrence):
    args = sample_inputs(case, dtype)
    out, h_n = gru_ops.gru_layer(*args, reverse=reverse)
    assert out.shape == (case.T, case.B, case.H) and h_n.shape == (case.B, case.H)
    assert out.dtype == dtype and h_n.dtype == dtype
    ref_out, ref_h_n = reference.gru_layer(*args, reverse=reverse)
    torch.testing.assert_close(out, ref_out, **TOL[dtype])
    torch.testing.assert_close(h_n, ref_h_n, **TOL[dtype])


@cpu_only_in_interpreter
@pytest.mark.parametrize("case", CASES[1:], ids=IDS[1:])
def test_gru_cell_backward_matches_reference(case):
    grads = {}
    for name, fn in (("triton", gru_ops.gru_cell), ("reference", reference.gru_cell)):
        torch.manual_seed(1)  # the same inputs for both
        args = cell_args(sample_inputs(case, torch.float64, requires_grad=True))
        grads[name] = _loss_grads(fn, args)
    for got, expected in zip(grads["triton"], grads["reference"], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)


@cpu_only_in_interpreter
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES[1:], ids=IDS[1:])
def test_gru_layer_backward_matches_reference(case, reverse, recurrence):
    grads = {}
    for name, fn in (("triton", gru_ops.gru_layer), ("reference", reference.gru_layer)):
        torch.manual_seed(1)
        *args, lengths = sample_inputs(case, torch.float64, requires_grad=True)
        grads[name] = _loss_grads(
            lambda *a, fn=fn, lengths=lengths: fn(*a, lengths, reverse), tuple(args)
        )
    for got, expected in zip(grads["triton"], grads["reference"], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)


@cpu_only_in_interpreter
def test_gru_layer_backward_float32():
    case = CASES[2]
    grads = {}
    for name, fn in (("triton", gru_ops.gru_layer), ("reference", reference.gru_layer)):
        torch.manual_seed(1)
        *args, lengths = sample_inputs(case, torch.float32, requires_grad=True)
        grads[name] = _loss_grads(
            lambda *a, fn=fn, lengths=lengths: fn(*a, lengths, True), tuple(args)
        )
    for got, expected in zip(grads["triton"], grads["reference"], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@cpu_only_in_interpreter
def test_bfloat16_matches_reference_precision(recurrence):
    """bfloat16 (matrix-vector form): no worse than twice the reference's own bfloat16 error."""
    case = CASES[2]
    args = sample_inputs(case, torch.bfloat16)
    exact_args = cast(args, torch.float64)
    for got, low, exact in zip(
        gru_ops.gru_layer(*args, reverse=True),
        reference.gru_layer(*args, reverse=True),
        reference.gru_layer(*exact_args, reverse=True),
        strict=True,
    ):
        assert got.dtype == torch.bfloat16
        _close_low_precision(got, low, exact)
    cell = cell_args(args)
    _close_low_precision(
        gru_ops.gru_cell(*cell),
        reference.gru_cell(*cell),
        reference.gru_cell(*cell_args(exact_args)),
    )


@cpu_only_in_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_tl_dot_path(dtype, recurrence, monkeypatch):
    """The tensor-core form (tl.dot, 16-row tiles; float16 state split into two halves), which
    the launcher picks only on a GPU. float16 goes to the raw ops: the public API takes float16
    on CUDA only. (The interpreter's tl.dot is wrong for bfloat16, so that runs only on a GPU.)"""
    monkeypatch.setattr(gru_ops, "_FORCE_DOT", True)
    case = GruCase(T=3, B=5, I=33, H=19, bias=True, lengths="mixed")
    args = sample_inputs(case, dtype, requires_grad=True)
    *tensors, lengths = args
    out, h_n, _ = torch.ops.fast_s2s_triton.gru_layer(*tensors, lengths, True)
    h_cell, _ = torch.ops.fast_s2s_triton.gru_cell(*cell_args(args))
    exact = cast(args, torch.float64)
    if dtype == torch.float32:
        ref_out, ref_h_n = reference.gru_layer(*args, reverse=True)
        torch.testing.assert_close(out, ref_out, **TOL[dtype])
        torch.testing.assert_close(h_n, ref_h_n, **TOL[dtype])
        torch.testing.assert_close(h_cell, reference.gru_cell(*cell_args(args)), **TOL[dtype])
    else:
        low = reference.gru_layer(*cast(args, dtype), reverse=True)
        _close_low_precision(out, low[0], reference.gru_layer(*exact, reverse=True)[0])
        _close_low_precision(h_n, low[1], reference.gru_layer(*exact, reverse=True)[1])
    # The backward's recurrent product takes the same path.
    got = torch.autograd.grad((out.float().sum() + h_n.float().sum()), tensors[:4])
    ex = [t.detach().double().requires_grad_() for t in tensors]  # the case has biases
    ref_out, ref_h_n = reference.gru_layer(*ex, lengths, reverse=True)
    expected = torch.autograd.grad(ref_out.sum() + ref_h_n.sum(), ex[:4])
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.double(), e, **tol)


@cpu_only_in_interpreter
def test_edge_cases():
    """All rows of length 0 keep h0 and output zeros; T = 0 returns h0; non-contiguous inputs."""
    case = GruCase(T=3, B=2, I=5, H=6, bias=True, lengths="none")
    x, h0, w_ih, w_hh, b_ih, b_hh, _ = sample_inputs(case)
    out, h_n = gru_ops.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, torch.zeros(2, dtype=torch.int32))
    assert (out == 0).all() and torch.equal(h_n, h0)
    out, h_n = gru_ops.gru_layer(x[:0], h0, w_ih, w_hh, b_ih, b_hh)
    assert out.shape == (0, 2, 6) and torch.equal(h_n, h0)

    x_nc = x.transpose(0, 1).contiguous().transpose(0, 1)  # (T, B, I) view of (B, T, I) storage
    w_nc = w_hh.t().contiguous().t()
    h_nc = h0.t().contiguous().t()
    assert not (x_nc.is_contiguous() or w_nc.is_contiguous() or h_nc.is_contiguous())
    got = gru_ops.gru_layer(x_nc, h_nc, w_ih, w_nc, b_ih, b_hh, torch.tensor([3, 1]), True)
    expected = reference.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, torch.tensor([3, 1]), True)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)
    torch.testing.assert_close(
        gru_ops.gru_cell(x_nc[1], h_nc, w_ih, w_nc, b_ih, b_hh),
        reference.gru_cell(x[1], h0, w_ih, w_hh, b_ih, b_hh),
    )


@cpu_only_in_interpreter
def test_opcheck():
    args = sample_inputs(CASES[2], requires_grad=True)
    torch.library.opcheck(torch.ops.fast_s2s_triton.gru_cell.default, cell_args(args))
    torch.library.opcheck(torch.ops.fast_s2s_triton.gru_layer.default, (*args, True))


@cpu_only_in_interpreter
def test_torch_compile_fullgraph():
    case = GruCase(T=3, B=2, I=16, H=16, bias=True, lengths="mixed")  # I = H: the cell reuses w_ih
    args = sample_inputs(case, requires_grad=True)

    def step(x, h0, w_ih, w_hh, b_ih, b_hh, lengths):
        out, h_n = gru_ops.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
        h2 = gru_ops.gru_cell(out[-1], h_n, w_ih, w_hh, b_ih, b_hh)
        return h2.sum() + out.sum()

    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    assert_compiled_matches_eager(step, args, diff)


@cpu_only_in_interpreter
def test_through_fast_s2s_ops_backend_triton(monkeypatch):
    monkeypatch.setattr(
        backends, "TRITON_KERNELS", backends.TRITON_KERNELS | {"gru_cell", "gru_layer"}
    )
    args = sample_inputs(CASES[1])
    got = fast_s2s.ops.gru_layer(*args, reverse=True, backend="triton")
    for g, e in zip(got, reference.gru_layer(*args, reverse=True), strict=True):
        torch.testing.assert_close(g, e, **TOL[torch.float32])
    cell = cell_args(args)
    torch.testing.assert_close(
        fast_s2s.ops.gru_cell(*cell, backend="triton"),
        reference.gru_cell(*cell),
        **TOL[torch.float32],
    )


# ---------------------------------------------------------------------------------------------
# Compiled for a GPU without one: Triton's NVIDIA back end (with its bundled ptxas) compiles every
# kernel form to a cubin for sm_90, which catches what the interpreter lets through (types that
# differ between branches, tl.dot shape and dtype rules). Outside the interpreter, so in a
# subprocess.
# ---------------------------------------------------------------------------------------------


def _compile_all_for_sm90() -> list[str]:
    """Compile each kernel in its tl.dot (16-bit, split state) and matrix-vector (float64)
    forms for sm_90; returns one line per cubin built. Needs TRITON_INTERPRET unset."""
    import triton
    from fast_s2s.kernels import gru
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def build(kernel, ptr_types, constexprs):
        # Every *_ptr argument is a pointer (float32 unless named), every other one an i32.
        signature = {
            name: "constexpr"
            if name in constexprs
            else ("*" + ptr_types.get(name, "fp32") if name.endswith("_ptr") else "i32")
            for name in kernel.arg_names
        }
        src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
        compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"]
        return (
            f"{kernel.__name__} {ptr_types.get('w_hh_ptr', 'fp32')} USE_DOT={constexprs['USE_DOT']}"
        )

    w16 = dict(w_hh_ptr="bf16", b_ih_ptr="bf16", b_hh_ptr="bf16", lengths_ptr="i64")
    f64 = {
        name: "fp64"
        for name in ("x_ptr", "h_ptr", "w_ih_ptr", "w_hh_ptr", "b_ih_ptr", "b_hh_ptr")
        + ("h_new_ptr", "out_ptr", "work_ptr")
    }
    tiles = dict(BLOCK_B=16, BLOCK_H=64, BLOCK_K=32)
    flags = dict(HAS_B_IH=True, HAS_B_HH=True, HAS_LENGTHS=True, **tiles)
    built = [
        build(
            gru.gru_forward_kernel,
            dict(w16, w_ih_ptr="bf16", out_ptr="bf16"),
            dict(flags, HAS_X=False, HAS_OUT=True, SAVE_H_PREV=True, USE_DOT=True, SPLIT_H=True),
        ),
        build(
            gru.gru_forward_kernel,
            {**f64, "lengths_ptr": "i32"},
            dict(
                flags,
                HAS_X=True,
                HAS_OUT=False,
                SAVE_H_PREV=False,
                USE_DOT=False,
                SPLIT_H=False,
                BLOCK_B=4,
                BLOCK_H=32,
            ),
        ),  # fmt: skip
        build(
            gru.gru_backward_kernel,
            dict(w_hh_ptr="bf16", gout_ptr="bf16", lengths_ptr="i64"),
            dict(HAS_GOUT=True, HAS_LENGTHS=True, USE_DOT=True, SPLIT=True, **tiles),
        ),
        build(
            gru.gru_layer_forward_persistent_kernel,
            dict(w16, out_ptr="bf16"),
            dict(flags, REVERSE=True, USE_DOT=True, SPLIT_H=True),
        ),
        build(
            gru.gru_layer_backward_persistent_kernel,
            dict(
                w_hh_ptr="fp64",
                gout_ptr="fp64",
                work_ptr="fp64",
                dh_a_ptr="fp64",
                dh_b_ptr="fp64",
                dgi_ptr="fp64",
                dgh_ptr="fp64",
            ),
            dict(
                REVERSE=False,
                HAS_LENGTHS=False,
                USE_DOT=False,
                SPLIT=False,
                BLOCK_B=4,
                BLOCK_H=32,
                BLOCK_K=32,
            ),
        ),  # fmt: skip
        build(
            gru.gru_layer_backward_persistent_kernel,
            dict(w_hh_ptr="bf16", gout_ptr="bf16", lengths_ptr="i64"),
            dict(REVERSE=True, HAS_LENGTHS=True, USE_DOT=True, SPLIT=True, **tiles),
        ),
    ]
    return built


def test_kernels_compile_for_sm90():
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import tests.test_triton_gru as t; print(*t._compile_all_for_sm90(), sep='\\n')"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(result.stdout.split("\n")) >= 6, result.stdout


# ---------------------------------------------------------------------------------------------
# CUDA (skipped without a GPU): the same code compiled by Triton for the device
# ---------------------------------------------------------------------------------------------

CUDA_CASES = [
    GruCase(T=5, B=3, I=17, H=19, bias=True, lengths="mixed"),  # matrix-vector, persistent
    GruCase(T=4, B=37, I=65, H=33, bias=False, lengths="mixed"),  # tl.dot, persistent
    GruCase(T=3, B=20, I=40, H=200, bias=True, lengths="mixed"),  # tl.dot, one launch per step
    GruCase(T=3, B=4, I=64, H=257, bias=True, lengths="none"),  # matrix-vector, per step
]
CUDA_IDS = [c.id for c in CUDA_CASES]
CUDA_DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_CASES, ids=CUDA_IDS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_cuda_forward_matches_reference(case, dtype, reverse):
    args = sample_inputs(case, dtype, device="cuda")
    exact = cast(args, torch.float64)
    got = gru_ops.gru_layer(*args, reverse=reverse)
    ref = reference.gru_layer(*args, reverse=reverse)
    ref_exact = reference.gru_layer(*exact, reverse=reverse)
    cell = gru_ops.gru_cell(*cell_args(args))
    cell_ref = reference.gru_cell(*cell_args(args))
    if dtype == torch.float32:
        for g, e in zip(got, ref, strict=True):
            torch.testing.assert_close(g, e, **TOL[dtype])
        torch.testing.assert_close(cell, cell_ref, **TOL[dtype])
    else:
        for g, low, ex in zip(got, ref, ref_exact, strict=True):
            _close_low_precision(g, low, ex)
        _close_low_precision(cell, cell_ref, reference.gru_cell(*cell_args(exact)))


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_CASES, ids=CUDA_IDS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
def test_cuda_backward_matches_reference(case, dtype):
    grads = {}
    for name, fn in (("triton", gru_ops.gru_layer), ("reference", reference.gru_layer)):
        torch.manual_seed(1)
        *args, lengths = sample_inputs(case, dtype, requires_grad=True, device="cuda")
        grads[name] = _loss_grads(
            lambda *a, fn=fn, lengths=lengths: fn(*a, lengths, True), tuple(args)
        )
    tol = TOL[torch.float32] if dtype == torch.float32 else dict(atol=5e-2, rtol=5e-2)
    for got, expected in zip(grads["triton"], grads["reference"], strict=True):
        torch.testing.assert_close(got.float(), expected.float(), **tol)
    cell_grads = {}
    for name, fn in (("triton", gru_ops.gru_cell), ("reference", reference.gru_cell)):
        torch.manual_seed(1)
        args = cell_args(sample_inputs(case, dtype, requires_grad=True, device="cuda"))
        cell_grads[name] = _loss_grads(fn, args)
    for got, expected in zip(cell_grads["triton"], cell_grads["reference"], strict=True):
        torch.testing.assert_close(got.float(), expected.float(), **tol)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_CASES[1:3], ids=CUDA_IDS[1:3])
def test_cuda_gradcheck_float64(case):
    *tensors, lengths = sample_inputs(case, torch.float64, requires_grad=True, device="cuda")
    tensors = [t for t in tensors if t is not None]
    bias = case.bias

    def layer(x, h0, w_ih, w_hh, *b):
        b_ih, b_hh = b if bias else (None, None)
        return gru_ops.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, True)

    assert torch.autograd.gradcheck(layer, tuple(tensors))


@pytest.mark.cuda
def test_cuda_opcheck_and_compile():
    case = GruCase(T=3, B=17, I=16, H=16, bias=True, lengths="mixed")
    args = sample_inputs(case, requires_grad=True, device="cuda")
    torch.library.opcheck(torch.ops.fast_s2s_triton.gru_cell.default, cell_args(args))
    torch.library.opcheck(torch.ops.fast_s2s_triton.gru_layer.default, (*args, False))

    def step(x, h0, w_ih, w_hh, b_ih, b_hh, lengths):
        out, h_n = gru_ops.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
        return gru_ops.gru_cell(out[-1], h_n, w_ih, w_hh, b_ih, b_hh).sum() + out.sum()

    compiled = torch.compile(step, fullgraph=True)
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    got = torch.autograd.grad(compiled(*args), diff)
    expected = torch.autograd.grad(step(*args), diff)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOL[torch.float32])
