"""The torch.compile check every op family's tests share."""

from __future__ import annotations

import torch


def assert_compiled_matches_eager(step, inputs, wrt):
    """torch.compile(step, fullgraph=True) gives the eager loss and the eager gradients of the
    tensors in `wrt` (aot_eager: the custom ops' fake functions and autograd, no codegen)."""
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, wrt)
    expected_loss = step(*inputs)
    expected = torch.autograd.grad(expected_loss, wrt)
    torch.testing.assert_close(loss, expected_loss)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)
