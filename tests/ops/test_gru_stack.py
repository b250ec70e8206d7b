"""fast_s2s.nn.GRU's inference op, torch.ops.fast_s2s.gru_stack (csrc/cpu/gru_stack.cpp).

Without autograd (torch.no_grad, inference mode, frozen weights) the module runs its whole
stack as one op call, the two directions of a layer on two threads at once; with autograd it
runs the per-layer loop over fast_s2s.ops.gru_layer. The two must give the same numbers, and
the one-op path must be the one that runs when it should, and only then. With a GEMM backend
pinned whose products do not depend on how W_hh's rows are split (inhouse, panel: each output
is its own FMA chain over the depth) they agree bit for bit; with `auto` the one-op path may
pick another backend than the loop (a direction inside the op's parallel region runs, and is
measured, as one thread), so they agree to float rounding, as csrc/cpu/gru_stack.cpp promises.
"""

from __future__ import annotations

import pytest
import torch

import fast_s2s
from fast_s2s import _extension
from fast_s2s import nn as fnn

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason="the C++ extension is not built"
)

CASES = [  # (layers, bidirectional, bias, B, T, I, H)
    (1, True, True, 1, 25, 64, 64),  # one sentence through the default encoder
    (2, True, False, 4, 7, 6, 5),
    (3, False, True, 3, 5, 6, 5),
    (2, True, True, 16, 50, 128, 96),  # a batch at the benchmark's scale
]


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls of the one-op path."""
    calls = []
    original = fnn.GRU._forward_one_op

    def counted(self, *args):
        calls.append(self)
        return original(self, *args)

    monkeypatch.setattr(fnn.GRU, "_forward_one_op", counted)
    return calls


@pytest.mark.parametrize("gemm", ["auto", "inhouse", "panel"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "L{}-{}-bias{}-B{}-T{}-I{}-H{}".format(*c))
def test_no_grad_forward_is_the_autograd_forward(case, threads, gemm, spy):
    layers, bidirectional, bias, B, T, I, H = case
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    fast_s2s.set_gemm_backend(gemm)
    try:
        gru = fnn.GRU(I, H, num_layers=layers, bidirectional=bidirectional, bias=bias,
                      batch_first=True)  # fmt: skip
        x = torch.randn(B, T, I)
        lengths = torch.tensor([T, 0, 1, T // 2] * B)[:B] if B > 1 else None
        h0 = torch.randn(layers * (2 if bidirectional else 1), B, H)
        expected = gru(x, h0, lengths=lengths)  # autograd on: the per-layer loop
        assert spy == []
        with torch.no_grad():
            got = gru(x, h0, lengths=lengths)
        assert len(spy) == 1
        for g, e in zip(got, expected, strict=True):
            if gemm == "auto":
                torch.testing.assert_close(g, e.detach(), atol=1e-5, rtol=1e-5)
            else:
                assert torch.equal(g, e.detach())
    finally:
        torch.set_num_threads(old)
        fast_s2s.set_gemm_backend("auto")


def test_inference_mode_frozen_weights_packed_and_unbatched_inputs_take_the_one_op(spy):
    gru = fnn.GRU(6, 5, num_layers=2, bidirectional=True)
    x = torch.randn(7, 3, 6)
    # Pinned: on auto the per-layer loop and the one op (whose directions run inside a parallel
    # region, keyed as one thread) time their GEMM backends separately, and at these tiny
    # products a timing blip can give them backends that round differently.
    fast_s2s.set_gemm_backend("blas")
    try:
        expected = gru(x)
        with torch.inference_mode():
            got = gru(x)
        for p in gru.parameters():
            p.requires_grad_(False)
        frozen = gru(x)  # grad mode on, but nothing to differentiate
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, [7, 4, 2])
        packed_out, _ = gru(packed)
        unbatched = gru(x[:, 0])
        assert len(spy) == 4
        unbatched_ref = gru(x[:, :1])[0][:, 0]
    finally:
        fast_s2s.set_gemm_backend("auto")
    for g in (got, frozen):
        torch.testing.assert_close(g[0], expected[0].detach(), atol=0, rtol=0)
    padded, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_out)
    assert padded.shape == (7, 3, 10) and (padded[4:, 1] == 0).all()
    torch.testing.assert_close(unbatched[0], unbatched_ref, atol=0, rtol=0)


def test_training_paths_keep_the_per_layer_loop(spy):
    """Autograd needed, or dropout between layers in training: not the inference op."""
    gru = fnn.GRU(6, 5, num_layers=2, bidirectional=True, dropout=0.5)
    x = torch.randn(7, 3, 6)
    out, _ = gru(x)
    out.sum().backward()  # gradients flow: the loop ran
    assert gru.weight_ih_l0.grad is not None
    with torch.no_grad():
        gru(x)  # training mode with dropout between layers
    assert spy == []
    gru.eval()
    with torch.no_grad():
        gru(x)
    assert len(spy) == 1
    reference = fnn.GRU(6, 5, backend="reference")
    with torch.no_grad():
        reference(x)  # the reference backend has no inference op
    assert len(spy) == 1


def test_bad_input_is_refused_as_by_the_loop():
    gru = fnn.GRU(6, 5, bidirectional=True)
    with torch.no_grad(), pytest.raises(ValueError, match="GRU: input must have 6 features"):
        gru(torch.randn(4, 2, 7))
    with torch.no_grad(), pytest.raises(ValueError, match=r"lengths must lie in \[0, T\]"):
        gru(torch.randn(4, 2, 6), lengths=torch.tensor([5, 1]))
    with torch.no_grad(), pytest.raises(ValueError, match="h0 must have the dtype of x"):
        gru(torch.randn(4, 2, 6), torch.randn(2, 2, 5, dtype=torch.float64))
    # x's dtype against the weights' (the one-op path skips the full checks only when they agree)
    with torch.no_grad(), pytest.raises(ValueError, match="dtype"):
        gru(torch.randn(4, 2, 6, dtype=torch.float64))
    with torch.no_grad(), pytest.raises(ValueError, match="float16"):
        gru.half()(torch.randn(4, 2, 6, dtype=torch.float16))


@pytest.mark.parametrize("threads", [1, 2])
def test_steps_past_every_length_are_zero_on_recycled_memory(threads):
    """Each direction writes its half of the (T, B, 2H) output in place, and nothing at the
    steps past every row's length runs: those must still be written (zeros), also where the
    allocator hands back memory full of NaN."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        T, B, I, H = 9, 3, 6, 5
        gru = fnn.GRU(I, H, num_layers=2, bidirectional=True)
        x, lengths = torch.randn(T, B, I), torch.tensor([4, 0, 2])
        expected = gru(x, lengths=lengths)  # the per-layer loop
        for _ in range(3):
            torch.full((T, B, 2 * H), float("nan")).sum()  # freed: its block is reused
            with torch.no_grad():
                got = gru(x, lengths=lengths)
            assert torch.equal(got[0], expected[0].detach())
            assert torch.equal(got[1], expected[1].detach())
            assert (got[0][4:] == 0).all() and (got[0][:, 1] == 0).all()
    finally:
        torch.set_num_threads(old)


def test_the_op_checks_its_own_arguments():
    x, h0 = torch.randn(4, 2, 6), torch.zeros(2, 2, 5)
    w = [torch.randn(15, 6), torch.randn(15, 5), None, None] * 2
    torch.library.opcheck(torch.ops.fast_s2s.gru_stack.default, (x, h0, w, None, 1, True))
    with pytest.raises(RuntimeError, match="gru_stack: weights must hold"):
        torch.ops.fast_s2s.gru_stack(x, h0, w[:4], None, 1, True)
    with pytest.raises(RuntimeError, match=r"gru_stack: h0 must have shape"):
        torch.ops.fast_s2s.gru_stack(x, h0[:1], w, None, 1, True)
