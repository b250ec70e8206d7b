"""dot_attention and additive_attention: each kernel family's own paths, beyond the shared checks
of tests/ops/test_attention.py (whose cases and helpers this file uses).

Sections: the C++ kernels on the CPU; Triton (its split-over-S forward, launch records, the
public API's dispatch, compilation for sm_90); the CUDA kernels (emulated and on a GPU); the
compiled ops' own argument checks (what reaches torch.ops.fast_s2s.* without fast_s2s.ops'
Python checks).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

import fast_s2s
from fast_s2s import _extension, backends
from tests.attention_cases import CASES, Case, sample_inputs
from tests.backends import (
    CPP,
    CUDA,
    EMU,
    F32,
    F64,
    TRITON,
    TRITON_CUDA,
    diff_inputs,
    grid,
    tolerance,
)
from tests.compile_checks import assert_script_compiles_for_sm90
from tests.ops.test_attention import (
    CUDA_CASES,
    DOT_PATH_CASE,
    EMU_CASES,
    NW,
    OPS,
    KernelPath,
    W,
    check_backward,
    check_forward,
    reference_outputs,
    split_path,
)

# --------------------------------------------------------------------------------------------
# The C++ kernels on the CPU
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [CPP.param()])
def test_cpp_backend_available_and_labelled(backend):
    assert fast_s2s.resolve_backend("dot_attention", "auto", "cpu") == "cpp"
    assert fast_s2s.available_backends("additive_attention", "cpu")["cpp"] is None
    assert _extension.cpu_capability() in ("default", "avx2", "avx512")


@pytest.mark.parametrize("backend", [CPP.param()])
def test_cpp_backward_ops_opcheck(backend):
    """The backward ops are custom ops of their own (torch.compile traces through them)."""
    case = CASES[3]
    query, keys, values, lengths, scale = sample_inputs("dot_attention", case)
    context, weights = torch.ops.fast_s2s.dot_attention(query, keys, values, lengths, scale)
    torch.library.opcheck(
        backend.raw_op("dot_attention_backward"),
        (torch.randn_like(context), torch.randn_like(weights), query, keys, values, weights,
         lengths, scale),
    )  # fmt: skip
    qp, kp, v, values, lengths = sample_inputs("additive_attention", case)
    context, weights = torch.ops.fast_s2s.additive_attention(qp, kp, v, values, lengths)
    torch.library.opcheck(
        backend.raw_op("additive_attention_backward"),
        (torch.randn_like(context), None, qp, kp, v, values, weights, lengths),
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", [CPP.param()])
def test_torch_compile_inductor(backend):
    case = CASES[2]
    query, keys, values, lengths, scale = sample_inputs("dot_attention", case)
    dot = backend.function("dot_attention")

    def step(query, keys, values):
        context, _ = dot(query, keys, values, lengths, scale)
        return torch.tanh(context) * 2

    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(query, keys, values), step(query, keys, values))


# --------------------------------------------------------------------------------------------
# Triton: the split-over-S forward (flash-decoding), launch records, the public API's
# dispatch, compilation for sm_90
# --------------------------------------------------------------------------------------------

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="triton is not installed"
)


@pytest.fixture
def attention_ops():
    return pytest.importorskip("fast_s2s.kernels.attention_ops")


class LaunchSpy:
    """Stands in for a Triton kernel of attention_ops: records each launch (grid, positional
    and keyword arguments), then launches the real kernel."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.launches = []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.launches.append((grid, args, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch


KERNEL_NAMES = [
    "attention_fwd_kernel",
    "attention_fwd_split_kernel",
    "attention_fwd_combine_kernel",
    "attention_bwd_dq_kernel",
    "attention_bwd_dkdv_kernel",
]


@pytest.fixture
def launches(attention_ops, monkeypatch):
    """{kernel name: LaunchSpy} for every kernel attention_ops launches."""
    spies = {}
    for name in KERNEL_NAMES:
        spies[name] = LaunchSpy(getattr(attention_ops, name))
        monkeypatch.setattr(attention_ops, name, spies[name])
    return spies


def assert_split_launched(launches, n_splits, need_weights):
    """The forward ran the split and combine kernels (and not the single pass), with n_splits
    chunks, the combine over every chunk only when it writes weights."""
    assert not launches["attention_fwd_kernel"].launches
    (split_grid, _, _), *_ = launches["attention_fwd_split_kernel"].launches
    (combine_grid, _, combine_kw), *_ = launches["attention_fwd_combine_kernel"].launches
    assert split_grid[2] == n_splits
    assert combine_grid[2] == (n_splits if need_weights else 1)
    assert combine_kw["NEED_WEIGHTS"] == need_weights


