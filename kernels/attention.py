"""Triton kernels of dot_attention and additive_attention, forward and backward.

The launch code, block-size and split choice and the custom ops around these kernels are in
attention_ops.py; the definition of correct is fast_s2s.reference.

Layout. The launcher makes every tensor contiguous, so the beam * T query rows that read source
row b (n = b * beam + k, all t) are R = beam * T consecutive rows, and every tensor is indexed as
(B, rows, features):

    Q       (B, R, D)    query (dot) or query_proj (additive, D plays A)
    K       (B, S, D)    keys or keys_proj
    VEC     (D,)         v of additive attention (unused by dot)
    V       (B, S, DV)   values
    LEN     (B,)         lengths, int32 or int64 (only read when HAS_LEN)
    CTX     (B, R, DV)   context
    W       (B, R, S)    weights (only touched when NEED_WEIGHTS)
    SCORES  (B, R, S)    scratch: raw scores in the accumulation dtype (only with NEED_WEIGHTS)
    LSE     (B, R)       log-sum-exp of the valid scores of a row; +inf for a row with none
    PLSE    (B, R, NSPLIT)       split path scratch: log-sum-exp of each chunk of S (-inf: empty)
    PCTX    (B, R, NSPLIT, DV)   split path scratch: context of each chunk, normalised by its sum

The accumulation dtype is the element type of LSE: float32, or float64 for float64 inputs.
Every tile is upcast to it on load, so float16 / bfloat16 inputs are only rounded when the
outputs are stored.

Grids. Forward and dQ: one program per (b, block of BLOCK_M rows of b), looping over the first
lengths[b] positions of S in blocks of BLOCK_N: each key and value tile is read once per row
block, and rows of one source row (beam, T) share it. When those programs are too few to fill
the GPU, the forward instead splits S (flash-decoding): one program per (b, row block, chunk of
S), then a combine kernel (see "Forward split over S" below). dK / dV: one program per (b, block
of BLOCK_N positions), looping over the R rows that read b, so the sums over rows need no
atomics. The backward is the same after either forward: it recomputes from the LSE.

Positions past lengths[b] are never loaded in the loops: the loops stop at lengths[b]. A row
whose source has length 0 runs no iteration and writes zero context, zero weights and LSE = +inf
(exp(score - inf) = 0 in the backward: no NaN anywhere).
"""

import triton
import triton.language as tl

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _mm(a, b, USE_DOT: tl.constexpr):
    """a (M, K) @ b (K, N) in the dtype of a and b.

    tl.dot needs M, N, K >= 16 on a GPU (the launcher only sets USE_DOT then) and does not take
    float64 everywhere; otherwise a broadcast product summed over K does the same on any size.
    "ieee": float32 products stay float32 (no TF32 rounding).
    """
    if USE_DOT:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.sum(a[:, :, None] * b[None, :, :], axis=1)
    return out


@triton.jit
def _tanh(x):
    """tanh from exp, for float32 and float64 alike (the interpreter has no libdevice).

    exp(-2|x|) never overflows; the absolute error is about one ulp of 1.
    """
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _load_rows(base, rows, n_rows, cols, n_cols, stride, acc_ty: tl.constexpr, other):
    """Tile base[rows, cols] (len(rows), len(cols)) of a row-major matrix, upcast to acc_ty;
    `other` where a row or a column is out of range."""
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    tile = tl.load(base + rows[:, None] * stride + cols[None, :], mask=mask, other=other)
    return tile.to(acc_ty)


@triton.jit
def _source_length(LEN, b, S, HAS_LEN: tl.constexpr):
    """Number of valid source positions of source row b."""
    return tl.load(LEN + b).to(tl.int32) if HAS_LEN else S + tl.zeros((), tl.int32)


@triton.jit
def _load_vec_scale(VEC, SCALE, offs_d, D, acc_ty: tl.constexpr, ADDITIVE: tl.constexpr):
    """(v, scale): v (BLOCK_D,) of additive attention (zeros for dot), scale of dot attention
    (1 for additive). The scale comes from a 1-element tensor: a Python float argument would
    reach the kernel as float32 and round float64 scores."""
    if ADDITIVE:
        vec = tl.load(VEC + offs_d, mask=offs_d < D, other=0.0).to(acc_ty)
        scale = tl.full((), 1.0, acc_ty)
    else:
        vec = tl.zeros(offs_d.shape, acc_ty)
        scale = tl.load(SCALE).to(acc_ty)
    return vec, scale


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


