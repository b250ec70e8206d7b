"""Fake (shape) functions and autograd formulas of the GRU ops, shared by every implementation.

The compiled ops (torch.ops.fast_s2s.gru_*) and the Triton ops (fast_s2s_triton::gru_*) have the
same schemas: the forward returns its float32/64 workspace as an extra, non-differentiable
output, and a backward op of its own turns the output gradients into input gradients. Only the
backward op differs, so each implementation registers these with its own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fast_s2s import checks


def acc_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the kernels accumulate and keep their workspace in."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _weight_grads_fake(x, h, w_ih, w_hh):
    """The six input gradients, contiguous like the kernels' outputs."""
    three_h = w_ih.shape[0]
    return (
        x.new_empty(x.shape),
        h.new_empty(h.shape),
        w_ih.new_empty(w_ih.shape),
        w_hh.new_empty(w_hh.shape),
        x.new_empty((three_h,)),
        x.new_empty((three_h,)),
    )


def cell_fake(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """(h' (B, H), gates (B, 4H))."""
    others = dict(h=h, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    checks.check_devices("gru_cell", "x", x, others)
    batch, hidden = h.shape
    return h.new_empty((batch, hidden)), h.new_empty((batch, 4 * hidden), dtype=acc_dtype(x))


def cell_backward_fake(grad_h_new, x, h, w_ih, w_hh, gates):
    return _weight_grads_fake(x, h, w_ih, w_hh)


def layer_fake(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False):
    """(output (T, B, H), h_n (B, H), work (T, B, 5H))."""
    others = dict(h0=h0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    checks.check_devices("gru_layer", "x", x, others, lengths)
    steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[1]
    return (
        x.new_empty((steps, batch, hidden)),
        h0.new_empty((batch, hidden)),
        x.new_empty((steps, batch, 5 * hidden), dtype=acc_dtype(x)),
    )


def layer_backward_fake(grad_output, grad_h_n, x, h0, w_ih, w_hh, work, lengths, reverse):
    return _weight_grads_fake(x, h0, w_ih, w_hh)


def _bias_grads(ctx, gb_ih, gb_hh):
    return (gb_ih if ctx.has_bias[0] else None, gb_hh if ctx.has_bias[1] else None)


def cell_autograd(backward_op: Callable) -> tuple[Callable, Callable]:
    """(backward, setup_context) for register_autograd of a gru_cell op using backward_op."""

    def setup_context(ctx, inputs, output):
        x, h, w_ih, w_hh, b_ih, b_hh = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(x, h, w_ih, w_hh, output[1])
        ctx.has_bias = (b_ih is not None, b_hh is not None)

    def backward(ctx, grad_h_new, _grad_gates):
        x, h, w_ih, w_hh, gates = ctx.saved_tensors
        gx, gh, gw_ih, gw_hh, gb_ih, gb_hh = backward_op(grad_h_new, x, h, w_ih, w_hh, gates)
        return (gx, gh, gw_ih, gw_hh, *_bias_grads(ctx, gb_ih, gb_hh))

    return backward, setup_context


def layer_autograd(backward_op: Callable) -> tuple[Callable, Callable]:
    """(backward, setup_context) for register_autograd of a gru_layer op using backward_op."""

    def setup_context(ctx, inputs, output):
        x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse = inputs
        ctx.mark_non_differentiable(output[2])
        ctx.save_for_backward(x, h0, w_ih, w_hh, output[2], lengths)
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        ctx.reverse = reverse

    def backward(ctx, grad_output, grad_h_n, _grad_work):
        x, h0, w_ih, w_hh, work, lengths = ctx.saved_tensors
        gx, gh0, gw_ih, gw_hh, gb_ih, gb_hh = backward_op(
            grad_output, grad_h_n, x, h0, w_ih, w_hh, work, lengths, ctx.reverse
        )
        return (gx, gh0, gw_ih, gw_hh, *_bias_grads(ctx, gb_ih, gb_hh), None, None)

    return backward, setup_context
