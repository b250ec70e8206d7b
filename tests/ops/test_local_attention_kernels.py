"""local_attention: the Triton kernels (kernels/local.py) and the CUDA kernels
(csrc/cuda/local_attention.cu, on a GPU or emulated) on their own paths, beyond the shared checks
of tests/ops/test_local_attention.py (whose helpers this file uses): overlapping windows'
gradient accumulation, the window block, long sources, need_weights=False, 16-bit inputs, the
centres' dtype, and compilation for sm_90 without a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from fast_s2s import reference
from tests.backends import (
    BF16,
    CUDA,
    EMU,
    F16,
    F32,
    F64,
    REFERENCE,
    TRITON,
    TRITON_CUDA,
    cast,
    tolerance,
)
from tests.compile_checks import assert_script_compiles_for_sm90
from tests.local_attention_cases import LOCAL_CASES, LocalCase, local_sample_inputs
from tests.ops.test_local_attention import (
    OP,
    run,
)

# --------------------------------------------------------------------------------------------
# Kernel-specific: the Triton kernels (kernels/local.py) and the CUDA kernels
# (csrc/cuda/local_attention.cu, on a GPU or emulated). Both run one program / block per query
# row over the window's block of positions and accumulate dK / dV with atomic adds.
# --------------------------------------------------------------------------------------------

GPU_KERNELS = [TRITON, EMU, CUDA, TRITON_CUDA]


def _backward_op_dtypes(backend, args):
    """dtypes of the backward op's own outputs (autograd would cast them to the inputs')."""
    query, keys, values, centers, window, lengths, scale = args
    grad_context = torch.ones(*query.shape[:-1], values.shape[-1]).to(query)
    grad_weights = torch.ones(*query.shape[:-1], keys.shape[1]).to(query)
    backward = backend.raw_op(OP + "_backward")
    grads = backward(grad_context, grad_weights, query, keys, values, centers, window, lengths,
                     scale)  # fmt: skip
    return [g.dtype for g in grads]


def _grads(backend, args, need_weights, seed=5):
    """(context, weights, grads of query, keys, values, centers) of a random projection."""
    query, keys, values, centers, window, lengths, scale = args
    inputs = [t.detach().clone().requires_grad_() for t in (query, keys, values, centers)]
    context, weights = run(backend, (*inputs, window, lengths, scale), need_weights)
    gen = torch.Generator().manual_seed(seed)
    loss = (context * torch.randn(context.shape, generator=gen).to(context)).sum()
    if weights is not None:
        loss = loss + (weights * torch.randn(weights.shape, generator=gen).to(weights)).sum()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs, strict=True)]
    return (context, weights, *grads)


@pytest.mark.parametrize("backend", [b.param() for b in GPU_KERNELS])
def test_kernel_overlapping_windows_accumulate_keys_and_values_gradients(backend):
    """beam 4 x T 5 rows per source row, all with windows over the same few positions: dK and
    dV of each position sum 20 rows' contributions (a store instead of an add loses them)."""
    device = backend.device
    B, beam, T, S, window = 2, 4, 5, 9, 2
    query = torch.randn(B * beam, T, 6, dtype=F64, device=device)
    keys = torch.randn(B, S, 6, dtype=F64, device=device)
    values = torch.randn(B, S, 3, dtype=F64, device=device)
    centers = (3.0 + 0.3 * torch.arange(T, dtype=F64)).expand(B * beam, T).contiguous()
    centers = centers.to(device)
    dtype = F64 if F64 in backend.dtypes else F32
    args = cast((query, keys, values, centers, window, torch.tensor([S, 7]), 0.5), dtype)
    got = _grads(backend, args, True)
    want = _grads(REFERENCE, args, True)
    tol = tolerance(backend, "attention_grad", dtype).close
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tol)