@pytest.mark.parametrize("backend,op,case", grid(TRITON, OPS, [DOT_PATH_CASE, CASES[3]]))
def test_triton_many_small_blocks(backend, op, case, attention_ops, monkeypatch):
    """Blocks smaller than S: the online softmax rescales across key blocks, and the dK/dV
    programs each own a slice of S (the tl.dot path and the broadcast path)."""
    KernelPath("", n_splits=1, max_block_n=16 if case is DOT_PATH_CASE else 4).apply(monkeypatch)
    blocks = attention_ops.choose_blocks(20 if case is DOT_PATH_CASE else 6, case.S, case.D,
                                         case.Dv, F32, op == "additive_attention")  # fmt: skip
    assert blocks["BLOCK_N"] < case.S and blocks["USE_DOT"] == (case is DOT_PATH_CASE)
    check_forward(backend, op, case, F32)
    check_backward(backend, op, case, F32, "context+weights")


# The split forward: S = 1 (two of three chunks empty), a 2-D query, S just over a block
# (17 = 4 * 4 + 1) with beam > 1, T > 1, odd D and lengths 0, S and 1, and the tl.dot path.
SPLIT_CASES = [CASES[0], CASES[1], CASES[3], CASES[5], DOT_PATH_CASE]


@pytest.mark.parametrize(
    "backend,op,dtype,case,weights",
    [
        *grid(TRITON, OPS, [F32, F64], SPLIT_CASES, [W, NW]),
        *grid(TRITON_CUDA, OPS, TRITON_CUDA.dtypes, SPLIT_CASES, [W, NW]),
    ],
)
def test_triton_split_forward(backend, op, dtype, case, weights, launches, monkeypatch,
                              nan_filled_empty):  # fmt: skip
    split_path(case).apply(monkeypatch)
    check_forward(backend, op, case, dtype, need_weights=weights == W)
    assert_split_launched(launches, 3, weights == W)


@pytest.mark.parametrize(
    "backend,op,dtype,case,weights",
    [
        *grid(TRITON, OPS, [F32], SPLIT_CASES, [W, NW]),
        *grid(TRITON_CUDA, OPS, TRITON_CUDA.dtypes, SPLIT_CASES, [W, NW]),
    ],
)
def test_triton_split_backward(backend, op, dtype, case, weights, launches, monkeypatch,
                               nan_filled_empty):  # fmt: skip
    """The backward is the same kernels after either forward: it recomputes from the LSE,
    which the split path merges from the chunks."""
    split_path(case).apply(monkeypatch)
    check_backward(backend, op, case, dtype, "context+weights" if weights == W else NW)
    assert_split_launched(launches, 3, weights == W)


@pytest.mark.parametrize("backend,n_splits", grid(TRITON, [2, 5]))
def test_triton_split_lse_matches_single_pass(backend, n_splits, attention_ops, monkeypatch):
    """The merged LSE (what the backward recomputes the weights from) is the single pass's,
    +inf for the rows of a length-0 source; with 5 chunks of a 17-long source some are empty."""
    case = CASES[3]  # lengths 0, 17, 1
    args = sample_inputs("dot_attention", case)
    monkeypatch.setattr(attention_ops, "MAX_BLOCK_N", 4)
    monkeypatch.setattr(attention_ops, "NUM_SPLITS", 1)
    _, _, lse_single = attention_ops.dot_attention_op(*args)
    monkeypatch.setattr(attention_ops, "NUM_SPLITS", n_splits)
    _, _, lse_split = attention_ops.dot_attention_op(*args)
    assert torch.isinf(lse_single[: case.beam]).all() and (lse_single[: case.beam] > 0).all()
    torch.testing.assert_close(lse_split, lse_single, atol=1e-5, rtol=1e-5)