@triton.jit
def _attend_range(
    q, vec, scale, k_base, v_base, sc_base, rows, row_ok, lo, hi, S, D, DV,
    acc_ty: tl.constexpr, STORE_SCORES: tl.constexpr, ADDITIVE: tl.constexpr,
    USE_DOT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """Online softmax of BLOCK_M query rows over positions [lo, hi) of one source row.

    q (BLOCK_M, BLOCK_D). Returns the running max m (BLOCK_M,), the running sum
    l = sum_s exp(score - m) (BLOCK_M,) and the unnormalised context acc (BLOCK_M, BLOCK_DV), as in
    FlashAttention: each block rescales the previous sums by exp(m_old - m_new). An empty range
    gives m = -inf, l = 0, acc = 0. With STORE_SCORES the raw scores go to sc_base (R, S) on the
    way, for the weights pass.
    """
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    m_i = tl.full((BLOCK_M,), float("-inf"), acc_ty)
    l_i = tl.zeros((BLOCK_M,), acc_ty)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), acc_ty)
    # The first block starts at position lo < hi, so after it every row's max is finite and
    # exp(m_old - m_new) never sees -inf - (-inf).
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < hi
        k = _load_rows(k_base, cols, hi, offs_d, D, D, acc_ty, 0.0)  # (BLOCK_N, BLOCK_D)
        if ADDITIVE:
            h = _tanh(q[:, None, :] + k[None, :, :])  # (BLOCK_M, BLOCK_N, BLOCK_D)
            s = tl.sum(h * vec[None, None, :], axis=2)
        else:
            s = _mm(q, tl.trans(k), USE_DOT) * scale  # (BLOCK_M, BLOCK_N)
        s = tl.where(col_ok[None, :], s, float("-inf"))
        if STORE_SCORES:
            sc_ptrs = sc_base + rows[:, None] * S + cols[None, :]
            tl.store(sc_ptrs, s, mask=row_ok[:, None] & col_ok[None, :])
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])  # 0 at masked positions
        l_i = l_i * alpha + tl.sum(p, axis=1)
        vals = _load_rows(v_base, cols, hi, offs_dv, DV, DV, acc_ty, 0.0)  # (BLOCK_N, BLOCK_DV)
        acc = acc * alpha[:, None] + _mm(p, vals, USE_DOT)
        m_i = m_new
    return m_i, l_i, acc


