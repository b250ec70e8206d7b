"""dot_attention and additive_attention on the Triton kernels of attention.py, as custom ops.

Each op is a ``torch.library.custom_op`` whose body launches the kernels, with a fake (shape)
function and an autograd formula whose backward is a custom op of its own. That one path runs on
CUDA tensors and, under ``TRITON_INTERPRET=1``, on CPU tensors, and passes
``torch.library.opcheck`` and ``torch.compile(fullgraph=True)`` (``triton_op``/``wrap_triton``
does not under the interpreter: see docs/DESIGN.md, "Backends").

Ops (namespace ``fast_s2s_triton``), shapes as in fast_s2s.reference (N = B * beam rows, row n
reads source row n // beam; a 2-D query means T = 1 and 2-D outputs):

    dot_attention(query, keys, values, lengths, scale, need_weights=True)
        -> context (N, T, Dv), weights (N, T, S) or (0,), lse (N, T)
    additive_attention(query_proj, keys_proj, v, values, lengths, need_weights=True)
        -> context, weights, lse
    dot_attention_backward(...) -> grad query, keys, values
    additive_attention_backward(...) -> grad query_proj, keys_proj, v, values

``lse`` (float32; float64 for float64 inputs) is the log-sum-exp of each row's valid scores,
+inf for a row with none; it is what the backward recomputes the weights from. The public
functions return (context, weights), weights None when not asked for.

Weights are written only when asked for. With ``need_weights=True`` the forward stores the raw
scores to a scratch buffer as it goes and normalises them with the final LSE at the end, which
costs a write and a read of N*T*S scores instead of a second pass over the keys. With
``need_weights=False`` neither the (N, T, S) weights nor the scores scratch is allocated or
written (the weights slot holds an empty (0,) tensor, since a custom op cannot return None),
and the backward computes delta = rowsum(dC * C) only.

Forward grid: one program per (source row, block of query rows), each walking all of S. When
that is too few programs to fill the GPU and S spans several key blocks (decoding with long
sources), choose_split cuts S into chunks handled by separate programs and a combine kernel
merges them by log-sum-exp (flash-decoding; see attention.py, "Forward split over S").

What is saved for the backward: the inputs, the context and (when written) the weights, which
feed delta = rowsum(dC * C + dW * W), and the LSE. Gradients of outputs the loss does not use
arrive as None (grads are not materialised), so the backward never allocates a zero (N, T, S)
grad_weights.

Arguments are validated by fast_s2s.ops before they get here; the launcher only makes them
contiguous and moves lengths to the device of the query.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from fast_s2s import _attention_autograd

from .attention import (
    attention_bwd_dkdv_kernel,
    attention_bwd_dq_kernel,
    attention_fwd_combine_kernel,
    attention_fwd_kernel,
    attention_fwd_split_kernel,
)

__all__ = ["additive_attention", "dot_attention"]

# Largest number of elements of one per-program tile (a 3-D broadcast product (M, N, D), or a
# key / value tile when tl.dot is used). Bounds registers on a GPU. Untuned: no GPU has measured
# these kernels yet.
TILE_ELEMS = 8192
MAX_BLOCK_N = 64
MAX_BLOCK_M = 16

# Split-over-S forward (flash-decoding), see choose_split.
# NUM_SPLITS: None lets choose_split decide; an int forces that many chunks of S everywhere (1:
# the single-pass kernel; >= 2: the split path, even where chunks come out empty), for tests.
NUM_SPLITS: int | None = None
# Most chunks per row: bounds the combine kernel's (BLOCK_M, splits) tile and the scratch.
MAX_SPLITS = 64
# Streaming multiprocessors assumed where there is no GPU to ask (the interpreter): an H100's,
# so the CPU tests take the same decisions a GPU of that size would.
INTERPRETER_SM_COUNT = 132


# --------------------------------------------------------------------------------------------
# Launch helpers
# --------------------------------------------------------------------------------------------


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _pow2_floor(n: int) -> int:
    n = max(int(n), 1)
    return 1 << (n.bit_length() - 1)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def choose_blocks(
    rows: int, src_len: int, feat: int, feat_v: int, dtype: torch.dtype, additive: bool
) -> dict:
    """Block sizes, the tl.dot switch and num_warps for R = rows query rows per source row.

    tl.dot (M, N, K >= 16 on a GPU) when a source row has at least 16 query rows
    (beam * T >= 16) and the dtype is not float64; otherwise broadcast products, with the rows
    per program cut to what the source row has (decoding: one row). BLOCK_D / BLOCK_DV cover
    the whole feature dimension (powers of two, masked). Untuned guesses: no GPU has timed
    these kernels yet.
    """
    block_d, block_dv = _pow2(feat), _pow2(feat_v)
    n_cap = min(_pow2(src_len), MAX_BLOCK_N)
    use_dot = rows >= 16 and dtype != torch.float64
    if use_dot and additive:
        # The additive score is a (M, N, A) broadcast tile whatever the product path.
        use_dot = 16 * 16 * block_d <= TILE_ELEMS
    if use_dot:
        block_m = 16
        block_d, block_dv = max(block_d, 16), max(block_dv, 16)
        per_col = 16 * block_d if additive else max(block_d, block_dv)
        block_n = max(16, min(n_cap, _pow2_floor(TILE_ELEMS // per_col)))
    else:
        # The broadcast tiles are (M, N, max(D, Dv)): share the budget between rows and keys.
        budget = _pow2_floor(max(TILE_ELEMS // max(block_d, block_dv), 1))  # M * N
        block_n = min(n_cap, 8, budget)
        block_m = min(_pow2(rows), MAX_BLOCK_M, budget // block_n)
        block_n = min(n_cap, budget // block_m)
    # The backward keeps K, V and two gradient tiles live: wide rows need more registers.
    num_warps = 8 if max(block_d, block_dv) >= 256 else 4
    return dict(
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        BLOCK_DV=block_dv,
        USE_DOT=use_dot,
        num_warps=num_warps,
    )


def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_SM_COUNT


def choose_split(programs: int, src_len: int, block_n: int, device: torch.device) -> int:
    """Number of chunks of S the forward splits each row's source into; 1 for no split.

    The single-pass forward runs `programs` = B * cdiv(R, BLOCK_M) programs, each walking all
    of S. Decoding has few query rows (beam * T per sentence, small batches), so with long
    sources most SMs idle while a few programs stream the keys and values: then the split path
    (flash-decoding) runs `programs` * splits programs, each over one chunk of at least one
    BLOCK_N block, at the cost of a combine launch and a small scratch (B * R * splits * (Dv + 1)
    numbers). Split only when the single-pass grid is under two programs per SM (one wave with
    room for latency hiding) and S spans at least 2 blocks; aim at about 2 programs per SM.
    The SM count is the device's, or INTERPRETER_SM_COUNT in the interpreter. Module-level
    NUM_SPLITS overrides the choice (tests). Untuned: no GPU has timed either path yet.
    """
    if NUM_SPLITS is not None:
        return int(NUM_SPLITS)
    n_blocks = triton.cdiv(src_len, block_n)
    target = 2 * _sm_count(device)
    if n_blocks < 2 or programs >= target:
        return 1
    return min(triton.cdiv(target, programs), n_blocks, MAX_SPLITS)


def _sizes(query: Tensor, keys: Tensor, values: Tensor) -> tuple[int, int, int, int, int]:
    """(B, R, S, D, Dv) with R = beam * T, the query rows of one source row."""
    n_src, src_len, feat = keys.shape
    steps = 1 if query.dim() == 2 else query.shape[1]
    beam = query.shape[0] // n_src if n_src else 0
    return n_src, beam * steps, src_len, feat, values.shape[2]


def _out_shapes(query: Tensor, keys: Tensor, values: Tensor, need_weights: bool):
    """Shapes of context, weights and lse: query.shape[:-1] + (Dv,), + (S,) (or (0,) without
    weights), and + ()."""
    lead = tuple(query.shape[:-1])
    w_shape = lead + (keys.shape[1],) if need_weights else (0,)
    return lead + (values.shape[2],), w_shape, lead


def _common_args(query, keys, vec, values, lengths, scale, acc):
    """Contiguous tensors and the kernel's pointer arguments shared by forward and backward."""
    device = query.device
    scale_t = torch.full((1,), scale, dtype=acc, device=device)
    query, keys, values = query.contiguous(), keys.contiguous(), values.contiguous()
    vec = scale_t if vec is None else vec.contiguous()  # dot attention never reads VEC
    has_len = lengths is not None
    len_arg = lengths.to(device=device).contiguous() if has_len else scale_t
    return query, keys, vec, values, len_arg, scale_t, has_len


