"""The CUDA kernels' own code, run without a GPU, against the reference.

csrc/cuda/attention.cu and gru.cu are compiled as C++ with FAST_S2S_EMULATE_CUDA: their
__global__ functions then run on the CPU under csrc/cuda/emulate.h (one thread per CUDA thread,
real barriers for __syncthreads, warp shuffles through a buffer, alignment checks on vector
loads), and their host code runs unchanged on CPU tensors, registered as torch.ops.fast_s2s_emu.*.
This checks indexing, masking, the split-over-S merge, the reductions, the barrier placement and
the GRU tiles: everything but GPU timing and memory-model subtleties, which only a GPU run of
tests/test_cuda_ops.py checks. The emulation is slow (one OS thread per CUDA thread), so the
shapes are small; they still reach every kernel path (16-byte and scalar loads, one and several
splits, narrow and wide values, the fused small-batch GRU kernel and the cuBLAS-path gate kernel),
in every dtype the CUDA kernels take, float16 included (the emulation build applies CUDA's dtype
rules to CPU tensors).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension

from fast_s2s import reference
from tests.attention_cases import (
    Case,
    additive_sample_inputs,
    dot_sample_inputs,
    transposed_storage,
)
from tests.gru_cases import GruCase, cast, cell_args, sample_inputs

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent / "cuda_emulation"

pytestmark = pytest.mark.skipif(
    not torch.utils.cpp_extension.is_ninja_available(), reason="building the emulation needs ninja"
)


@pytest.fixture(scope="module")
def emu():
    """torch.ops.fast_s2s_emu, built once into build/cuda_emulation (about a minute)."""
    build = ROOT / "build" / "cuda_emulation"
    build.mkdir(parents=True, exist_ok=True)
    sources = [
        HERE / "library.cpp",
        HERE / "attention_emulated.cpp",
        HERE / "gru_emulated.cpp",
        ROOT / "csrc" / "cpu" / "attention_checks.cpp",
        ROOT / "csrc" / "cpu" / "gru_common.cpp",
    ]
    torch.utils.cpp_extension.load(
        name="fast_s2s_cuda_emulation",
        sources=[str(s) for s in sources],
        extra_cflags=[
            "-O1",
            "-std=c++20",
            "-pthread",
            "-DFAST_S2S_EMULATE_CUDA",
            "-DCPU_CAPABILITY=DEFAULT",
            "-DCPU_CAPABILITY_DEFAULT",
            "-Wno-unknown-pragmas",
        ],
        extra_ldflags=["-pthread"],
        extra_include_paths=[str(ROOT / "csrc")],
        build_directory=str(build),
        is_python_module=False,
    )
    return torch.ops.fast_s2s_emu


DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
TOL = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float64: dict(atol=1e-10, rtol=1e-9),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
    torch.float16: dict(atol=5e-3, rtol=5e-3),
}

ATTENTION_CASES = [
    Case(B=1, beam=1, T=1, S=1, D=1, Dv=1, lengths="none"),  # scalar loads
    Case(B=3, beam=2, T=2, S=9, D=8, Dv=16, lengths="mixed"),  # 16-byte loads, beam, length 0
    Case(B=2, beam=1, T=None, S=7, D=5, Dv=3, lengths="mixed"),  # 2-D query, odd sizes
    Case(B=1, beam=1, T=1, S=300, D=8, Dv=8, lengths="none"),  # one row: split over S
    Case(B=5, beam=1, T=None, S=260, D=4, Dv=4, lengths="mixed"),  # splits past the length
    Case(B=1, beam=2, T=1, S=3, D=4, Dv=1100, lengths="none"),  # wide values: one group
]
ATTENTION_IDS = [c.id for c in ATTENTION_CASES]


def _attention_inputs(op, case, dtype, requires_grad=False):
    make = dot_sample_inputs if op == "dot_attention" else additive_sample_inputs
    return make(case, "cpu", dtype, requires_grad)


@pytest.mark.parametrize("case", ATTENTION_CASES, ids=ATTENTION_IDS)
@pytest.mark.parametrize("op", ["dot_attention", "additive_attention"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_forward(emu, op, case, dtype):
    args = _attention_inputs(op, case, dtype)
    context, weights = getattr(emu, op)(*args)
    expected = getattr(reference, op)(*(cast(args, torch.float64)))
    for got, exp in zip((context, weights), expected, strict=True):
        assert got.dtype == dtype and got.shape == exp.shape
        torch.testing.assert_close(got.double(), exp, **TOL[dtype])


@pytest.mark.parametrize("case", ATTENTION_CASES[1:5], ids=ATTENTION_IDS[1:5])
@pytest.mark.parametrize("op", ["dot_attention", "additive_attention"])
def test_attention_without_weights(emu, op, case):
    """need_weights=False: the same context, an empty weights tensor, on one split and several."""
    args = _attention_inputs(op, case, torch.float32)
    context, weights = getattr(emu, op)(*args)
    bare_context, no_weights = getattr(emu, op)(*args, need_weights=False)
    assert no_weights.shape == (0,) and weights.numel() == context.shape[0] * weights.shape[-1] * (
        1 if case.T is None else case.T
    )
    torch.testing.assert_close(bare_context, context, atol=0, rtol=0)


@pytest.mark.parametrize("with_grad_weights", [False, True], ids=["ctx", "ctx+weights"])
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=ATTENTION_IDS)
@pytest.mark.parametrize("op", ["dot_attention", "additive_attention"])
def test_attention_backward(emu, op, case, with_grad_weights):
    """The backward op against autograd through the float64 reference."""
    args = _attention_inputs(op, case, torch.float64, requires_grad=True)
    context, weights = getattr(reference, op)(*args)
    gen = torch.Generator().manual_seed(5)
    grad_context = torch.randn(context.shape, generator=gen, dtype=torch.float64)
    grad_weights = torch.randn(weights.shape, generator=gen, dtype=torch.float64)
    outputs = (context, weights) if with_grad_weights else (context,)
    grads_out = (grad_context, grad_weights) if with_grad_weights else (grad_context,)
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    expected = torch.autograd.grad(outputs, diff, grads_out)
    gw = grad_weights if with_grad_weights else None
    plain = cast(args, torch.float64)
    if op == "dot_attention":
        query, keys, values, lengths, scale = plain
        got = emu.dot_attention_backward(
            grad_context, gw, query, keys, values, weights.detach(), lengths, scale
        )
    else:
        query_proj, keys_proj, v, values, lengths = plain
        got = emu.additive_attention_backward(
            grad_context, gw, query_proj, keys_proj, v, values, weights.detach(), lengths
        )
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-9)


# B <= 16: the fused small-batch kernel (tiles of 8 rows, 16-byte loads when I, H % 4 == 0 in
# float32); B > 16: cuBLAS-path products (at::mm here) and the gate kernel.
GRU_CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=3, B=3, I=8, H=12, bias=True, lengths="mixed"),
    GruCase(T=2, B=9, I=5, H=7, bias=False, lengths="mixed"),  # 8 + 1 rows, scalar loads
    GruCase(T=3, B=18, I=6, H=5, bias=True, lengths="mixed"),  # the large-batch path
]
GRU_IDS = [c.id for c in GRU_CASES]


@pytest.mark.parametrize("case", GRU_CASES, ids=GRU_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gru_cell_forward(emu, case, dtype):
    args = cell_args(sample_inputs(case, dtype))
    h_new, gates = emu.gru_cell(*args)
    expected = reference.gru_cell(*cast(args, torch.float64))
    assert h_new.dtype == dtype and gates.shape == (case.B, 4 * case.H)
    torch.testing.assert_close(h_new.double(), expected, **TOL[dtype])


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", GRU_CASES, ids=GRU_IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gru_layer_forward(emu, case, dtype, reverse):
    args = sample_inputs(case, dtype)
    output, h_n, work = emu.gru_layer(*args, reverse)
    expected = reference.gru_layer(*cast(args, torch.float64), reverse=reverse)
    assert work.shape == (case.T, case.B, 5 * case.H)
    for got, exp in zip((output, h_n), expected, strict=True):
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), exp, **TOL[dtype])


@pytest.mark.parametrize("case", GRU_CASES, ids=GRU_IDS)
def test_gru_cell_backward(emu, case):
    args = cell_args(sample_inputs(case, torch.float64, requires_grad=True))
    h_new = reference.gru_cell(*args)
    grad = torch.randn(h_new.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    diff = [a for a in args if isinstance(a, torch.Tensor)]
    expected = torch.autograd.grad(h_new, diff, grad)
    plain = cast(args, torch.float64)
    _, gates = emu.gru_cell(*plain)
    got = emu.gru_cell_backward(grad, *plain[:4], gates)
    for g, e in zip(got[: len(expected)], expected, strict=True):  # no bias: 4 gradients
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", GRU_CASES, ids=GRU_IDS)
def test_gru_layer_backward(emu, case, reverse):
    args = sample_inputs(case, torch.float64, requires_grad=True)
    output, h_n = reference.gru_layer(*args, reverse=reverse)
    gen = torch.Generator().manual_seed(11)
    grad_output = torch.randn(output.shape, generator=gen, dtype=torch.float64)
    grad_h_n = torch.randn(h_n.shape, generator=gen, dtype=torch.float64)
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()]
    expected = torch.autograd.grad((output, h_n), diff, (grad_output, grad_h_n))
    plain = cast(args, torch.float64)
    x, h0, w_ih, w_hh, _, _, lengths = plain
    _, _, work = emu.gru_layer(*plain, reverse)
    got = emu.gru_layer_backward(grad_output, grad_h_n, x, h0, w_ih, w_hh, work, lengths, reverse)
    for g, e in zip(got[: len(expected)], expected, strict=True):  # no bias: 4 gradients
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-9)


def test_non_contiguous_inputs(emu):
    """Transposed storage gives the same results as contiguous inputs (the host code copies)."""
    for op in ("dot_attention", "additive_attention"):
        args = _attention_inputs(op, ATTENTION_CASES[1], torch.float32)
        for got, want in zip(
            getattr(emu, op)(*map(transposed_storage, args)), getattr(emu, op)(*args), strict=True
        ):
            torch.testing.assert_close(got, want, atol=0, rtol=0)
    args = sample_inputs(GRU_CASES[1], torch.float32)
    for got, want in zip(emu.gru_layer(*map(transposed_storage, args), True),
                         emu.gru_layer(*args, True), strict=True):  # fmt: skip
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_emulated_kernels_refuse_bad_input(emu):
    """The host code's checks run too: a length past S is refused with a message."""
    query, keys, values, _, scale = dot_sample_inputs(ATTENTION_CASES[1])
    bad = torch.full((keys.shape[0],), keys.shape[1] + 1)
    with pytest.raises(RuntimeError, match="out of range"):
        emu.dot_attention(query, keys, values, bad, scale)