@triton.jit
def _write_weights(sc_base, w_base, rows, row_ok, lse, length, lo, hi, S, BLOCK_N: tl.constexpr):
    """Weights exp(score - lse) of positions [lo, hi) of BLOCK_M rows, from the raw scores in
    sc_base (R, S); zeros at positions >= length (their scores were never written)."""
    for start in range(lo, hi, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        valid = row_ok[:, None] & (cols[None, :] < length)
        s = tl.load(sc_base + rows[:, None] * S + cols[None, :], mask=valid, other=float("-inf"))
        w = tl.exp(s - lse[:, None])  # exp(-inf) = 0 past the length
        tl.store(
            w_base + rows[:, None] * S + cols[None, :],
            w.to(w_base.dtype.element_ty),
            mask=row_ok[:, None] & (cols[None, :] < hi),
        )


@triton.jit
def attention_fwd_kernel(
    Q, K, VEC, V, LEN, SCALE, CTX, W, SCORES, LSE,
    R, S, D, DV,
    HAS_LEN: tl.constexpr, ADDITIVE: tl.constexpr, USE_DOT: tl.constexpr,
    NEED_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """Context, LSE and (NEED_WEIGHTS) weights of BLOCK_M query rows of source row
    b = program_id(0), in one pass over the first lengths[b] positions.

    With NEED_WEIGHTS the raw scores go to SCORES on the way; after the pass, when the LSE is
    known, a second loop over this program's own scores (not over the keys) writes the
    normalised weights. Without it W and SCORES are never touched.
    """
    if USE_DOT:
        tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    acc_ty: tl.constexpr = LSE.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < R
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    length = _source_length(LEN, b, S, HAS_LEN)
    sc_base = SCORES + b * R * S

    q = _load_rows(Q + b * R * D, rows, R, offs_d, D, D, acc_ty, 0.0)  # (BLOCK_M, BLOCK_D)
    vec, scale = _load_vec_scale(VEC, SCALE, offs_d, D, acc_ty, ADDITIVE)
    m_i, l_i, acc = _attend_range(
        q, vec, scale, K + b * S * D, V + b * S * DV, sc_base, rows, row_ok, 0, length, S, D, DV,
        acc_ty, NEED_WEIGHTS, ADDITIVE, USE_DOT, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV,
    )  # fmt: skip

    has_any = l_i > 0  # False only for a source row of length 0
    ctx = acc / tl.where(has_any, l_i, 1.0)[:, None]
    lse = tl.where(has_any, m_i + tl.log(tl.where(has_any, l_i, 1.0)), float("inf"))
    ctx_ptrs = CTX + b * R * DV + rows[:, None] * DV + offs_dv[None, :]
    tl.store(ctx_ptrs, ctx.to(CTX.dtype.element_ty), mask=row_ok[:, None] & (offs_dv[None, :] < DV))
    tl.store(LSE + b * R + rows, lse, mask=row_ok)

    if NEED_WEIGHTS:
        # The scores were stored by whichever threads held them; make them visible to all
        # threads of this program before reading them back.
        tl.debug_barrier()
        _write_weights(sc_base, W + b * R * S, rows, row_ok, lse, length, 0, S, S, BLOCK_N)


# --------------------------------------------------------------------------------------------
# Forward split over S (flash-decoding)
#
# When B * cdiv(R, BLOCK_M) programs are too few to fill the GPU (decoding: a handful of rows
# per source row, few sentences) and S is long, the single-pass forward leaves most SMs idle
# while each program walks all of S. The split path cuts the first lengths[b] positions of every
# source row into NSPLIT contiguous chunks (a whole number of BLOCK_N blocks each) and runs:
#
#   1. attention_fwd_split_kernel, grid (B, row blocks, NSPLIT): the online softmax of one chunk,
#      stored as a partial log-sum-exp PLSE (B, R, NSPLIT) and the partial context normalised
#      by its own sum, PCTX (B, R, NSPLIT, DV), both in the accumulation dtype (plus the raw
#      scores when the weights are wanted). A chunk wholly past lengths[b] stores PLSE = -inf
#      and PCTX = 0: it weighs exp(-inf) = 0 in the merge.
#   2. attention_fwd_combine_kernel, grid (B, row blocks, NSPLIT or 1): lse = logsumexp_j PLSE_j
#      (+inf when every chunk is empty: a length-0 row), context = sum_j exp(PLSE_j - lse) PCTX_j;
#      then, when the weights are wanted, each program writes the weights of one chunk of S from
#      the stored raw scores, so that pass is split too.
# --------------------------------------------------------------------------------------------


@triton.jit
def attention_fwd_split_kernel(
    Q, K, VEC, V, LEN, SCALE, SCORES, PLSE, PCTX,
    R, S, D, DV, NSPLIT,
    HAS_LEN: tl.constexpr, ADDITIVE: tl.constexpr, USE_DOT: tl.constexpr,
    NEED_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """Partial LSE and context of BLOCK_M rows of source row b over chunk program_id(2) of its
    first lengths[b] positions. Chunks are cut per source row, so a short row still spreads
    over all splits; each is a whole number of BLOCK_N blocks."""
    if USE_DOT:
        tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    acc_ty: tl.constexpr = PLSE.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    split = tl.program_id(2)
    row_ok = rows < R
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    length = _source_length(LEN, b, S, HAS_LEN)
    chunk = tl.cdiv(tl.cdiv(length, BLOCK_N), NSPLIT) * BLOCK_N
    lo = split * chunk
    hi = tl.minimum(lo + chunk, length)  # lo >= hi: a chunk wholly past the length, no loop

    q = _load_rows(Q + b * R * D, rows, R, offs_d, D, D, acc_ty, 0.0)  # (BLOCK_M, BLOCK_D)
    vec, scale = _load_vec_scale(VEC, SCALE, offs_d, D, acc_ty, ADDITIVE)
    m_i, l_i, acc = _attend_range(
        q, vec, scale, K + b * S * D, V + b * S * DV, SCORES + b * R * S, rows, row_ok, lo, hi,
        S, D, DV, acc_ty, NEED_WEIGHTS, ADDITIVE, USE_DOT, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV,
    )  # fmt: skip

    has_any = l_i > 0  # False for an empty chunk (or a length-0 row)
    part_ctx = acc / tl.where(has_any, l_i, 1.0)[:, None]
    part_lse = tl.where(has_any, m_i + tl.log(tl.where(has_any, l_i, 1.0)), float("-inf"))
    slot = (b * R + rows) * NSPLIT + split  # (BLOCK_M,) index into (B, R, NSPLIT)
    tl.store(PLSE + slot, part_lse, mask=row_ok)
    pctx_ptrs = PCTX + slot[:, None] * DV + offs_dv[None, :]
    tl.store(pctx_ptrs, part_ctx, mask=row_ok[:, None] & (offs_dv[None, :] < DV))


@triton.jit
def attention_fwd_combine_kernel(
    PLSE, PCTX, LEN, SCORES, CTX, W, LSE,
    R, S, DV, NSPLIT,
    HAS_LEN: tl.constexpr, NEED_WEIGHTS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_SPLIT: tl.constexpr,
):  # fmt: skip
    """Merge the NSPLIT partials of BLOCK_M rows of source row b into context and LSE (program
    (b, row block, 0)), and write the weights of chunk program_id(2) of S (NEED_WEIGHTS).

    BLOCK_SPLIT >= NSPLIT. Every program recomputes the row LSE from the NSPLIT partial LSEs
    (a few numbers per row) rather than waiting for another program to store it.
    """
    acc_ty: tl.constexpr = LSE.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    part = tl.program_id(2)
    row_ok = rows < R
    offs_sp = tl.arange(0, BLOCK_SPLIT)
    offs_dv = tl.arange(0, BLOCK_DV)
    slot0 = (b * R + rows) * NSPLIT  # (BLOCK_M,) first partial of each row

    plse = tl.load(
        PLSE + slot0[:, None] + offs_sp[None, :],
        mask=row_ok[:, None] & (offs_sp[None, :] < NSPLIT),
        other=float("-inf"),
    ).to(acc_ty)  # (BLOCK_M, BLOCK_SPLIT)
    m = tl.max(plse, axis=1)
    has_any = m > float("-inf")  # False when every chunk was empty: a length-0 row
    m_safe = tl.where(has_any, m, 0.0)  # no -inf - (-inf) below
    total = tl.sum(tl.exp(plse - m_safe[:, None]), axis=1)
    lse = tl.where(has_any, m_safe + tl.log(tl.where(has_any, total, 1.0)), float("inf"))

    if part == 0:
        ctx = tl.zeros((BLOCK_M, BLOCK_DV), acc_ty)
        for j in range(NSPLIT):
            # exp(PLSE_j - lse): 0 for an empty chunk (-inf) and for a length-0 row (lse = +inf)
            part_lse = tl.load(PLSE + slot0 + j, mask=row_ok, other=float("-inf"))
            part_ctx = tl.load(
                PCTX + (slot0 + j)[:, None] * DV + offs_dv[None, :],
                mask=row_ok[:, None] & (offs_dv[None, :] < DV),
                other=0.0,
            ).to(acc_ty)
            ctx += tl.exp(part_lse - lse)[:, None] * part_ctx
        ctx_ptrs = CTX + b * R * DV + rows[:, None] * DV + offs_dv[None, :]
        ctx_mask = row_ok[:, None] & (offs_dv[None, :] < DV)
        tl.store(ctx_ptrs, ctx.to(CTX.dtype.element_ty), mask=ctx_mask)
        tl.store(LSE + b * R + rows, lse, mask=row_ok)

    if NEED_WEIGHTS:
        # The weights of all S positions (zeros past the length), cut into num_programs(2)
        # chunks of whole blocks; the scores were written by the previous launch.
        length = _source_length(LEN, b, S, HAS_LEN)
        chunk = tl.cdiv(tl.cdiv(S, BLOCK_N), tl.num_programs(2)) * BLOCK_N
        lo = part * chunk
        hi = tl.minimum(lo + chunk, S)
        _write_weights(SCORES + b * R * S, W + b * R * S, rows, row_ok, lse, length, lo, hi, S,
                       BLOCK_N)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Backward
#
# With P the weights, dC the gradient of the context and dW that of the weights:
#   dP = dC V^T + dW,  dS = P * (dP - delta),  delta = rowsum(P * dP) = rowsum(dC * C + dW * P)
# (delta is computed by the launcher from the outputs). Then for dot attention
#   dQ = scale * dS K,  dK = scale * dS^T Q,  dV = P^T dC
# and for additive attention, with H = tanh(QP + KP) (M, N, A):
#   dQP = sum_s dS * v * (1 - H^2),  dKP = sum_rows dS * v * (1 - H^2),  dv = sum dS * H.
# P is recomputed from the saved LSE: P = exp(score - lse).
# --------------------------------------------------------------------------------------------


@triton.jit
def _recompute_tile(
    q, k, vals, dc, lse, delta, vec, scale, GW, gw_base, rows, row_ok, cols, col_ok, S,
    HAS_GW: tl.constexpr, ADDITIVE: tl.constexpr, USE_DOT: tl.constexpr,
):  # fmt: skip
    """P, dS and (additive) H of one (rows x cols) tile.

    q (M, D), k (N, D), vals (N, DV), dc (M, DV), lse and delta (M,).
    Returns p (M, N), ds (M, N) and, for additive attention, h (M, N, D).
    """
    if ADDITIVE:
        h = _tanh(q[:, None, :] + k[None, :, :])  # (M, N, D)
        s = tl.sum(h * vec[None, None, :], axis=2)
    else:
        s = _mm(q, tl.trans(k), USE_DOT) * scale
        h = s[:, :, None]  # unused placeholder: dot attention has no H
    valid = row_ok[:, None] & col_ok[None, :]
    p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)  # (M, N)
    dp = _mm(dc, tl.trans(vals), USE_DOT)  # (M, N)
    if HAS_GW:
        gw = tl.load(gw_base + rows[:, None] * S + cols[None, :], mask=valid, other=0.0)
        dp += gw.to(dp.dtype)
    ds = p * (dp - delta[:, None])
    return p, ds, h


@triton.jit
def attention_bwd_dq_kernel(
    Q, K, VEC, V, LEN, SCALE, DC, GW, LSE, DELTA, DQ,
    R, S, D, DV,
    HAS_LEN: tl.constexpr, HAS_GW: tl.constexpr, ADDITIVE: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """dQ (dQP) of BLOCK_M rows of source row b: one pass over the first lengths[b] positions."""
    if USE_DOT:
        tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    acc_ty: tl.constexpr = LSE.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < R
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    length = _source_length(LEN, b, S, HAS_LEN)
    k_base = K + b * S * D
    v_base = V + b * S * DV

    q = _load_rows(Q + b * R * D, rows, R, offs_d, D, D, acc_ty, 0.0)  # (BLOCK_M, BLOCK_D)
    dc = _load_rows(DC + b * R * DV, rows, R, offs_dv, DV, DV, acc_ty, 0.0)
    lse = tl.load(LSE + b * R + rows, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + b * R + rows, mask=row_ok, other=0.0)
    vec, scale = _load_vec_scale(VEC, SCALE, offs_d, D, acc_ty, ADDITIVE)

    dq = tl.zeros((BLOCK_M, BLOCK_D), acc_ty)
    for start in range(0, length, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < length
        k = _load_rows(k_base, cols, length, offs_d, D, D, acc_ty, 0.0)
        vals = _load_rows(v_base, cols, length, offs_dv, DV, DV, acc_ty, 0.0)
        p, ds, h = _recompute_tile(
            q, k, vals, dc, lse, delta, vec, scale, GW, GW + b * R * S,
            rows, row_ok, cols, col_ok, S, HAS_GW, ADDITIVE, USE_DOT,
        )  # fmt: skip
        if ADDITIVE:
            dq += tl.sum(ds[:, :, None] * (1.0 - h * h), axis=1) * vec[None, :]
        else:
            dq += _mm(ds, k, USE_DOT) * scale

    dq_ptrs = DQ + b * R * D + rows[:, None] * D + offs_d[None, :]
    tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=row_ok[:, None] & (offs_d[None, :] < D))


@triton.jit
def attention_bwd_dkdv_kernel(
    Q, K, VEC, V, LEN, SCALE, DC, GW, LSE, DELTA, DK, DVAL, DVEC_PART,
    R, S, D, DV,
    HAS_LEN: tl.constexpr, HAS_GW: tl.constexpr, ADDITIVE: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """dK (dKP) and dValues of BLOCK_N positions of source row b, summed over the R rows that
    read b; for additive attention also this program's partial dv, DVEC_PART[b, block, :]."""
    if USE_DOT:
        tl.static_assert(BLOCK_M >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16 and BLOCK_DV >= 16)
    acc_ty: tl.constexpr = LSE.dtype.element_ty
    b = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    start = block * BLOCK_N
    cols = start + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    length = _source_length(LEN, b, S, HAS_LEN)
    col_ok = cols < length
    q_base = Q + b * R * D
    dc_base = DC + b * R * DV

    k = _load_rows(K + b * S * D, cols, length, offs_d, D, D, acc_ty, 0.0)  # (BLOCK_N, BLOCK_D)
    vals = _load_rows(V + b * S * DV, cols, length, offs_dv, DV, DV, acc_ty, 0.0)
    vec, scale = _load_vec_scale(VEC, SCALE, offs_d, D, acc_ty, ADDITIVE)

    dk = tl.zeros((BLOCK_N, BLOCK_D), acc_ty)
    dval = tl.zeros((BLOCK_N, BLOCK_DV), acc_ty)
    dvec = tl.zeros((BLOCK_D,), acc_ty)
    # A block that lies wholly past the length gets no gradient: skip the rows.
    n_rows = tl.where(start < length, R, 0)
    for row0 in range(0, n_rows, BLOCK_M):
        rows = row0 + tl.arange(0, BLOCK_M)
        row_ok = rows < R
        q = _load_rows(q_base, rows, R, offs_d, D, D, acc_ty, 0.0)
        dc = _load_rows(dc_base, rows, R, offs_dv, DV, DV, acc_ty, 0.0)
        lse = tl.load(LSE + b * R + rows, mask=row_ok, other=float("inf"))
        delta = tl.load(DELTA + b * R + rows, mask=row_ok, other=0.0)
        p, ds, h = _recompute_tile(
            q, k, vals, dc, lse, delta, vec, scale, GW, GW + b * R * S,
            rows, row_ok, cols, col_ok, S, HAS_GW, ADDITIVE, USE_DOT,
        )  # fmt: skip
        dval += _mm(tl.trans(p), dc, USE_DOT)
        if ADDITIVE:
            dk += tl.sum(ds[:, :, None] * (1.0 - h * h), axis=0) * vec[None, :]
            dvec += tl.sum(tl.sum(ds[:, :, None] * h, axis=0), axis=0)
        else:
            dk += _mm(tl.trans(ds), q, USE_DOT) * scale

    # Positions past the length (but inside S) get explicit zeros.
    in_s = cols < S
    dk_ptrs = DK + b * S * D + cols[:, None] * D + offs_d[None, :]
    tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=in_s[:, None] & (offs_d[None, :] < D))
    dval_ptrs = DVAL + b * S * DV + cols[:, None] * DV + offs_dv[None, :]
    tl.store(
        dval_ptrs, dval.to(DVAL.dtype.element_ty), mask=in_s[:, None] & (offs_dv[None, :] < DV)
    )
    if ADDITIVE:
        part = DVEC_PART + (b * tl.num_programs(1) + block) * D
        tl.store(part + offs_d, dvec, mask=offs_d < D)
