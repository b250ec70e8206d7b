"""gru_cell and gru_layer: each kernel family's own paths, beyond the shared checks of
tests/ops/test_gru.py (whose cases and helpers this file uses).

Sections: Triton (the tl.dot form, the public API's dispatch, compilation for sm_90); the CUDA
kernels (emulated and on a GPU); the compiled ops' own argument checks (what reaches
torch.ops.fast_s2s.* without fast_s2s.ops' Python checks).
"""

from __future__ import annotations

import os

import pytest
import torch

import fast_s2s
from fast_s2s import _extension, backends, reference
from tests.backends import (
    CPP,
    CUDA,
    EMU,
    F16,
    F32,
    F64,
    TRITON,
    acc_dtype,
    assert_close_to_reference,
    cast,
    grid,
    tolerance,
)
from tests.gru_cases import GruCase, cell_args, sample_inputs
from tests.ops.test_gru import (
    CPP_CASES,
    EMU_CASES,
    GRU_OPS,
    RECURRENCES,
    TRITON_CASES,
)

# --------------------------------------------------------------------------------------------
# Triton: the tl.dot form, the public API's dispatch, compilation for sm_90
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend,dtype,recurrence", grid(TRITON, [F32, F16], RECURRENCES))
def test_triton_tl_dot_path(backend, dtype, recurrence, monkeypatch):
    """The tensor-core form (tl.dot, 16-row tiles; float16 state split into two halves), which
    the launcher picks only on a GPU. float16 goes to the raw ops: the public API takes float16
    on CUDA only. (The interpreter's tl.dot is wrong for bfloat16, so that runs only on a GPU.)"""
    from fast_s2s.kernels import gru_ops

    recurrence.apply(monkeypatch)
    monkeypatch.setattr(gru_ops, "_FORCE_DOT", True)
    case = GruCase(T=3, B=5, I=33, H=19, bias=True, lengths="mixed")
    args = sample_inputs(case, dtype, requires_grad=True)
    *tensors, lengths = args
    out, h_n, _ = backend.raw_op("gru_layer")(*tensors, lengths, True)
    h_cell, _ = backend.raw_op("gru_cell")(*cell_args(args))
    exact = cast(args, F64)
    low = reference.gru_layer(*args, reverse=True)
    tol = tolerance(backend, "forward", dtype, "gru")
    for got, lo, ex in zip((out, h_n), low, reference.gru_layer(*exact, reverse=True),
                           strict=True):  # fmt: skip
        assert_close_to_reference(got, lo, ex, tol)
    assert_close_to_reference(h_cell, reference.gru_cell(*cell_args(args)),
                              reference.gru_cell(*cell_args(exact)), tol)  # fmt: skip
    # The backward's recurrent product takes the same path.
    got = torch.autograd.grad((out.float().sum() + h_n.float().sum()), tensors[:4])
    ex = [t.detach().double().requires_grad_() for t in tensors]  # the case has biases
    ref_out, ref_h_n = reference.gru_layer(*ex, lengths, reverse=True)
    expected = torch.autograd.grad(ref_out.sum() + ref_h_n.sum(), ex[:4])
    grad_tol = dict(atol=2e-2, rtol=2e-2)  # float16: the rounding of the inputs
    if dtype == F32:
        grad_tol = tolerance(backend, "gru_grad", F32).close
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g.double(), e, **grad_tol)


@pytest.mark.parametrize("backend", [TRITON.param()])
def test_triton_through_the_public_api(backend):
    """fast_s2s.<op>(..., backend="triton") reaches the Triton ops (the other tests call
    fast_s2s.kernels directly)."""
    args = sample_inputs(TRITON_CASES[1], requires_grad=True)
    tol = tolerance(backend, "forward", F32, "gru")
    got = fast_s2s.ops.gru_layer(*args, reverse=True, backend="triton")
    assert got[0].grad_fn is not None and "fast_s2s_triton" in got[0].grad_fn.name()
    for g, e in zip(got, reference.gru_layer(*args, reverse=True), strict=True):
        torch.testing.assert_close(g, e, **tol.close)
    cell = cell_args(args)
    torch.testing.assert_close(
        fast_s2s.ops.gru_cell(*cell, backend="triton"), reference.gru_cell(*cell), **tol.close
    )


# Compiled for a GPU without one: Triton's NVIDIA back end (with its bundled ptxas) compiles
# every kernel form to a cubin for sm_90, which catches what the interpreter lets through (types
# that differ between branches, tl.dot shape and dtype rules). Outside the interpreter, so in a
# subprocess.


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


def test_triton_kernels_compile_for_sm90():
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = "import tests.ops.test_gru_kernels as t; print(*t._compile_all_for_sm90(), sep='\\n')"
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert len(result.stdout.split("\n")) >= 6, result.stdout