@pytest.mark.parametrize("backend", [b.param() for b in GPU_KERNELS])
@pytest.mark.parametrize("window", [0, 1, 3, 7])
def test_kernel_window_block_covers_every_centre(backend, window):
    """Centres swept in quarter steps past both ends, and one float32 ulp either side of whole
    and half numbers, for windows whose 2 D + 2 candidates fill the block exactly (D = 1, 3, 7:
    BLOCK = 4, 8, 16 in the Triton kernel): the same positions and weights as the reference."""
    device = backend.device
    S = 12
    grid_ = torch.arange(-window - 2.0, S + window + 2.0, 0.25)
    whole = torch.arange(-1.0, S + 1.0, 0.5)
    up, down = torch.tensor(math.inf), torch.tensor(-math.inf)
    centers = torch.cat([grid_, torch.nextafter(whole, up), torch.nextafter(whole, down)])
    n = centers.shape[0]
    query = torch.randn(n, 5, device=device)
    keys, values = torch.randn(1, S, 5, device=device), torch.randn(1, S, 2, device=device)
    args = (query, keys, values, centers.to(device), window, torch.tensor([S - 1]), 1.0)
    context, w = run(backend, args)
    ref_context, ref_w = reference.local_attention(*args)
    assert torch.equal(w != 0, ref_w != 0)
    tol = tolerance(backend, "forward", F32, "attention").close
    torch.testing.assert_close(w, ref_w, **tol)
    torch.testing.assert_close(context, ref_context, **tol)


@pytest.mark.parametrize("backend", [b.param() for b in GPU_KERNELS])
def test_kernel_long_source_small_window_without_weights(backend):
    """S = 3,000, D = 2, need_weights=False: every key and value outside the rows' windows is
    NaN (a kernel that reads one returns NaN), the op returns an empty (0,) weights tensor (no
    (N, T, S) output written), and context and gradients are the reference's."""
    device = backend.device
    B, beam, T, S, window = 2, 2, 3, 3000, 2
    centers = torch.tensor([[5.5, 1500.0, 2998.25]] * (B * beam), device=device)
    query = torch.randn(B * beam, T, 8, device=device)
    keys, values = torch.randn(B, S, 8, device=device), torch.randn(B, S, 4, device=device)
    offset = torch.arange(S, device=device) - centers.reshape(B, -1, 1)
    read = (offset.abs() <= window).any(dim=1)[:, :, None]
    nan = torch.full((), math.nan, device=device)
    poisoned = (torch.where(read, keys, nan), torch.where(read, values, nan))
    raw = backend.raw_op(OP)(query, *poisoned, centers, window, None, 1.0, False)
    assert raw[1].shape == (0,)
    got = _grads(backend, (query, *poisoned, centers, window, None, 1.0), False)
    want = _grads(REFERENCE, (query, keys, values, centers, window, None, 1.0), False)
    assert got[1] is None
    tol = tolerance(backend, "attention_grad", F32).close
    for g, w in zip(got[:1] + got[2:], want[:1] + want[2:], strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, **tol)
    unread = ~read[..., 0]
    assert (got[3][unread] == 0).all() and (got[4][unread] == 0).all()  # unread: no gradient


