"""The Triton attention kernels (fast_s2s.kernels) against the reference.

On the CPU they run in Triton's interpreter (TRITON_INTERPRET=1, set by conftest before triton is
imported), which is slow: the shapes are small and the cases few. The `cuda` tests run the same
checks on a GPU in float16, bfloat16 and float32.

Both forward paths are checked: the single pass (NUM_SPLITS = 1) and the split over S
(flash-decoding, NUM_SPLITS >= 2, small key blocks so S spans several chunks), with and without
weights (need_weights=False writes none).
"""

from __future__ import annotations

import os

import pytest
import torch

import fast_s2s
from fast_s2s import backends, reference
from tests.attention_cases import (
    CASES,
    TOLERANCES,
    Case,
    additive_sample_inputs,
    dot_sample_inputs,
    transposed_storage,
)
from tests.compile_checks import assert_compiled_matches_eager

pytest.importorskip("triton")
kernels = pytest.importorskip("fast_s2s.kernels.attention_ops")

interpreter_only = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton kernels run on CPU tensors only with TRITON_INTERPRET=1",
)

OPS = ["dot_attention", "additive_attention"]

# Small cases from attention_cases (S = 1 with D = 1, a 2-D query, beam > 1 with lengths
# containing 0, 1 and S, T > 1 over several key blocks), plus one with beam * T = 20 >= 16
# query rows per source row, which takes the tl.dot path over two row blocks.
DOT_PATH_CASE = Case(B=3, beam=4, T=5, S=19, D=9, Dv=7, lengths="mixed")
TRITON_CASES = [CASES[0], CASES[1], CASES[3], CASES[4], CASES[5], DOT_PATH_CASE]
TRITON_IDS = [c.id for c in TRITON_CASES]


def _inputs(op, case, device="cpu", dtype=torch.float32, requires_grad=False):
    make = dot_sample_inputs if op == "dot_attention" else additive_sample_inputs
    return make(case, device, dtype, requires_grad)


def _run(op, args, impl, need_weights=True):
    """impl: "triton" (the kernels' public function) or "reference" (which always returns the
    weights)."""
    if impl == "triton":
        return getattr(kernels, op)(*args, need_weights=need_weights)
    return getattr(reference, op)(*args)


def _grad_inputs(args):
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def _to(args, dtype):
    return tuple(
        a.detach().to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
        for a in args
    )


@pytest.fixture
def single_pass(monkeypatch):
    """The single-pass forward, whatever choose_split would pick for the shape."""
    monkeypatch.setattr(kernels, "NUM_SPLITS", 1)


def force_split(monkeypatch, case, n_splits=3):
    """The split forward with n_splits chunks, over key blocks of 4 (16 on the tl.dot path), so
    that S spans several blocks and chunks; a chunk can also lie wholly past a length."""
    monkeypatch.setattr(kernels, "NUM_SPLITS", n_splits)
    monkeypatch.setattr(kernels, "MAX_BLOCK_N", 16 if case is DOT_PATH_CASE else 4)


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
def launches(monkeypatch):
    """{kernel name: LaunchSpy} for every kernel attention_ops launches."""
    spies = {}
    for name in KERNEL_NAMES:
        spies[name] = LaunchSpy(getattr(kernels, name))
        monkeypatch.setattr(kernels, name, spies[name])
    return spies


@pytest.fixture
def nan_filled_empty():
    """torch.empty returns NaN-filled memory: an output element the kernels leave unwritten
    shows up as NaN in the comparison."""
    old = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(old)
    torch.utils.deterministic.fill_uninitialized_memory = old_fill


# --------------------------------------------------------------------------------------------
# Checks shared by the interpreter and the GPU tests
# --------------------------------------------------------------------------------------------


