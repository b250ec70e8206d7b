"""Triton kernels of local_attention (Luong et al. 2015 local attention), forward and backward.

The definition of correct is fast_s2s/reference.py::local_attention; the launch code and the
custom ops are in local_ops.py. (Not named local_attention.py: importing a submodule of that name
would shadow the function fast_s2s.kernels.local_attention.)

Layout. The launcher makes every tensor contiguous and flattens the query rows: row r = n * T + t
of Q (rows, D) reads source row b = r // R, R = beam * T, of K (B, S, D) and V (B, S, DV) (beam
rows share K[b] and V[b], no copies); CEN (rows,) holds the centres p in their own dtype.

Algorithm. One program per query row. p = CEN[r] in the accumulation dtype (float32, float64 for
float64 inputs). The positions that can be in the window are the 2 * WIN + 2 integers from
start = floor(p - WIN) (floor(p - WIN)..ceil(p + WIN)), so the program loads one block of
BLOCK = next_pow2(min(2 * WIN + 2, S)) key / value rows from start (for WIN >= 1 that is
next_pow2(2 * WIN + 1) until the window outgrows the source): O(WIN) per row whatever S is.
A position s of the block takes part when 0 <= s < lengths[b] and |float(s) - p| <= WIN,
computed exactly as the reference does in the accumulation dtype (so the two agree at the
boundary); everything else is masked, never loaded (padded positions may hold NaN). A
non-finite p is in no window; start is clamped to [0, S] in floating point before the cast to
int, so a huge p cannot overflow it (a window cut by the start of the source then begins at 0,
and the block still holds every position it keeps).

    score_s = scale * q . K[b, s];  align = softmax over the window;  g_s = exp(-(s - p)^2 /
    (2 sigma^2)), sigma = WIN / 2 (g = 1 for WIN = 0);  w_s = align_s g_s;  ctx = sum_s w_s V_s.

Backward (same program layout, the window's weights recomputed from q, K and p):

    dw_s = dctx . V_s + dW_s;  dalign_s = dw_s g_s;  dscore_s = align_s (dalign_s - sum align
    dalign);  dq = scale sum_s dscore_s K_s;  dp = sum_s dw_s align_s g_s (s - p) / sigma^2;
    dK[b, s] += scale dscore_s q;  dV[b, s] += w_s dctx.

dq and dp belong to the row and are stored directly. dK and dV of one source position get
contributions from every row whose window covers it (the beam rows, neighbouring steps): they are
accumulated with atomic adds into zeroed float32 (float64) buffers, cast to the inputs' dtype by
the launcher. Atomics rather than a per-source-position program (as dot_attention's dK/dV kernel
does): such a program would have to scan all R rows of its source row to find the few whose
window covers it, O(R * S) instead of O(R * WIN); the price is a summation order that varies
between runs in the last bits.

PARAMS (3,) in the accumulation dtype: [scale, 2 sigma^2, 1 / sigma^2], with 2 sigma^2 = 1 and
1 / sigma^2 = 0 for WIN = 0 (then a position in the window has s - p = 0: g = 1, dp = 0). A tensor
rather than Python floats, which would reach the kernel as float32 and round float64 inputs.
"""

import triton
import triton.language as tl


