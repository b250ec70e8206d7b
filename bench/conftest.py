"""Options, parametrisation and the timing fixture of the pytest-benchmark suite (see
test_bench_attention.py for how to run it).

A test module sets BENCH_OPS (the ops of fast_s2s.benchmark.cases it times) and defines
`test_bench(benchmark, case, impl_name, run_bench)`; it is parametrised here over every case of
--bench-shapes for --bench-device's type (the CUDA case list is issue 4's GPU shapes, as in
`fast-s2s bench --device cuda`) and every implementation: each fast_s2s backend, each peer of
the op and, for the forward cases of memory-bound ops, the read roofline (torch.sum over the
compulsory reads) and the copy roofline (dst.copy_(src) moving the compulsory reads + writes).
Model cases (op "model") record their throughput in extra_info ("steps_per_s" or
"tokens_per_s", from the median) and the torch thread count.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

BACKENDS = ("auto", "reference", "cpp", "triton")
ROOFLINE = "roofline"
COPY_ROOFLINE = "copy-roofline"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fast_s2s bench")
    group.addoption("--bench-device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    group.addoption(
        "--bench-dtype",
        choices=("float32", "bfloat16", "float16", "float64"),
        default="float32",
        help="default: float32",
    )
    group.addoption(
        "--bench-shapes",
        choices=("targets", "full", "tiny"),
        default="full",
        help="case set of fast_s2s.benchmark.cases (targets = what `fast-s2s bench --quick` runs)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    ops = getattr(metafunc.module, "BENCH_OPS", None)
    if ops is None or "case" not in metafunc.fixturenames:
        return
    from fast_s2s.benchmark.cases import FORWARD, select_cases
    from fast_s2s.benchmark.peers import PEERS

    shapes = metafunc.config.getoption("--bench-shapes")
    device = metafunc.config.getoption("--bench-device")  # a name only: CUDA is not touched
    params = []
    for case in select_cases(ops, shapes, device):
        impls = [f"fast_s2s[{b}]" for b in BACKENDS] + list(PEERS[case.op])
        if case.mode == FORWARD and case.memory_bound:
            impls += [ROOFLINE, COPY_ROOFLINE]
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


@pytest.fixture
def run_bench(device: torch.device, dtype: torch.dtype) -> Callable[..., None]:
    """`run_bench(benchmark, case, impl_name)`: times one implementation of one case.

    Backends that cannot run here are skipped with the reason; a failing peer (e.g.
    torch.compile) is skipped with its error; a failing fast_s2s backend fails the test.
    """
    from fast_s2s.benchmark.cases import FORWARD, make_inputs
    from fast_s2s.benchmark.peers import default_backends, fast_s2s_impl, peer_impls
    from fast_s2s.benchmark.runner import error_reason, grad_mode, make_step

    def run(benchmark, case, impl_name: str) -> None:
        benchmark.group = f"{case.op} {case.name} {device.type} {str(dtype).removeprefix('torch.')}"
        inputs = make_inputs(case, device, dtype)
        benchmark.extra_info["read_bytes"] = inputs.read_bytes

        benchmark.extra_info["write_bytes"] = inputs.write_bytes

        itemsize = torch.empty((), dtype=dtype).element_size()
        if impl_name == ROOFLINE:
            x = torch.rand(max(1, inputs.read_bytes // itemsize), device=device).to(dtype)
            benchmark(_synchronized(lambda: torch.sum(x), device))
            return
        if impl_name == COPY_ROOFLINE:  # as roofline.CopyRoofline: half the traffic each way
            src = torch.rand(max(1, inputs.moved_bytes // 2 // itemsize), device=device).to(dtype)
            dst = torch.empty_like(src)
            benchmark(_synchronized(lambda: dst.copy_(src), device))
            if benchmark.stats is not None:
                moved = 2 * src.numel() * itemsize
                benchmark.extra_info["copy_gbps"] = moved / benchmark.stats.stats.median / 1e9
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
        if case.mode == FORWARD and case.memory_bound and benchmark.stats is not None:
            median_s = benchmark.stats.stats.median
            benchmark.extra_info["gbps"] = inputs.read_bytes / median_s / 1e9
            benchmark.extra_info["copy_gbps"] = inputs.moved_bytes / median_s / 1e9
        work, unit = inputs.extra.get("work"), inputs.extra.get("work_unit")
        if work and unit and benchmark.stats is not None:  # model cases: steps/s, tokens/s
            benchmark.extra_info["threads"] = torch.get_num_threads()
            benchmark.extra_info[f"{unit}s_per_s"] = work / benchmark.stats.stats.median

    return run
