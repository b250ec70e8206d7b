"""`fast-s2s verify`: every op, on every backend available here, against its reference.

For each op and backend it prints the implementation that actually ran (never a silent
fallback: an unavailable backend is listed with the reason), the largest forward and gradient
errors against a float64 reference, and whether they are inside the tolerance of the dtype.
The exit status is non-zero if any check fails.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table

from fast_s2s import _extension, machine, ops, reference
from fast_s2s.backends import available_backends, resolve_backend
from fast_s2s.gemm import GemmReport, gemm_report, set_gemm_backend

# Largest accepted error against the float64 reference, per dtype of the run (forward, grad).
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


@dataclass
class Problem:
    """One op call: named tensors (the differentiable ones first) and how to call each side."""

    name: str
    tensors: dict[str, torch.Tensor]
    differentiable: tuple[str, ...]
    call_fused: Callable[..., tuple[torch.Tensor, ...]]
    call_reference: Callable[..., tuple[torch.Tensor, ...]]
    # Tensors of source positions (local attention's centres): float32 in 16-bit runs, as
    # fast_s2s.local_attention recommends (bfloat16 cannot say 257).
    positions: tuple[str, ...] = ()


def _attention_problems(device: str) -> list[Problem]:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(device)

    problems = []
    # (label, B, beam, T, S, D): a decode step with beams and mixed lengths, and a training
    # shape with all target steps at once (the matrix-product path of dot_attention).
    for label, B, beam, T, S, D in (
        ("decode beam=4", 4, 4, 1, 37, 65),
        ("train T=12", 3, 1, 12, 29, 64),
    ):
        lengths = torch.tensor([S, 0, 1, S // 2][:B]).to(device)
        query, keys, values = rand(B * beam, T, D), rand(B, S, D), rand(B, S, D + 3)
        scale = D**-0.5
        problems.append(
            Problem(
                f"dot_attention {label}",
                dict(query=query, keys=keys, values=values),
                ("query", "keys", "values"),
                lambda backend, query, keys, values, L=lengths, sc=scale: ops.dot_attention(
                    query, keys, values, L, sc, backend=backend
                ),
                lambda query, keys, values, L=lengths, sc=scale: reference.dot_attention(
                    query, keys, values, L, sc
                ),
            )
        )
        qp, kp, v = rand(B * beam, T, D), rand(B, S, D), rand(D)
        problems.append(
            Problem(
                f"additive_attention {label}",
                dict(query_proj=qp, keys_proj=kp, v=v, values=values),
                ("query_proj", "keys_proj", "v", "values"),
                lambda backend, query_proj, keys_proj, v, values, L=lengths: ops.additive_attention(
                    query_proj, keys_proj, v, values, L, backend=backend
                ),
                lambda query_proj, keys_proj, v, values, L=lengths: reference.additive_attention(
                    query_proj, keys_proj, v, values, L
                ),
            )
        )
        # Local attention, window 5: local-p centres (real, some windows cut by either end)
        # for the decode step, local-m's shifted by a fraction for training.
        if T == 1:
            centers = (S + 4) * torch.rand(B * beam, T, generator=gen).to(device) - 2
        else:
            centers = (torch.arange(T, dtype=torch.float32) * 2 + 0.3).expand(B, T).to(device)
        problems.append(
            Problem(
                f"local_attention {label}",
                dict(query=query, keys=keys, values=values, centers=centers.contiguous()),
                ("query", "keys", "values", "centers"),
                lambda backend, query, keys, values, centers, L=lengths, sc=scale: (
                    ops.local_attention(query, keys, values, centers, 5, L, sc, backend=backend)
                ),
                lambda query, keys, values, centers, L=lengths, sc=scale: reference.local_attention(
                    query, keys, values, centers, 5, L, sc
                ),
                positions=("centers",),
            )
        )
    return problems


def _gru_problems(device: str) -> list[Problem]:
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0):
        return ((torch.rand(*shape, generator=gen) * 2 - 1) * scale).to(device)

    T, B, I, H = 7, 5, 33, 48
    s = H**-0.5
    weights = dict(w_ih=rand(3 * H, I, scale=s), w_hh=rand(3 * H, H, scale=s))
    biases = dict(b_ih=rand(3 * H, scale=s), b_hh=rand(3 * H, scale=s))
    lengths = torch.tensor([T, 0, 1, 3, T]).to(device)
    problems = [
        Problem(
            f"gru_cell B={B} I={I} H={H}",
            dict(x=rand(B, I), h=rand(B, H), **weights, **biases),
            ("x", "h", "w_ih", "w_hh", "b_ih", "b_hh"),
            lambda backend, **t: (ops.gru_cell(**t, backend=backend),),
            lambda **t: (reference.gru_cell(**t),),
        )
    ]
    for reverse in (False, True):
        problems.append(
            Problem(
                f"gru_layer T={T} B={B} {'reverse' if reverse else 'forward'}, lengths",
                dict(x=rand(T, B, I), h0=rand(B, H), **weights, **biases),
                ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"),
                lambda backend, r=reverse, **t: ops.gru_layer(
                    **t, lengths=lengths, reverse=r, backend=backend
                ),
                lambda r=reverse, **t: reference.gru_layer(**t, lengths=lengths, reverse=r),
            )
        )
    return problems


def _errors(problem: Problem, backend: str, dtype: torch.dtype) -> tuple[float, float]:
    """Max abs error of the outputs and of the input gradients, against float64 reference."""

    def prepared(dt):
        def dtype_of(name):
            return torch.float32 if name in problem.positions and dt.itemsize < 4 else dt

        return {
            k: t.to(dtype_of(k)).requires_grad_(k in problem.differentiable)
            for k, t in problem.tensors.items()
        }

    fused_in, exact_in = prepared(dtype), prepared(torch.float64)
    fused_out = problem.call_fused(backend, **fused_in)
    exact_out = problem.call_reference(**exact_in)
    # One fixed random cotangent per output, the same on both sides.
    gen = torch.Generator().manual_seed(1)
    cot = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device) for o in exact_out]
    fwd_err = max(
        (f.double() - e).abs().max().item() for f, e in zip(fused_out, exact_out, strict=True)
    )
    fused_grads = torch.autograd.grad(
        fused_out, [fused_in[k] for k in problem.differentiable], [c.to(dtype) for c in cot]
    )
    exact_grads = torch.autograd.grad(exact_out, [exact_in[k] for k in problem.differentiable], cot)
    grad_err = max(
        (f.double() - e).abs().max().item() for f, e in zip(fused_grads, exact_grads, strict=True)
    )
    return fwd_err, grad_err


def implementation_label(backend: str, device: str) -> str:
    """Human-readable name of the code that runs for a concrete backend."""
    if backend == "cpp":
        if torch.device(device).type == "cuda":
            return "CUDA C++ kernel"
        return f"C++ kernel ({_extension.cpu_capability()})"
    if backend == "triton":
        return "Triton kernel"
    return "PyTorch reference"


def _check_gemm_backends(table: Table, device: str) -> int:
    """The C++ ops whose products go through the GEMM layer, once per GEMM backend pinned
    (float32, the dtype every backend multiplies), so each candidate the layer may pick is held
    to the reference; the rows name the backend. Returns the failures."""
    failures = 0
    problems = [p for p in _attention_problems(device) + _gru_problems(device)]
    problems = [
        p for p in problems if p.name.split()[0] in ("dot_attention", "gru_cell", "gru_layer")
    ]
    try:
        for name in gemm_report().available:
            set_gemm_backend(name)
            for problem in problems:
                fwd_err, grad_err = _errors(problem, "cpp", torch.float32)
                ok = (
                    fwd_err <= TOLERANCE[torch.float32]
                    and grad_err <= TOLERANCE[torch.float32] * 10
                )
                failures += not ok
                table.add_row(
                    problem.name.split()[0], problem.name.split(" ", 1)[1], "float32", "cpp",
                    f"{implementation_label('cpp', device)}, GEMM {name}",
                    f"{fwd_err:.2e}", f"{grad_err:.2e}", "[green]yes" if ok else "[red]NO",
                )  # fmt: skip
    finally:
        set_gemm_backend("auto")
    return failures


def _print_gemm(console: Console, report: GemmReport) -> None:
    """Which matrix-product backend the C++ CPU kernels chose, site by site, in the auto rows."""
    console.print(
        f"GEMM backends available: {', '.join(report.available)}"
        + (f" ({report.mkl})" if report.mkl else "")
    )
    bf16 = "native (MKL bf16 GEMM)" if report.bf16_native else "in float32 (converted copies)"
    console.print(f"bfloat16 GRU products: {bf16}")
    if report.choices:
        console.print("GEMM backend chosen per product site (measured at first use):")
        for line in report.choices:
            console.print(f"  {line}")


def _check_decode_loop(console: Console, device: str) -> int:
    """Which search loop a model on `device` and the default backend runs
    (fast_s2s.models.decode_path) and which encoder, and, when it is not the Python loop, that
    greedy and beam search give the Python loop's tokens (on CUDA also that the CUDA graphs were
    captured, not run eagerly after a failed capture). Returns the number of failed checks."""
    from fast_s2s.models import (
        Seq2Seq,
        Seq2SeqConfig,
        beam_search,
        decode_path,
        greedy_decode,
    )
    from fast_s2s.models.decoding import CaptureFailedWarning, native_encoder

    torch.manual_seed(0)
    config = Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=9, embed_size=8, hidden_size=8)
    model = Seq2Seq(config).to(device)
    path = decode_path(model)
    encoder = ""
    if path == "native":
        why = native_encoder.unavailable(model)
        encoder = ", encoder: " + ("one op (encode)" if why is None else f"Seq2Seq.encode ({why})")
    console.print(f"decode loop (a {device} model, backend='auto'): {path}{encoder}")
    if path.startswith("python"):
        return 0
    src = torch.randint(3, 9, (3, 6), device=device)
    lengths = torch.tensor([6, 2, 4], device=device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = greedy_decode(model, src, lengths, 12), beam_search(model, src, lengths, 3, 12)
    python = (
        greedy_decode(model, src, lengths, 12, native=False),
        beam_search(model, src, lengths, 3, 12, native=False),
    )
    same = all(
        [h.tokens for h in f] == [h.tokens for h in p] for f, p in zip(fast, python, strict=True)
    )
    verdict = "ok" if same else "DIFFERENT TOKENS"
    console.print(f"{path} loop against the Python loop (greedy, beam 3): {verdict}")
    failed_captures = [
        str(w.message) for w in caught if issubclass(w.category, CaptureFailedWarning)
    ]
    for message in failed_captures:
        console.print(f"[red]{message}")
    return int(not same) + int(bool(failed_captures))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda"], help="device to verify on"
    )
    parser.add_argument(
        "--dtypes",
        default=None,
        help="comma-separated dtypes (default: float32,float64,bfloat16 on cpu; "
        "float32,float16,bfloat16 on cuda)",
    )


def main(args: argparse.Namespace) -> int:
    # A wide console even when piped (CI logs): the table must stay readable.
    console = Console(width=150) if not Console().is_terminal else Console()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        console.print(
            "[red]--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)"
        )
        return 2
    default = "float32,float64,bfloat16" if device == "cpu" else "float32,float16,bfloat16"
    dtypes = [getattr(torch, d.strip()) for d in (args.dtypes or default).split(",")]
    if _extension.extension_loaded():
        cuda = "cuda compiled" if _extension.cuda_compiled() else "no cuda"
        built = f"loaded (cpu {_extension.cpu_capability()}, {cuda})"
    else:
        built = f"NOT loaded: {_extension.EXTENSION_ERROR}"
    console.print(f"fast_s2s verify on {device}: torch {torch.__version__}, extension {built}")
    console.print(f"machine: {machine.summary(machine.describe(device))}", highlight=False)
    table = Table(title="fused ops against the float64 reference")
    for col in (
        "op",
        "shape",
        "dtype",
        "backend",
        "implementation that ran",
        "max |fwd err|",
        "max |grad err|",
        "ok",
    ):
        table.add_column(col)
    failures = 0
    unavailable: dict[tuple[str, str], str] = {}
    for problem in _attention_problems(device) + _gru_problems(device):
        op = problem.name.split()[0]
        for backend, reason in available_backends(op, device).items():
            if reason is not None:
                unavailable[(op, backend)] = reason
                continue
            ran = resolve_backend(op, backend, device)
            for dtype in dtypes:
                fwd_err, grad_err = _errors(problem, backend, dtype)
                ok = fwd_err <= TOLERANCE[dtype] and grad_err <= TOLERANCE[dtype] * 10
                failures += not ok
                table.add_row(
                    op,
                    problem.name.split(" ", 1)[1],
                    str(dtype).removeprefix("torch."),
                    backend,
                    implementation_label(ran, device),
                    f"{fwd_err:.2e}",
                    f"{grad_err:.2e}",
                    "[green]yes" if ok else "[red]NO",
                )
        table.add_row(
            op,
            problem.name.split(" ", 1)[1],
            "",
            "auto",
            f"-> {implementation_label(resolve_backend(op, 'auto', device), device)}",
            "",
            "",
            "",
        )
    auto_gemm = None
    if device == "cpu" and _extension.extension_loaded():
        auto_gemm = gemm_report()  # the auto rows' choices, before pinning each backend
        failures += _check_gemm_backends(table, device)
    if device == "cuda" and _extension.cuda_compiled():
        x = torch.arange(8, dtype=torch.float32, device="cuda")
        ok = torch.equal(torch.ops.fast_s2s.cuda_smoke(x).cpu(), x.cpu() + 1)
        failures += not ok
        console.print(f"CUDA extension smoke kernel: {'ok' if ok else 'WRONG RESULT'}")
    console.print(table)
    failures += _check_decode_loop(console, device)
    for (op, backend), reason in sorted(unavailable.items()):
        console.print(f"[yellow]{op}: backend {backend!r} not available: {reason}")
    if auto_gemm is not None:
        _print_gemm(console, auto_gemm)
    console.print(
        "[green]all checks passed" if failures == 0 else f"[red]{failures} check(s) failed"
    )
    return 0 if failures == 0 else 1