@needs_triton
def test_triton_choose_split(attention_ops, monkeypatch):
    cpu = torch.device("cpu")
    sms = attention_ops.INTERPRETER_SM_COUNT
    block = 64
    choose_split = attention_ops.choose_split
    # Enough programs to fill the GPU, or S within one block: the single pass.
    assert choose_split(2 * sms, 100 * block, block, cpu) == 1
    assert choose_split(1, block, block, cpu) == 1
    assert choose_split(1, 1, block, cpu) == 1
    # Few programs and long S: about 2 programs per SM, at most one chunk per key block...
    assert choose_split(1, block + 1, block, cpu) == 2
    assert choose_split(sms, 100 * block, block, cpu) == 2
    assert choose_split(10, 100 * block, block, cpu) == -(-2 * sms // 10)
    # ... and at most MAX_SPLITS chunks.
    assert choose_split(1, 1000 * block, block, cpu) == attention_ops.MAX_SPLITS
    monkeypatch.setattr(attention_ops, "NUM_SPLITS", 7)  # the override, for tests
    assert choose_split(2 * sms, 1, block, cpu) == 7


@pytest.mark.parametrize("backend,op", grid(TRITON, OPS))
def test_triton_split_chosen_for_few_programs_and_long_sources(backend, op, launches):
    """Without an override: 4 decoding rows (2 sentences, beam 2) over S = 70 (two blocks of
    64) take the split path; the same rows over S = 20 (one block) the single pass."""
    long_src = Case(B=2, beam=2, T=None, S=70, D=8, Dv=8, lengths="mixed")
    check_forward(backend, op, long_src, F32)
    assert_split_launched(launches, 2, need_weights=True)
    launches["attention_fwd_split_kernel"].launches.clear()
    check_forward(backend, op, Case(B=2, beam=2, T=None, S=20, D=8, Dv=8, lengths="mixed"), F32)
    assert len(launches["attention_fwd_kernel"].launches) == 1
    assert not launches["attention_fwd_split_kernel"].launches


@pytest.mark.parametrize(
    "backend,op,path", grid(TRITON, OPS, [split_path(CASES[3], 1), split_path(CASES[3], 3)])
)
def test_triton_need_weights_false_writes_no_weights(backend, op, path, launches, monkeypatch):
    """need_weights=False: the op returns a (0,) placeholder, every forward launch has
    NEED_WEIGHTS=False, no tensor the size of the weights (N, T, S) reaches any kernel, forward
    or backward (no weights, no scores scratch, no grad_weights), and the context, LSE and
    gradients are exactly those of need_weights=True."""
    case = CASES[3]
    n_weights = case.B * case.beam * case.T * case.S
    path.apply(monkeypatch)
    results = {}
    for need_weights in (True, False):
        for spy in launches.values():
            spy.launches.clear()
        torch.manual_seed(1)  # the same inputs for both
        args = sample_inputs(op, case, requires_grad=True)
        context, weights, lse = backend.raw_op(op)(*args, need_weights)
        assert weights.shape == ((0,) if not need_weights else (*context.shape[:-1], case.S))
        context.backward(torch.ones_like(context))
        results[need_weights] = (context, lse, [a.grad for a in diff_inputs(args)])
    all_launches = [launch for spy in launches.values() for launch in spy.launches]
    assert {"attention_bwd_dq_kernel", "attention_bwd_dkdv_kernel"} <= {
        name for name, spy in launches.items() if spy.launches
    }
    for _, launch_args, launch_kwargs in all_launches:
        assert launch_kwargs.get("NEED_WEIGHTS", False) is False
        assert launch_kwargs.get("HAS_GW", False) is False  # only the context has a gradient
        sizes = [a.numel() for a in launch_args if isinstance(a, torch.Tensor)]
        assert n_weights not in sizes, sizes
    context, lse, grads = results[False]
    context_w, lse_w, grads_w = results[True]
    assert torch.equal(context, context_w) and torch.equal(lse, lse_w)
    for g, g_w in zip(grads, grads_w, strict=True):
        assert torch.equal(g, g_w)


@pytest.mark.parametrize(
    "backend,op,weights,path",
    grid(TRITON, OPS, [W, NW], [KernelPath("single", 1, 2), KernelPath("split", 3, 2)]),
)
def test_triton_lse_of_zero_length_rows(backend, op, weights, path, monkeypatch):
    """The LSE of a length-0 row is +inf (the backward's weights exp(s - LSE) are then 0), of
    the others finite, on the single pass and over 3 non-empty chunks."""
    path.apply(monkeypatch)
    case = Case(B=2, beam=2, T=2, S=5, D=4, Dv=3, lengths="none")
    args = list(sample_inputs(op, case))
    args[3 if op == "dot_attention" else 4] = torch.tensor([0, 3], dtype=torch.int32)
    _, _, lse = backend.raw_op(op)(*args, weights == W)
    assert (lse[:2] == float("inf")).all() and torch.isfinite(lse[2:]).all()


@pytest.mark.parametrize("backend", [TRITON.param()])
def test_triton_backward_ops_opcheck(backend):
    case = CASES[3]
    query, keys, values, lengths, scale = sample_inputs("dot_attention", case)
    context, weights, lse = backend.raw_op("dot_attention")(query, keys, values, lengths, scale)
    torch.library.opcheck(
        backend.raw_op("dot_attention_backward"),
        (torch.randn_like(context), torch.randn_like(weights), query, keys, values, lengths,
         context, weights, lse, scale),
    )  # fmt: skip
    qp, kp, v, values, lengths = sample_inputs("additive_attention", case)
    context, weights, lse = backend.raw_op("additive_attention")(qp, kp, v, values, lengths)
    torch.library.opcheck(
        backend.raw_op("additive_attention_backward"),
        (torch.randn_like(context), None, qp, kp, v, values, lengths, context, weights, lse),
    )
    # need_weights=False: no weights saved, no grad_weights.
    context, _, lse = backend.raw_op("additive_attention")(qp, kp, v, values, lengths, False)
    torch.library.opcheck(
        backend.raw_op("additive_attention_backward"),
        (torch.randn_like(context), None, qp, kp, v, values, lengths, context, None, lse),
    )


@pytest.mark.parametrize("backend,op,weights", grid(TRITON, OPS, [W, NW]))
def test_triton_through_the_public_api(backend, op, weights):
    """fast_s2s.<op>(..., backend="triton") reaches these kernels (the other tests call
    fast_s2s.kernels directly), need_weights included."""
    need_weights = weights == W
    args = sample_inputs(op, CASES[3], requires_grad=True)
    context, weights_out = getattr(fast_s2s, op)(*args, backend="triton",
                                                 need_weights=need_weights)  # fmt: skip
    assert context.grad_fn is not None and "fast_s2s_triton" in context.grad_fn.name()
    expected = reference_outputs(op, args)
    tol = tolerance(backend, "forward", F32, "attention")
    torch.testing.assert_close(context, expected[0], **tol.close)
    if need_weights:
        torch.testing.assert_close(weights_out, expected[1], **tol.close)
    else:
        assert weights_out is None


@pytest.mark.parametrize("backend", [TRITON_CUDA.param()])
def test_triton_cuda_choose_split_uses_the_sm_count(backend, attention_ops):
    device = torch.device("cuda")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    assert attention_ops.choose_split(1, 10_000, 64, device) == min(
        2 * sms, 157, attention_ops.MAX_SPLITS
    )
    assert attention_ops.choose_split(2 * sms, 10_000, 64, device) == 1


# A GPU build is checked without a GPU: Triton compiles the kernels for sm_90 down to a cubin
# (its bundled ptxas) in a process without the interpreter. This catches what the interpreter
# lets through (tl.dot shape limits, float64 math, type mismatches between branches).
_COMPILE_SCRIPT = """
import torch, triton
from triton.backends.compiler import GPUTarget
from kernels import attention as A
from kernels.attention_ops import choose_blocks

PTR = {torch.float32: "*fp32", torch.float64: "*fp64", torch.bfloat16: "*bf16"}
# 0: the input / output dtype, 1: the accumulation dtype
FWD = dict(Q=0, K=0, VEC=0, V=0, LEN="*i64", SCALE=1, CTX=0, W=0, SCORES=1, LSE=1)
SPLIT = dict(Q=0, K=0, VEC=0, V=0, LEN="*i64", SCALE=1, SCORES=1, PLSE=1, PCTX=1)
COMBINE = dict(PLSE=1, PCTX=1, LEN="*i64", SCORES=1, CTX=0, W=0, LSE=1)
BWD = dict(Q=0, K=0, VEC=0, V=0, LEN="*i32", SCALE=1, DC=0, GW=0, LSE=1, DELTA=1, DQ=0, DK=0,
           DVAL=0, DVEC_PART=1)

def build(fn, ptrs, consts, io, acc, num_warps):
    sig = {}
    for name in fn.arg_names:
        kind = "constexpr" if name in consts else ptrs.get(name, "i32")
        sig[name] = {0: io, 1: acc}.get(kind, kind)
    src = triton.compiler.ASTSource(fn, sig, constexprs=consts)
    triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})

for rows, dtype, additive, need_weights in [(20, torch.float32, False, True),
                                            (1, torch.bfloat16, True, True),
                                            (3, torch.float64, False, False),
                                            (5, torch.bfloat16, False, False)]:
    blocks = choose_blocks(rows, 50, 64, 48, dtype, additive)
    warps = blocks.pop("num_warps")
    io, acc = PTR[dtype], PTR[torch.float64 if dtype == torch.float64 else torch.float32]
    flags = dict(HAS_LEN=True, ADDITIVE=additive, **blocks)
    fwd_flags = dict(NEED_WEIGHTS=need_weights, **flags)
    build(A.attention_fwd_kernel, FWD, fwd_flags, io, acc, warps)
    build(A.attention_fwd_split_kernel, SPLIT, fwd_flags, io, acc, warps)
    combine = {k: blocks[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_DV")}
    build(A.attention_fwd_combine_kernel, COMBINE,
          dict(HAS_LEN=True, NEED_WEIGHTS=need_weights, BLOCK_SPLIT=8, **combine), io, acc, warps)
    for fn in (A.attention_bwd_dq_kernel, A.attention_bwd_dkdv_kernel):
        build(fn, BWD, dict(HAS_GW=need_weights, **flags), io, acc, warps)
print("compiled")
"""


@needs_triton
def test_triton_kernels_compile_for_sm90():
    assert_script_compiles_for_sm90(_COMPILE_SCRIPT)


# --------------------------------------------------------------------------------------------
# The CUDA kernels (csrc/cuda/attention_forward.cu, _backward.cu): emulated on the CPU, on a GPU
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not _extension.cuda_compiled(), reason="extension built without CUDA")
@pytest.mark.parametrize("op", OPS)
def test_every_op_has_a_cuda_kernel(op):
    """Built with CUDA, the op and its backward are registered for the CUDA dispatch key (no GPU
    needed to check), and backend="cpp" on CUDA is offered for it."""
    for name in (op, op + "_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fast_s2s::{name}", "CUDA"), name
    assert op in backends.CPP_KERNELS["cuda"]


