"""Every op family, and what is looked up through them: a device's cases, a case's inputs, the
implementations a case times (`Impl`), worked out without touching the device (--device cuda
--plan needs no GPU). To add a family: write its module (see attention_family.py), list it here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fast_s2s import backends as _backends
from fast_s2s.benchmark import attention_family, gru_family, model_family
from fast_s2s.benchmark.family import SHAPE_SETS, Case, Factory, Family, Inputs
from fast_s2s.checks import CPU_DTYPES, CUDA_DTYPES
from fast_s2s.peers import PEER_IMPLEMENTATIONS

FAMILIES: tuple[Family, ...] = (
    attention_family.FAMILY,
    attention_family.LOCAL_FAMILY,
    gru_family.FAMILY,
    model_family.FAMILY,
)
FAMILY_OF: dict[str, Family] = {op: f for f in FAMILIES for op in f.ops}
OPS: tuple[str, ...] = tuple(FAMILY_OF)  # every op, in report order
FAST_S2S, PEER = "fast_s2s", "peer"  # a row's "kind"
CONCRETE_BACKENDS = tuple(b for b in _backends.BACKENDS if b != "auto")
# The dtypes the ops take per device type (fast_s2s.checks), and those timed when --dtype is not
# given (on CUDA the three of the GPU targets).
DEVICE_DTYPES = {device: tuple(str(t).removeprefix("torch.") for t in dtypes)
                 for device, dtypes in (("cpu", CPU_DTYPES), ("cuda", CUDA_DTYPES))}  # fmt: skip
DEFAULT_DTYPES = {"cpu": ("float32",), "cuda": ("float32", "float16", "bfloat16")}


def select_cases(
    ops: Sequence[str], shapes: str = "full", device: torch.device | str = "cpu"
) -> list[Case]:
    """The cases of `ops`, in that order, in shape set `shapes` for `device`'s type (its own
    list where it has one, else the CPU's)."""
    if shapes not in SHAPE_SETS:
        raise ValueError(f"shapes must be one of {SHAPE_SETS}, got {shapes!r}")
    if unknown := [op for op in ops if op not in FAMILY_OF]:
        raise ValueError(f"no benchmark cases for {unknown}; known ops: {sorted(FAMILY_OF)}")
    device_type = torch.device(device).type
    out: list[Case] = []
    for op in ops:
        lists = FAMILY_OF[op].cases
        key = "tiny" if shapes == "tiny" else device_type if device_type in lists else "cpu"
        out += [c for c in lists[key][op] if shapes != "targets" or c.target]
    return out


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """The case's inputs (fixed seed: every implementation sees the same numbers); they require
    grad exactly in forward+backward."""
    return FAMILY_OF[case.op].make_inputs(case, torch.device(device), dtype)


@dataclass
class Impl:
    """One row of a case: `make(inputs)` returns the call to time (None: `reason` says why not);
    `backend`: the concrete fast_s2s backend ("+"-joined where a model's ops differ)."""

    label: str
    kind: str
    make: Factory | None
    backend_requested: str | None = None
    backend: str | None = None
    reason: str | None = None


def implementation_name(impl: Impl, device: torch.device | str) -> str | None:
    """What code runs behind a row, in words (None for a backend that did not resolve). A call
    may say more once built, in its `implementation` attribute (rows.prepare takes it)."""
    if impl.kind != FAST_S2S:
        return PEER_IMPLEMENTATIONS.get(impl.label, impl.label)
    cuda = torch.device(device).type == "cuda"
    names = {
        "cpp": "CUDA C++ (fast_s2s._C)" if cuda else "C++ (fast_s2s._C)",
        "triton": "Triton (fast_s2s.kernels)" + ("" if cuda else " in the interpreter"),
        "reference": PEER_IMPLEMENTATIONS["reference"],
    }
    backends = impl.backend.split("+") if impl.backend else []
    return " + ".join(names.get(b, b) for b in backends) if backends else None


def _kernel_ops(op: str) -> tuple[str, ...]:
    return FAMILY_OF[op].kernel_ops.get(op, (op,))