@pytest.mark.parametrize("backend", [b.param() for b in GPU_KERNELS])
def test_kernel_need_weights_false_gives_the_same_context_and_gradients(backend):
    """need_weights=False skips the weights write only: context and gradients are those of
    need_weights=True (a loss on the context alone); bitwise on the CPU, where the atomic adds
    run in a fixed order."""
    args = local_sample_inputs(LOCAL_CASES[3], backend.device)
    outs = {}
    for need_weights in (True, False):
        query, keys, values, centers, window, lengths, scale = args
        inputs = [t.clone().requires_grad_() for t in (query, keys, values, centers)]
        context, _ = run(backend, (*inputs, window, lengths, scale), need_weights)
        grads = torch.autograd.grad(context, inputs, torch.ones_like(context))
        outs[need_weights] = (context, *grads)
    tol = tolerance(backend, "attention_grad", F32).close if backend.gpu else dict(atol=0, rtol=0)
    for a, b in zip(outs[True], outs[False], strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize(
    "backend,dtype", [b.param(d, id=str(d)[6:]) for b in GPU_KERNELS for d in (F16, BF16)]
)
def test_kernel_16_bit_inputs(backend, dtype):
    """float16 / bfloat16 inputs with float32 centres: outputs and gradients in the inputs'
    dtypes (the centres' gradient in float32), close to the float32 reference at 16-bit
    resolution (the kernels accumulate in float32)."""
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend} takes no {dtype}")
    case = LocalCase(B=2, beam=3, T=2, S=15, D=16, Dv=8, window=3, lengths="mixed")
    args = local_sample_inputs(case, backend.device, dtype)
    got = _grads(backend, args, True)
    want = _grads(REFERENCE, cast(args, F32), True)
    assert _backward_op_dtypes(backend, args) == [dtype, dtype, dtype, F32]
    expected_dtypes = [dtype, dtype, dtype, dtype, dtype, F32]
    for g, w, dt in zip(got, want, expected_dtypes, strict=True):
        assert g.dtype == dt
        torch.testing.assert_close(g.float(), w, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("backend", [b.param() for b in GPU_KERNELS])
def test_kernel_centers_in_another_dtype(backend):
    """float64 centres beside float32 inputs are read in float32, as the reference does; their
    gradient comes back in float64."""
    case = LocalCase(B=2, beam=2, T=3, S=11, D=4, Dv=3, window=2, lengths="full")
    query, keys, values, centers, window, lengths, scale = local_sample_inputs(case, backend.device)
    args = (query, keys, values, centers.double(), window, lengths, scale)
    got = _grads(backend, args, True)
    want = _grads(REFERENCE, args, True)
    assert got[-1].dtype == F64
    assert _backward_op_dtypes(backend, args) == [F32, F32, F32, F64]
    tol = tolerance(backend, "attention_grad", F32).close
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tol)


# Compiled for sm_90 without a GPU (Triton's NVIDIA back end and bundled ptxas, outside the
# interpreter, so in a subprocess): catches what the interpreter lets through (types that
# differ between branches, float64 atomics, float16 stores), as
# tests/ops/test_attention_kernels.py does.
_COMPILE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from kernels import local as L

# 0: the input / output dtype, 1: the accumulation dtype, 2: the centres' dtype
FWD = dict(Q=0, K=0, V=0, CEN=2, LEN="*i64", PARAMS=1, CTX=0, W=0)
BWD = dict(Q=0, K=0, V=0, CEN=2, LEN="*i32", PARAMS=1, DC=0, GW=0, DQ=0, DK=1, DVAL=1, DCEN=2)

def build(fn, ptrs, consts, types):
    sig = {}
    for name in fn.arg_names:
        kind = "constexpr" if name in consts else ptrs.get(name, "i32")
        sig[name] = types[kind] if isinstance(kind, int) else kind
    src = triton.compiler.ASTSource(fn, sig, constexprs=consts)
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4})

for io, acc, cen, flag in [("*fp32", "*fp32", "*fp32", True), ("*fp64", "*fp64", "*fp64", False),
                           ("*bf16", "*fp32", "*fp32", True), ("*fp16", "*fp32", "*fp64", False)]:
    blocks = dict(BLOCK=32, BLOCK_D=64, BLOCK_DV=32)
    types = (io, acc, cen)
    build(L.local_attention_fwd_kernel, FWD, dict(HAS_LEN=flag, NEED_WEIGHTS=flag, **blocks),
          types)
    build(L.local_attention_bwd_kernel, BWD, dict(HAS_LEN=flag, HAS_GW=flag, **blocks), types)
print("compiled")
"""


def test_triton_kernels_compile_for_sm90():
    assert_script_compiles_for_sm90(_COMPILE_SCRIPT)
