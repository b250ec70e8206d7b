"""Sample inputs of the attention ops, for every backend's tests (tests/ops/test_attention.py).

One `sample_inputs` per op (pattern of pytorch/extension-cpp's test_extension.py). The shapes hit
every kernel path: S = 1, odd feature sizes, sizes just over a SIMD block (16 floats with AVX-512,
8 with AVX2), beam > 1, lengths containing 0 and S, 2-D queries, and enough query rows per
source row (beam * T >= 8) to take the matrix-product path of dot_attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Case:
    B: int
    beam: int
    T: int | None  # None: 2-D query (one decoder step)
    S: int
    D: int
    Dv: int
    lengths: str  # "none" | "full" | "mixed" (contains 0, 1 and S)

    @property
    def id(self) -> str:
        t = "2d" if self.T is None else f"T{self.T}"
        return f"B{self.B}-beam{self.beam}-{t}-S{self.S}-D{self.D}-Dv{self.Dv}-len_{self.lengths}"


CASES = [
    Case(B=1, beam=1, T=1, S=1, D=1, Dv=1, lengths="none"),
    Case(B=2, beam=1, T=None, S=5, D=16, Dv=17, lengths="full"),
    Case(B=4, beam=1, T=1, S=37, D=65, Dv=33, lengths="mixed"),
    Case(B=3, beam=2, T=3, S=17, D=33, Dv=31, lengths="mixed"),
    Case(B=2, beam=5, T=None, S=50, D=64, Dv=64, lengths="mixed"),
    Case(B=3, beam=1, T=9, S=20, D=47, Dv=16, lengths="mixed"),  # 9 rows/source: matmul path
    Case(B=2, beam=4, T=3, S=1, D=8, Dv=5, lengths="full"),  # 12 rows/source, S = 1
    Case(B=5, beam=1, T=2, S=129, D=129, Dv=127, lengths="none"),
]
CASE_IDS = [c.id for c in CASES]


def make_lengths(case: Case, device: str | torch.device = "cpu") -> torch.Tensor | None:
    if case.lengths == "none":
        return None
    if case.lengths == "full":
        return torch.full((case.B,), case.S, dtype=torch.int64, device=device)
    pattern = [0, case.S, 1, max(case.S // 2, 1), case.S]
    return torch.tensor([pattern[b % len(pattern)] for b in range(case.B)], device=device)


def _query_shape(case: Case, feat: int) -> tuple[int, ...]:
    n = case.B * case.beam
    return (n, feat) if case.T is None else (n, case.T, feat)


def _rand(shape, device, dtype, requires_grad):
    return torch.randn(shape, device=device, dtype=dtype).requires_grad_(requires_grad)


def dot_sample_inputs(case: Case, device="cpu", dtype=torch.float32, requires_grad=False):
    """(query, keys, values, lengths, scale) for dot_attention."""
    query = _rand(_query_shape(case, case.D), device, dtype, requires_grad)
    keys = _rand((case.B, case.S, case.D), device, dtype, requires_grad)
    values = _rand((case.B, case.S, case.Dv), device, dtype, requires_grad)
    return query, keys, values, make_lengths(case, device), case.D**-0.5


def additive_sample_inputs(case: Case, device="cpu", dtype=torch.float32, requires_grad=False):
    """(query_proj, keys_proj, v, values, lengths) for additive_attention; A = D."""
    query_proj = _rand(_query_shape(case, case.D), device, dtype, requires_grad)
    keys_proj = _rand((case.B, case.S, case.D), device, dtype, requires_grad)
    v = _rand((case.D,), device, dtype, requires_grad)
    values = _rand((case.B, case.S, case.Dv), device, dtype, requires_grad)
    return query_proj, keys_proj, v, values, make_lengths(case, device)


def sample_inputs(op: str, case: Case, device="cpu", dtype=torch.float32, requires_grad=False):
    """The arguments of `op` ("dot_attention" or "additive_attention") for `case`."""
    make = dot_sample_inputs if op == "dot_attention" else additive_sample_inputs
    return make(case, device, dtype, requires_grad)
