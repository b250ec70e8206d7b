"""Fake (shape) functions and autograd formula of local_attention, shared by every implementation.

The compiled op (torch.ops.fast_s2s.local_attention, C++ and CUDA), the Triton op
(fast_s2s_triton::local_attention) and the tests' emulated CUDA op have the same schemas: the
forward returns (context, weights), weights an empty (0,) placeholder without need_weights, and a
backward op of its own turns the output gradients into the gradients of query, keys, values
and centers (recomputing the window's weights: nothing (N, T, S) is saved). Only the backward op
differs, and whether it takes grad_context=None (Triton) or needs zeros in its place.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from fast_s2s import checks


def forward_fake(query, keys, values, centers, window, lengths=None, scale=1.0, need_weights=True):
    """(context (N, T, Dv) or (N, Dv), weights (N, T, S) / (N, S), or (0,) without weights)."""
    others = dict(keys=keys, values=values, centers=centers)
    checks.check_devices("local_attention", "query", query, others, lengths)
    lead = tuple(query.shape[:-1])
    weights = lead + (keys.shape[1],) if need_weights else (0,)
    return query.new_empty(lead + (values.shape[2],)), query.new_empty(weights)


def backward_fake(grad_context, grad_weights, query, keys, values, centers, window, lengths, scale):
    return tuple(t.new_empty(t.shape) for t in (query, keys, values, centers))


def autograd(
    backward_op: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor]],
    *,
    takes_no_context_grad: bool = False,
) -> tuple[Callable, Callable]:
    """(backward, setup_context) for register_autograd around `backward_op` (the op's
    local_attention_backward). Gradients are not materialised: a loss on the context alone
    gives the backward op grad_weights=None, its path without the weights' gradient; a loss on
    the weights alone gives grad_context=None, passed on as such where the backward op takes
    it (`takes_no_context_grad`), else as zeros."""

    def setup(ctx, inputs, output):
        query, keys, values, centers, window, lengths, scale, need_weights = inputs
        if not need_weights:
            ctx.mark_non_differentiable(output[1])  # the empty placeholder
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(query, keys, values, centers, lengths)
        ctx.window, ctx.scale, ctx.need_weights = window, scale, need_weights

    def backward(ctx, grad_context, grad_weights):
        query, keys, values, centers, lengths = ctx.saved_tensors
        if grad_context is None and not takes_no_context_grad:
            grad_context = query.new_zeros((*query.shape[:-1], values.shape[-1]))
        grads = backward_op(
            grad_context,
            grad_weights if ctx.need_weights else None,
            query,
            keys,
            values,
            centers,
            ctx.window,
            lengths,
            ctx.scale,
        )
        return (*grads, None, None, None, None)

    return backward, setup
