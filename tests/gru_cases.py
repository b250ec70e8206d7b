"""Sample inputs of the GRU ops, for every backend's tests (tests/ops/test_gru.py).

`sample_inputs` draws every tensor in float64 on the CPU and then casts and moves it, so a case
has the same values in every dtype and on every device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GruCase:
    T: int
    B: int
    I: int
    H: int
    bias: bool
    lengths: str  # "none" | "full" | "mixed" (contains 0, T and 1)

    @property
    def id(self) -> str:
        return f"T{self.T}-B{self.B}-I{self.I}-H{self.H}-bias{int(self.bias)}-len_{self.lengths}"


def sample_inputs(case: GruCase, dtype=torch.float32, requires_grad=False, device="cpu"):
    """(x (T,B,I), h0 (B,H), w_ih, w_hh, b_ih, b_hh, lengths) for gru_layer; x[0] and h0 are the
    gru_cell inputs."""
    scale = case.H**-0.5  # the torch.nn.GRU initialisation range

    def rand(*shape, s=1.0):
        t = (torch.rand(*shape, dtype=torch.float64) * 2 - 1) * s
        return t.to(device=device, dtype=dtype).requires_grad_(requires_grad)

    x, h0 = rand(case.T, case.B, case.I), rand(case.B, case.H)
    w_ih, w_hh = rand(3 * case.H, case.I, s=scale), rand(3 * case.H, case.H, s=scale)
    b_ih = rand(3 * case.H, s=scale) if case.bias else None
    b_hh = rand(3 * case.H, s=scale) if case.bias else None
    if case.lengths == "none":
        lengths = None
    elif case.lengths == "full":
        lengths = torch.full((case.B,), case.T, device=device)
    else:
        pattern = [0, case.T, 1, max(case.T // 2, 1)]
        lengths = torch.tensor([pattern[b % 4] for b in range(case.B)], device=device)
    return x, h0, w_ih, w_hh, b_ih, b_hh, lengths


def cell_args(args):
    """The gru_cell arguments inside a gru_layer sample: the first step of x, and h0."""
    x, h0, w_ih, w_hh, b_ih, b_hh, _ = args
    return x[0], h0, w_ih, w_hh, b_ih, b_hh