@triton.jit
def _window(CEN, LEN, PARAMS, r, R, S, WIN, HAS_LEN: tl.constexpr, BLOCK: tl.constexpr):
    """(b, positions (BLOCK,), in-window mask, s - p (0 outside), g, scale) of row r."""
    acc_ty: tl.constexpr = PARAMS.dtype.element_ty
    b = (r // R).to(tl.int64)
    length = tl.load(LEN + b).to(tl.int32) if HAS_LEN else S + tl.zeros((), tl.int32)
    p = tl.load(CEN + r).to(acc_ty)
    finite = tl.abs(p) < float("inf")  # False for inf and NaN
    lo = tl.where(finite, tl.floor(p - WIN), -BLOCK)
    # Clamped in floating point (no overflow in the cast) to [0, S]: a window cut by the start
    # of the source then still fits the block, which the launcher caps at S positions.
    lo = tl.minimum(tl.maximum(lo, 0.0), S)
    pos = lo.to(tl.int32) + tl.arange(0, BLOCK)
    offset = pos.to(acc_ty) - p
    # A non-finite p fails the distance test by itself (|s - inf| = inf, NaN compares False).
    ok = (pos >= 0) & (pos < length) & (tl.abs(offset) <= WIN)
    near = tl.where(ok, offset, 0.0)  # no inf / NaN from a far or infinite centre
    g = tl.exp(-(near * near) / tl.load(PARAMS + 1))
    return b, pos, ok, near, g, tl.load(PARAMS)


@triton.jit
def _softmax(q, k, ok, scale):
    """Softmax of scale * q . k over the positions where ok (0 elsewhere, all 0 when none)."""
    s = tl.sum(q[None, :] * k, axis=1) * scale
    s = tl.where(ok, s, float("-inf"))
    m = tl.max(s, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)  # an empty window: no -inf - (-inf)
    e = tl.where(ok, tl.exp(s - m), 0.0)
    total = tl.sum(e, axis=0)
    return e / tl.where(total > 0, total, 1.0)


@triton.jit
def _load_window(base, pos, ok, n_cols, acc_ty: tl.constexpr, BLOCK_C: tl.constexpr):
    """Rows pos of a (S, n_cols) matrix, (BLOCK, BLOCK_C) in acc_ty; 0 where not ok."""
    cols = tl.arange(0, BLOCK_C)
    mask = ok[:, None] & (cols[None, :] < n_cols)
    ptrs = base + pos[:, None].to(tl.int64) * n_cols + cols[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(acc_ty), mask


@triton.jit
def local_attention_fwd_kernel(
    Q, K, V, CEN, LEN, PARAMS, CTX, W,
    R, S, D, DV, WIN,
    HAS_LEN: tl.constexpr, NEED_WEIGHTS: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """Context (and, with NEED_WEIGHTS, the window's weights into the zeroed W) of row r."""
    acc_ty: tl.constexpr = PARAMS.dtype.element_ty
    r = tl.program_id(0).to(tl.int64)
    b, pos, ok, near, g, scale = _window(CEN, LEN, PARAMS, r, R, S, WIN, HAS_LEN, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + r * D + offs_d, mask=offs_d < D, other=0.0).to(acc_ty)
    k, _ = _load_window(K + b * S * D, pos, ok, D, acc_ty, BLOCK_D)
    w = _softmax(q, k, ok, scale) * g
    v, _ = _load_window(V + b * S * DV, pos, ok, DV, acc_ty, BLOCK_DV)
    ctx = tl.sum(w[:, None] * v, axis=0)
    tl.store(CTX + r * DV + offs_dv, ctx.to(CTX.dtype.element_ty), mask=offs_dv < DV)
    if NEED_WEIGHTS:  # the rest of the row was zeroed by the launcher
        tl.store(W + r * S + pos, w.to(W.dtype.element_ty), mask=ok)


@triton.jit
def local_attention_bwd_kernel(
    Q, K, V, CEN, LEN, PARAMS, DC, GW, DQ, DK, DVAL, DCEN,
    R, S, D, DV, WIN,
    HAS_LEN: tl.constexpr, HAS_GW: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """dq and dp of row r (stored), its share of dK and dV (atomic adds into DK, DVAL, which are
    (B, S, .) in the accumulation dtype)."""
    acc_ty: tl.constexpr = PARAMS.dtype.element_ty
    r = tl.program_id(0).to(tl.int64)
    b, pos, ok, near, g, scale = _window(CEN, LEN, PARAMS, r, R, S, WIN, HAS_LEN, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q = tl.load(Q + r * D + offs_d, mask=offs_d < D, other=0.0).to(acc_ty)
    dc = tl.load(DC + r * DV + offs_dv, mask=offs_dv < DV, other=0.0).to(acc_ty)
    k, k_mask = _load_window(K + b * S * D, pos, ok, D, acc_ty, BLOCK_D)
    v, v_mask = _load_window(V + b * S * DV, pos, ok, DV, acc_ty, BLOCK_DV)
    align = _softmax(q, k, ok, scale)
    w = align * g

    dw = tl.sum(dc[None, :] * v, axis=1)  # (BLOCK,)
    if HAS_GW:
        dw += tl.load(GW + r * S + pos, mask=ok, other=0.0).to(acc_ty)
    dalign = dw * g
    dscore = align * (dalign - tl.sum(align * dalign, axis=0))  # 0 outside the window
    dq = tl.sum(dscore[:, None] * k, axis=0) * scale
    tl.store(DQ + r * D + offs_d, dq.to(DQ.dtype.element_ty), mask=offs_d < D)
    # d g_s / dp = g_s (s - p) / sigma^2 (PARAMS[2] = 1 / sigma^2, 0 for WIN = 0)
    dp = tl.sum(dw * w * near, axis=0) * tl.load(PARAMS + 2)
    tl.store(DCEN + r, dp.to(DCEN.dtype.element_ty))

    rows64 = pos[:, None].to(tl.int64)
    dk_ptrs = DK + b * S * D + rows64 * D + offs_d[None, :]
    tl.atomic_add(dk_ptrs, (dscore * scale)[:, None] * q[None, :], mask=k_mask)
    dv_ptrs = DVAL + b * S * DV + rows64 * DV + offs_dv[None, :]
    tl.atomic_add(dv_ptrs, w[:, None] * dc[None, :], mask=v_mask)
