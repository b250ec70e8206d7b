"""The reference GRU ops (fast_s2s.reference.gru_cell, gru_layer) held to independent
definitions: torch.nn.GRUCell, and torch.nn.GRU over packed sequences (the attention ops and the
reference's bad-input checks are in tests/ops/test_reference.py, whose tolerance table this file
uses).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fast_s2s import reference as ref
from tests.ops.test_reference import (
    TOL,
    gru_params,
)

# --------------------------------------------------------------------------- #
# gru_cell
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(
    "B,I,H", [(4, 7, 5), (1, 1, 1), (3, 16, 33)], ids=["B4-I7-H5", "B1-I1-H1", "B3-I16-H33"]
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_gru_cell_matches_torch(B, I, H, bias, dtype):
    cell = torch.nn.GRUCell(I, H, bias=bias, dtype=dtype)
    x, h = torch.randn(B, I, dtype=dtype), torch.randn(B, H, dtype=dtype)
    b_ih, b_hh = (cell.bias_ih, cell.bias_hh) if bias else (None, None)
    got = ref.gru_cell(x, h, cell.weight_ih, cell.weight_hh, b_ih, b_hh)
    torch.testing.assert_close(got, cell(x, h), **TOL[dtype])
    assert got.dtype == dtype


def test_gru_cell_bfloat16():
    cell = torch.nn.GRUCell(6, 5, dtype=torch.float64)
    x, h = torch.randn(3, 6), torch.randn(3, 5)
    params = [cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh]
    bf = [t.to(torch.bfloat16) for t in (x, h, *params)]
    got = ref.gru_cell(*bf)
    assert got.dtype == torch.bfloat16
    # float64 on the same rounded inputs and weights
    cell.load_state_dict({k: p.to(torch.bfloat16).double() for k, p in cell.state_dict().items()})
    want = cell(bf[0].double(), bf[1].double())
    torch.testing.assert_close(got.double(), want, **TOL[torch.bfloat16])


def test_gru_cell_gradcheck():
    B, I, H = 2, 3, 2
    args = [
        torch.randn(B, I, dtype=torch.float64, requires_grad=True),
        torch.randn(B, H, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, I, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, H, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, dtype=torch.float64, requires_grad=True),
    ]
    assert torch.autograd.gradcheck(ref.gru_cell, args)


# --------------------------------------------------------------------------- #
# gru_layer
# --------------------------------------------------------------------------- #


def torch_gru_layer(gru: torch.nn.GRU, x, h0, lengths, reverse):
    """Run torch.nn.GRU (bidirectional when reverse) over a packed batch.

    Returns output (T, B, H) padded with zeros and h_n (B, H) of the chosen direction.
    """
    T, B, _ = x.shape
    H = gru.hidden_size
    h0_all = torch.stack([torch.zeros_like(h0), h0]) if reverse else h0[None]
    if lengths is None:
        out, h_n = gru(x, h0_all)
    else:
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out_packed, h_n = gru(packed, h0_all)
        out, _ = pad_packed_sequence(out_packed, total_length=T)
    if reverse:
        return out[..., H:], h_n[1]
    return out, h_n[0]


GRU_CASES = [
    # (T, B, I, H, lengths or None)
    (1, 3, 4, 5, None),
    (1, 3, 4, 5, [1, 1, 1]),
    (6, 4, 7, 5, None),
    (6, 4, 7, 5, [6, 2, 1, 4]),
    (9, 3, 1, 17, [3, 9, 5]),
]
GRU_IDS = [
    f"T{T}-B{B}-I{I}-H{H}-" + ("len_none" if L is None else "len_" + "_".join(map(str, L)))
    for T, B, I, H, L in GRU_CASES
]


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("T,B,I,H,lens", GRU_CASES, ids=GRU_IDS)
def test_gru_layer_matches_packed_torch_gru(T, B, I, H, lens, bias, reverse):
    gru = torch.nn.GRU(I, H, bias=bias, bidirectional=reverse, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    lengths = None if lens is None else torch.tensor(lens)
    out, h_n = ref.gru_layer(x, h0, *gru_params(gru, reverse), lengths=lengths, reverse=reverse)
    exp_out, exp_h_n = torch_gru_layer(gru, x, h0, lengths, reverse)
    assert out.shape == (T, B, H) and h_n.shape == (B, H)
    torch.testing.assert_close(out, exp_out, **TOL[torch.float64])
    torch.testing.assert_close(h_n, exp_h_n, **TOL[torch.float64])


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gru_layer_zero_length_rows(reverse):
    T, B, I, H = 5, 4, 3, 6
    gru = torch.nn.GRU(I, H, bidirectional=reverse, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 0, T, 0], dtype=torch.int32)
    out, h_n = ref.gru_layer(x, h0, *gru_params(gru, reverse), lengths=lengths, reverse=reverse)
    zero, live = torch.tensor([1, 3]), torch.tensor([0, 2])
    assert torch.equal(out[:, zero], torch.zeros(T, 2, H, dtype=torch.float64))
    assert torch.equal(h_n[zero], h0[zero])
    # The other rows behave as if the length-0 rows were not there.
    exp_out, exp_h_n = torch_gru_layer(gru, x[:, live], h0[live], lengths[live], reverse)
    torch.testing.assert_close(out[:, live], exp_out, **TOL[torch.float64])
    torch.testing.assert_close(h_n[live], exp_h_n, **TOL[torch.float64])
    # Gradients: finite; a length-0 row passes h0's gradient straight through.
    g_hn = torch.randn_like(h_n)
    ((out * torch.randn_like(out)).sum() + (h_n * g_hn).sum()).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(h0.grad).all()
    assert torch.equal(x.grad[:, zero], torch.zeros(T, 2, I, dtype=torch.float64))
    assert torch.equal(h0.grad[zero], g_hn[zero])


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_gru_layer_gradients_match_torch_gru(reverse):
    T, B, I, H = 4, 3, 3, 4
    gru = torch.nn.GRU(I, H, bidirectional=reverse, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, T, 1])
    params = gru_params(gru, reverse)
    g_out, g_hn = torch.randn(T, B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)

    def grads(fn):
        out, h_n = fn()
        return torch.autograd.grad((out * g_out).sum() + (h_n * g_hn).sum(), [x, h0, *params])

    got = grads(lambda: ref.gru_layer(x, h0, *params, lengths=lengths, reverse=reverse))
    want = grads(lambda: torch_gru_layer(gru, x, h0, lengths, reverse))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **TOL[torch.float64])


def test_gru_layer_gradcheck():
    T, B, I, H = 3, 3, 2, 2
    args = [
        torch.randn(T, B, I, dtype=torch.float64, requires_grad=True),
        torch.randn(B, H, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, I, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, H, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, dtype=torch.float64, requires_grad=True),
        torch.randn(3 * H, dtype=torch.float64, requires_grad=True),
    ]
    lengths = torch.tensor([2, 0, 3])
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda *a, r=reverse: ref.gru_layer(*a, lengths=lengths, reverse=r), args
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_gru_layer_dtypes(dtype):
    T, B, I, H = 7, 3, 5, 8
    gru = torch.nn.GRU(I, H, dtype=torch.float64)
    x, h0 = torch.randn(T, B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    lengths = torch.tensor([T, 3, 5])
    low = [t.to(dtype) for t in (x, h0, *gru_params(gru, False))]
    out, h_n = ref.gru_layer(*low, lengths=lengths)
    assert out.dtype == dtype and h_n.dtype == dtype
    # float64 computation on the same rounded inputs and weights
    gru.load_state_dict({k: p.to(dtype).double() for k, p in gru.state_dict().items()})
    exp_out, exp_h_n = torch_gru_layer(gru, low[0].double(), low[1].double(), lengths, False)
    torch.testing.assert_close(out.double(), exp_out, **TOL[dtype])
    torch.testing.assert_close(h_n.double(), exp_h_n, **TOL[dtype])
