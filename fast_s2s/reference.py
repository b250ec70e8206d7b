"""Pure-PyTorch reference of every fast_s2s op: the definition of "correct".

Written to be read, not to be fast (in the spirit of state-spaces/mamba's
``selective_scan_ref``): every op upcasts to float32 (float64 stays float64),
computes the result step by step, and casts the outputs back to the input
dtype. Everything is differentiable with torch autograd, so these functions are
also the gradient reference for the fused kernels.

Shapes (see DESIGN.md, "The ops"):

    B     source sentences (batch of the encoder)
    beam  query rows per source row; N = B * beam, query row n reads source row n // beam
    T     query steps (T = 1 when decoding one step)
    S     source positions
    D     query/key features, Dv value features, A additive-attention features
    I, H  GRU input and hidden features

It checks nothing: fast_s2s.ops (through fast_s2s.checks) has validated every argument before
a backend runs, and a call with bad arguments here fails however torch fails. This module is
the bottom layer: it imports nothing from fast_s2s.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "additive_attention",
    "dot_attention",
    "gru_cell",
    "gru_layer",
    "local_attention",
]


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


def _acc_dtype(*tensors: Tensor | None) -> torch.dtype:
    """Accumulation dtype: float64 if any input is float64, float32 otherwise."""
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def _valid_mask(lengths: Tensor | None, size: int, device: torch.device) -> Tensor | None:
    """valid[b, s] = s < lengths[b], shape (B, S) bool; None when lengths is None (every
    position is valid, and nothing needs masking or zeroing).

    lengths: (B,) int32/int64, on any device (CPU lengths beside CUDA inputs are moved)."""
    if lengths is None:
        return None
    positions = torch.arange(size, device=device)  # (S,)
    return positions[None, :] < lengths.to(device=device, dtype=torch.int64)[:, None]  # (B, S)


def _unread_zeroed(t: Tensor, valid: Tensor | None) -> Tensor:
    """t (B, S, F) with the positions s >= lengths[b] set to 0 (valid: (B, S), or None when
    there are no lengths and so nothing to zero, which skips torch.where's pass over t).

    Padded positions are never read: their keys and values may hold anything, NaN and infinity
    included, as in the fused kernels, which do not load them. Zeroing them (rather than giving
    them a zero weight, since 0 * NaN is NaN) keeps the outputs and every gradient finite, with
    zero gradients at those positions."""
    if valid is None:
        return t
    return torch.where(valid[:, :, None], t, torch.zeros((), dtype=t.dtype, device=t.device))


def _masked_softmax(scores: Tensor, valid: Tensor | None) -> Tensor:
    """Softmax over the last dim of ``scores`` where ``valid`` is True, 0 elsewhere.

    scores: (B, beam, T, S) float32/float64; valid: bool broadcastable to scores ((B, 1, 1, S)
    for source lengths, (B, beam, T, S) for a local window), or None (no masking).
    Returns weights (B, beam, T, S). A row with no valid position gets all-zero
    weights (and zero gradients), never NaN: the max is subtracted only where
    it is finite, and the denominator of an empty row is replaced by 1.
    """
    if scores.shape[-1] == 0:
        return scores * 0  # nothing to attend to; keeps the graph and the shape
    masked = scores
    if valid is not None:  # masked positions: -inf, no gradient
        masked = scores.masked_fill(~valid, float("-inf"))
    # Softmax is invariant to the shift, so the max is a constant (detached);
    # a fully masked row has max -inf, shift it by 0 instead.
    row_max = masked.amax(dim=-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    numer = torch.exp(masked - row_max)  # exactly 0 at masked positions
    denom = numer.sum(dim=-1, keepdim=True)  # >= 1 for a row with a valid position, else 0
    safe_denom = torch.where(denom > 0, denom, torch.ones_like(denom))
    return numer / safe_denom


def _attention_sizes(query: Tensor, keys: Tensor) -> tuple[int, int, int, int]:
    """(B, beam, T, S) of query (N, T, D) or (N, D) and keys (B, S, D); N = B * beam."""
    B, S = keys.shape[0], keys.shape[1]
    T = 1 if query.dim() == 2 else query.shape[1]
    beam = query.shape[0] // B if B > 0 else 1
    return B, beam, T, S


# --------------------------------------------------------------------------- #
# Attention
# --------------------------------------------------------------------------- #


def _attend(
    scores: Tensor, values: Tensor, valid: Tensor | None, out_dtype: torch.dtype, squeeze: bool
) -> tuple[Tensor, Tensor]:
    """Masked softmax of scores (B, beam, T, S) and weighted sum of values (B, S, Dv).

    Positions s >= lengths[b] are never read (see _unread_zeroed)."""
    B, beam, T, S = scores.shape
    weights = _masked_softmax(scores, None if valid is None else valid[:, None, None, :])
    values = _unread_zeroed(values, valid)
    # context[b, k, t, :] = sum_s weights[b, k, t, s] * values[b, s, :]
    context = torch.einsum("bkts,bsv->bktv", weights, values)  # (B, beam, T, Dv)
    context = context.reshape(B * beam, T, values.shape[-1])  # (N, T, Dv)
    weights = weights.reshape(B * beam, T, S)  # (N, T, S)
    if squeeze:
        context, weights = context[:, 0], weights[:, 0]
    return context.to(out_dtype), weights.to(out_dtype)


def dot_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    lengths: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Masked scaled dot-product attention with beam rows sharing source rows.

    Args:
        query:   (N, T, D) or (N, D) (a 2-D query means T = 1 and 2-D outputs).
        keys:    (B, S, D); N = B * beam, query row n reads source row n // beam.
        values:  (B, S, Dv).
        lengths: (B,) int32/int64 in [0, S] or None; positions s >= lengths[b]
                 get no weight. May live on another device (it is moved).
        scale:   multiplies the scores.

    Returns:
        context: (N, T, Dv) or (N, Dv); context[n, t] = sum_s weights[n, t, s] * values[b, s]
        weights: (N, T, S) or (N, S);   weights[n, t] = softmax_s(scale * query[n, t] . keys[b, s])
        with b = n // beam. A row with length 0 gets zero context and zero weights.
        Both in the dtype of ``query``.
    """
    B, beam, T, S = _attention_sizes(query, keys)
    out_dtype = query.dtype
    acc = _acc_dtype(query, keys, values)

    D = keys.shape[-1]
    valid = _valid_mask(lengths, S, query.device)  # (B, S) or None
    q = query.to(acc).reshape(B, beam, T, D)  # (B, beam, T, D): row n = b * beam + k
    k = _unread_zeroed(keys.to(acc), valid)  # (B, S, D)
    v = values.to(acc)  # (B, S, Dv)

    # scores[b, beam_k, t, s] = scale * sum_d q[b, beam_k, t, d] * k[b, s, d]
    scores = scale * torch.einsum("bktd,bsd->bkts", q, k)  # (B, beam, T, S)
    return _attend(scores, v, valid, out_dtype, squeeze=query.dim() == 2)


def additive_attention(
    query_proj: Tensor,
    keys_proj: Tensor,
    v: Tensor,
    values: Tensor,
    lengths: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Masked additive (Bahdanau / Luong ``concat``) attention, beam rows sharing source rows.

    Args:
        query_proj: (N, T, A) or (N, A): the projected query.
        keys_proj:  (B, S, A): the projected keys (computed once per source sentence).
        v:          (A,): the score vector.
        values:     (B, S, Dv).
        lengths:    (B,) int32/int64 in [0, S] or None.

    Returns:
        context: (N, T, Dv) (or (N, Dv)) and weights: (N, T, S) (or (N, S)) where
        score[n, t, s] = sum_a v[a] * tanh(query_proj[n, t, a] + keys_proj[n // beam, s, a]),
        weights = masked softmax over s of score, context = weights @ values.
        A row with length 0 gets zero context and zero weights. Both in the
        dtype of ``query_proj``.
    """
    B, beam, T, S = _attention_sizes(query_proj, keys_proj)
    A = keys_proj.shape[-1]
    out_dtype = query_proj.dtype
    acc = _acc_dtype(query_proj, keys_proj, v, values)

    valid = _valid_mask(lengths, S, query_proj.device)  # (B, S) or None
    q = query_proj.to(acc).reshape(B, beam, T, 1, A)  # (B, beam, T, 1, A)
    k = _unread_zeroed(keys_proj.to(acc), valid)[:, None, None, :, :]  # (B, 1, 1, S, A)
    # scores[b, beam_k, t, s] = sum_a v[a] * tanh(q[b, beam_k, t, a] + k[b, s, a])
    hidden = torch.tanh(q + k)  # (B, beam, T, S, A)
    scores = (hidden * v.to(acc)).sum(dim=-1)  # (B, beam, T, S)
    return _attend(scores, values.to(acc), valid, out_dtype, squeeze=query_proj.dim() == 2)


def local_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    centers: Tensor,
    window: int,
    lengths: Tensor | None = None,
    scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Luong et al. (2015) local attention: a window of positions around a centre, softmax over
    the window, times a Gaussian centred on it.

    Args:
        query:   (N, T, D) or (N, D); N = B * beam, query row n reads source row n // beam.
        keys:    (B, S, D).
        values:  (B, S, Dv).
        centers: (N, T) (or (N,) for a 2-D query): the aligned source position p of each query
                 row, a real number (p = t for local-m, S * sigmoid(...) for local-p).
        window:  D_w >= 0: positions s with |s - p| <= D_w (and s < lengths[b]) take part.
        lengths: (B,) int32/int64 in [0, S] or None.
        scale:   multiplies the scores.

    Returns:
        context: (N, T, Dv) (or (N, Dv)); context[n, t] = sum_s weights[n, t, s] values[b, s]
        weights: (N, T, S) (or (N, S)), zero outside the window, where in the window
                 weights[n, t, s] = softmax_window(scale * q . keys[b, s]) * exp(-(s - p)^2 /
                 (2 sigma^2)), sigma = D_w / 2 (not renormalised, as in the paper; D_w = 0 has
                 no spread and the factor is 1 at s = p). An empty window (a length-0 row, a
                 centre more than D_w past either end, a non-finite centre) gives zeros.
        Both in the dtype of ``query``. The gradient of centers flows through the Gaussian;
        window membership is a step and has none.
    """
    B, beam, T, S = _attention_sizes(query, keys)
    out_dtype = query.dtype
    acc = _acc_dtype(query, keys, values)
    D = keys.shape[-1]
    valid = _valid_mask(lengths, S, query.device)  # (B, S) or None
    q = query.to(acc).reshape(B, beam, T, D)
    k = _unread_zeroed(keys.to(acc), valid)  # (B, S, D)
    v = _unread_zeroed(values.to(acc), valid)  # (B, S, Dv)
    p = centers.to(acc).reshape(B, beam, T, 1)  # (B, beam, T, 1)

    # offset[b, k, t, s] = s - p; a non-finite centre is in no window (its comparisons fail).
    offset = torch.arange(S, device=query.device, dtype=acc) - p  # (B, beam, T, S)
    in_window = offset.abs() <= window
    if valid is not None:
        in_window = in_window & valid[:, None, None, :]

    scores = scale * torch.einsum("bktd,bsd->bkts", q, k)  # (B, beam, T, S)
    align = _masked_softmax(scores, in_window)  # (B, beam, T, S), 0 outside the window
    if window > 0:
        # The Gaussian of the offset, taken only inside the window (0 outside) so that a far or
        # infinite centre gives neither inf nor NaN gradients.
        near = torch.where(in_window, offset, torch.zeros((), dtype=acc, device=offset.device))
        sigma = window / 2
        weights = align * torch.exp(-(near**2) / (2 * sigma**2))
    else:
        weights = align
    context = torch.einsum("bkts,bsv->bktv", weights, v).reshape(B * beam, T, v.shape[-1])
    weights = weights.reshape(B * beam, T, S)
    if query.dim() == 2:
        context, weights = context[:, 0], weights[:, 0]
    return context.to(out_dtype), weights.to(out_dtype)


# --------------------------------------------------------------------------- #
# GRU
# --------------------------------------------------------------------------- #


def gru_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """One GRU step, torch.nn.GRUCell semantics (gate order r, z, n).

    Args:
        x:    (B, I) input.
        h:    (B, H) previous hidden state.
        w_ih: (3H, I), rows [W_ir; W_iz; W_in].
        w_hh: (3H, H), rows [W_hr; W_hz; W_hn].
        b_ih, b_hh: (3H,) or None.

    Returns:
        h': (B, H) in the dtype of ``x``, where
            r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
            z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
            n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
            h' = (1 - z) * n + z * h
    """
    out_dtype = x.dtype
    acc = _acc_dtype(x, h, w_ih, w_hh, b_ih, b_hh)
    x_, h_ = x.to(acc), h.to(acc)

    gi = x_ @ w_ih.to(acc).t()  # (B, 3H)
    gh = h_ @ w_hh.to(acc).t()  # (B, 3H)
    if b_ih is not None:
        gi = gi + b_ih.to(acc)
    if b_hh is not None:
        gh = gh + b_hh.to(acc)
    i_r, i_z, i_n = gi.chunk(3, dim=1)  # each (B, H)
    h_r, h_z, h_n = gh.chunk(3, dim=1)

    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    h_new = (1 - z) * n + z * h_
    return h_new.to(out_dtype)


def gru_layer(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor]:
    """One GRU layer, one direction, over a whole (padded) sequence.

    Args:
        x:       (T, B, I) time-major input.
        h0:      (B, H) initial state.
        w_ih, w_hh, b_ih, b_hh: as in :func:`gru_cell`.
        lengths: (B,) int32/int64 in [0, T] or None (all rows have length T).
                 Steps t >= lengths[b] leave h unchanged and output zeros
                 (packed-sequence semantics of torch.nn.GRU).
        reverse: run from the row's last valid step, lengths[b] - 1, down to 0
                 (the backward direction of a packed bidirectional torch.nn.GRU).

    Returns:
        output: (T, B, H), output[t] = the state after step t (0 at padded steps).
        h_n:    (B, H), the state after the row's last valid step (h0 for a
                length-0 row). Both in the dtype of ``x``; the state is carried
                in float32 (float64) between steps.
    """
    T, B, _ = x.shape
    if lengths is not None:
        lengths = lengths.to(device=x.device, dtype=torch.int64)
    out_dtype = x.dtype
    acc = _acc_dtype(x, h0, w_ih, w_hh, b_ih, b_hh)
    # Upcast once; gru_cell on float32 (float64) inputs stays in that dtype.
    x_, h = x.to(acc), h0.to(acc)
    w_ih_, w_hh_ = w_ih.to(acc), w_hh.to(acc)
    b_ih_ = None if b_ih is None else b_ih.to(acc)
    b_hh_ = None if b_hh is None else b_hh.to(acc)

    steps = range(T - 1, -1, -1) if reverse else range(T)
    outputs: list[Tensor | None] = [None] * T
    for t in steps:
        h_new = gru_cell(x_[t], h, w_ih_, w_hh_, b_ih_, b_hh_)  # (B, H)
        if lengths is None:
            h = h_new
            outputs[t] = h_new
        else:
            # Rows whose sequence has ended (forward) or not yet started (reverse)
            # keep their state and output zeros.
            valid = (t < lengths)[:, None]  # (B, 1)
            h = torch.where(valid, h_new, h)
            outputs[t] = torch.where(valid, h_new, torch.zeros_like(h_new))

    # output: (T, B, H)
    output = torch.stack(outputs, dim=0) if T > 0 else x_.new_zeros(0, B, h0.shape[-1])
    return output.to(out_dtype), h.to(out_dtype)
