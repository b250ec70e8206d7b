"""Triton kernels of the GRU step: the recurrent product with the gate arithmetic fused in.

torch.nn.GRU semantics, gate order r, z, n (definition: fast_s2s/reference.py::gru_cell;
the C++ twin of this file is csrc/common/gru_gates.h):

    r  = sigmoid(gi_r + b_ir + gh_r + b_hr)
    z  = sigmoid(gi_z + b_iz + gh_z + b_hz)
    hn = gh_n + b_hn
    n  = tanh(gi_n + b_in + r * hn)
    h' = (1 - z) * n + z * h  =  n + z * (h - n)

with gi = x W_ih^T and gh = h W_hh^T. One program owns a tile of BLOCK_B batch rows by BLOCK_H
hidden units j. It computes, for its j, the three gate columns j, H + j, 2H + j of gh (and of gi
for gru_cell) by looping over the reduction dimension in BLOCK_K slices, then applies the gates
in registers: the products never reach memory as (B, 3H) tensors, the biases are added in the
epilogue, and the only writes are h', the step's output row and the workspace the backward needs.

Workspace per row: [r, z, n, hn] (4H) for gru_cell, [r, z, n, hn, h_prev] (5H) per step for
gru_layer, always in the accumulation dtype (float32; float64 for float64 inputs). The backward
(gate backward, from gru_gates.h):

    dn_pre = dh' (1 - z) (1 - n^2);  dz_pre = dh' (h - n) z (1 - z);  dr_pre = dn_pre hn r (1 - r)
    dgi = [dr_pre, dz_pre, dn_pre];  dgh = [dr_pre, dz_pre, dn_pre r];  dh (direct) = dh' z

The accumulation dtype of every kernel is the element type of its workspace pointer (float32 or
float64), so one kernel source serves every input dtype.

Products: USE_DOT selects tl.dot (tensor cores; GPU, batch >= 16, not float64) or a broadcast
multiply and row sum in the accumulation dtype (the matrix-vector form that suits a small batch,
float64, and the interpreter, whose tl.dot is wrong for bfloat16). float32 dots ask for "ieee"
precision, not the TF32 default, to stay within the float32 tolerance of the reference. In
gru_layer the state is float32 while 16-bit weights feed the dot: SPLIT_A splits the state into
a 16-bit high part and a 16-bit remainder and issues two dots, which keeps about 16 mantissa bits
of h instead of 8 (bfloat16) at twice the tensor-core work.

Why gru_layer's default is one launch per step, and when it is not: a step's product needs all
of h from the previous step, and the programs that own other hidden units write it. Triton has
no grid-wide barrier, so with the hidden units split over programs the only safe step boundary
is the kernel boundary (a spin-wait on a global counter would deadlock whenever not all programs
are resident, and the interpreter runs programs one after another). The persistent kernels below
avoid the need by splitting only the batch: batch rows are independent, so one program owns all
H hidden units of its rows, loops over time inside the kernel and needs only tl.debug_barrier
(a block-level barrier) between steps. That leaves B / BLOCK_B programs, which fills a GPU only
for small H; gru_ops.py chooses between the two.
"""

from __future__ import annotations

import triton
import triton.language as tl

# ---------------------------------------------------------------------------------------------
# Scalar helpers
# ---------------------------------------------------------------------------------------------


@triton.jit
def _sigmoid(x):
    # exp(-x) overflows to inf for very negative x, and 1 / (1 + inf) = 0: no NaN.
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # tanh(x) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|}). The exponent is never positive, so
    # nothing overflows; and tl has no tanh that also runs in the interpreter and in float64.
    e = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -y, y)


@triton.jit
def _mma(acc, a, w, USE_DOT: tl.constexpr, SPLIT_A: tl.constexpr):
    """acc (BB, BH) += a (BB, BK) @ w (BK, BH), accumulated in acc's dtype."""
    if USE_DOT:
        if SPLIT_A:
            # a is the float32 state, w is 16-bit: a = hi + lo, both 16-bit, two dots.
            a_hi = a.to(w.dtype)
            a_lo = (a - a_hi.to(tl.float32)).to(w.dtype)
            acc = tl.dot(a_hi, w, acc)
            acc = tl.dot(a_lo, w, acc)
        else:
            acc = tl.dot(a.to(w.dtype), w, acc, input_precision="ieee")
    else:
        acc += tl.sum(a.to(acc.dtype)[:, :, None] * w.to(acc.dtype)[None, :, :], axis=1)
    return acc


