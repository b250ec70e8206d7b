"""The CUDA C++ kernels (backend="cpp" on CUDA tensors) against the reference.

Every op and dtype (float32, float64, float16, bfloat16): values, gradients, opcheck and
torch.compile, on shapes that reach every kernel path: 16-byte loads and scalar loads (feature
sizes that are and are not multiples of 8), split-over-S attention (few rows, long S) and S over
one split's shared-memory chunk, the GRU's fused small-batch kernel (B <= 16) and its cuBLAS path
(B > 16), lengths on the CPU and on the GPU. The `cuda` tests need a GPU (see README, "On a GPU");
the registration test runs wherever the extension was built with CUDA.
"""

from __future__ import annotations

import pytest
import torch

import fast_s2s
from fast_s2s import _extension, backends, reference
from tests.attention_cases import (
    CASES,
    TOLERANCES,
    Case,
    additive_sample_inputs,
    dot_sample_inputs,
)
from tests.gru_cases import GruCase, cell_args, sample_inputs

OPS = ["dot_attention", "additive_attention"]
GRU_OPS = ["gru_cell", "gru_layer"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LOW = (torch.float16, torch.bfloat16)

# Attention: the shared cases, plus the CUDA-specific paths.
CUDA_ATTENTION_CASES = [
    *CASES,
    Case(B=2, beam=2, T=1, S=40, D=512, Dv=512, lengths="mixed"),  # 16-byte loads, decode-like
    Case(B=1, beam=1, T=1, S=3000, D=64, Dv=72, lengths="none"),  # one row: split over S
    Case(B=3, beam=1, T=None, S=2500, D=40, Dv=24, lengths="mixed"),  # splits past the length
    Case(B=10, beam=5, T=6, S=2100, D=16, Dv=8, lengths="mixed"),  # S over one chunk, many rows
]
ATTENTION_IDS = [c.id for c in CUDA_ATTENTION_CASES]

# GRU: B <= 16 takes the fused matrix-vector kernel, B > 16 cuBLAS + gate kernel; H and I
# multiples of 8 take 16-byte loads.
CUDA_GRU_CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=4, B=3, I=17, H=16, bias=True, lengths="mixed"),
    GruCase(T=5, B=9, I=64, H=32, bias=False, lengths="mixed"),  # a tile of 8 + 1 row
    GruCase(T=3, B=16, I=256, H=128, bias=True, lengths="none"),
    GruCase(T=4, B=40, I=33, H=19, bias=True, lengths="mixed"),  # cuBLAS path
    GruCase(T=3, B=20, I=64, H=64, bias=False, lengths="full"),
]
GRU_IDS = [c.id for c in CUDA_GRU_CASES]


def _attention_inputs(op, case, dtype=torch.float32, requires_grad=False, device="cuda"):
    make = dot_sample_inputs if op == "dot_attention" else additive_sample_inputs
    return make(case, device, dtype, requires_grad)


def _attention(op, args, backend):
    if backend == "reference":
        return getattr(reference, op)(*args)
    return getattr(fast_s2s, op)(*args, backend=backend)


def _gru(op, args, backend, **kw):
    if op == "gru_cell":
        args = cell_args(args)
    if backend == "reference":
        out = getattr(reference, op)(*args, **kw)
    else:
        out = getattr(fast_s2s, op)(*args, backend=backend, **kw)
    return out if isinstance(out, tuple) else (out,)


def _to(args, dtype, device=None):
    return tuple(
        a.detach().to(device=device or a.device, dtype=dtype)
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    )


def _assert_close(fused, exact, ref_low, dtype, floor):
    """float32/64: the tolerance table. float16/bfloat16: FlashAttention's criterion, the fused
    error against float64 at most twice the reference's own error in that dtype (plus a floor)."""
    if dtype in LOW:
        fused_err = (fused.double().cpu() - exact.cpu()).abs().max().item()
        ref_err = (ref_low.double().cpu() - exact.cpu()).abs().max().item()
        assert fused_err <= 2 * ref_err + floor, (fused_err, ref_err)
    else:
        torch.testing.assert_close(fused, ref_low, **TOLERANCES[dtype])


