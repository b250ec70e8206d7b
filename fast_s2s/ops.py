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
) -> tuple[Tensor, Tensor]:
    """Dot-product attention read of encoder states, fused: score, mask, softmax, weighted sum.

    Args:
        query: (N, T, D) or (N, D) decoder queries; N = B * beam, row n reads source row n // beam.
        keys: (B, S, D) encoder keys (for Luong `general`, project the query first).
        values: (B, S, Dv) encoder states to read.
        lengths: optional (B,) int32/int64 source lengths; positions s >= lengths[b] get no
            weight, and a length-0 row gives zero context and zero weights.
        scale: multiplies the scores (1/sqrt(D) for scaled dot-product attention).
        backend: "auto", "reference", "cpp" or "triton" (see fast_s2s.backends).

    Returns:
        context (N, T, Dv) and weights (N, T, S); (N, Dv) and (N, S) for a 2-D query.
    """
    _validate.check_attention("dot_attention", query, "query", keys, "keys", values, lengths)
    impl = resolve_backend("dot_attention", backend, query.device)
    if impl == "cpp":
        return torch.ops.fast_s2s.dot_attention(query, keys, values, lengths, float(scale))
    if impl == "triton":
        return _triton().dot_attention(query, keys, values, lengths, float(scale))
    return reference.dot_attention(query, keys, values, lengths, scale)


def additive_attention(
    query_proj: Tensor,
    keys_proj: Tensor,
    v: Tensor,
    values: Tensor,
    lengths: Tensor | None = None,
    *,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Additive (Bahdanau / Luong concat) attention, fused: score, mask, softmax, weighted sum.

    score[n, t, s] = sum_a v[a] * tanh(query_proj[n, t, a] + keys_proj[n // beam, s, a])

    Args:
        query_proj: (N, T, A) or (N, A) projected decoder queries (W_q q).
        keys_proj: (B, S, A) projected encoder states (W_k h), computed once per source batch.
        v: (A,) the scoring vector.
        values: (B, S, Dv) encoder states to read.
        lengths: optional (B,) source lengths, as for dot_attention.
        backend: "auto", "reference", "cpp" or "triton".

    Returns:
        context (N, T, Dv) and weights (N, T, S); (N, Dv) and (N, S) for a 2-D query_proj.
    """
    op = "additive_attention"
    _validate.check_attention(op, query_proj, "query_proj", keys_proj, "keys_proj", values, lengths)
    _validate.check_additive_v(op, v, query_proj)
    impl = resolve_backend(op, backend, query_proj.device)
    if impl == "cpp":
        return torch.ops.fast_s2s.additive_attention(query_proj, keys_proj, v, values, lengths)
    if impl == "triton":
        return _triton().additive_attention(query_proj, keys_proj, v, values, lengths)
    return reference.additive_attention(query_proj, keys_proj, v, values, lengths)


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


def _attention_out_shapes(query: Tensor, keys: Tensor, values: Tensor):
    n_rows, src_len, dv = query.shape[0], keys.shape[1], values.shape[2]
    if query.dim() == 2:
        return (n_rows, dv), (n_rows, src_len)
    return (n_rows, query.shape[1], dv), (n_rows, query.shape[1], src_len)


def _register_compiled_ops() -> None:
    lib = "fast_s2s::"

    @torch.library.register_fake(lib + "dot_attention")
    def _dot_fake(query, keys, values, lengths=None, scale=1.0):
        ctx_shape, w_shape = _attention_out_shapes(query, keys, values)
        return query.new_empty(ctx_shape), query.new_empty(w_shape)

    @torch.library.register_fake(lib + "dot_attention_backward")
    def _dot_bwd_fake(grad_context, grad_weights, query, keys, values, weights, lengths, scale):
        return (
            query.new_empty(query.shape),
            keys.new_empty(keys.shape),
            values.new_empty(values.shape),
        )

    def _dot_setup(ctx, inputs, output):
        query, keys, values, lengths, scale = inputs
        ctx.save_for_backward(query, keys, values, output[1], lengths)
        ctx.scale = scale

    def _dot_backward(ctx, grad_context, grad_weights):
        query, keys, values, weights, lengths = ctx.saved_tensors
        gq, gk, gv = torch.ops.fast_s2s.dot_attention_backward(
            grad_context, grad_weights, query, keys, values, weights, lengths, ctx.scale
        )
        return gq, gk, gv, None, None

    torch.library.register_autograd(lib + "dot_attention", _dot_backward, setup_context=_dot_setup)

    @torch.library.register_fake(lib + "additive_attention")
    def _add_fake(query_proj, keys_proj, v, values, lengths=None):
        ctx_shape, w_shape = _attention_out_shapes(query_proj, keys_proj, values)
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
        query_proj, keys_proj, v, values, lengths = inputs
        ctx.save_for_backward(query_proj, keys_proj, v, values, output[1], lengths)

    def _add_backward(ctx, grad_context, grad_weights):
        query_proj, keys_proj, v, values, weights, lengths = ctx.saved_tensors
        grads = torch.ops.fast_s2s.additive_attention_backward(
            grad_context, grad_weights, query_proj, keys_proj, v, values, weights, lengths
        )
        return (*grads, None)

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
