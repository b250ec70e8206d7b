"""fast_s2s.nn against torch.nn and direct formulas: GRUCell, GRU, Attention.

GRUCell / GRU: parity with torch.nn.GRUCell / torch.nn.GRU with state_dicts loaded both ways,
padded input with lengths against pack_padded_sequence(enforce_sorted=False) -> torch.nn.GRU ->
pad_packed_sequence, PackedSequence in and out, dropout, gradients, bad input.
Attention: every kind against its formula written out here, 2-D and 3-D queries, beam rows,
lengths containing 0 and S, precompute reuse, state_dict round trip, bad input.

Every test runs on backend="reference"; the ones parametrized by `backend` also run on every
other backend available on the CPU (skipped with the reason otherwise).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from fast_s2s.backends import BackendUnavailableError, available_backends
from fast_s2s.nn import GLOBAL_ATTENTION_KINDS, GRU, Attention, AttentionMemory, GRUCell

TOL = {"reference": 1e-5, "cpp": 2e-5, "triton": 2e-5}


def _backends(op: str, *, include_reference: bool = True) -> list:
    """Every concrete backend for `op` on the CPU; unavailable ones are skipped with the reason."""
    params = []
    for name, reason in available_backends(op, "cpu").items():
        if name == "reference" and not include_reference:
            continue
        marks = pytest.mark.skip(reason=f"backend {name!r}: {reason}") if reason else ()
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


def _torch_gru(gru: nn.GRU, x, h0, lengths, batch_first):
    """torch.nn.GRU on padded input: through pack_padded_sequence when lengths are given."""
    if lengths is None:
        return gru(x, h0)
    steps = x.shape[1] if batch_first else x.shape[0]
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, h_n = gru(packed, h0)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=steps)
    return out, h_n


# ------------------------------------------------------------------------------------------------
# GRUCell
# ------------------------------------------------------------------------------------------------


def test_grucell_same_seed_same_weights_as_torch():
    torch.manual_seed(1)
    ref = nn.GRUCell(5, 7)
    torch.manual_seed(1)
    mine = GRUCell(5, 7)
    assert list(mine.state_dict()) == list(ref.state_dict())
    for (name, a), (_, b) in zip(mine.named_parameters(), ref.named_parameters(), strict=True):
        assert a.shape == b.shape and torch.equal(a, b), name


@pytest.mark.parametrize("backend", _backends("gru_cell"))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", ["batched", "unbatched", "no_hx"])
def test_grucell_matches_torch(backend, bias, shape):
    torch_cell = nn.GRUCell(5, 7, bias=bias)
    cell = GRUCell(5, 7, bias=bias, backend=backend)
    cell.load_state_dict(torch_cell.state_dict())  # torch -> fast
    x = torch.randn(5) if shape == "unbatched" else torch.randn(3, 5)
    hx = None if shape == "no_hx" else torch.randn(*x.shape[:-1], 7)
    _close(cell(x, hx), torch_cell(x, hx), TOL[backend])

    other = GRUCell(5, 7, bias=bias, backend=backend)
    torch_cell.load_state_dict(other.state_dict())  # fast -> torch
    _close(other(x, hx), torch_cell(x, hx), TOL[backend])


@pytest.mark.parametrize("backend", _backends("gru_cell", include_reference=False))
def test_grucell_gradients_match_reference(backend):
    cell = GRUCell(5, 7, backend=backend)
    ref = GRUCell(5, 7, backend="reference")
    ref.load_state_dict(cell.state_dict())
    x, h = torch.randn(3, 5), torch.randn(3, 7)
    grads = []
    for module in (cell, ref):
        xi, hi = x.clone().requires_grad_(), h.clone().requires_grad_()
        out = module(xi, hi)
        out.backward(torch.ones_like(out) * torch.arange(7.0))
        grads.append([xi.grad, hi.grad] + [p.grad for p in module.parameters()])
    for got, want in zip(*grads, strict=True):
        _close(got, want, TOL[backend])


# ------------------------------------------------------------------------------------------------
# GRU: parameters and parity with torch.nn.GRU
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gru_same_seed_same_weights_and_names_as_torch(bias):
    torch.manual_seed(1)
    ref = nn.GRU(3, 6, num_layers=2, bias=bias, bidirectional=True)
    torch.manual_seed(1)
    mine = GRU(3, 6, num_layers=2, bias=bias, bidirectional=True)
    assert list(mine.state_dict()) == list(ref.state_dict())
    for (name, a), (_, b) in zip(mine.named_parameters(), ref.named_parameters(), strict=True):
        assert a.shape == b.shape and torch.equal(a, b), name


@pytest.mark.parametrize("backend", _backends("gru_layer"))
@pytest.mark.parametrize("lengths", ["nolen", "len"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tmajor", "bfirst"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["L1", "L2"])
def test_gru_matches_torch(num_layers, bidirectional, batch_first, lengths, backend):
    T, B, I, H = 6, 4, 5, 7
    dirs = 2 if bidirectional else 1
    kwargs = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    h0 = torch.randn(num_layers * dirs, B, H)
    lens = torch.tensor([3, 6, 1, 5]) if lengths == "len" else None  # unsorted, contains T

    torch_gru = nn.GRU(I, H, **kwargs)
    gru = GRU(I, H, **kwargs, backend=backend)
    gru.load_state_dict(torch_gru.state_dict())  # torch -> fast
    want_out, want_h = _torch_gru(torch_gru, x, h0, lens, batch_first)
    out, h_n = gru(x, h0, lengths=lens)
    assert out.shape == want_out.shape == ((B, T, dirs * H) if batch_first else (T, B, dirs * H))
    assert h_n.shape == want_h.shape == (num_layers * dirs, B, H)
    _close(out, want_out, TOL[backend])
    _close(h_n, want_h, TOL[backend])

    other = GRU(I, H, **kwargs, backend=backend)
    torch_gru.load_state_dict(other.state_dict())  # fast -> torch
    want_out, want_h = _torch_gru(torch_gru, x, None, lens, batch_first)
    out, h_n = other(x, lengths=lens)  # h0 = zeros
    _close(out, want_out, TOL[backend])
    _close(h_n, want_h, TOL[backend])


@pytest.mark.parametrize("backend", _backends("gru_layer"))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gru_padded_outputs_are_zero_and_length_zero_keeps_h0(bidirectional, backend):
    T, I, H, L = 5, 3, 4, 2
    dirs = 2 if bidirectional else 1
    gru = GRU(I, H, num_layers=L, bidirectional=bidirectional, backend=backend)
    torch_gru = nn.GRU(I, H, num_layers=L, bidirectional=bidirectional)
    torch_gru.load_state_dict(gru.state_dict())
    x, h0 = torch.randn(T, 3, I), torch.randn(L * dirs, 3, H)
    lens = torch.tensor([0, 5, 2], dtype=torch.int32)
    out, h_n = gru(x, h0, lengths=lens)
    assert torch.equal(out[:, 0], torch.zeros(T, dirs * H))
    assert torch.equal(out[2:, 2], torch.zeros(T - 2, dirs * H))
    assert torch.equal(h_n[:, 0], h0[:, 0])  # nothing ran for row 0, in every layer
    # The other rows are what torch computes for them alone (torch cannot pack a length 0).
    want_out, want_h = _torch_gru(torch_gru, x[:, 1:], h0[:, 1:], lens[1:], False)
    _close(out[:, 1:], want_out, TOL[backend])
    _close(h_n[:, 1:], want_h, TOL[backend])


@pytest.mark.parametrize("backend", _backends("gru_layer"))
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("enforce_sorted", [False, True], ids=["unsorted", "sorted"])
def test_gru_packed_sequence_in_packed_sequence_out(enforce_sorted, bidirectional, backend):
    T, I, H, L = 6, 3, 5, 2
    dirs = 2 if bidirectional else 1
    lens = torch.tensor([6, 4, 4, 2]) if enforce_sorted else torch.tensor([4, 6, 2, 4])  # ties
    x, h0 = torch.randn(T, 4, I), torch.randn(L * dirs, 4, H)
    packed = pack_padded_sequence(x, lens, enforce_sorted=enforce_sorted)
    torch_gru = nn.GRU(I, H, num_layers=L, bidirectional=bidirectional)
    gru = GRU(I, H, num_layers=L, bidirectional=bidirectional, backend=backend)
    gru.load_state_dict(torch_gru.state_dict())

    want_out, want_h = torch_gru(packed, h0)
    out, h_n = gru(packed, h0)
    assert isinstance(out, PackedSequence)
    assert torch.equal(out.batch_sizes, want_out.batch_sizes)
    for name in ("sorted_indices", "unsorted_indices"):
        got, want = getattr(out, name), getattr(want_out, name)
        assert (got is None and want is None) or torch.equal(got, want), name
    _close(out.data, want_out.data, TOL[backend])
    _close(h_n, want_h, TOL[backend])  # original batch order, as torch returns it
    # The same as the padded call with lengths.
    padded_out, padded_h = gru(x, h0, lengths=lens)
    _close(pad_packed_sequence(out, total_length=T)[0], padded_out, TOL[backend])
    _close(h_n, padded_h, TOL[backend])


def test_gru_unbatched_input_matches_torch():
    torch_gru = nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    gru = GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, backend="reference")
    gru.load_state_dict(torch_gru.state_dict())
    x, h0 = torch.randn(5, 3), torch.randn(4, 4)
    for h in (h0, None):
        out, h_n = gru(x, h)
        want_out, want_h = torch_gru(x, h)
        assert out.shape == (5, 8) and h_n.shape == (4, 4)
        _close(out, want_out, 1e-5)
        _close(h_n, want_h, 1e-5)


@pytest.mark.parametrize("backend", _backends("gru_layer"))
def test_gru_non_contiguous_input(backend):
    T, B, I, H = 5, 3, 4, 6
    torch_gru = nn.GRU(I, H, bidirectional=True)
    gru = GRU(I, H, bidirectional=True, backend=backend)
    gru.load_state_dict(torch_gru.state_dict())
    x = torch.randn(I, B, T).permute(2, 1, 0)  # (T, B, I), not contiguous
    h0 = torch.randn(B, 2, H).transpose(0, 1)  # (2, B, H), not contiguous
    lens = torch.tensor([5, 2, 4])
    assert not x.is_contiguous() and not h0.is_contiguous()
    out, h_n = gru(x, h0, lengths=lens)
    want_out, want_h = _torch_gru(torch_gru, x.contiguous(), h0.contiguous(), lens, False)
    _close(out, want_out, TOL[backend])
    _close(h_n, want_h, TOL[backend])


def test_gru_accepts_lengths_as_a_list_and_int32():
    gru = GRU(3, 4, backend="reference")
    x = torch.randn(4, 2, 3)
    want = gru(x, lengths=torch.tensor([2, 4]))
    for lens in ([2, 4], torch.tensor([2, 4], dtype=torch.int32)):
        got = gru(x, lengths=lens)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


# ------------------------------------------------------------------------------------------------
# GRU: dropout and gradients
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_gru_dropout_in_eval_mode_matches_torch(bidirectional):
    torch_gru = nn.GRU(3, 5, num_layers=2, dropout=0.5, bidirectional=bidirectional).eval()
    gru = GRU(3, 5, num_layers=2, dropout=0.5, bidirectional=bidirectional, backend="reference")
    gru.load_state_dict(torch_gru.state_dict())
    gru.eval()
    x, lens = torch.randn(6, 3, 3), torch.tensor([6, 2, 4])
    out, h_n = gru(x, lengths=lens)
    want_out, want_h = _torch_gru(torch_gru, x, None, lens, False)
    _close(out, want_out, 1e-5)
    _close(h_n, want_h, 1e-5)


def test_gru_dropout_between_layers_only_in_training():
    # dropout=1 zeroes the input of layer 2 in training mode, deterministically: the output is
    # what torch.nn.GRU gives under the same rule, and the last layer's output is not dropped.
    torch_gru = nn.GRU(3, 5, num_layers=2, dropout=1.0).train()
    gru = GRU(3, 5, num_layers=2, dropout=1.0, backend="reference").train()
    gru.load_state_dict(torch_gru.state_dict())
    x, lens = torch.randn(4, 2, 3), torch.tensor([4, 3])
    out, h_n = gru(x, lengths=lens)
    want_out, want_h = _torch_gru(torch_gru, x, None, lens, False)
    _close(out, want_out, 1e-5)
    _close(h_n, want_h, 1e-5)
    assert out[:3].abs().min() > 0  # not dropped after the last layer
    assert torch.equal(out[3, 1], torch.zeros(5))  # padded stays zero
    # Layer 2 saw zeros: every row with the same length has the same output.
    _close(out[:3, 0], out[:3, 1], 0.0)
    # In eval mode nothing is dropped.
    gru.eval()
    assert not torch.allclose(gru(x, lengths=lens)[0][:3, 0], gru(x, lengths=lens)[0][:3, 1])


def test_gru_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        GRU(3, 4, num_layers=1, dropout=0.2)


def _gru_grads(module, x, h0, lens, grad_out, batch_first=False):
    xi, hi = x.clone().requires_grad_(), h0.clone().requires_grad_()
    if isinstance(module, nn.GRU):
        out, h_n = _torch_gru(module, xi, hi, lens, batch_first)
    else:
        out, h_n = module(xi, hi, lengths=lens)
    (out * grad_out).sum().add_(h_n.square().sum()).backward()
    return [xi.grad, hi.grad] + [p.grad for p in module.parameters()]


def test_gru_gradients_match_torch():
    L, T, B, I, H = 2, 5, 3, 4, 6
    torch_gru = nn.GRU(I, H, num_layers=L, bidirectional=True, batch_first=True)
    gru = GRU(I, H, num_layers=L, bidirectional=True, batch_first=True, backend="reference")
    gru.load_state_dict(torch_gru.state_dict())
    x, h0 = torch.randn(B, T, I), torch.randn(2 * L, B, H)
    lens, grad_out = torch.tensor([3, 5, 1]), torch.randn(B, T, 2 * H)
    got = _gru_grads(gru, x, h0, lens, grad_out)
    want = _gru_grads(torch_gru, x, h0, lens, grad_out, batch_first=True)
    for g, w in zip(got, want, strict=True):
        _close(g, w, 1e-5)


@pytest.mark.parametrize("backend", _backends("gru_layer", include_reference=False))
@pytest.mark.parametrize("lengths", ["nolen", "len"])
def test_gru_gradients_match_reference_backend(lengths, backend):
    L, T, B, I, H = 2, 5, 3, 4, 6
    gru = GRU(I, H, num_layers=L, bidirectional=True, backend=backend)
    ref = GRU(I, H, num_layers=L, bidirectional=True, backend="reference")
    ref.load_state_dict(gru.state_dict())
    x, h0 = torch.randn(T, B, I), torch.randn(2 * L, B, H)
    lens = torch.tensor([3, 5, 0]) if lengths == "len" else None
    grad_out = torch.randn(T, B, 2 * H)
    for g, w in zip(
        _gru_grads(gru, x, h0, lens, grad_out), _gru_grads(ref, x, h0, lens, grad_out), strict=True
    ):
        _close(g, w, TOL[backend])


# ------------------------------------------------------------------------------------------------
# GRU / GRUCell: bad input
# ------------------------------------------------------------------------------------------------


def test_gru_bad_input_names_the_argument():
    gru = GRU(3, 4, num_layers=2, backend="reference")
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="input_size"):
        gru(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="input"):
        gru(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match="h0"):
        gru(x, torch.randn(1, 2, 4))  # needs num_layers = 2 states
    with pytest.raises(ValueError, match="h0"):
        gru(x, torch.randn(2, 3, 4))  # batch 3 != 2
    with pytest.raises(ValueError, match="lengths"):
        gru(x, lengths=torch.tensor([6, 2]))  # longer than T = 5
    with pytest.raises(ValueError, match="lengths"):
        gru(x, lengths=torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match="lengths"):
        gru(x, lengths=torch.tensor([5, 2, 1]))  # one per row
    with pytest.raises(ValueError, match="lengths"):
        gru(x, lengths=torch.tensor([5.0, 2.0]))
    with pytest.raises(ValueError, match="lengths"):
        gru(pack_padded_sequence(x, torch.tensor([5, 2])), lengths=torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="dropout"):
        GRU(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="num_layers"):
        GRU(3, 4, num_layers=0)
    with pytest.raises(ValueError, match="backend"):
        GRU(3, 4, backend="fastest")


def test_grucell_bad_input_names_the_argument():
    cell = GRUCell(3, 4, backend="reference")
    with pytest.raises(ValueError, match="input_size"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="input"):
        cell(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match="hx"):
        cell(torch.randn(2, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="hx"):
        cell(torch.randn(3), torch.randn(1, 4))


@pytest.mark.parametrize("module", ["GRU", "GRUCell"])
def test_unavailable_backend_says_why(module):
    op = "gru_layer" if module == "GRU" else "gru_cell"
    reason = available_backends(op, "cpu")["triton"]
    if reason is None:
        pytest.skip("the triton backend is available here")
    m = GRU(3, 4, backend="triton") if module == "GRU" else GRUCell(3, 4, backend="triton")
    x = torch.randn(2, 2, 3) if module == "GRU" else torch.randn(2, 3)
    with pytest.raises(BackendUnavailableError, match="triton"):
        m(x)


# ------------------------------------------------------------------------------------------------
# Attention
# ------------------------------------------------------------------------------------------------

B, BEAM, S, DQ, DK, DV, A = 3, 2, 5, 6, 4, 5, 7


def _attention(kind: str, backend: str = "reference", bias: bool = False) -> Attention:
    dq = DK if kind in ("dot", "scaled_dot") else DQ
    attn_size = A if kind in ("concat", "additive") else None
    return Attention(kind, dq, DK, value_size=DV, attn_size=attn_size, bias=bias, backend=backend)


def _direct(att: Attention, query, keys, values, lengths, beam):
    """The formula of each kind written out, in float64: scores, masked softmax, weighted sum."""
    q = (query if query.dim() == 3 else query[:, None]).double()  # (N, T, Dq)
    k = keys.double().repeat_interleave(beam, 0)  # (N, S, Dk): row n reads source row n // beam
    v = values.double().repeat_interleave(beam, 0)  # (N, S, Dv)
    if att.kind == "dot":
        scores = torch.einsum("ntd,nsd->nts", q, k)  # q . k
    elif att.kind == "scaled_dot":
        scores = torch.einsum("ntd,nsd->nts", q, k) / math.sqrt(k.shape[-1])  # q . k / sqrt(d)
    elif att.kind == "general":
        w_a = att.query_proj.weight.double().t()  # W_a (Dq, Dk)
        scores = torch.einsum("ntq,qk,nsk->nts", q, w_a, k)  # q^T W_a k
    else:  # concat / additive: v^T tanh(W_q q + W_k k (+ b))
        w_q, w_k = att.query_proj.weight.double(), att.key_proj.weight.double()
        b = att.key_proj.bias.double() if att.bias else torch.zeros(w_k.shape[0]).double()
        hidden = torch.tanh((q @ w_q.t())[:, :, None, :] + (k @ w_k.t() + b)[:, None, :, :])
        scores = hidden @ att.v.double()  # (N, T, S)
    if lengths is not None:
        valid = torch.arange(k.shape[1]) < lengths.repeat_interleave(beam)[:, None]  # (N, S)
        scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an all-masked row: zeros
    context = weights @ v
    if query.dim() == 2:
        context, weights = context[:, 0], weights[:, 0]
    return context.float(), weights.float()


@pytest.mark.parametrize("backend", _backends("dot_attention"))
@pytest.mark.parametrize("lengths", ["nolen", "len_0_S"])
@pytest.mark.parametrize("qdim", ["2d", "3d"])
@pytest.mark.parametrize("kind", GLOBAL_ATTENTION_KINDS)
def test_attention_matches_formula(kind, qdim, lengths, backend):
    if kind in ("concat", "additive") and available_backends("additive_attention", "cpu")[backend]:
        pytest.skip(available_backends("additive_attention", "cpu")[backend])
    att = _attention(kind, backend, bias=kind == "additive")
    dq = att.query_size
    query = torch.randn(B * BEAM, dq) if qdim == "2d" else torch.randn(B * BEAM, 3, dq)
    keys, values = torch.randn(B, S, DK), torch.randn(B, S, DV)
    lens = torch.tensor([2, 0, S]) if lengths == "len_0_S" else None

    context, weights = att(query, att.precompute(keys, values), lengths=lens, beam=BEAM)
    want_context, want_weights = _direct(att, query, keys, values, lens, BEAM)
    t_shape = () if qdim == "2d" else (3,)
    assert context.shape == (B * BEAM, *t_shape, DV)
    assert weights.shape == (B * BEAM, *t_shape, S)
    _close(context, want_context, TOL[backend])
    _close(weights, want_weights, TOL[backend])
    if lens is not None:  # source row 1 has length 0: beam rows 2 and 3 are exactly zero
        assert torch.equal(context[2:4], torch.zeros_like(context[2:4]))
        assert torch.equal(weights[2:4], torch.zeros_like(weights[2:4]))
        assert torch.equal(weights[:2, ..., 2:], torch.zeros_like(weights[:2, ..., 2:]))


@pytest.mark.parametrize("kind", GLOBAL_ATTENTION_KINDS)
def test_attention_raw_keys_equal_precompute_reused_over_steps(kind):
    dq = DK if kind in ("dot", "scaled_dot") else DQ
    att = Attention(kind, dq, DK, attn_size=A, backend="reference")  # value_size = key_size
    keys, lens = torch.randn(B, S, DK), torch.tensor([S, 1, 3])
    calls = []
    if hasattr(att, "key_proj"):
        att.key_proj.register_forward_hook(lambda *_: calls.append(1))
    memory = att.precompute(keys)  # values are the keys
    assert isinstance(memory, AttentionMemory) and memory.values is keys
    if kind in ("dot", "scaled_dot", "general"):
        assert memory.keys is keys
    for _ in range(3):  # three decoder steps on one memory
        query = torch.randn(B, att.query_size)
        got = att(query, memory, lengths=lens)
        want = att(query, keys, lengths=lens)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert got[0].shape == (B, DK)
    if hasattr(att, "key_proj"):
        assert len(calls) == 1 + 3  # one precompute, then one per raw-keys call


@pytest.mark.parametrize("kind", GLOBAL_ATTENTION_KINDS)
def test_attention_state_dict_round_trip(kind):
    att = _attention(kind, bias=kind in ("concat", "additive"))
    expected_keys = {
        "dot": [],
        "scaled_dot": [],
        "general": ["query_proj.weight"],
        "concat": ["v", "query_proj.weight", "key_proj.weight", "key_proj.bias"],
        "additive": ["v", "query_proj.weight", "key_proj.weight", "key_proj.bias"],
    }[kind]
    assert sorted(att.state_dict()) == sorted(expected_keys)
    torch.manual_seed(5)
    fresh = _attention(kind, bias=kind in ("concat", "additive"))
    fresh.load_state_dict(att.state_dict())
    query, keys = torch.randn(B, 2, att.query_size), torch.randn(B, S, DK)
    values = torch.randn(B, S, DV)
    a = att(query, att.precompute(keys, values))
    b = fresh(query, fresh.precompute(keys, values))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("backend", _backends("dot_attention"))
@pytest.mark.parametrize("kind", GLOBAL_ATTENTION_KINDS)
def test_attention_non_contiguous_inputs(kind, backend):
    if kind in ("concat", "additive") and available_backends("additive_attention", "cpu")[backend]:
        pytest.skip(available_backends("additive_attention", "cpu")[backend])
    att = _attention(kind, backend)
    query = torch.randn(att.query_size, B * BEAM).t()  # (N, Dq), not contiguous
    keys = torch.randn(B, DK, S).transpose(1, 2)  # (B, S, Dk), not contiguous
    values = torch.randn(DV, B, S).permute(1, 2, 0)  # (B, S, Dv), not contiguous
    lens = torch.tensor([4, 1, S])
    got = att(query, att.precompute(keys, values), lengths=lens, beam=BEAM)
    want = _direct(att, query, keys, values, lens, BEAM)
    _close(got[0], want[0], TOL[backend])
    _close(got[1], want[1], TOL[backend])


@pytest.mark.parametrize("backend", _backends("dot_attention"))
@pytest.mark.parametrize("qdim", ["2d", "3d"])
@pytest.mark.parametrize("kind", GLOBAL_ATTENTION_KINDS)
def test_attention_need_weights_false(kind, qdim, backend):
    """need_weights=False, as torch.nn.MultiheadAttention: weights None, the same context."""
    if kind in ("concat", "additive") and available_backends("additive_attention", "cpu")[backend]:
        pytest.skip(available_backends("additive_attention", "cpu")[backend])
    att = _attention(kind, backend, bias=kind == "additive")
    query = torch.randn(B * BEAM, att.query_size)
    if qdim == "3d":
        query = torch.randn(B * BEAM, 3, att.query_size)
    keys, values = torch.randn(B, S, DK), torch.randn(B, S, DV)
    lens = torch.tensor([2, 0, S])
    memory = att.precompute(keys, values)
    context, weights = att(query, memory, lengths=lens, beam=BEAM, need_weights=False)
    assert weights is None
    want_context, _ = att(query, memory, lengths=lens, beam=BEAM)
    _close(context, want_context, TOL[backend])
    _close(context, _direct(att, query, keys, values, lens, BEAM)[0], TOL[backend])
    with pytest.raises(TypeError, match="need_weights must be a bool"):
        att(query, memory, lengths=lens, beam=BEAM, need_weights="no")


@pytest.mark.parametrize("backend", _backends("dot_attention", include_reference=False))
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("kind", GLOBAL_ATTENTION_KINDS)
def test_attention_gradients_match_reference_backend(kind, need_weights, backend):
    """A loss on context and weights, or on the context alone with need_weights=False."""
    if kind in ("concat", "additive") and available_backends("additive_attention", "cpu")[backend]:
        pytest.skip(available_backends("additive_attention", "cpu")[backend])
    att = _attention(kind, backend, bias=kind == "additive")
    ref = _attention(kind, "reference", bias=kind == "additive")
    ref.load_state_dict(att.state_dict())
    query = torch.randn(B * BEAM, 3, att.query_size)
    keys, values = torch.randn(B, S, DK), torch.randn(B, S, DV)
    lens, grad_ctx = torch.tensor([2, 0, S]), torch.randn(B * BEAM, 3, DV)
    grads = []
    for module in (att, ref):
        q, k, v = (t.clone().requires_grad_() for t in (query, keys, values))
        memory = module.precompute(k, v)
        context, weights = module(q, memory, lengths=lens, beam=BEAM, need_weights=need_weights)
        loss = (context * grad_ctx).sum()
        if need_weights:
            loss = loss + weights.square().sum()
        loss.backward()
        grads.append([q.grad, k.grad, v.grad] + [p.grad for p in module.parameters()])
    for got, want in zip(*grads, strict=True):
        _close(got, want, TOL[backend])


def test_attention_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="kind"):
        Attention("bilinear", 4, 4)
    with pytest.raises(ValueError, match="query_size"):
        Attention("dot", 6, 4)
    with pytest.raises(ValueError, match="bias"):
        Attention("general", 6, 4, bias=True)
    with pytest.raises(ValueError, match="backend"):
        Attention("dot", 4, 4, backend="gpu")
    att = _attention("general")  # value_size = DV != key_size: memory from precompute
    keys = att.precompute(torch.randn(B, S, DK), torch.randn(B, S, DV))
    with pytest.raises(ValueError, match=r"query.*beam"):
        att(torch.randn(B * 2 + 1, DQ), keys, beam=2)  # N not a multiple of B
    with pytest.raises(ValueError, match=r"query.*beam"):
        att(torch.randn(B * 2, DQ), keys, beam=3)  # a multiple, but not B * beam
    with pytest.raises(ValueError, match="query_size"):
        att(torch.randn(B, DQ + 1), keys)
    with pytest.raises(ValueError, match="query"):
        att(torch.randn(B, 1, 1, DQ), keys)
    with pytest.raises(ValueError, match="keys"):
        att(torch.randn(B, DQ), torch.randn(B, S, DK + 1))
    with pytest.raises(ValueError, match="values"):
        att(torch.randn(B, DQ), torch.randn(B, S, DK))  # raw keys as values: value_size differs
    with pytest.raises(ValueError, match="values"):
        att.precompute(torch.randn(B, S, DK), torch.randn(B, S, DV + 1))
    with pytest.raises(ValueError, match="values"):
        att.precompute(torch.randn(B, S, DK), torch.randn(B, S + 1, DV))
    with pytest.raises(ValueError, match="lengths"):
        att(torch.randn(B, DQ), keys, lengths=torch.tensor([S + 1, 1, 1]))
    with pytest.raises(ValueError, match="beam"):
        att(torch.randn(B, DQ), keys, beam=0)