@pytest.mark.skipif(not _extension.cuda_compiled(), reason="extension built without CUDA")
@pytest.mark.parametrize("op", OPS + GRU_OPS)
def test_every_op_has_a_cuda_kernel(op):
    """Built with CUDA, every op and its backward is registered for the CUDA dispatch key (no GPU
    needed to check), and backend="cpp" on CUDA is offered for it."""
    for name in (op, op + "_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fast_s2s::{name}", "CUDA"), name
    assert op in backends.CPP_KERNELS["cuda"]


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_ATTENTION_CASES, ids=ATTENTION_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_attention_forward(op, case, dtype):
    args = _attention_inputs(op, case, dtype)
    context, weights = _attention(op, args, "cpp")
    assert context.is_cuda and context.dtype == dtype and weights.dtype == dtype
    exact = _attention(op, _to(args, torch.float64), "reference")
    low = _attention(op, args, "reference")
    for fused, ex, lo in zip((context, weights), exact, low, strict=True):
        assert not fused.isnan().any()
        _assert_close(fused, ex, lo, dtype, floor=2e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
def test_attention_lengths_on_the_host(op):
    """lengths may stay on the CPU while the tensors are on the GPU."""
    case = CASES[3]
    args = _attention_inputs(op, case)
    host = tuple(
        a.cpu() if isinstance(a, torch.Tensor) and not a.is_floating_point() else a for a in args
    )
    for got, expected in zip(
        _attention(op, host, "cpp"), _attention(op, args, "reference"), strict=True
    ):
        torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_ATTENTION_CASES, ids=ATTENTION_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_attention_backward(op, case, dtype):
    """Fused backward against autograd through the reference, with a loss on both outputs."""
    grads = {}
    for backend in ("cpp", "reference"):
        torch.manual_seed(1)
        args = _attention_inputs(op, case, dtype, requires_grad=True)
        context, weights = _attention(op, args, backend)
        torch.manual_seed(2)
        loss = (context.float() * torch.randn_like(context, dtype=torch.float32)).sum() + (
            weights.float() * torch.randn_like(weights, dtype=torch.float32)
        ).sum()
        loss.backward()
        grads[backend] = [a.grad for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=6e-2, rtol=6e-2)
    for fused, expected in zip(grads["cpp"], grads["reference"], strict=True):
        torch.testing.assert_close(fused.float(), expected.float(), **tol)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_ATTENTION_CASES[-4:], ids=ATTENTION_IDS[-4:])
@pytest.mark.parametrize("op", OPS)
def test_attention_without_weights(op, case):
    """need_weights=False: no weights written, the same context, and gradients that still match
    the reference (the backward recomputes the weights)."""
    args = _attention_inputs(op, case, requires_grad=True)
    context, weights = getattr(fast_s2s, op)(*args, backend="cpp", need_weights=False)
    assert weights is None
    expected, _ = _attention(op, args, "reference")
    torch.testing.assert_close(context, expected, **TOLERANCES[torch.float32])
    grad = torch.randn_like(context)
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    got = torch.autograd.grad(context, diff, grad)
    want = torch.autograd.grad(expected, diff, grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    raw = getattr(torch.ops.fast_s2s, op)(*args, need_weights=False)
    assert raw[1].shape == (0,)


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
def test_attention_gradcheck_float64(op):
    case = Case(B=2, beam=2, T=2, S=6, D=5, Dv=3, lengths="mixed")
    args = _attention_inputs(op, case, torch.float64, requires_grad=True)
    diff = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def fn(*tensors):
        full = list(args)
        for i, t in zip(diff, tensors, strict=True):
            full[i] = t
        return _attention(op, tuple(full), "cpp")

    assert torch.autograd.gradcheck(fn, tuple(args[i] for i in diff))


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
def test_attention_opcheck(op):
    args = _attention_inputs(op, CASES[3], requires_grad=True)
    torch.library.opcheck(getattr(torch.ops.fast_s2s, op).default, args)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_GRU_CASES, ids=GRU_IDS)