# --------------------------------------------------------------------------------------------
# The CUDA kernels (csrc/cuda/gru.cu): emulated on the CPU, and on a GPU
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not _extension.cuda_compiled(), reason="extension built without CUDA")
@pytest.mark.parametrize("op", GRU_OPS)
def test_every_op_has_a_cuda_kernel(op):
    """Built with CUDA, the op and its backward are registered for the CUDA dispatch key (no GPU
    needed to check), and backend="cpp" on CUDA is offered for it."""
    for name in (op, op + "_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fast_s2s::{name}", "CUDA"), name
    assert op in backends.CPP_KERNELS["cuda"]


@pytest.mark.parametrize("backend,op", grid(CUDA, GRU_OPS))
def test_cpp_resolves_to_the_cuda_kernel(backend, op):
    """backend="cpp" on a CUDA tensor runs the CUDA C++ kernel, and says so."""
    assert backends.resolve_backend(op, "cpp", "cuda") == "cpp"


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("backend", [pytest.param(CPP, marks=CPP.marks)], ids=repr)
def test_cpp_layer_backward_past_every_length_on_recycled_memory(backend, reverse):
    """gru_layer's C++ backward writes every entry of its gate gradients itself (zero past a
    row's length and at steps past every length) rather than zero-filling them first: on
    memory that held NaN just before, the gradients still match the reference, a row of
    length 0 and trailing steps no row reaches included."""
    gen = torch.Generator().manual_seed(3)
    T, B, I, H = 9, 5, 7, 6

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()

    lengths = torch.tensor([7, 3, 0, 5, 2])
    for _ in range(3):
        junk = torch.full((4 * T * B * 3 * H,), float("nan"), dtype=torch.float64)
        del junk  # the backward's buffers may reuse this memory
        args = (randn(T, B, I), randn(B, H), randn(3 * H, I), randn(3 * H, H), randn(3 * H),
                randn(3 * H))  # fmt: skip
        grads = {}
        for name in ("cpp", "reference"):
            out, h_n = fast_s2s.ops.gru_layer(*args, lengths=lengths, reverse=reverse, backend=name)
            grads[name] = torch.autograd.grad(out.sin().sum() + h_n.cos().sum(), args)
        for got, want in zip(grads["cpp"], grads["reference"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize(
    "backend,dtype,case", [*grid(EMU, EMU.dtypes, EMU_CASES), *grid(CPP, CPP.dtypes, CPP_CASES)]
)
def test_gru_workspace_outputs(backend, dtype, case):
    """The raw ops' float32/64 workspace for the backward: gates (B, 4H) of gru_cell, work
    (T, B, 5H) of gru_layer."""
    args = sample_inputs(case, dtype, device=backend.device)
    _, gates = backend.raw_op("gru_cell")(*cell_args(args))
    _, _, work = backend.raw_op("gru_layer")(*args, True)
    assert gates.shape == (case.B, 4 * case.H) and gates.dtype == acc_dtype(dtype)
    assert work.shape == (case.T, case.B, 5 * case.H) and work.dtype == acc_dtype(dtype)


# --------------------------------------------------------------------------------------------
# The compiled ops' own argument checks (csrc/common, shared by the C++ and CUDA kernels):
# what reaches torch.ops.fast_s2s.* without fast_s2s.ops' Python checks
# --------------------------------------------------------------------------------------------

BAD_INPUT = {
    "cell_w_hh_shape": (
        "gru_cell",
        lambda d: (
            torch.randn(2, 3, device=d),
            torch.randn(2, 5, device=d),
            torch.randn(15, 3, device=d),
            torch.randn(15, 4, device=d),
        ),
        r"w_hh must have shape \(15, 5\)",
    ),  # fmt: skip
    "layer_length_past_T": (
        "gru_layer",
        lambda d: (
            torch.randn(4, 2, 3, device=d),
            torch.randn(2, 5, device=d),
            torch.randn(15, 3, device=d),
            torch.randn(15, 5, device=d),
            None,
            None,
            torch.tensor([1, 5], device=d),
            False,
        ),
        r"lengths\[1\] = 5 is out of range",
    ),  # fmt: skip
}


@pytest.mark.parametrize(
    "backend,what",
    [*grid(CPP, BAD_INPUT), *grid(EMU, BAD_INPUT), *grid(CUDA, ["cell_w_hh_shape"])],
)
def test_compiled_ops_refuse_bad_input_with_a_message(backend, what):
    op, make_args, message = BAD_INPUT[what]
    with pytest.raises(RuntimeError, match=message):
        backend.raw_op(op)(*make_args(backend.device))
