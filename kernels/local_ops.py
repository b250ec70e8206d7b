"""local_attention on the Triton kernels of local.py, as custom ops (namespace
``fast_s2s_triton``, built like attention_ops.py: custom_op + register_fake + register_autograd
with the backward a custom op of its own, so the same path runs on CUDA tensors and, under
TRITON_INTERPRET=1, on CPU tensors, and passes opcheck and torch.compile).

    local_attention(query, keys, values, centers, window, lengths, scale, need_weights=True)
        -> context (N, T, Dv), weights (N, T, S) or (0,)
    local_attention_backward(grad_context, grad_weights, query, keys, values, centers, window,
        lengths, scale) -> grad query, keys, values, centers

Weights are written only when asked for: with need_weights=False no (N, T, S) tensor is
allocated or written (the slot holds an empty (0,) tensor: a custom op cannot return None), and
a call costs O(window) per row. With need_weights=True the launcher zero-fills the (N, T, S)
output and the kernel writes the window's entries. Only the inputs are saved for the backward,
which recomputes the window's weights (as the compiled op does, fast_s2s/compiled_ops.py).

Arguments are validated by fast_s2s.ops before they get here.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from fast_s2s import _local_autograd

from .local import local_attention_bwd_kernel, local_attention_fwd_kernel

__all__ = ["local_attention"]


def _pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _launch_args(query, keys, values, centers, window, lengths, scale):
    """(contiguous query, keys, values, centers, lengths argument, PARAMS, has_len, sizes,
    constexprs) shared by forward and backward; sizes = (rows, R, S, D, Dv)."""
    acc = _acc_dtype(query.dtype)
    sigma = window / 2
    # [scale, 2 sigma^2, 1 / sigma^2]; WIN = 0: only s = p is in the window, g = 1, dp = 0.
    params = [scale, 2 * sigma**2, 1 / sigma**2] if window > 0 else [scale, 1.0, 0.0]
    params = torch.tensor(params, dtype=acc, device=query.device)
    n_src, src_len, feat = keys.shape
    rows = query.numel() // feat if feat else centers.numel()
    r_per_src = rows // n_src if n_src else 0
    has_len = lengths is not None
    len_arg = lengths.to(device=query.device).contiguous() if has_len else params
    tensors = (query.contiguous(), keys.contiguous(), values.contiguous(), centers.contiguous())
    sizes = (rows, r_per_src, src_len, feat, values.shape[2])
    blocks = dict(
        # floor(p - D)..ceil(p + D): at most 2 D + 2 positions, and never more than the S of
        # the source (the start is clamped to 0), so a window wider than the source costs S.
        BLOCK=_pow2(min(2 * window + 2, src_len)),
        BLOCK_D=_pow2(feat),
        BLOCK_DV=_pow2(values.shape[2]),
    )
    # One (BLOCK, features) tile of keys and one of values per program: more warps for wide
    # tiles (an untuned guess, as in attention_ops.choose_blocks; no GPU has timed this). A very
    # wide window (hundreds of positions) times wide features would spill registers: the kernel
    # has no loop over chunks of the window (Luong et al. use D = 10).
    tile = blocks["BLOCK"] * max(blocks["BLOCK_D"], blocks["BLOCK_DV"])
    blocks["num_warps"] = 8 if tile >= 8192 else 4
    return tensors, len_arg, params, has_len, sizes, blocks


def _forward(query, keys, values, centers, window, lengths, scale, need_weights):
    lead = tuple(query.shape[:-1])
    context = query.new_empty(lead + (values.shape[2],))
    # Zeros outside the window: the kernel writes only the window's entries.
    weights = query.new_zeros(lead + (keys.shape[1],)) if need_weights else query.new_empty((0,))
    (q, k, v, c), len_arg, params, has_len, sizes, blocks = _launch_args(
        query, keys, values, centers, window, lengths, scale
    )
    rows, R, S, D, DV = sizes
    if rows == 0:
        return context, weights
    w_arg = weights if need_weights else params  # never touched without NEED_WEIGHTS
    local_attention_fwd_kernel[(rows,)](
        q, k, v, c, len_arg, params, context, w_arg, R, S, D, DV, window,
        HAS_LEN=has_len, NEED_WEIGHTS=need_weights, **blocks,
    )  # fmt: skip
    return context, weights


def _backward(grad_context, grad_weights, query, keys, values, centers, window, lengths, scale):
    """(d query, d keys, d values, d centers); grad_context / grad_weights None mean zero."""
    (q, k, v, c), len_arg, params, has_len, sizes, blocks = _launch_args(
        query, keys, values, centers, window, lengths, scale
    )
    rows, R, S, D, DV = sizes
    acc = params.dtype
    d_query = torch.empty_like(q)
    d_centers = torch.empty_like(c)
    # Sums over the rows whose windows overlap: atomic adds into the accumulation dtype.
    d_keys = torch.zeros(keys.shape, dtype=acc, device=keys.device)
    d_values = torch.zeros(values.shape, dtype=acc, device=values.device)
    if rows > 0:
        if grad_context is None:
            grad_context = query.new_zeros(tuple(query.shape[:-1]) + (values.shape[2],))
        has_gw = grad_weights is not None
        gw_arg = grad_weights.contiguous() if has_gw else params  # never read without HAS_GW
        local_attention_bwd_kernel[(rows,)](
            q, k, v, c, len_arg, params, grad_context.contiguous(), gw_arg,
            d_query, d_keys, d_values, d_centers, R, S, D, DV, window,
            HAS_LEN=has_len, HAS_GW=has_gw, **blocks,
        )  # fmt: skip
    return (
        d_query.view(query.shape),
        d_keys.to(keys.dtype),
        d_values.to(values.dtype),
        d_centers.view(centers.shape),
    )


@torch.library.custom_op("fast_s2s_triton::local_attention", mutates_args=())
def local_attention_op(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    centers: Tensor,
    window: int,
    lengths: Tensor | None,
    scale: float,
    need_weights: bool = True,
) -> tuple[Tensor, Tensor]:
    """(context, weights) of local_attention, weights (0,) without need_weights."""
    return _forward(query, keys, values, centers, window, lengths, scale, need_weights)


local_attention_op.register_fake(_local_autograd.forward_fake)


@torch.library.custom_op("fast_s2s_triton::local_attention_backward", mutates_args=())
def local_attention_backward_op(
    grad_context: Tensor | None,
    grad_weights: Tensor | None,
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    centers: Tensor,
    window: int,
    lengths: Tensor | None,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Gradients of query, keys, values and centers (None output gradients mean zero)."""
    return _backward(
        grad_context, grad_weights, query, keys, values, centers, window, lengths, scale
    )


local_attention_backward_op.register_fake(_local_autograd.backward_fake)
_backward_formula, _setup = _local_autograd.autograd(
    local_attention_backward_op, takes_no_context_grad=True
)
local_attention_op.register_autograd(_backward_formula, setup_context=_setup)


def local_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    centers: Tensor,
    window: int,
    lengths: Tensor | None = None,
    scale: float = 1.0,
    *,
    need_weights: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Triton local_attention with the contract of fast_s2s.reference.local_attention.

    query (N, T, D) or (N, D), keys (B, S, D), values (B, S, Dv), centers (N, T) or (N,).
    Returns context and weights (None, and never computed, when need_weights is False).
    """
    context, weights = local_attention_op(
        query, keys, values, centers, int(window), lengths, float(scale), bool(need_weights)
    )
    return context, weights if need_weights else None
