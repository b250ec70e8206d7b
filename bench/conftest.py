"""Options, parametrisation and the timing fixture of the pytest-benchmark suite (test_bench.py
says how to run it).

The cases are those `fast-s2s bench` times (fast_s2s.benchmark.registry: --bench-shapes for
--bench-device's type, so the CUDA list is the GPU target shapes), each parametrised over every
fast_s2s backend, each peer of its op and, for memory-bound forward cases, the read roofline
(torch.sum over the compulsory reads) and the copy roofline (dst.copy_(src) moving the reads +
writes). pytest-benchmark does the timing; the rest is `fast-s2s bench`'s own code
(fast_s2s.benchmark.rows), and each test's extra_info is the row `fast-s2s bench` would write for
it, with the same fields, filled from pytest-benchmark's statistics (rooflines: the row fields
they feed, roofline_gbps or copy_roofline_gbps).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from fast_s2s.backends import BACKENDS

ROOFLINES = {"roofline": "read", "copy-roofline": "copy"}  # test label -> roofline kind


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fast_s2s bench")
    group.addoption("--bench-device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    group.addoption("--bench-dtype", choices=("float32", "bfloat16", "float16", "float64"),
                    default="float32", help="default: float32")  # fmt: skip
    group.addoption(
        "--bench-shapes", choices=("targets", "full", "tiny"), default="full",
        help="case set of fast_s2s.benchmark (targets = what `fast-s2s bench --quick` runs)",
    )  # fmt: skip


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    from fast_s2s.benchmark.family import reports_bandwidth
    from fast_s2s.benchmark.registry import FAMILY_OF, OPS, select_cases

    shapes = metafunc.config.getoption("--bench-shapes")
    device = metafunc.config.getoption("--bench-device")  # a name only: CUDA is not touched
    params = []
    for case in select_cases(OPS, shapes, device):
        impls = [f"fast_s2s[{b}]" for b in BACKENDS] + list(FAMILY_OF[case.op].peers[case.op])
        impls += list(ROOFLINES) if reports_bandwidth(case) else []
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


def _synchronized(step: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """pytest-benchmark times on the host clock: wait for the GPU inside the timed call."""
    if device.type != "cuda":
        return step

    def run() -> object:
        out = step()
        torch.cuda.synchronize(device)
        return out

    return run


@pytest.fixture
def run_bench(device: torch.device, dtype: torch.dtype) -> Callable[..., None]:
    """`run_bench(benchmark, case, impl_name)` times one implementation of one case. A backend
    that cannot run here (or that `fast-s2s bench` leaves out by default) is skipped with the
    reason, so is a failing peer (e.g. torch.compile); a failing fast_s2s backend fails."""
    from fast_s2s.benchmark import registry, rows
    from fast_s2s.benchmark.measure import READ, Timing, gbps, roofline_call

    def run(benchmark, case, impl_name: str) -> None:
        benchmark.group = f"{case.op} {case.name} {device.type} {str(dtype).removeprefix('torch.')}"
        inputs = registry.make_inputs(case, device, dtype)
        if impl_name in ROOFLINES:
            kind = ROOFLINES[impl_name]
            nbytes = inputs.read_bytes if kind == READ else inputs.moved_bytes
            call, counted = roofline_call(kind, nbytes, dtype, device)
            benchmark(_synchronized(call, device))
            benchmark.extra_info.update(
                read_bytes=inputs.read_bytes, write_bytes=inputs.write_bytes
            )
            if benchmark.stats is not None:  # None under --benchmark-disable
                field = "roofline_gbps" if kind == READ else "copy_roofline_gbps"
                benchmark.extra_info[field] = gbps(counted, benchmark.stats.stats.median)
            return
        if impl_name.startswith("fast_s2s["):
            backend = impl_name.removeprefix("fast_s2s[").removesuffix("]")
            chosen, left_out = registry.default_backends(case.op, device)
            if backend not in chosen:
                pytest.skip(f"{impl_name}: {left_out.get(backend, 'not available')}")
            impl = registry.fast_s2s_impl(case.op, backend, device)
            if impl.make is None:
                pytest.skip(f"{impl_name}: {impl.reason}")
        else:  # the peer as `fast-s2s bench` has it: left out here with the reason, or timed
            (impl,) = registry.build_impls(case, device, backends=[], peers=[impl_name])
            if impl.make is None:
                pytest.skip(f"{impl_name}: {impl.reason}")
        row = rows.base_row(case, impl, device, dtype)
        with rows.grad_mode(case):
            try:
                step, scope = rows.prepare(impl, case, inputs, device, row)  # compiles, warms up
            except Exception as exc:
                if impl.kind == registry.PEER:
                    pytest.skip(f"peer {impl_name} failed: {rows.error_reason(exc)}")
                raise
            with scope():
                benchmark(_synchronized(step, device))
        if benchmark.stats is not None:
            s = benchmark.stats.stats
            us = [1e6 * v for v in (s.median, s.q1, s.q3, s.min)]
            rows.record(row, Timing(*us, repeats=s.rounds))
            rows.add_figures([row], case, inputs, dtype)
        benchmark.extra_info.update(row)

    return run