def _forward(query, keys, vec, values, lengths, scale, additive, need_weights):
    """(context, weights, lse); weights is an empty (0,) tensor when not need_weights."""
    B, R, S, D, DV = _sizes(query, keys, values)
    acc = _acc_dtype(query.dtype)
    ctx_shape, w_shape, lse_shape = _out_shapes(query, keys, values, need_weights)
    context = query.new_empty(ctx_shape)
    weights = query.new_empty(w_shape)
    lse = query.new_empty(lse_shape, dtype=acc)
    if B == 0 or R == 0:
        return context, weights, lse
    query, keys, vec, values, len_arg, scale_t, has_len = _common_args(
        query, keys, vec, values, lengths, scale, acc
    )
    blocks = choose_blocks(R, S, D, DV, query.dtype, additive)
    row_blocks = triton.cdiv(R, blocks["BLOCK_M"])
    n_splits = choose_split(B * row_blocks, S, blocks["BLOCK_N"], query.device)
    # Without weights, W and SCORES are never touched: lse stands in for both pointers.
    scores = torch.empty((B * R * S,), dtype=acc, device=query.device) if need_weights else lse
    w_arg = weights if need_weights else lse
    flags = dict(HAS_LEN=has_len, NEED_WEIGHTS=need_weights)
    if n_splits == 1:
        attention_fwd_kernel[(B, row_blocks)](
            query, keys, vec, values, len_arg, scale_t, context, w_arg, scores, lse,
            R, S, D, DV, ADDITIVE=additive, **flags, **blocks,
        )  # fmt: skip
        return context, weights, lse

    # Split over S: partial (lse, normalised context) per chunk, then merged.
    part_lse = torch.empty((B * R * n_splits,), dtype=acc, device=query.device)
    part_ctx = torch.empty((B * R * n_splits * DV,), dtype=acc, device=query.device)
    attention_fwd_split_kernel[(B, row_blocks, n_splits)](
        query, keys, vec, values, len_arg, scale_t, scores, part_lse, part_ctx,
        R, S, D, DV, n_splits, ADDITIVE=additive, **flags, **blocks,
    )  # fmt: skip
    # Program (b, row block, 0) merges the context and LSE; with weights, program (b, row block,
    # j) also writes the weights of the j-th chunk of S, so that pass is split too.
    attention_fwd_combine_kernel[(B, row_blocks, n_splits if need_weights else 1)](
        part_lse, part_ctx, len_arg, scores, context, w_arg, lse,
        R, S, DV, n_splits, **flags,
        BLOCK_M=blocks["BLOCK_M"], BLOCK_N=blocks["BLOCK_N"], BLOCK_DV=blocks["BLOCK_DV"],
        BLOCK_SPLIT=_pow2(n_splits), num_warps=blocks["num_warps"],
    )  # fmt: skip
    return context, weights, lse