def _left_out_by_default(op: str, backend: str, device: torch.device, quick: bool) -> str | None:
    """Why `fast-s2s bench` does not time a concrete `backend` of `op` unless asked to, or None.
    A backend that cannot run names the first kernel op's reason (the op too when several)."""
    kernels = _kernel_ops(op)
    for kernel in kernels:
        if (why := _backends.why_unavailable(kernel, backend, device)) is not None:
            return f"{kernel}: {why}" if len(kernels) > 1 else why
    cpu = device.type == "cpu"
    asked = "; name it in --backends to time it anyway"
    if backend == "reference" and FAMILY_OF[op].reference_is_peer:
        return "it is the reference peer (the same model on backend='reference')" + asked
    if backend == "triton" and cpu:
        return "Triton runs on CPU tensors only in its interpreter, not a performance path" + asked
    if backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        return "TRITON_INTERPRET=1 would run Triton in its interpreter: unset it to time the GPU"
    if backend == "reference" and quick and cpu:
        return "--quick leaves it out (it is the reference peer plus dispatch)" + asked
    return None


def default_backends(
    op: str, device: torch.device | str, quick: bool = False
) -> tuple[list[str], dict[str, str]]:
    """Every available concrete backend plus "auto", and those left out with the reason (Triton in
    its interpreter, the reference where it is a peer or, on the CPU, with --quick; on CUDA every
    backend is timed: the fastest-backend summary compares them)."""
    reasons = {
        b: _left_out_by_default(op, b, torch.device(device), quick) for b in CONCRETE_BACKENDS
    }
    chosen = [b for b, why in reasons.items() if why is None]
    return [*chosen, "auto"], {b: why for b, why in reasons.items() if why is not None}


def fast_s2s_impl(op: str, backend: str, device: torch.device | str) -> Impl:
    """The fast_s2s row of `op` on `backend`, labelled with the concrete backend that runs."""
    try:
        resolved = (_backends.resolve_backend(k, backend, device) for k in _kernel_ops(op))
        concrete = "+".join(dict.fromkeys(resolved))
    except (_backends.BackendUnavailableError, ValueError) as exc:
        return Impl(f"fast_s2s[{backend}]", FAST_S2S, None, backend, None, str(exc))
    label = f"fast_s2s[auto->{concrete}]" if backend == "auto" else f"fast_s2s[{backend}]"
    return Impl(label, FAST_S2S, FAMILY_OF[op].fast_s2s(op, backend), backend, concrete)


def build_impls(
    case: Case,
    device: torch.device | str,
    backends: list[str] | None = None,
    peers: list[str] | None = None,
    quick: bool = False,
) -> list[Impl]:
    """Every implementation of `case`: the fast_s2s backends (default_backends when `backends` is
    None), then the peers among `peers` (all when None) in column order; those left out (by
    default_backends or Family.left_out) with their reason and nothing to run."""
    left_out: dict[str, str] = {}
    if backends is None:
        backends, left_out = default_backends(case.op, device, quick)
    impls = [fast_s2s_impl(case.op, b, device) for b in backends]
    impls += [Impl(f"fast_s2s[{b}]", FAST_S2S, None, b, None, r) for b, r in left_out.items()]
    family = FAMILY_OF[case.op]
    skipped = family.left_out(case, torch.device(device).type, quick)
    return impls + [
        Impl(label, PEER, None if label in skipped else make, reason=skipped.get(label))
        for label, make in family.peers.get(case.op, {}).items()
        if peers is None or label in peers
    ]


def parse_dtypes(names: Sequence[str] | None, device: torch.device | str) -> list[str]:
    """The dtypes to time on `device` (its defaults when `names` is empty), each once; raises
    ValueError naming any the ops do not take there."""
    device_type = torch.device(device).type
    if not names:
        return list(DEFAULT_DTYPES.get(device_type, ("float32",)))
    allowed = DEVICE_DTYPES.get(device_type, DEVICE_DTYPES["cpu"])
    if bad := [n for n in names if n not in allowed]:
        raise ValueError(
            f"--dtype {','.join(bad)}: fast_s2s's ops on {device_type} take {', '.join(allowed)}"
        )
    return list(dict.fromkeys(names))