def check_forward(op, case, device, dtype, flash_criterion=True, need_weights=True):
    """Context and (need_weights) weights against the reference; without need_weights the
    weights must come back as None."""
    args = _inputs(op, case, device, dtype)
    context, weights = _run(op, args, "triton", need_weights)
    assert context.dtype == dtype
    if need_weights:
        assert weights.dtype == dtype
        outputs = (context, weights)
    else:
        assert weights is None
        outputs = (context,)
    if dtype in (torch.float16, torch.bfloat16) and flash_criterion:
        # FlashAttention's criterion: the error against a float64 reference is at most twice
        # that of the reference itself run in the low precision (plus a small floor).
        exact = _run(op, _to(args, torch.float64), "reference")[: len(outputs)]
        low = _run(op, args, "reference")[: len(outputs)]
        for fused, ref64, ref_low in zip(outputs, exact, low, strict=True):
            fused_err = (fused.double() - ref64).abs().max().item()
            ref_err = (ref_low.double() - ref64).abs().max().item()
            assert fused_err <= 2 * ref_err + 1e-3, (fused_err, ref_err)
        return
    expected = _run(op, args, "reference")[: len(outputs)]
    for fused, ref in zip(outputs, expected, strict=True):
        torch.testing.assert_close(fused, ref, **TOLERANCES[dtype])


def check_backward(op, case, device, dtype=torch.float32, atol=5e-5, rtol=5e-5, need_weights=True):
    """Fused backward against autograd through the reference, with a loss on both outputs (so
    grad_weights reaches the kernels too), or on the context alone without need_weights. Low
    precision: compared with a float32 reference."""
    grads = {}
    for impl in ("triton", "reference"):
        torch.manual_seed(1)
        args = _inputs(op, case, device, dtype, requires_grad=True)
        if impl == "reference" and dtype in (torch.float16, torch.bfloat16):
            args = tuple(
                a.detach().float().requires_grad_() if isinstance(a, torch.Tensor) and
                a.requires_grad else a
                for a in args
            )  # fmt: skip
        context, weights = _run(op, args, impl, need_weights)
        torch.manual_seed(2)
        grad_c = torch.randn(context.shape, device=device)
        loss = (context.float() * grad_c).sum()
        if need_weights:
            grad_w = torch.randn(weights.shape, device=device)
            loss = loss + (weights.float() * grad_w).sum()
        loss.backward()
        grads[impl] = [a.grad for a in _grad_inputs(args)]
    for fused, expected in zip(grads["triton"], grads["reference"], strict=True):
        assert fused.dtype == dtype
        torch.testing.assert_close(fused.float(), expected.float(), atol=atol, rtol=rtol)


