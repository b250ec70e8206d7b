"""Sample inputs of local_attention, for every backend's tests
(tests/ops/test_local_attention.py).

The cases reach every kernel path: windows past either end of the source, D = 0 (the single
position s = p, integer centres), non-integer centres, beam > 1 with overlapping windows (the
backward's accumulation into one source row), 2-D queries, lengths containing 0, 1 and S, and
long sources with a small window (S = 2,000, D = 10: the decode shape the op exists for).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tests.attention_cases import make_lengths


@dataclass(frozen=True)
class LocalCase:
    B: int
    beam: int
    T: int | None  # None: 2-D query (one decoder step)
    S: int
    D: int
    Dv: int
    window: int
    lengths: str  # "none" | "full" | "mixed" (contains 0, 1 and S)
    centers: str = "spread"  # "spread": reals over [-window - 2, S + window + 2]; "integer"

    @property
    def id(self) -> str:
        t = "2d" if self.T is None else f"T{self.T}"
        return (
            f"B{self.B}-beam{self.beam}-{t}-S{self.S}-D{self.D}-Dv{self.Dv}-win{self.window}"
            f"-len_{self.lengths}-{self.centers}"
        )

    @property
    def rows(self) -> int:
        return self.B * self.beam


LOCAL_CASES = [
    LocalCase(B=1, beam=1, T=1, S=1, D=1, Dv=1, window=0, lengths="none", centers="integer"),
    LocalCase(B=2, beam=1, T=None, S=5, D=16, Dv=17, window=1, lengths="full"),
    LocalCase(B=4, beam=1, T=3, S=37, D=65, Dv=33, window=3, lengths="mixed"),
    LocalCase(B=3, beam=2, T=3, S=17, D=33, Dv=31, window=10, lengths="mixed"),  # window > S
    LocalCase(B=2, beam=5, T=None, S=50, D=64, Dv=64, window=10, lengths="mixed"),
    LocalCase(B=3, beam=1, T=9, S=20, D=47, Dv=16, window=0, lengths="mixed", centers="integer"),
    LocalCase(B=2, beam=3, T=2, S=2000, D=32, Dv=24, window=10, lengths="mixed"),
]
LOCAL_CASE_IDS = [c.id for c in LOCAL_CASES]


def sample_centers(case: LocalCase, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """(N, T) or (N,) centres: reals spread past both ends of the source (so some windows are
    cut, some empty), or whole numbers in [-1, S] for D = 0 (a window of one position)."""
    shape = (case.rows,) if case.T is None else (case.rows, case.T)
    low, high = -case.window - 2.0, case.S + case.window + 2.0
    if case.centers == "integer":
        centers = torch.randint(-1, case.S + 1, shape).to(dtype)
    else:
        centers = torch.rand(shape, dtype=torch.float64) * (high - low) + low
    return centers.to(device=device, dtype=dtype)


def local_sample_inputs(case: LocalCase, device="cpu", dtype=torch.float32, requires_grad=False):
    """(query, keys, values, centers, window, lengths, scale) for local_attention. centers are
    float32 (float64 for float64 inputs) and require grad with the others, except for
    integer centres (D = 0: any change leaves the window)."""
    n = case.rows
    q_shape = (n, case.D) if case.T is None else (n, case.T, case.D)
    query = torch.randn(q_shape, device=device, dtype=dtype)
    keys = torch.randn((case.B, case.S, case.D), device=device, dtype=dtype)
    values = torch.randn((case.B, case.S, case.Dv), device=device, dtype=dtype)
    centers = sample_centers(
        case, device, torch.float64 if dtype == torch.float64 else torch.float32
    )
    for t in (query, keys, values):
        t.requires_grad_(requires_grad)
    centers.requires_grad_(requires_grad and case.centers != "integer")
    lengths = make_lengths(case, device)  # type: ignore[arg-type]
    return query, keys, values, centers, case.window, lengths, case.D**-0.5