@pytest.mark.parametrize("backend,op", grid(CUDA, OPS))
def test_cpp_resolves_to_the_cuda_kernel(backend, op):
    """backend="cpp" on a CUDA tensor runs the CUDA C++ kernel, and says so."""
    assert backends.resolve_backend(op, "cpp", "cuda") == "cpp"


@pytest.mark.parametrize("backend,op", grid(CUDA, OPS))
def test_cuda_lengths_on_the_host(backend, op):
    """lengths may stay on the CPU while the tensors are on the GPU."""
    args = sample_inputs(op, CASES[3], backend.device)
    host = tuple(
        a.cpu() if isinstance(a, torch.Tensor) and not a.is_floating_point() else a for a in args
    )
    tol = tolerance(backend, "forward", F32, "attention")
    for got, expected in zip(backend.attention(op, host), reference_outputs(op, args), strict=True):
        torch.testing.assert_close(got, expected, **tol.close)


@pytest.mark.parametrize(
    "backend,op,case", [*grid(EMU, OPS, EMU_CASES[1:5]), *grid(CUDA, OPS, CUDA_CASES[-4:])]
)
def test_cuda_kernels_write_no_weights(backend, op, case):
    """need_weights=False: the CUDA kernels return an empty (0,) tensor in place of the
    weights (their backward recomputes them), on one split and several; with need_weights the
    (N, T, S) weights."""
    args = sample_inputs(op, case, backend.device)
    _, weights = backend.raw_op(op)(*args)
    _, no_weights = backend.raw_op(op)(*args, need_weights=False)
    n_rows = args[0].shape[0] * (1 if case.T is None else case.T)
    assert no_weights.shape == (0,) and weights.numel() == n_rows * case.S