# --------------------------------------------------------------------------------------------
# Interpreter (CPU)
# --------------------------------------------------------------------------------------------


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("case", TRITON_CASES, ids=TRITON_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_forward_matches_reference(op, case, dtype, need_weights, single_pass, nan_filled_empty):
    check_forward(op, case, "cpu", dtype, need_weights=need_weights)


@interpreter_only
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_forward_low_precision(op, dtype):
    # The interpreter casts float32 to bfloat16 by truncation (a GPU rounds to nearest even), so
    # its bfloat16 error can reach one ulp, not half: it gets the plain per-dtype tolerance, and
    # the FlashAttention criterion is checked on the GPU.
    check_forward(op, CASES[3], "cpu", dtype, flash_criterion=dtype == torch.float16)


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("case", TRITON_CASES, ids=TRITON_IDS)
@pytest.mark.parametrize("op", OPS)
def test_backward_matches_reference(op, case, need_weights, single_pass, nan_filled_empty):
    check_backward(op, case, "cpu", need_weights=need_weights)


@interpreter_only
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", [DOT_PATH_CASE, CASES[3]], ids=["dot_path", "broadcast_path"])
def test_many_small_blocks(op, case, single_pass, monkeypatch):
    """Blocks smaller than S: the online softmax rescales across key blocks, and the dK/dV
    programs each own a slice of S."""
    monkeypatch.setattr(kernels, "MAX_BLOCK_N", 16 if case is DOT_PATH_CASE else 4)
    blocks = kernels.choose_blocks(20 if case is DOT_PATH_CASE else 6, case.S, case.D, case.Dv,
                                   torch.float32, op == "additive_attention")  # fmt: skip
    assert blocks["BLOCK_N"] < case.S and blocks["USE_DOT"] == (case is DOT_PATH_CASE)
    check_forward(op, case, "cpu", torch.float32)
    check_backward(op, case, "cpu")


# The split forward: S = 1 (two of three chunks empty), a 2-D query, S just over a block
# (17 = 4 * 4 + 1) with beam > 1, T > 1, odd D and lengths 0, S and 1, and the tl.dot path.
SPLIT_CASES = [CASES[0], CASES[1], CASES[3], CASES[5], DOT_PATH_CASE]
SPLIT_IDS = [c.id for c in SPLIT_CASES]


def assert_split_launched(launches, n_splits, need_weights):
    """The forward ran the split and combine kernels (and not the single pass), with n_splits
    chunks, the combine over every chunk only when it writes weights."""
    assert not launches["attention_fwd_kernel"].launches
    (split_grid, _, _), *_ = launches["attention_fwd_split_kernel"].launches
    (combine_grid, _, combine_kw), *_ = launches["attention_fwd_combine_kernel"].launches
    assert split_grid[2] == n_splits
    assert combine_grid[2] == (n_splits if need_weights else 1)
    assert combine_kw["NEED_WEIGHTS"] == need_weights


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("case", SPLIT_CASES, ids=SPLIT_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_split_forward_matches_reference(
    op, case, dtype, need_weights, launches, monkeypatch, nan_filled_empty
):
    force_split(monkeypatch, case)
    check_forward(op, case, "cpu", dtype, need_weights=need_weights)
    assert_split_launched(launches, 3, need_weights)


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("case", SPLIT_CASES, ids=SPLIT_IDS)
@pytest.mark.parametrize("op", OPS)
def test_split_backward_matches_reference(
    op, case, need_weights, launches, monkeypatch, nan_filled_empty
):
    """The backward is the same kernels after either forward: it recomputes from the LSE,
    which the split path merges from the chunks."""
    force_split(monkeypatch, case)
    check_backward(op, case, "cpu", need_weights=need_weights)
    assert_split_launched(launches, 3, need_weights)


@interpreter_only
@pytest.mark.parametrize("n_splits", [2, 5])
def test_split_lse_matches_single_pass(n_splits, monkeypatch):
    """The merged LSE (what the backward recomputes the weights from) is the single pass's,
    +inf for the rows of a length-0 source; with 5 chunks of a 17-long source some are empty."""
    case = CASES[3]  # lengths 0, 17, 1
    args = _inputs("dot_attention", case)
    monkeypatch.setattr(kernels, "MAX_BLOCK_N", 4)
    monkeypatch.setattr(kernels, "NUM_SPLITS", 1)
    _, _, lse_single = kernels.dot_attention_op(*args)
    monkeypatch.setattr(kernels, "NUM_SPLITS", n_splits)
    _, _, lse_split = kernels.dot_attention_op(*args)
    assert torch.isinf(lse_single[: case.beam]).all() and (lse_single[: case.beam] > 0).all()
    torch.testing.assert_close(lse_split, lse_single, atol=1e-5, rtol=1e-5)


def test_choose_split(monkeypatch):
    cpu = torch.device("cpu")
    sms = kernels.INTERPRETER_SM_COUNT
    block = 64
    # Enough programs to fill the GPU, or S within one block: the single pass.
    assert kernels.choose_split(2 * sms, 100 * block, block, cpu) == 1
    assert kernels.choose_split(1, block, block, cpu) == 1
    assert kernels.choose_split(1, 1, block, cpu) == 1
    # Few programs and long S: about 2 programs per SM, at most one chunk per key block...
    assert kernels.choose_split(1, block + 1, block, cpu) == 2
    assert kernels.choose_split(sms, 100 * block, block, cpu) == 2
    assert kernels.choose_split(10, 100 * block, block, cpu) == -(-2 * sms // 10)
    # ... and at most MAX_SPLITS chunks.
    assert kernels.choose_split(1, 1000 * block, block, cpu) == kernels.MAX_SPLITS
    monkeypatch.setattr(kernels, "NUM_SPLITS", 7)  # the override, for tests
    assert kernels.choose_split(2 * sms, 1, block, cpu) == 7


@interpreter_only
@pytest.mark.parametrize("op", OPS)
def test_split_chosen_for_few_programs_and_long_sources(op, launches):
    """Without an override: 4 decoding rows (2 sentences, beam 2) over S = 70 (two blocks of
    64) take the split path; the same rows over S = 20 (one block) the single pass."""
    long_src = Case(B=2, beam=2, T=None, S=70, D=8, Dv=8, lengths="mixed")
    check_forward(op, long_src, "cpu", torch.float32)
    assert_split_launched(launches, 2, need_weights=True)
    launches["attention_fwd_split_kernel"].launches.clear()
    check_forward(op, Case(B=2, beam=2, T=None, S=20, D=8, Dv=8, lengths="mixed"), "cpu",
                  torch.float32)  # fmt: skip
    assert len(launches["attention_fwd_kernel"].launches) == 1
    assert not launches["attention_fwd_split_kernel"].launches


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op, need_weights):
    case = Case(B=2, beam=2, T=2, S=3, D=3, Dv=2, lengths="mixed")
    args = _inputs(op, case, dtype=torch.float64, requires_grad=True)
    if op == "dot_attention":
        query, keys, values, lengths, scale = args

        def fn(q, k, v):
            out = kernels.dot_attention(q, k, v, lengths, scale, need_weights=need_weights)
            return out if need_weights else out[0]
    else:
        query_proj, keys_proj, v, values, lengths = args

        def fn(q, k, vv, vals):
            out = kernels.additive_attention(q, k, vv, vals, lengths, need_weights=need_weights)
            return out if need_weights else out[0]

    assert torch.autograd.gradcheck(fn, tuple(_grad_inputs(args)))


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("op", OPS)
def test_opcheck(op, need_weights):
    args = _inputs(op, CASES[3], requires_grad=True)
    torch.library.opcheck(getattr(kernels, op + "_op"), (*args, need_weights))


@interpreter_only
def test_opcheck_backward_ops():
    case = CASES[3]
    query, keys, values, lengths, scale = _inputs("dot_attention", case)
    context, weights, lse = kernels.dot_attention_op(query, keys, values, lengths, scale)
    torch.library.opcheck(
        kernels.dot_attention_backward_op,
        (torch.randn_like(context), torch.randn_like(weights), query, keys, values, lengths,
         context, weights, lse, scale),
    )  # fmt: skip
    qp, kp, v, values, lengths = _inputs("additive_attention", case)
    context, weights, lse = kernels.additive_attention_op(qp, kp, v, values, lengths)
    torch.library.opcheck(
        kernels.additive_attention_backward_op,
        (torch.randn_like(context), None, qp, kp, v, values, lengths, context, weights, lse),
    )
    # need_weights=False: no weights saved, no grad_weights.
    context, _, lse = kernels.additive_attention_op(qp, kp, v, values, lengths, False)
    torch.library.opcheck(
        kernels.additive_attention_backward_op,
        (torch.randn_like(context), None, qp, kp, v, values, lengths, context, None, lse),
    )


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
def test_torch_compile_fullgraph_forward_and_backward(need_weights):
    case = CASES[3]
    query, keys, values, lengths, scale = _inputs("dot_attention", case, requires_grad=True)
    qp, kp, v, _, _ = _inputs("additive_attention", case, requires_grad=True)

    def step(query, keys, values, qp, kp, v, lengths):
        c1, w1 = kernels.dot_attention(query, keys, values, lengths, scale,
                                       need_weights=need_weights)  # fmt: skip
        c2, w2 = kernels.additive_attention(qp, kp, v, values, lengths, need_weights=need_weights)
        loss = (c1 * c2).sum()
        return loss + (w1 * w2).sum() if need_weights else loss

    assert_compiled_matches_eager(
        step, (query, keys, values, qp, kp, v, lengths), (query, keys, values, qp, kp, v)
    )


@interpreter_only
@pytest.mark.parametrize("n_splits", [1, 3], ids=["single", "split"])
@pytest.mark.parametrize("op", OPS)
def test_need_weights_false_writes_no_weights(op, n_splits, launches, monkeypatch):
    """need_weights=False: the op returns a (0,) placeholder, every forward launch has
    NEED_WEIGHTS=False, no tensor the size of the weights (N, T, S) reaches any kernel, forward
    or backward (no weights, no scores scratch, no grad_weights), and the context, LSE and
    gradients are exactly those of need_weights=True."""
    case = CASES[3]
    n_weights = case.B * case.beam * case.T * case.S
    force_split(monkeypatch, case, n_splits)
    results = {}
    for need_weights in (True, False):
        for spy in launches.values():
            spy.launches.clear()
        torch.manual_seed(1)  # the same inputs for both
        args = _inputs(op, case, requires_grad=True)
        context, weights, lse = getattr(kernels, op + "_op")(*args, need_weights)
        assert weights.shape == ((0,) if not need_weights else (*context.shape[:-1], case.S))
        context.backward(torch.ones_like(context))
        results[need_weights] = (context, lse, [a.grad for a in _grad_inputs(args)])
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


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("n_splits", [1, 3], ids=["single", "split"])
@pytest.mark.parametrize("op", OPS)
def test_zero_length_rows_give_zeros_not_nan(op, n_splits, need_weights, monkeypatch):
    case = Case(B=2, beam=2, T=2, S=5, D=4, Dv=3, lengths="none")
    monkeypatch.setattr(kernels, "NUM_SPLITS", n_splits)
    monkeypatch.setattr(kernels, "MAX_BLOCK_N", 2)  # 3 blocks: the 3 chunks are not empty
    args = list(_inputs(op, case, requires_grad=True))
    args[3 if op == "dot_attention" else 4] = torch.tensor([0, 3], dtype=torch.int32)
    context, weights, lse = getattr(kernels, op + "_op")(*args, need_weights)
    assert (context[:2] == 0).all() and torch.isfinite(context).all()
    assert (lse[:2] == float("inf")).all() and torch.isfinite(lse[2:]).all()
    loss = context.sum()
    if need_weights:
        assert (weights[:2] == 0).all() and torch.isfinite(weights).all()
        assert (weights[2:, :, 3:] == 0).all()  # past the length of source row 1
        loss = loss + weights.sum()
    loss.backward()
    for a in _grad_inputs(args):
        assert torch.isfinite(a.grad).all()
    assert (args[0].grad[:2] == 0).all()  # rows reading the empty source get no gradient


@interpreter_only
def test_extreme_scores_stay_finite():
    case = Case(B=2, beam=1, T=3, S=9, D=16, Dv=8, lengths="mixed")
    query, keys, values, lengths, _ = _inputs("dot_attention", case)
    query = query * 1e4 / query.norm(dim=-1, keepdim=True)  # scores of order 1e4
    keys = keys / keys.norm(dim=-1, keepdim=True)
    context, weights = kernels.dot_attention(query, keys, values, lengths)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()
    expected = reference.dot_attention(query, keys, values, lengths)
    torch.testing.assert_close(context, expected[0], atol=1e-4, rtol=1e-4)
    qp = torch.full((2, 3, 16), 1e4)
    kp = -qp[:, :1].expand(2, 9, 16)  # an expanded (stride-0) input, too
    context, weights = kernels.additive_attention(qp, kp, torch.full((16,), 1e4), values, lengths)
    assert torch.isfinite(context).all() and torch.isfinite(weights).all()


@interpreter_only
@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_inputs(op):
    case = Case(B=3, beam=2, T=4, S=11, D=19, Dv=7, lengths="mixed")
    args = _inputs(op, case)

    noncontig = tuple(transposed_storage(a) for a in args)
    for got, expected in zip(_run(op, noncontig, "triton"), _run(op, args, "reference"),
                             strict=True):  # fmt: skip
        torch.testing.assert_close(got, expected, **TOLERANCES[torch.float32])


@interpreter_only
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("op", OPS)
def test_public_api_backend_triton(op, need_weights, monkeypatch):
    """fast_s2s.<op>(..., backend="triton") reaches these kernels once the backend lists them,
    need_weights included."""
    monkeypatch.setattr(backends, "TRITON_KERNELS", backends.TRITON_KERNELS | frozenset(OPS))
    args = _inputs(op, CASES[3], requires_grad=True)
    context, weights = getattr(fast_s2s, op)(*args, backend="triton", need_weights=need_weights)
    assert context.grad_fn is not None and "fast_s2s_triton" in context.grad_fn.name()
    expected = _run(op, args, "reference")
    torch.testing.assert_close(context, expected[0], **TOLERANCES[torch.float32])
    if need_weights:
        torch.testing.assert_close(weights, expected[1], **TOLERANCES[torch.float32])
    else:
        assert weights is None


# --------------------------------------------------------------------------------------------
# GPU (skipped without one): the same checks on CUDA tensors, compiled Triton
# --------------------------------------------------------------------------------------------

CUDA_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# Low-precision gradients against a float32 reference: bounded by the rounding of the inputs.
CUDA_GRAD_TOL = {
    torch.float32: dict(atol=5e-5, rtol=5e-5),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=5e-2, rtol=5e-2),
}
CUDA_CASES = [*CASES, DOT_PATH_CASE]
CUDA_IDS = [c.id for c in CUDA_CASES]


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_CASES, ids=CUDA_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
def test_cuda_forward_matches_reference(op, case, dtype):
    check_forward(op, case, "cuda", dtype)


@pytest.mark.cuda
@pytest.mark.parametrize("case", CUDA_CASES, ids=CUDA_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
def test_cuda_backward_matches_reference(op, case, dtype):
    check_backward(op, case, "cuda", dtype, **CUDA_GRAD_TOL[dtype])


@pytest.mark.cuda
@pytest.mark.parametrize("need_weights", [True, False], ids=["weights", "no_weights"])
@pytest.mark.parametrize("case", SPLIT_CASES, ids=SPLIT_IDS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=str)
def test_cuda_split_matches_reference(op, case, dtype, need_weights, launches, monkeypatch):
    force_split(monkeypatch, case)
    check_forward(op, case, "cuda", dtype, need_weights=need_weights)
    check_backward(op, case, "cuda", dtype, need_weights=need_weights, **CUDA_GRAD_TOL[dtype])
    assert_split_launched(launches, 3, need_weights)


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_single_pass_without_weights(op, single_pass):
    for case in CUDA_CASES:
        check_forward(op, case, "cuda", torch.float32, need_weights=False)
        check_backward(op, case, "cuda", need_weights=False)


@pytest.mark.cuda
def test_cuda_choose_split_uses_the_sm_count():
    device = torch.device("cuda")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    assert kernels.choose_split(1, 10_000, 64, device) == min(2 * sms, 157, kernels.MAX_SPLITS)
    assert kernels.choose_split(2 * sms, 10_000, 64, device) == 1


@pytest.mark.cuda
@pytest.mark.parametrize("op", OPS)
def test_cuda_opcheck(op):
    args = _inputs(op, DOT_PATH_CASE, "cuda", requires_grad=True)
    torch.library.opcheck(getattr(kernels, op + "_op"), args)


@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    case = CASES[3]
    query, keys, values, lengths, scale = _inputs("dot_attention", case, "cuda", requires_grad=True)
    qp, kp, v, _, _ = _inputs("additive_attention", case, "cuda", requires_grad=True)

    def step(query, keys, values, qp, kp, v, lengths):
        c1, w1 = kernels.dot_attention(query, keys, values, lengths, scale)
        c2, w2 = kernels.additive_attention(qp, kp, v, values, lengths)
        return (c1 * c2).sum() + (w1 * w2).sum()

    compiled = torch.compile(step, fullgraph=True)
    inputs = (query, keys, values, qp, kp, v, lengths)
    loss = compiled(*inputs)
    grads = torch.autograd.grad(loss, (query, keys, values, qp, kp, v))
    expected_loss = step(*inputs)
    expected = torch.autograd.grad(expected_loss, (query, keys, values, qp, kp, v))
    torch.testing.assert_close(loss, expected_loss)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)


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


def test_kernels_compile_for_sm90():
    import subprocess
    import sys
    from pathlib import Path

    import triton

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        pytest.skip("triton's bundled ptxas is missing")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0 and "compiled" in result.stdout, result.stderr[-3000:]
