"""Fake (shape) functions and autograd formula of dot_attention and additive_attention, shared
by every implementation, as fast_s2s._gru_autograd and _local_autograd are for theirs.

Two forms of the ops exist:

- the compiled ops (torch.ops.fast_s2s.*, C++ and CUDA) and the tests' emulated CUDA ops: the
  forward returns (context, weights), weights a (0,) placeholder on CUDA without need_weights
  (the CPU kernel writes them anyway: its backward reads them); the backward op takes the
  weights (the CUDA one recomputes them when they are the placeholder);
- the Triton ops (fast_s2s_triton::*, `flash=True`): the forward also returns the log-sum-exp
  per row, and the backward recomputes the weights from it and the context (FlashAttention's
  delta = rowsum(dC * C)).

Inputs: dot (query, keys, values, lengths, scale, need_weights); additive (query_proj,
keys_proj, v, values, lengths, need_weights). Gradients are not materialised: an output the
loss does not use arrives as None (no (N, T, S) zeros for a loss on the context alone); a
None context gradient (a loss on the weights alone) is passed on as zeros.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fast_s2s import checks

# per score: the differentiable inputs, and the name of the first (for the device check)
_TENSORS = {
    "dot": ("query", "keys", "values"),
    "additive": ("query_proj", "keys_proj", "v", "values"),
}


def forward_fake(score: str, *, flash: bool = False) -> Callable:
    """The forward's fake function for `score` ("dot" or "additive"): (context, weights), and
    with flash the Triton op's lse (N, T) / (N,) in the accumulation dtype. Without
    need_weights the weights are the (0,) placeholder, except from the compiled CPU kernel."""

    def outputs(tensors: tuple[Tensor, ...], lengths: Tensor | None, need_weights: bool):
        names = _TENSORS[score]
        query, keys, values = tensors[0], tensors[1], tensors[-1]
        others = dict(zip(names[1:], tensors[1:], strict=True))
        checks.check_devices(f"{score}_attention", names[0], query, others, lengths)
        lead = tuple(query.shape[:-1])
        written = need_weights or (not flash and query.device.type == "cpu")
        context = query.new_empty(lead + (values.shape[2],))
        weights = query.new_empty(lead + (keys.shape[1],) if written else (0,))
        if not flash:
            return context, weights
        acc = torch.float64 if query.dtype == torch.float64 else torch.float32
        return context, weights, query.new_empty(lead, dtype=acc)

    if score == "dot":

        def dot_fake(query, keys, values, lengths=None, scale=1.0, need_weights=True):
            return outputs((query, keys, values), lengths, need_weights)

        return dot_fake

    def additive_fake(query_proj, keys_proj, v, values, lengths=None, need_weights=True):
        return outputs((query_proj, keys_proj, v, values), lengths, need_weights)

    return additive_fake


def backward_fake(score: str) -> Callable:
    """A backward op's fake function: one gradient per differentiable input, in their shapes."""
    count = len(_TENSORS[score])

    def fake(grad_context, grad_weights, *args):
        return tuple(t.new_empty(t.shape) for t in args[:count])

    return fake


def autograd(
    score: str, backward_op: Callable, *, flash: bool = False
) -> tuple[Callable, Callable]:
    """(backward, setup_context) for register_autograd of a `score` attention op around its
    backward op (see the module docstring for the two forms)."""
    count = len(_TENSORS[score])
    scale_arg = score == "dot"

    def setup(ctx, inputs, output):
        tensors, lengths, need_weights = inputs[:count], inputs[count], inputs[-1]
        ctx.scale = inputs[count + 1] if scale_arg else None
        ctx.set_materialize_grads(False)
        if flash:
            context, weights, lse = output
            ctx.mark_non_differentiable(lse)
            if not need_weights:
                ctx.mark_non_differentiable(weights)  # the empty placeholder
            kept = weights if need_weights else None
            ctx.save_for_backward(*tensors, lengths, context, kept, lse)
        else:
            ctx.save_for_backward(*tensors, output[1], lengths)

    def backward(ctx, grad_context, grad_weights, *_grad_lse):
        scale = (ctx.scale,) if scale_arg else ()
        if flash:
            grads = backward_op(grad_context, grad_weights, *ctx.saved_tensors, *scale)
        else:
            *tensors, weights, lengths = ctx.saved_tensors
            if grad_context is None:  # a loss on the weights alone
                query, values = tensors[0], tensors[-1]
                grad_context = query.new_zeros((*query.shape[:-1], values.shape[-1]))
            if weights.dim() == 1 and weights.shape[0] == 0:
                grad_weights = None  # the kernel wrote no weights (need_weights=False on CUDA)
            grads = backward_op(grad_context, grad_weights, *tensors, weights, lengths, *scale)
        return (*grads, *([None] * (6 - count)))

    return backward, setup
