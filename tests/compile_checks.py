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


def assert_script_compiles_for_sm90(script: str) -> None:
    """Run `script` (which compiles Triton kernels for sm_90 with Triton's bundled ptxas and
    prints "compiled") in a process without the interpreter (TRITON_INTERPRET unset), from the
    repository root; skip when the bundled ptxas is missing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    triton = pytest.importorskip("triton")
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("triton's bundled ptxas is missing")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]