# --------------------------------------------------------------------------------------------
# The compiled ops' own argument checks (csrc/common, shared by the C++ and CUDA kernels):
# what reaches torch.ops.fast_s2s.* without fast_s2s.ops' Python checks
# --------------------------------------------------------------------------------------------


def _rows_not_a_multiple(query, keys, values, lengths, scale):
    return (query[:-1], keys, values, lengths, scale)


def _length_past_s(query, keys, values, lengths, scale):
    # On the host: the CUDA kernels take host lengths too.
    return (query, keys, values, torch.full((keys.shape[0],), keys.shape[1] + 1), scale)


BAD_INPUT = {
    "rows": (_rows_not_a_multiple, "must be a multiple of the number of source rows"),
    "length_past_S": (_length_past_s, r"lengths\[0\] = \d+ is out of range"),
}


@pytest.mark.parametrize(
    "backend,what", [*grid(CPP, BAD_INPUT), *grid(EMU, BAD_INPUT), *grid(CUDA, BAD_INPUT)]
)
def test_compiled_ops_refuse_bad_input_with_a_message(backend, what):
    change, message = BAD_INPUT[what]
    args = sample_inputs("dot_attention", CASES[2], backend.device)
    with pytest.raises(RuntimeError, match=message):
        backend.raw_op("dot_attention")(*change(*args))
