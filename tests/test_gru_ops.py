"""The compiled GRU ops against the reference: values, gradients, opcheck, compile, errors."""

from __future__ import annotations

import pytest
import torch

import fast_s2s
from fast_s2s import _extension, reference
from tests.compile_checks import assert_compiled_matches_eager
from tests.gru_cases import GruCase, cast, cell_args, sample_inputs

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason=str(_extension.EXTENSION_ERROR)
)

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


# Batch 1..4 (matrix-vector), 5 (a 4-row tile plus a remainder), 70 (over the 64-row chunk);
# feature sizes just over a SIMD block; T = 1; lengths with 0, 1 and T.
CASES = [
    GruCase(T=1, B=1, I=1, H=1, bias=True, lengths="none"),
    GruCase(T=4, B=3, I=17, H=16, bias=True, lengths="mixed"),
    GruCase(T=5, B=5, I=33, H=19, bias=False, lengths="mixed"),
    GruCase(T=3, B=70, I=8, H=17, bias=True, lengths="full"),
    GruCase(T=6, B=4, I=65, H=33, bias=True, lengths="none"),
]
IDS = [c.id for c in CASES]


def _close(fused, ref, dtype, exact=None, ref_low=None):
    if dtype == torch.bfloat16:
        # The fused error against float64 is at most twice the reference's own bf16 error.
        fused_err = (fused.double() - exact).abs().max().item()
        ref_err = (ref_low.double() - exact).abs().max().item()
        assert fused_err <= 2 * ref_err + 1e-2, (fused_err, ref_err)
    else:
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
        torch.testing.assert_close(fused, ref, **tol)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gru_cell_matches_reference(case, dtype):
    args = cell_args(sample_inputs(case, dtype))
    got = fast_s2s.gru_cell(*args, backend="cpp")
    assert got.dtype == dtype and got.shape == (case.B, case.H)
    exact = reference.gru_cell(*cast(args, torch.float64))
    _close(got, reference.gru_cell(*args), dtype, exact, reference.gru_cell(*args))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gru_layer_matches_reference(case, dtype, reverse):
    args = sample_inputs(case, dtype)
    out, h_n = fast_s2s.gru_layer(*args, reverse=reverse, backend="cpp")
    assert out.shape == (case.T, case.B, case.H) and h_n.shape == (case.B, case.H)
    ref = reference.gru_layer(*args, reverse=reverse)
    exact = reference.gru_layer(*cast(args, torch.float64), reverse=reverse)
    for got, expected, ex in zip((out, h_n), ref, exact, strict=True):
        _close(got, expected, dtype, ex, expected)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gru_layer_backward_matches_reference(case, reverse):
    """Gradients of a loss on both outputs, fused against autograd through the reference."""
    grads = {}
    for backend in ("cpp", "reference"):
        torch.manual_seed(1)  # the same inputs for both
        args = sample_inputs(case, torch.float64, requires_grad=True)
        out, h_n = fast_s2s.gru_layer(*args, reverse=reverse, backend=backend)
        gen = torch.Generator().manual_seed(3)
        loss = (out * torch.randn(out.shape, generator=gen, dtype=out.dtype)).sum() + (
            h_n * torch.randn(h_n.shape, generator=gen, dtype=h_n.dtype)
        ).sum()
        diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        grads[backend] = torch.autograd.grad(loss, diff)
    for got, expected in zip(grads["cpp"], grads["reference"], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_gru_gradcheck_float64(case):
    args = sample_inputs(case, torch.float64, requires_grad=True)
    *tensors, lengths = args
    tensors = [t for t in tensors if t is not None]
    bias = case.bias

    def layer(x, h0, w_ih, w_hh, *b):
        b_ih, b_hh = b if bias else (None, None)
        return fast_s2s.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, True, backend="cpp")

    assert torch.autograd.gradcheck(layer, tuple(tensors))

    def cell(x, h, w_ih, w_hh, *b):
        b_ih, b_hh = b if bias else (None, None)
        return fast_s2s.gru_cell(x[0], h, w_ih, w_hh, b_ih, b_hh, backend="cpp")

    assert torch.autograd.gradcheck(cell, tuple(tensors))


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=[IDS[1], IDS[2]])
def test_opcheck(case):
    args = sample_inputs(case, requires_grad=True)
    torch.library.opcheck(torch.ops.fast_s2s.gru_cell.default, cell_args(args))
    torch.library.opcheck(torch.ops.fast_s2s.gru_layer.default, (*args, True))


def test_torch_compile_fullgraph():
    args = sample_inputs(CASES[1], requires_grad=True)

    def step(x, h0, w_ih, w_hh, b_ih, b_hh, lengths):
        out, h_n = fast_s2s.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, backend="cpp")
        h2 = fast_s2s.gru_cell(out[-1], h_n, w_ih[:, : x.shape[2]], w_hh, b_ih, b_hh, backend="cpp")
        return h2.sum() + out.sum()

    if args[0].shape[2] != args[1].shape[1]:  # the cell reuses w_ih columns: needs I >= H
        args = sample_inputs(
            GruCase(T=3, B=2, I=16, H=16, bias=True, lengths="mixed"), requires_grad=True
        )
    diff = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    assert_compiled_matches_eager(step, args, diff)


def test_non_contiguous_inputs():
    x, h0, w_ih, w_hh, b_ih, b_hh, lengths = sample_inputs(CASES[1])
    x_nc = x.transpose(0, 1).contiguous().transpose(0, 1)  # (T, B, I) view of (B, T, I) storage
    w_nc = w_ih.t().contiguous().t()
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous()
    got = fast_s2s.gru_layer(x_nc, h0, w_nc, w_hh, b_ih, b_hh, lengths, backend="cpp")
    expected = reference.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_length_zero_rows_keep_h0_and_get_no_input_gradient():
    case = GruCase(T=4, B=2, I=5, H=6, bias=True, lengths="none")
    x, h0, w_ih, w_hh, b_ih, b_hh, _ = sample_inputs(case, requires_grad=True)
    out, h_n = fast_s2s.gru_layer(
        x, h0, w_ih, w_hh, b_ih, b_hh, torch.tensor([0, 4]), backend="cpp"
    )
    assert torch.equal(h_n[0], h0[0]) and (out[:, 0] == 0).all()
    (out.sum() + h_n.sum()).backward()
    assert (x.grad[:, 0] == 0).all() and torch.equal(h0.grad[0], torch.ones(6))


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
@pytest.mark.parametrize("backend", ["reference", "cpp"])
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
        fast_s2s.gru_layer(**args, backend=backend)


def test_compiled_ops_check_their_own_arguments():
    with pytest.raises(RuntimeError, match=r"lengths\[1\] = 5 is out of range"):
        torch.ops.fast_s2s.gru_layer(
            torch.randn(4, 2, 3),
            torch.randn(2, 5),
            torch.randn(15, 3),
            torch.randn(15, 5),
            None,
            None,
            torch.tensor([1, 5]),
            False,
        )
    with pytest.raises(RuntimeError, match=r"w_hh must have shape \(15, 5\)"):
        torch.ops.fast_s2s.gru_cell(
            torch.randn(2, 3), torch.randn(2, 5), torch.randn(15, 3), torch.randn(15, 4)
        )