@pytest.mark.parametrize("op", GRU_OPS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gru_forward(op, case, dtype, reverse):
    if op == "gru_cell" and reverse:
        pytest.skip("gru_cell has no direction")
    kw = {"reverse": reverse} if op == "gru_layer" else {}
    args = sample_inputs(case, dtype, device="cuda")
    got = _gru(op, args, "cpp", **kw)
    exact = _gru(op, _to(args, torch.float64, "cpu"), "reference", **kw)
    low = _gru(op, args, "reference", **kw)
    for fused, ex, lo in zip(got, exact, low, strict=True):
        assert fused.is_cuda and fused.dtype == dtype and not fused.isnan().any()
        _assert_close(fused, ex, lo, dtype, floor=1e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_GRU_CASES, ids=GRU_IDS)
@pytest.mark.parametrize("op", GRU_OPS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_gru_backward(op, case, reverse):
    if op == "gru_cell" and reverse:
        pytest.skip("gru_cell has no direction")
    kw = {"reverse": reverse} if op == "gru_layer" else {}
    grads = {}
    for backend in ("cpp", "reference"):
        torch.manual_seed(1)
        args = sample_inputs(case, torch.float32, requires_grad=True, device="cuda")
        outs = _gru(op, args, backend, **kw)
        gen = torch.Generator(device="cuda").manual_seed(3)
        loss = sum((o * torch.randn(o.shape, generator=gen, device="cuda")).sum() for o in outs)
        diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        grads[backend] = torch.autograd.grad(loss, diff, allow_unused=True)
    for fused, expected in zip(grads["cpp"], grads["reference"], strict=True):
        if expected is None:
            assert fused is None or not fused.any()
            continue
        torch.testing.assert_close(fused, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_gru_gradcheck_float64():
    case = GruCase(T=3, B=3, I=5, H=4, bias=True, lengths="mixed")
    args = sample_inputs(case, torch.float64, requires_grad=True, device="cuda")
    x, h0, w_ih, w_hh, b_ih, b_hh, lengths = args

    def layer(*t):
        return fast_s2s.gru_layer(*t, lengths, True, backend="cpp")

    def cell(x, h, w_ih, w_hh, b_ih, b_hh):
        return fast_s2s.gru_cell(x[0], h, w_ih, w_hh, b_ih, b_hh, backend="cpp")

    assert torch.autograd.gradcheck(layer, (x, h0, w_ih, w_hh, b_ih, b_hh))
    assert torch.autograd.gradcheck(cell, (x, h0, w_ih, w_hh, b_ih, b_hh))


@pytest.mark.cuda
@pytest.mark.parametrize("case", [CUDA_GRU_CASES[1], CUDA_GRU_CASES[4]], ids=lambda c: c.id)
def test_gru_opcheck(case):
    args = sample_inputs(case, requires_grad=True, device="cuda")
    torch.library.opcheck(torch.ops.fast_s2s.gru_cell.default, cell_args(args))
    torch.library.opcheck(torch.ops.fast_s2s.gru_layer.default, (*args, True))


@pytest.mark.cuda
def test_torch_compile_fullgraph_every_op():
    """One compiled training step through all four ops on the CUDA kernels."""
    att = Case(B=2, beam=2, T=3, S=9, D=16, Dv=8, lengths="mixed")
    query, keys, values, lengths, scale = _attention_inputs(
        "dot_attention", att, requires_grad=True
    )
    qp, kp, v, _, _ = _attention_inputs("additive_attention", att, requires_grad=True)
    gru = sample_inputs(CUDA_GRU_CASES[2], requires_grad=True, device="cuda")

    def step(query, keys, values, qp, kp, v, gru_args):
        c1, w1 = fast_s2s.dot_attention(query, keys, values, lengths, scale, backend="cpp")
        c2, w2 = fast_s2s.additive_attention(qp, kp, v, values, lengths, backend="cpp")
        out, h_n = fast_s2s.gru_layer(*gru_args, backend="cpp")
        h = fast_s2s.gru_cell(*cell_args(gru_args), backend="cpp")
        return c1.sum() + w1.sum() + c2.sum() + w2.sum() + out.sum() + h_n.sum() + h.sum()

    compiled = torch.compile(step, fullgraph=True)
    got = compiled(query, keys, values, qp, kp, v, gru)
    expected = step(query, keys, values, qp, kp, v, gru)
    torch.testing.assert_close(got, expected)
    got.backward()
    assert query.grad is not None and gru[2].grad is not None


@pytest.mark.cuda
def test_cpp_resolves_to_the_cuda_kernel():
    """backend="cpp" on a CUDA tensor runs the CUDA C++ kernel, and says so."""
    for op in OPS + GRU_OPS:
        assert backends.resolve_backend(op, "cpp", "cuda") == "cpp"


@pytest.mark.cuda
def test_cuda_kernels_refuse_bad_input_with_a_message():
    args = _attention_inputs("dot_attention", CASES[2])
    query, keys, values, lengths, scale = args
    with pytest.raises(RuntimeError, match="must be a multiple of the number of source rows"):
        torch.ops.fast_s2s.dot_attention(query[:-1], keys, values, lengths, scale)
    with pytest.raises(RuntimeError, match="lengths"):
        torch.ops.fast_s2s.dot_attention(query, keys, values, lengths.cpu() + 100, scale)
    x, h0, w_ih, w_hh, b_ih, b_hh, _ = sample_inputs(CUDA_GRU_CASES[1], device="cuda")
    with pytest.raises(RuntimeError, match="w_hh must have shape"):
        torch.ops.fast_s2s.gru_cell(x[0], h0, w_ih, w_hh[:, :-1], b_ih, b_hh)