@triton.jit
def _gate_products(
    acc_r,
    acc_z,
    acc_n,
    a_ptr,
    stride_a_b,
    stride_a_k,
    w_ptr,
    stride_w_row,
    stride_w_k,
    rows,
    cols,
    B,
    K,
    H,
    USE_DOT: tl.constexpr,
    SPLIT_A: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The three gate columns of a @ W^T for hidden units `cols`.

    a: (B, K) at a_ptr; W: (3H, K) at w_ptr, rows [W_r; W_z; W_n]. Adds
    a[rows] @ W[g*H + cols]^T to acc_g (BLOCK_B, BLOCK_H) for g = r, z, n; the a slice is loaded
    once per K block and used for all three gates.
    """
    row_mask = rows < B
    col_mask = cols < H
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        a = tl.load(
            a_ptr + rows[:, None] * stride_a_b + ks[None, :] * stride_a_k,
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        # W^T tile (BLOCK_K, BLOCK_H): element [k, j] is W[g*H + cols[j], ks[k]].
        w_tile = w_ptr + ks[:, None] * stride_w_k + cols[None, :] * stride_w_row
        w_mask = k_mask[:, None] & col_mask[None, :]
        w_r = tl.load(w_tile, mask=w_mask, other=0.0)
        w_z = tl.load(w_tile + H * stride_w_row, mask=w_mask, other=0.0)
        w_n = tl.load(w_tile + 2 * H * stride_w_row, mask=w_mask, other=0.0)
        acc_r = _mma(acc_r, a, w_r, USE_DOT, SPLIT_A)
        acc_z = _mma(acc_z, a, w_z, USE_DOT, SPLIT_A)
        acc_n = _mma(acc_n, a, w_n, USE_DOT, SPLIT_A)
    return acc_r, acc_z, acc_n


@triton.jit
def _load_bias(b_ptr, cols, col_mask, H, dtype, HAS_BIAS: tl.constexpr):
    """The r, z, n slices (BLOCK_H,) of a (3H,) bias, zeros when there is none."""
    if HAS_BIAS:
        b_r = tl.load(b_ptr + cols, mask=col_mask, other=0.0).to(dtype)
        b_z = tl.load(b_ptr + H + cols, mask=col_mask, other=0.0).to(dtype)
        b_n = tl.load(b_ptr + 2 * H + cols, mask=col_mask, other=0.0).to(dtype)
    else:
        b_r = tl.zeros(cols.shape, dtype)
        b_z = tl.zeros(cols.shape, dtype)
        b_n = tl.zeros(cols.shape, dtype)
    return b_r, b_z, b_n


@triton.jit
def _row_valid(lengths_ptr, rows, t, B, HAS_LENGTHS: tl.constexpr):
    """(BLOCK_B,) True where row b takes step t (t < lengths[b]); padded rows are False."""
    row_mask = rows < B
    if HAS_LENGTHS:
        lens = tl.load(lengths_ptr + rows, mask=row_mask, other=0)
        return row_mask & (t < lens)
    return row_mask


# ---------------------------------------------------------------------------------------------
# Forward: one tile of one step
# ---------------------------------------------------------------------------------------------


@triton.jit
def _forward_tile(
    rows,
    cols,
    t,
    x_ptr,
    stride_x_b,
    stride_x_k,
    h_ptr,
    stride_h_b,
    stride_h_k,
    w_ih_ptr,
    stride_wih_row,
    stride_wih_k,
    w_hh_ptr,
    stride_whh_row,
    stride_whh_k,
    b_ih_ptr,
    b_hh_ptr,
    lengths_ptr,
    h_new_ptr,
    stride_hn_b,
    out_ptr,
    stride_out_b,
    work_ptr,
    stride_work_b,
    B,
    I,
    H,
    HAS_X: tl.constexpr,
    HAS_B_IH: tl.constexpr,
    HAS_B_HH: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    HAS_OUT: tl.constexpr,
    SAVE_H_PREV: tl.constexpr,
    USE_DOT: tl.constexpr,
    SPLIT_H: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """h' for rows x cols of one step, plus the step's output and workspace.

    HAS_X: x_ptr is the input x (B, I) and gi = x W_ih^T is computed here (gru_cell); otherwise
    x_ptr is the precomputed gi (B, 3H) of this step, bias-free (gru_layer).
    h (B, H) previous state; h_new (B, H); out (B, H) the output row of this step (HAS_OUT);
    work (B, 4H or 5H): [r, z, n, hn] and, with SAVE_H_PREV, h_prev.
    Rows with t >= lengths[b] keep h, output zeros and save zero gates.
    """
    acc_dt = work_ptr.dtype.element_ty
    row_mask = rows < B
    col_mask = cols < H
    mask = row_mask[:, None] & col_mask[None, :]

    g_r = tl.zeros((BLOCK_B, BLOCK_H), acc_dt)
    g_z = tl.zeros((BLOCK_B, BLOCK_H), acc_dt)
    g_n = tl.zeros((BLOCK_B, BLOCK_H), acc_dt)
    if HAS_X:
        # x and W_ih share a dtype: no split needed.
        i_r, i_z, i_n = _gate_products(
            g_r, g_z, g_n, x_ptr, stride_x_b, stride_x_k, w_ih_ptr, stride_wih_row,
            stride_wih_k, rows, cols, B, I, H, USE_DOT, False, BLOCK_K,
        )  # fmt: skip
    else:
        gi_tile = x_ptr + rows[:, None] * stride_x_b + cols[None, :] * stride_x_k
        i_r = tl.load(gi_tile, mask=mask, other=0.0).to(acc_dt)
        i_z = tl.load(gi_tile + H * stride_x_k, mask=mask, other=0.0).to(acc_dt)
        i_n = tl.load(gi_tile + 2 * H * stride_x_k, mask=mask, other=0.0).to(acc_dt)
    h_r, h_z, h_n = _gate_products(
        g_r, g_z, g_n, h_ptr, stride_h_b, stride_h_k, w_hh_ptr, stride_whh_row, stride_whh_k,
        rows, cols, B, H, H, USE_DOT, SPLIT_H, BLOCK_K,
    )  # fmt: skip

    # Epilogue: biases and gates in registers.
    bi_r, bi_z, bi_n = _load_bias(b_ih_ptr, cols, col_mask, H, acc_dt, HAS_B_IH)
    bh_r, bh_z, bh_n = _load_bias(b_hh_ptr, cols, col_mask, H, acc_dt, HAS_B_HH)
    r = _sigmoid(i_r + bi_r[None, :] + h_r + bh_r[None, :])
    z = _sigmoid(i_z + bi_z[None, :] + h_z + bh_z[None, :])
    hn = h_n + bh_n[None, :]
    n = _tanh(i_n + bi_n[None, :] + r * hn)
    h_prev = tl.load(
        h_ptr + rows[:, None] * stride_h_b + cols[None, :] * stride_h_k, mask=mask, other=0.0
    ).to(acc_dt)
    h_new = n + z * (h_prev - n)

    valid = _row_valid(lengths_ptr, rows, t, B, HAS_LENGTHS)[:, None]
    h_new = tl.where(valid, h_new, h_prev)
    tl.store(
        h_new_ptr + rows[:, None] * stride_hn_b + cols[None, :],
        h_new.to(h_new_ptr.dtype.element_ty),
        mask=mask,
    )
    if HAS_OUT:
        out = tl.where(valid, h_new, 0.0)
        tl.store(
            out_ptr + rows[:, None] * stride_out_b + cols[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=mask,
        )
    work = work_ptr + rows[:, None] * stride_work_b + cols[None, :]
    tl.store(work, tl.where(valid, r, 0.0), mask=mask)
    tl.store(work + H, tl.where(valid, z, 0.0), mask=mask)
    tl.store(work + 2 * H, tl.where(valid, n, 0.0), mask=mask)
    tl.store(work + 3 * H, tl.where(valid, hn, 0.0), mask=mask)
    if SAVE_H_PREV:
        tl.store(work + 4 * H, h_prev, mask=mask)


# t changes every launch: do not compile a variant for t == 1 or t % 16 == 0.
@triton.jit(do_not_specialize=["t"])
def gru_forward_kernel(
    x_ptr, stride_x_b, stride_x_k,
    h_ptr, stride_h_b, stride_h_k,
    w_ih_ptr, stride_wih_row, stride_wih_k,
    w_hh_ptr, stride_whh_row, stride_whh_k,
    b_ih_ptr, b_hh_ptr,
    lengths_ptr, t,
    h_new_ptr, stride_hn_b,
    out_ptr, stride_out_b,
    work_ptr, stride_work_b,
    B, I, H,
    HAS_X: tl.constexpr, HAS_B_IH: tl.constexpr, HAS_B_HH: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, HAS_OUT: tl.constexpr, SAVE_H_PREV: tl.constexpr,
    USE_DOT: tl.constexpr, SPLIT_H: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One GRU step. Grid (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)); see _forward_tile.

    gru_cell: x (B, I), h (B, H), h_new (B, H) in the input dtype, work (B, 4H).
    gru_layer step t: x = gi[t] (B, 3H), h / h_new the float32 (float64) state buffers (ping-pong:
    other programs still read h while this one writes h_new), out = output[t], work = work[t]
    (B, 5H).
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    _forward_tile(
        rows, cols, t,
        x_ptr, stride_x_b, stride_x_k, h_ptr, stride_h_b, stride_h_k,
        w_ih_ptr, stride_wih_row, stride_wih_k, w_hh_ptr, stride_whh_row, stride_whh_k,
        b_ih_ptr, b_hh_ptr, lengths_ptr, h_new_ptr, stride_hn_b, out_ptr, stride_out_b,
        work_ptr, stride_work_b, B, I, H,
        HAS_X, HAS_B_IH, HAS_B_HH, HAS_LENGTHS, HAS_OUT, SAVE_H_PREV, USE_DOT, SPLIT_H,
        BLOCK_B, BLOCK_H, BLOCK_K,
    )  # fmt: skip


@triton.jit
def gru_layer_forward_persistent_kernel(
    gi_ptr, stride_gi_t, stride_gi_b,
    h_a_ptr, h_b_ptr,
    w_hh_ptr, stride_whh_row, stride_whh_k,
    b_ih_ptr, b_hh_ptr,
    lengths_ptr,
    out_ptr, stride_out_t, stride_out_b,
    work_ptr, stride_work_t, stride_work_b,
    T, B, H,
    REVERSE: tl.constexpr, HAS_B_IH: tl.constexpr, HAS_B_HH: tl.constexpr,
    HAS_LENGTHS: tl.constexpr, USE_DOT: tl.constexpr, SPLIT_H: tl.constexpr,
    BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """All T steps of gru_layer in one launch. Grid (cdiv(B, BLOCK_B),).

    gi (T, B, 3H) bias-free input projection; h_a, h_b (B, H) contiguous state buffers in the
    accumulation dtype, h_a holding h0 (the state ends in h_a when T is even, else in h_b);
    out (T, B, H); work (T, B, 5H). The program owns BLOCK_B rows and all H hidden units, so the
    only dependency between steps is inside the program: a block barrier makes the new state
    visible to all its threads before the next step's product reads it.
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    h_src = h_a_ptr
    h_dst = h_b_ptr
    for step in range(0, T):
        t = T - 1 - step if REVERSE else step
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            _forward_tile(
                rows, cols, t,
                gi_ptr + t * stride_gi_t, stride_gi_b, 1, h_src, H, 1,
                w_hh_ptr, stride_whh_row, stride_whh_k, w_hh_ptr, stride_whh_row, stride_whh_k,
                b_ih_ptr, b_hh_ptr, lengths_ptr, h_dst, H,
                out_ptr + t * stride_out_t, stride_out_b,
                work_ptr + t * stride_work_t, stride_work_b, B, H, H,
                False, HAS_B_IH, HAS_B_HH, HAS_LENGTHS, True, True, USE_DOT, SPLIT_H,
                BLOCK_B, BLOCK_H, BLOCK_K,
            )  # fmt: skip
        tl.debug_barrier()
        h_src, h_dst = h_dst, h_src


# ---------------------------------------------------------------------------------------------
# Backward: one tile of one step
# ---------------------------------------------------------------------------------------------


@triton.jit
def _backward_tile(
    rows,
    cols,
    t,
    dh_ptr,
    stride_dh_b,
    stride_dh_k,
    dgh_next_ptr,
    stride_dgn_b,
    K_next,
    w_hh_ptr,
    stride_whh_row,
    stride_whh_k,
    gout_ptr,
    stride_go_b,
    stride_go_k,
    work_ptr,
    stride_work_b,
    h_prev_ptr,
    stride_hp_b,
    stride_hp_k,
    lengths_ptr,
    dgi_ptr,
    dgh_ptr,
    stride_dg_b,
    dh_direct_ptr,
    stride_dd_b,
    B,
    H,
    HAS_GOUT: tl.constexpr,
    HAS_LENGTHS: tl.constexpr,
    USE_DOT: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Gate backward of one step for rows x cols, with the recurrent product of dh in front.

    The gradient reaching h' of this step is
        dh = dh_carried + dgh_next @ W_hh (+ grad_output[t] where the row took the step),
    where dh_carried (B, H) at dh_ptr is the direct part dh'' z of the step processed before
    (or grad_h_n / grad_h' for the first), and dgh_next (B, 3H) the dgh of that step; K_next = 3H,
    or 0 for the first step processed (no product). Writes dgi, dgh (B, 3H) and dh_direct (B, H):
    dh' z for rows that took the step, dh unchanged for rows that did not (their state was
    carried), whose dgi and dgh are zero.
    """
    acc_dt = dgi_ptr.dtype.element_ty
    row_mask = rows < B
    col_mask = cols < H
    mask = row_mask[:, None] & col_mask[None, :]

    dh = tl.load(
        dh_ptr + rows[:, None] * stride_dh_b + cols[None, :] * stride_dh_k, mask=mask, other=0.0
    ).to(acc_dt)
    # dh += dgh_next @ W_hh[:, cols]: W_hh (3H, H) is read untransposed, element [k, j] at
    # row k, column cols[j].
    for k0 in range(0, K_next, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K_next
        a = tl.load(
            dgh_next_ptr + rows[:, None] * stride_dgn_b + ks[None, :],
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        w = tl.load(
            w_hh_ptr + ks[:, None] * stride_whh_row + cols[None, :] * stride_whh_k,
            mask=k_mask[:, None] & col_mask[None, :],
            other=0.0,
        )
        dh = _mma(dh, a, w, USE_DOT, SPLIT)

    valid = _row_valid(lengths_ptr, rows, t, B, HAS_LENGTHS)[:, None]
    d = dh
    if HAS_GOUT:
        gout = tl.load(
            gout_ptr + rows[:, None] * stride_go_b + cols[None, :] * stride_go_k,
            mask=mask,
            other=0.0,
        ).to(acc_dt)
        d = d + gout

    work = work_ptr + rows[:, None] * stride_work_b + cols[None, :]
    r = tl.load(work, mask=mask, other=0.0)
    z = tl.load(work + H, mask=mask, other=0.0)
    n = tl.load(work + 2 * H, mask=mask, other=0.0)
    hn = tl.load(work + 3 * H, mask=mask, other=0.0)
    h_prev = tl.load(
        h_prev_ptr + rows[:, None] * stride_hp_b + cols[None, :] * stride_hp_k,
        mask=mask,
        other=0.0,
    ).to(acc_dt)

    dn_pre = d * (1.0 - z) * (1.0 - n * n)
    dz_pre = d * (h_prev - n) * z * (1.0 - z)
    dr_pre = dn_pre * hn * r * (1.0 - r)
    dr_pre = tl.where(valid, dr_pre, 0.0)
    dz_pre = tl.where(valid, dz_pre, 0.0)
    dn_pre = tl.where(valid, dn_pre, 0.0)

    dg = rows[:, None] * stride_dg_b + cols[None, :]
    tl.store(dgi_ptr + dg, dr_pre, mask=mask)
    tl.store(dgi_ptr + dg + H, dz_pre, mask=mask)
    tl.store(dgi_ptr + dg + 2 * H, dn_pre, mask=mask)
    tl.store(dgh_ptr + dg, dr_pre, mask=mask)
    tl.store(dgh_ptr + dg + H, dz_pre, mask=mask)
    tl.store(dgh_ptr + dg + 2 * H, dn_pre * r, mask=mask)
    tl.store(
        dh_direct_ptr + rows[:, None] * stride_dd_b + cols[None, :],
        tl.where(valid, d * z, dh),
        mask=mask,
    )


@triton.jit(do_not_specialize=["t"])
def gru_backward_kernel(
    dh_ptr, stride_dh_b, stride_dh_k,
    dgh_next_ptr, stride_dgn_b, K_next,
    w_hh_ptr, stride_whh_row, stride_whh_k,
    gout_ptr, stride_go_b, stride_go_k,
    work_ptr, stride_work_b,
    h_prev_ptr, stride_hp_b, stride_hp_k,
    lengths_ptr, t,
    dgi_ptr, dgh_ptr, stride_dg_b,
    dh_direct_ptr, stride_dd_b,
    B, H,
    HAS_GOUT: tl.constexpr, HAS_LENGTHS: tl.constexpr, USE_DOT: tl.constexpr,
    SPLIT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Backward of one GRU step. Grid (cdiv(B, BLOCK_B), cdiv(H, BLOCK_H)); see _backward_tile.

    gru_cell: dh = grad_h' (B, H), K_next = 0, no grad_output, work (B, 4H), h_prev = h.
    gru_layer step t: dh / dh_direct the two ping-pong (B, H) buffers, dgh_next = dgh of the step
    processed before (K_next = 3H after the first), gout = grad_output[t], work = work[t] whose
    last H columns are h_prev.
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    _backward_tile(
        rows, cols, t,
        dh_ptr, stride_dh_b, stride_dh_k, dgh_next_ptr, stride_dgn_b, K_next,
        w_hh_ptr, stride_whh_row, stride_whh_k, gout_ptr, stride_go_b, stride_go_k,
        work_ptr, stride_work_b, h_prev_ptr, stride_hp_b, stride_hp_k, lengths_ptr,
        dgi_ptr, dgh_ptr, stride_dg_b, dh_direct_ptr, stride_dd_b, B, H,
        HAS_GOUT, HAS_LENGTHS, USE_DOT, SPLIT, BLOCK_B, BLOCK_H, BLOCK_K,
    )  # fmt: skip


@triton.jit
def gru_layer_backward_persistent_kernel(
    dh_a_ptr, dh_b_ptr,
    w_hh_ptr, stride_whh_row, stride_whh_k,
    gout_ptr, stride_go_t, stride_go_b, stride_go_k,
    work_ptr, stride_work_t, stride_work_b,
    lengths_ptr,
    dgi_ptr, dgh_ptr, stride_dg_t, stride_dg_b,
    T, B, H,
    REVERSE: tl.constexpr, HAS_LENGTHS: tl.constexpr, USE_DOT: tl.constexpr,
    SPLIT: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Backward through all T steps of gru_layer in one launch. Grid (cdiv(B, BLOCK_B),).

    dh_a (B, H) holds grad_h_n on entry; dh_a / dh_b ping-pong as the carried gradient (after
    the last step processed, the direct part is in dh_a when T is even, else in dh_b; the caller
    adds dgh[first step] @ W_hh). grad_output (T, B, H); work (T, B, 5H); dgi, dgh (T, B, 3H).
    Steps run in the opposite order to the forward; a block barrier separates them.
    """
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    dh_src = dh_a_ptr
    dh_dst = dh_b_ptr
    for step in range(0, T):
        if REVERSE:
            t = step
            t_next = t - 1
        else:
            t = T - 1 - step
            t_next = t + 1
        # The first step processed has no later step: no product (its t_next is never read).
        k_next = tl.where(step == 0, 0, 3 * H)
        for j0 in range(0, H, BLOCK_H):
            cols = j0 + tl.arange(0, BLOCK_H)
            work_t = work_ptr + t * stride_work_t
            _backward_tile(
                rows, cols, t,
                dh_src, H, 1, dgh_ptr + t_next * stride_dg_t, stride_dg_b, k_next,
                w_hh_ptr, stride_whh_row, stride_whh_k,
                gout_ptr + t * stride_go_t, stride_go_b, stride_go_k,
                work_t, stride_work_b, work_t + 4 * H, stride_work_b, 1, lengths_ptr,
                dgi_ptr + t * stride_dg_t, dgh_ptr + t * stride_dg_t, stride_dg_b, dh_dst, H,
                B, H, True, HAS_LENGTHS, USE_DOT, SPLIT, BLOCK_B, BLOCK_H, BLOCK_K,
            )  # fmt: skip
        tl.debug_barrier()
        dh_src, dh_dst = dh_dst, dh_src