def _backward(
    grad_context, grad_weights, query, keys, vec, values, lengths, context, weights, lse, scale,
    additive,
):  # fmt: skip
    """(d query, d keys, d vec or None, d values).

    grad_context / grad_weights None mean zero; weights is None when the forward did not write
    them (need_weights=False), and then grad_weights is ignored: there was no weights output.
    """
    if weights is None:
        grad_weights = None
    B, R, S, D, DV = _sizes(query, keys, values)
    acc = lse.dtype
    if B == 0 or R == 0 or S == 0:  # nothing to launch: every gradient is zero (or empty)
        zeros = [None if t is None else torch.zeros_like(t) for t in (query, keys, vec, values)]
        return tuple(zeros)
    # The kernels write every element (zeros past the lengths): no need to clear.
    d_query = torch.empty(query.shape, dtype=query.dtype, device=query.device)
    d_keys = torch.empty(keys.shape, dtype=keys.dtype, device=keys.device)
    d_values = torch.empty(values.shape, dtype=values.dtype, device=values.device)
    if grad_context is None:
        grad_context = torch.zeros_like(context)
    # delta[row] = sum_s P * dP = dC . C + sum_s dW * W (the second term only with weights)
    delta = (grad_context.to(acc) * context.to(acc)).sum(-1)
    if grad_weights is not None:
        delta = delta + (grad_weights.to(acc) * weights.to(acc)).sum(-1)
    delta = delta.contiguous()
    query, keys, vec_arg, values, len_arg, scale_t, has_len = _common_args(
        query, keys, vec, values, lengths, scale, acc
    )
    grad_context = grad_context.contiguous()
    has_gw = grad_weights is not None
    gw_arg = grad_weights.contiguous() if has_gw else delta  # never read without HAS_GW
    lse = lse.contiguous()
    blocks = choose_blocks(R, S, D, DV, query.dtype, additive)
    flags = dict(HAS_LEN=has_len, HAS_GW=has_gw, ADDITIVE=additive, **blocks)

    attention_bwd_dq_kernel[(B, triton.cdiv(R, blocks["BLOCK_M"]))](
        query, keys, vec_arg, values, len_arg, scale_t, grad_context, gw_arg, lse, delta, d_query,
        R, S, D, DV, **flags,
    )  # fmt: skip
    n_blocks = triton.cdiv(S, blocks["BLOCK_N"])
    # Per-program partial sums of dv (additive only): summed below, no atomics.
    dvec_part = torch.empty((B, n_blocks, D) if additive else (1,), dtype=acc, device=query.device)
    attention_bwd_dkdv_kernel[(B, n_blocks)](
        query, keys, vec_arg, values, len_arg, scale_t, grad_context, gw_arg, lse, delta,
        d_keys, d_values, dvec_part,
        R, S, D, DV, **flags,
    )  # fmt: skip
    d_vec = dvec_part.sum(dim=(0, 1)).to(vec.dtype) if additive else None
    return d_query, d_keys, d_vec, d_values


