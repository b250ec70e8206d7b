"""The torch.compile check every op family's tests share."""

from __future__ import annotations

import torch


def assert_compiled_matches_eager(step, inputs, wrt, backend="aot_eager", grad_tol=None):
    """torch.compile(step, fullgraph=True) gives the eager loss and the eager gradients of the
    tensors in `wrt`. backend: torch.compile's (aot_eager: the custom ops' fake functions and
    autograd, no codegen); grad_tol: atol/rtol of the gradients' comparison (None:
    assert_close's defaults, as for the loss)."""
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, wrt)
    expected_loss = step(*inputs)
    expected = torch.autograd.grad(expected_loss, wrt)
    torch.testing.assert_close(loss, expected_loss)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, **(grad_tol or {}))
