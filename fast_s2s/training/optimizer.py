"""The optimizer of every training here (`fast-s2s train`, the length experiment, the
benchmark's training step): Adam, fused where torch has a fused kernel for the parameters.

Fused Adam updates all parameters in one kernel per step; torch's default on the CPU is a loop
of ~6 element-wise ops per parameter tensor. On the g2p model (20 tensors, 674,732 parameters,
one thread) a step of the optimizer takes 0.7 ms fused against 2.0 ms looped, alone, and
1.3-1.4 against 3.5-3.8 ms inside training, where the loop's ops run from cold caches: a
training step about 9% shorter (docs/results.md, "Behind the defaults").
The update is Adam's either way; the two differ in rounding only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch.optim.Adam(fused=True) has its kernel


def adam(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """torch.optim.Adam over `parameters`, fused where every one is a floating-point tensor on a
    device of FUSED_DEVICES, else torch's default implementation."""
    parameters = list(parameters)  # an empty list: torch.optim.Adam's own error
    fused = all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


def train_step(
    loss: Callable[[], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[torch.nn.Parameter],
    clip: float,
    after_backward: Callable[[], None] | None = None,
) -> torch.Tensor:
    """One training step as every training here takes it: loss(), its gradients (the old ones
    dropped), after_backward() (data-parallel replicas average them there:
    fast_s2s.training.gradient_sync), their global norm clipped to `clip`, the update. Returns
    the loss, detached."""
    value = loss()
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    if after_backward is not None:
        after_backward()
    torch.nn.utils.clip_grad_norm_(parameters, clip)
    optimizer.step()
    return value.detach()
