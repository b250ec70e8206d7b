"""The typed Python API of the fused ops: argument checks, backend choice, fake and autograd.

Each public function checks its arguments (fast_s2s._validate), picks the implementation
(fast_s2s.backends.resolve_backend) and calls it:

- "cpp":       torch.ops.fast_s2s.<op>, the compiled extension (C++ on CPU, CUDA C++ on GPU),
               whose schemas live in csrc/ops.cpp. Its fake (shape) functions and autograd
               formulas are registered below; each backward is a custom op of its own, so
               torch.compile(fullgraph=True) traces through forward and backward.
- "reference": fast_s2s.reference, plain PyTorch, differentiated by autograd.

Shapes follow ../shared/DESIGN.md: N = B * beam query rows, row n reads source row n // beam.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s import _extension, _gru_autograd, _validate, reference
from fast_s2s.backends import resolve_backend

__all__ = ["additive_attention", "dot_attention", "gru_cell", "gru_layer"]


def dot_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    lengths: Tensor | None = None,
    scale: float = 1.0,
    *,
    backend: str = "auto",
    need_weights: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Dot-product attention read of encoder states, fused: score, mask, softmax, weighted sum.

    Args:
        query: (N, T, D) or (N, D) decoder queries; N = B * beam, row n reads source row n // beam.
        keys: (B, S, D) encoder keys (for Luong `general`, project the query first).
        values: (B, S, Dv) encoder states to read.
        lengths: optional (B,) int32/int64 source lengths; positions s >= lengths[b] get no
            weight, and a length-0 row gives zero context and zero weights.
        scale: multiplies the scores (1/sqrt(D) for scaled dot-product attention).
        backend: "auto", "reference", "cpp" or "triton" (see fast_s2s.backends).
        need_weights: return the weights (torch.nn.MultiheadAttention's convention). False
            returns None in their place; the "triton" backend then never writes them (no
            (N, T, S) output, less memory traffic), the others compute and drop them.

    Returns:
        context (N, T, Dv) and weights (N, T, S) or None; (N, Dv) and (N, S) for a 2-D query.
    """
    op = "dot_attention"
    _validate.check_attention(op, query, "query", keys, "keys", values, lengths)
    _validate.check_bool(op, "need_weights", need_weights)
    impl = resolve_backend(op, backend, query.device)
    if impl == "triton":
        return _triton().dot_attention(
            query, keys, values, lengths, float(scale), need_weights=need_weights
        )
    if impl == "cpp":
        context, weights = torch.ops.fast_s2s.dot_attention(
            query, keys, values, lengths, float(scale), need_weights
        )
    else:
        context, weights = reference.dot_attention(query, keys, values, lengths, scale)
    return context, weights if need_weights else None


