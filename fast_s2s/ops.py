"""The typed Python API of the fused ops: argument checks, backend choice, fake and autograd.

Each public function checks its arguments (fast_s2s.checks), picks the implementation
(fast_s2s.backends.resolve_backend) and calls it:

- "cpp":       torch.ops.fast_s2s.<op>, the compiled extension (C++ on CPU, CUDA C++ on GPU),
               whose schemas live in csrc/ops.cpp. Its fake (shape) functions and autograd
               formulas are registered in fast_s2s.compiled_ops; each backward is a custom op
               of its own, so torch.compile(fullgraph=True) traces through forward and backward.
- "triton":    fast_s2s.kernels (kernels/ in the repository), imported on first use.
- "reference": fast_s2s.reference, plain PyTorch, differentiated by autograd.

Shapes follow docs/DESIGN.md: N = B * beam query rows, row n reads source row n // beam.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s import checks, compiled_ops, reference  # noqa: F401 (compiled_ops registers)
from fast_s2s.backends import resolve_backend

__all__ = ["additive_attention", "dot_attention", "gru_cell", "gru_layer", "local_attention"]


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
    checks.check_attention(op, query, "query", keys, "keys", values, lengths)
    scale = checks.check_scale(op, scale)
    checks.check_bool(op, "need_weights", need_weights)
    impl = resolve_backend(op, backend, query.device)
    if impl == "triton":
        return _triton().dot_attention(
            query, keys, values, lengths, scale, need_weights=need_weights
        )
    if impl == "cpp":
        context, weights = torch.ops.fast_s2s.dot_attention(
            query, keys, values, lengths, scale, need_weights
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
    checks.check_attention(op, query_proj, "query_proj", keys_proj, "keys_proj", values, lengths)
    checks.check_additive_v(op, v, query_proj)
    checks.check_bool(op, "need_weights", need_weights)
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


def local_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    centers: Tensor,
    window: int,
    lengths: Tensor | None = None,
    scale: float = 1.0,
    *,
    backend: str = "auto",
    need_weights: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Luong local attention, fused: only the 2 * window + 1 positions around each centre are
    read (score, mask, softmax over the window, Gaussian, weighted sum).

    weights[n, t, s] = softmax_{s in W}(scale * q[n, t] . keys[b, s]) * exp(-(s - p)^2 / (2
    sigma^2)) for s in W = {s : |s - p| <= window, s < lengths[b]}, 0 elsewhere; p =
    centers[n, t], sigma = window / 2, b = n // beam. Not renormalised, as in the paper.

    Args:
        query: (N, T, D) or (N, D) decoder queries (for Luong `general`, project them first).
        keys: (B, S, D) encoder keys; values: (B, S, Dv) encoder states to read.
        centers: (N, T) or (N,) real aligned positions (float32 or float64 recommended: a
            bfloat16 centre cannot say 257); read in float32 (float64 for float64 inputs).
            local-m: p = t; local-p: p = S * sigmoid(v_p . tanh(W_p h)).
        window: D >= 0 (Luong et al. use 10); window = 0 reads the single position s = p when
            p is a whole number, with Gaussian factor 1.
        lengths: optional (B,) source lengths; positions s >= lengths[b] are never read.
        scale: multiplies the scores.
        backend: "auto", "reference", "cpp" or "triton".
        need_weights: return the (N, T, S) weights (zeros outside the window) for heat maps;
            False returns None and the kernels write no (N, T, S) output at all (their
            backward recomputes the window's weights), so a call costs O(window), not O(S).

    Returns:
        context (N, T, Dv) and weights (N, T, S) or None; (N, Dv) and (N, S) for a 2-D query.
        The gradient of centers flows through the Gaussian; window membership has none.
    """
    op = "local_attention"
    checks.check_attention(op, query, "query", keys, "keys", values, lengths)
    window = checks.check_local_window(op, centers, window, query)
    scale = checks.check_scale(op, scale)
    checks.check_bool(op, "need_weights", need_weights)
    impl = resolve_backend(op, backend, query.device)
    if impl == "triton":
        return _triton().local_attention(
            query, keys, values, centers, window, lengths, scale, need_weights=need_weights
        )
    if impl == "cpp":
        context, weights = torch.ops.fast_s2s.local_attention(
            query, keys, values, centers, window, lengths, scale, need_weights
        )
        return context, weights if need_weights else None
    context, weights = reference.local_attention(
        query, keys, values, centers, window, lengths, scale
    )
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
    checks.check_gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)
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
    checks.check_gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths)
    checks.check_bool("gru_layer", "reverse", reverse)
    impl = resolve_backend("gru_layer", backend, x.device)
    if impl == "cpp":
        output, h_n, _ = torch.ops.fast_s2s.gru_layer(
            x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse
        )
        return output, h_n
    if impl == "triton":
        return _triton().gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    return reference.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse)


def _triton():
    """fast_s2s.kernels, imported on first use: importing triton costs time and needs a GPU
    build of torch, so `import fast_s2s` never does it."""
    from fast_s2s import kernels

    return kernels
