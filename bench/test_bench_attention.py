"""pytest-benchmark suite: every fast_s2s backend and every peer on the cases of `fast-s2s bench`.

Run from the repository root (fast_s2s installed with `pip install --no-build-isolation -e .`):

    .venv/bin/pytest bench/ --benchmark-only                         # CPU, float32, all cases
    .venv/bin/pytest bench/ --benchmark-only --bench-shapes targets  # only the target shapes
    .venv/bin/pytest bench/ --benchmark-only --bench-device cuda --bench-dtype bfloat16
    .venv/bin/pytest bench/ --benchmark-only -k "decode and dot" --benchmark-columns=median,iqr

The cases, inputs and implementations are those of fast_s2s.benchmark (cases.py, peers.py), so
the shapes match `fast-s2s bench`; results are grouped per case (benchmark.group), and each
forward case also times the read roofline (torch.sum over the op's compulsory read bytes).
`fast-s2s bench` reports the speedups and roofline fractions; this suite is for pytest-benchmark's
comparison and storage tools (--benchmark-autosave, --benchmark-compare). Backends that cannot
run here are skipped with the reason; a failing peer (e.g. torch.compile) is skipped with its
error; a failing fast_s2s backend fails the test.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fast_s2s.ops", reason="fast_s2s (with fast_s2s.ops) is not importable")

from fast_s2s.benchmark.cases import FORWARD, select_cases  # noqa: E402
from fast_s2s.benchmark.cases import make_inputs as make_case_inputs  # noqa: E402
from fast_s2s.benchmark.peers import (  # noqa: E402
    PEERS,
    default_backends,
    fast_s2s_impl,
    peer_impls,
)
from fast_s2s.benchmark.runner import error_reason, grad_mode, make_step  # noqa: E402

OPS = ("dot_attention", "additive_attention")
BACKENDS = ("auto", "reference", "cpp", "triton")
ROOFLINE = "roofline"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    shapes = metafunc.config.getoption("--bench-shapes")
    params = []
    for case in select_cases(OPS, shapes):
        impls = [f"fast_s2s[{b}]" for b in BACKENDS] + list(PEERS[case.op])
        if case.mode == FORWARD:
            impls.append(ROOFLINE)
        params += [pytest.param(case, impl, id=f"{case.id}-{impl}") for impl in impls]
    metafunc.parametrize(("case", "impl_name"), params)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    name = request.config.getoption("--bench-device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("--bench-device cuda, but torch.cuda.is_available() is False")
    return torch.device(name)


@pytest.fixture
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return getattr(torch, request.config.getoption("--bench-dtype"))


def _synchronized(step, device: torch.device):
    if device.type != "cuda":
        return step

    def run():
        out = step()
        torch.cuda.synchronize(device)
        return out

    return run


def test_bench(benchmark, case, impl_name: str, device: torch.device, dtype: torch.dtype) -> None:
    benchmark.group = f"{case.op} {case.name} {device.type} {str(dtype).removeprefix('torch.')}"
    inputs = make_case_inputs(case, device, dtype)
    benchmark.extra_info["read_bytes"] = inputs.read_bytes

    if impl_name == ROOFLINE:
        itemsize = torch.empty((), dtype=dtype).element_size()
        x = torch.rand(max(1, inputs.read_bytes // itemsize), device=device).to(dtype)
        benchmark(_synchronized(lambda: torch.sum(x), device))
        return

    if impl_name.startswith("fast_s2s["):
        backend = impl_name[len("fast_s2s[") : -1]
        chosen, left_out = default_backends(case.op, device)
        if backend not in chosen:
            pytest.skip(f"{impl_name}: {left_out.get(backend, 'not available')}")
        impl = fast_s2s_impl(case.op, backend, device)
        if impl.make is None:
            pytest.skip(f"{impl_name}: {impl.reason}")
        benchmark.extra_info["backend"] = impl.backend
        benchmark.extra_info["impl"] = impl.label  # e.g. fast_s2s[auto->cpp]
    else:
        (impl,) = peer_impls(case.op, [impl_name])

    with grad_mode(case):
        try:
            step = make_step(impl.make(inputs), case, inputs)
            step()  # compile (torch.compile) and warm up, outside the timing
        except Exception as exc:
            if impl.kind == "peer":
                pytest.skip(f"peer {impl_name} failed: {error_reason(exc)}")
            raise
        benchmark(_synchronized(step, device))
    if case.mode == FORWARD and benchmark.stats is not None:
        median_s = benchmark.stats.stats.median
        benchmark.extra_info["gbps"] = inputs.read_bytes / median_s / 1e9