def additive_attention(
    query_proj: Tensor,
    keys_proj: Tensor,
    v: Tensor,
    values: Tensor,
    lengths: Tensor | None = None,
    *,
    backend: str = "auto",
    need_weights: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Additive (Bahdanau / Luong concat) attention, fused: score, mask, softmax, weighted sum.

    score[n, t, s] = sum_a v[a] * tanh(query_proj[n, t, a] + keys_proj[n // beam, s, a])

    Args:
        query_proj: (N, T, A) or (N, A) projected decoder queries (W_q q).
        keys_proj: (B, S, A) projected encoder states (W_k h), computed once per source batch.
        v: (A,) the scoring vector.
        values: (B, S, Dv) encoder states to read.
        lengths: optional (B,) source lengths, as for dot_attention.
        backend: "auto", "reference", "cpp" or "triton".
        need_weights: return the weights; False returns None in their place (see
            dot_attention).

    Returns:
        context (N, T, Dv) and weights (N, T, S) or None; (N, Dv) and (N, S) for a 2-D
        query_proj.
    """
    op = "additive_attention"
    _validate.check_attention(op, query_proj, "query_proj", keys_proj, "keys_proj", values, lengths)
    _validate.check_additive_v(op, v, query_proj)
    _validate.check_bool(op, "need_weights", need_weights)
    impl = resolve_backend(op, backend, query_proj.device)
    if impl == "triton":
        return _triton().additive_attention(
            query_proj, keys_proj, v, values, lengths, need_weights=need_weights
        )
    if impl == "cpp":
        context, weights = torch.ops.fast_s2s.additive_attention(
            query_proj, keys_proj, v, values, lengths, need_weights
        )
    else:
        context, weights = reference.additive_attention(query_proj, keys_proj, v, values, lengths)
    return context, weights if need_weights else None


def gru_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    *,
    backend: str = "auto",
) -> Tensor:
    """One GRU step with torch.nn.GRUCell semantics (gate order r, z, n), fused.

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr), z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) * n + z * h.

    Args:
        x: (B, I) input; h: (B, H) state; w_ih: (3H, I); w_hh: (3H, H); b_ih, b_hh: (3H,) or None.
        backend: "auto", "reference", "cpp" or "triton".

    Returns:
        h': (B, H).
    """
    _validate.check_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    impl = resolve_backend("gru_cell", backend, x.device)
    if impl == "cpp":
        return torch.ops.fast_s2s.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)[0]
    if impl == "triton":
        return _triton().gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    return reference.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)


def gru_layer(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    *,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """One GRU layer, one direction, over a whole (padded) sequence, fused.

    Args:
        x: (T, B, I) time-major input; h0: (B, H); weights as in gru_cell.
        lengths: optional (B,) int32/int64 in [0, T]; steps t >= lengths[b] leave h unchanged and
            output zeros (packed-sequence semantics of torch.nn.GRU).
        reverse: run each row from its own last valid step lengths[b] - 1 down to 0 (the
            backward direction of a bidirectional torch.nn.GRU).
        backend: "auto", "reference", "cpp" or "triton".

    Returns:
        output (T, B, H) and h_n (B, H).
    """
    _validate.check_gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
    impl = resolve_backend("gru_layer", backend, x.device)
    if impl == "cpp":
        output, h_n, _ = torch.ops.fast_s2s.gru_layer(
            x, h0, w_ih, w_hh, b_ih, b_hh, lengths, bool(reverse)
        )
        return output, h_n
    if impl == "triton":
        return _triton().gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, bool(reverse))
    return reference.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse)


def _triton():
    """fast_s2s.kernels, imported on first use: importing triton costs time and needs a GPU
    build of torch, so `import fast_s2s` never does it."""
    from fast_s2s import kernels

    return kernels


# ---------------------------------------------------------------------------------------------
# Fake (shape) functions and autograd of the compiled ops. Registered only when the extension
# is loaded: without it, the schemas in csrc/ops.cpp do not exist.
# ---------------------------------------------------------------------------------------------


def _attention_out_shapes(query: Tensor, keys: Tensor, values: Tensor, need_weights: bool):
    """Shapes of context and weights. need_weights=False: the CUDA kernel returns (0,) weights;
    the CPU kernel writes them anyway (its backward reads them), see csrc/op_schemas.h."""
    n_rows, src_len, dv = query.shape[0], keys.shape[1], values.shape[2]
    lead = (n_rows,) if query.dim() == 2 else (n_rows, query.shape[1])
    weights = lead + (src_len,) if need_weights or query.device.type == "cpu" else (0,)
    return lead + (dv,), weights


def _weights_grad(grad_weights: Tensor | None, weights: Tensor) -> Tensor | None:
    """None for the gradient of weights the kernel did not write (need_weights=False on CUDA)."""
    if grad_weights is None or (weights.dim() == 1 and weights.shape[0] == 0):
        return None
    return grad_weights


def _register_compiled_ops() -> None:
    lib = "fast_s2s::"

    @torch.library.register_fake(lib + "dot_attention")
    def _dot_fake(query, keys, values, lengths=None, scale=1.0, need_weights=True):
        ctx_shape, w_shape = _attention_out_shapes(query, keys, values, need_weights)
        return query.new_empty(ctx_shape), query.new_empty(w_shape)

    @torch.library.register_fake(lib + "dot_attention_backward")
    def _dot_bwd_fake(grad_context, grad_weights, query, keys, values, weights, lengths, scale):
        return (
            query.new_empty(query.shape),
            keys.new_empty(keys.shape),
            values.new_empty(values.shape),
        )

    def _dot_setup(ctx, inputs, output):
        query, keys, values, lengths, scale, _need_weights = inputs
        ctx.save_for_backward(query, keys, values, output[1], lengths)
        ctx.scale = scale

    def _dot_backward(ctx, grad_context, grad_weights):
        query, keys, values, weights, lengths = ctx.saved_tensors
        gq, gk, gv = torch.ops.fast_s2s.dot_attention_backward(
            grad_context,
            _weights_grad(grad_weights, weights),
            query,
            keys,
            values,
            weights,
            lengths,
            ctx.scale,
        )
        return gq, gk, gv, None, None, None

    torch.library.register_autograd(lib + "dot_attention", _dot_backward, setup_context=_dot_setup)

    @torch.library.register_fake(lib + "additive_attention")
    def _add_fake(query_proj, keys_proj, v, values, lengths=None, need_weights=True):
        ctx_shape, w_shape = _attention_out_shapes(query_proj, keys_proj, values, need_weights)
        return query_proj.new_empty(ctx_shape), query_proj.new_empty(w_shape)

    @torch.library.register_fake(lib + "additive_attention_backward")
    def _add_bwd_fake(
        grad_context, grad_weights, query_proj, keys_proj, v, values, weights, lengths
    ):
        return (
            query_proj.new_empty(query_proj.shape),
            keys_proj.new_empty(keys_proj.shape),
            v.new_empty(v.shape),
            values.new_empty(values.shape),
        )

    def _add_setup(ctx, inputs, output):
        query_proj, keys_proj, v, values, lengths, _need_weights = inputs
        ctx.save_for_backward(query_proj, keys_proj, v, values, output[1], lengths)

    def _add_backward(ctx, grad_context, grad_weights):
        query_proj, keys_proj, v, values, weights, lengths = ctx.saved_tensors
        grads = torch.ops.fast_s2s.additive_attention_backward(
            grad_context,
            _weights_grad(grad_weights, weights),
            query_proj,
            keys_proj,
            v,
            values,
            weights,
            lengths,
        )
        return (*grads, None, None)

    torch.library.register_autograd(
        lib + "additive_attention", _add_backward, setup_context=_add_setup
    )

    # The GRU ops share their fake functions and autograd with the Triton ones.
    torch.library.register_fake(lib + "gru_cell")(_gru_autograd.cell_fake)
    torch.library.register_fake(lib + "gru_cell_backward")(_gru_autograd.cell_backward_fake)
    backward, setup = _gru_autograd.cell_autograd(torch.ops.fast_s2s.gru_cell_backward)
    torch.library.register_autograd(lib + "gru_cell", backward, setup_context=setup)
    torch.library.register_fake(lib + "gru_layer")(_gru_autograd.layer_fake)
    torch.library.register_fake(lib + "gru_layer_backward")(_gru_autograd.layer_backward_fake)
    backward, setup = _gru_autograd.layer_autograd(torch.ops.fast_s2s.gru_layer_backward)
    torch.library.register_autograd(lib + "gru_layer", backward, setup_context=setup)

    @torch.library.register_fake(lib + "cuda_smoke")
    def _smoke_fake(x):
        return torch.empty_like(x)


if _extension.extension_loaded():
    _register_compiled_ops()