# --------------------------------------------------------------------------------------------
# dot_attention
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("fast_s2s_triton::dot_attention", mutates_args=())
def dot_attention_op(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    lengths: Tensor | None,
    scale: float,
    need_weights: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """(context, weights, lse) of dot_attention, weights (0,) without need_weights; see the
    module docstring."""
    return _forward(query, keys, None, values, lengths, scale, False, need_weights)


dot_attention_op.register_fake(_attention_autograd.forward_fake("dot", flash=True))


@torch.library.custom_op("fast_s2s_triton::dot_attention_backward", mutates_args=())
def dot_attention_backward_op(
    grad_context: Tensor | None,
    grad_weights: Tensor | None,
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    lengths: Tensor | None,
    context: Tensor,
    weights: Tensor | None,
    lse: Tensor,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of query, keys and values; grad_context / grad_weights None mean zero, weights
    None means the forward had need_weights=False."""
    d_query, d_keys, _, d_values = _backward(
        grad_context, grad_weights, query, keys, None, values, lengths, context, weights, lse,
        scale, additive=False,
    )  # fmt: skip
    return d_query, d_keys, d_values


dot_attention_backward_op.register_fake(_attention_autograd.backward_fake("dot"))
_dot_grad, _dot_setup = _attention_autograd.autograd("dot", dot_attention_backward_op, flash=True)
dot_attention_op.register_autograd(_dot_grad, setup_context=_dot_setup)


def dot_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    lengths: Tensor | None = None,
    scale: float = 1.0,
    *,
    need_weights: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Triton dot_attention with the contract of fast_s2s.reference.dot_attention.

    query (N, T, D) or (N, D), keys (B, S, D), values (B, S, Dv), lengths (B,) or None.
    Returns context (N, T, Dv) and weights (N, T, S) ((N, Dv), (N, S) for a 2-D query); weights
    is None, and never computed, when need_weights is False.
    """
    context, weights, _ = dot_attention_op(
        query, keys, values, lengths, float(scale), bool(need_weights)
    )
    return context, weights if need_weights else None


# --------------------------------------------------------------------------------------------
# additive_attention
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("fast_s2s_triton::additive_attention", mutates_args=())
def additive_attention_op(
    query_proj: Tensor,
    keys_proj: Tensor,
    v: Tensor,
    values: Tensor,
    lengths: Tensor | None,
    need_weights: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """(context, weights, lse) of additive_attention, weights (0,) without need_weights; see the
    module docstring."""
    return _forward(query_proj, keys_proj, v, values, lengths, 1.0, True, need_weights)


additive_attention_op.register_fake(_attention_autograd.forward_fake("additive", flash=True))


@torch.library.custom_op("fast_s2s_triton::additive_attention_backward", mutates_args=())
def additive_attention_backward_op(
    grad_context: Tensor | None,
    grad_weights: Tensor | None,
    query_proj: Tensor,
    keys_proj: Tensor,
    v: Tensor,
    values: Tensor,
    lengths: Tensor | None,
    context: Tensor,
    weights: Tensor | None,
    lse: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of query_proj, keys_proj, v and values (None arguments as for dot)."""
    return _backward(
        grad_context, grad_weights, query_proj, keys_proj, v, values, lengths, context, weights,
        lse, 1.0, additive=True,
    )  # fmt: skip


additive_attention_backward_op.register_fake(_attention_autograd.backward_fake("additive"))
_additive_grad, _additive_setup = _attention_autograd.autograd(
    "additive", additive_attention_backward_op, flash=True
)
additive_attention_op.register_autograd(_additive_grad, setup_context=_additive_setup)


def additive_attention(
    query_proj: Tensor,
    keys_proj: Tensor,
    v: Tensor,
    values: Tensor,
    lengths: Tensor | None = None,
    *,
    need_weights: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Triton additive_attention with the contract of fast_s2s.reference.additive_attention.

    query_proj (N, T, A) or (N, A), keys_proj (B, S, A), v (A,), values (B, S, Dv).
    Returns context (N, T, Dv) and weights (N, T, S) ((N, Dv), (N, S) for a 2-D query_proj);
    weights is None, and never computed, when need_weights is False.
    """
    context, weights, _ = additive_attention_op(
        query_proj, keys_proj, v, values, lengths, bool(need_weights)
    )
    return context, weights if need_weights else None
