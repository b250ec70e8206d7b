"""GRU custom ops whose bodies launch the Triton kernels of kernels/gru.py.

Public functions (signatures of fast_s2s.reference.gru_cell / gru_layer):

    gru_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None) -> h'
    gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False)
        -> (output, h_n)

Each is a torch.library.custom_op (namespace fast_s2s_triton) with register_fake and
register_autograd, its backward a custom op of its own, so torch.compile(fullgraph=True) and
torch.library.opcheck see opaque ops with known shapes (docs/DESIGN.md, "Backends": a
triton_op / wrap_triton op fails opcheck and torch.compile under the interpreter).

What runs where:
- gru_cell forward: one launch; gi = x W_ih^T, gh = h W_hh^T and the gates in one kernel.
  Backward: one launch for the gate backward (dgi, dgh, dh direct), then torch matmuls:
  dx = dgi W_ih, dh = dgh W_hh + dh_direct, dW_ih = dgi^T x, dW_hh = dgh^T h, db = column sums.
- gru_layer forward: the input projection of all T steps is one matmul (T*B, I) x (I, 3H); the
  recurrence is one launch per step (product h W_hh^T + gates, reading gi[t]) or, for small H,
  one persistent launch for all steps (see kernels/gru.py for why the split matters).
  Backward: per step (reverse order) one launch that forms dh = dh_direct + dgh_{next} W_hh
  (+ grad_output[t]) and runs the gate backward; then dx, dW_ih, dW_hh and the biases are one
  matmul or sum each over all steps.
Everything accumulates in float32 (float64 for float64 inputs), and gru_layer carries its state
in that dtype between steps, as the reference does; outputs come back in the input dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass

import torch
import triton
from torch import Tensor

from fast_s2s import _gru_autograd

from .gru import (
    gru_backward_kernel,
    gru_forward_kernel,
    gru_layer_backward_persistent_kernel,
    gru_layer_forward_persistent_kernel,
)

__all__ = ["gru_cell", "gru_layer"]

# gru_layer runs all steps in one persistent launch when H is at most this. Per program it then
# does B_block x 3H x H multiply-adds per step on one SM, against a launch (~5-10 us) per step
# otherwise. An estimate, not yet measured on a GPU (none was available while this was written).
PERSISTENT_MAX_H = 128


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class _Config:
    """Tile sizes and the product form for one launch (see kernels/gru.py)."""

    use_dot: bool
    block_b: int
    block_h: int
    block_k: int
    num_warps: int


def _config(batch: int, hidden: int, k_max: int, dtype: torch.dtype, device: torch.device):
    """Tiles for a batch of `batch` rows, `hidden` units and reductions up to `k_max` long.

    tl.dot (tensor cores) on CUDA from 16 rows up, except float64; below that a broadcast
    multiply-and-sum, the matrix-vector form, whose (BLOCK_B, BLOCK_K, BLOCK_H) product is kept
    to 8192 elements. The interpreter always gets the second form: its tl.dot mishandles
    bfloat16 (it multiplies the raw 16-bit patterns).
    """
    if device.type == "cuda" and dtype != torch.float64 and batch >= 16:
        block_b = 16 if batch <= 16 else (32 if batch <= 32 else 64)
        return _Config(True, block_b, 64 if hidden >= 64 else 32, 32, 4)
    block_b = min(triton.next_power_of_2(max(batch, 1)), 16)
    block_h = min(triton.next_power_of_2(max(hidden, 1)), 32)
    block_k = max(16, 8192 // (block_b * block_h))
    block_k = min(block_k, max(16, triton.next_power_of_2(max(k_max, 1))))
    return _Config(False, block_b, block_h, block_k, 4)


def _force_dot(config: _Config) -> _Config:
    """Tests: the tl.dot form with its 16-row minimum tiles, whatever the device."""
    return _Config(True, max(config.block_b, 16), max(config.block_h, 16), 16, 4)


# Tests set this to exercise the tl.dot path under the interpreter (float32 and float16 only).
_FORCE_DOT = False


def _choose(batch, hidden, k_max, dtype, device) -> _Config:
    config = _config(batch, hidden, k_max, dtype, device)
    return _force_dot(config) if _FORCE_DOT else config


def _use_persistent(hidden: int) -> bool:
    return hidden <= PERSISTENT_MAX_H


def _persistent_config(config: _Config, k_max: int) -> _Config:
    """The persistent kernels have one program per batch block only: smaller batch blocks (the
    16-row minimum of tl.dot, 4 rows otherwise) give more programs to spread over the SMs."""
    if config.use_dot:
        return dataclasses.replace(config, block_b=16)
    block_b = min(config.block_b, 4)
    block_k = max(16, 8192 // (block_b * config.block_h))
    block_k = min(block_k, max(16, triton.next_power_of_2(max(k_max, 1))))
    return dataclasses.replace(config, block_b=block_b, block_k=block_k)


def _device_guard(t: Tensor):
    # Triton launches on the current CUDA device; make it the tensors' one.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _lengths_arg(lengths: Tensor | None, like: Tensor) -> Tensor:
    """lengths on the kernel's device, or a placeholder pointer when there are none."""
    if lengths is None:
        return like
    return lengths.to(device=like.device).contiguous()


# ---------------------------------------------------------------------------------------------
# gru_cell
# ---------------------------------------------------------------------------------------------


def _cell_forward(x, h, w_ih, w_hh, b_ih, b_hh) -> tuple[Tensor, Tensor]:
    """x (B, I), h (B, H) -> h' (B, H) in x's dtype, gates (B, 4H) = [r, z, n, hn] float32/64."""
    batch, inp = x.shape
    hidden = h.shape[1]
    acc = _acc_dtype(x.dtype)
    h_new = torch.empty((batch, hidden), dtype=x.dtype, device=x.device)
    gates = torch.empty((batch, 4 * hidden), dtype=acc, device=x.device)
    if batch == 0 or hidden == 0:
        return h_new, gates
    cfg = _choose(batch, hidden, max(inp, hidden), x.dtype, x.device)
    b_ih_arg = b_ih.contiguous() if b_ih is not None else gates
    b_hh_arg = b_hh.contiguous() if b_hh is not None else gates
    grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(hidden, cfg.block_h))
    with _device_guard(x):
        gru_forward_kernel[grid](
            x, x.stride(0), x.stride(1),
            h, h.stride(0), h.stride(1),
            w_ih, w_ih.stride(0), w_ih.stride(1),
            w_hh, w_hh.stride(0), w_hh.stride(1),
            b_ih_arg, b_hh_arg,
            gates, 0,
            h_new, h_new.stride(0),
            h_new, 0,
            gates, gates.stride(0),
            batch, inp, hidden,
            HAS_X=True, HAS_B_IH=b_ih is not None, HAS_B_HH=b_hh is not None,
            HAS_LENGTHS=False, HAS_OUT=False, SAVE_H_PREV=False,
            USE_DOT=cfg.use_dot, SPLIT_H=False,
            BLOCK_B=cfg.block_b, BLOCK_H=cfg.block_h, BLOCK_K=cfg.block_k,
            num_warps=cfg.num_warps,
        )  # fmt: skip
    return h_new, gates


def _cell_backward(grad_h_new, x, h, w_ih, w_hh, gates):
    """Gradients of gru_cell for x, h, w_ih, w_hh, b_ih, b_hh (the biases' always computed)."""
    batch, _ = x.shape
    hidden = h.shape[1]
    acc = _acc_dtype(x.dtype)
    dgi = torch.empty((batch, 3 * hidden), dtype=acc, device=x.device)
    dgh = torch.empty_like(dgi)
    dh_direct = torch.empty((batch, hidden), dtype=acc, device=x.device)
    if batch > 0 and hidden > 0:
        cfg = _choose(batch, hidden, 3 * hidden, x.dtype, x.device)
        grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(hidden, cfg.block_h))
        with _device_guard(x):
            gru_backward_kernel[grid](
                grad_h_new, grad_h_new.stride(0), grad_h_new.stride(1),
                dgh, dgh.stride(0), 0,  # no recurrent product for a single step
                w_hh, w_hh.stride(0), w_hh.stride(1),
                grad_h_new, 0, 0,
                gates, gates.stride(0),
                h, h.stride(0), h.stride(1),
                gates, 0,
                dgi, dgh, dgi.stride(0),
                dh_direct, dh_direct.stride(0),
                batch, hidden,
                HAS_GOUT=False, HAS_LENGTHS=False, USE_DOT=cfg.use_dot, SPLIT=False,
                BLOCK_B=cfg.block_b, BLOCK_H=cfg.block_h, BLOCK_K=cfg.block_k,
                num_warps=cfg.num_warps,
            )  # fmt: skip
    w_ih_a, w_hh_a = w_ih.to(acc), w_hh.to(acc)
    grad_x = dgi @ w_ih_a
    grad_h = torch.addmm(dh_direct, dgh, w_hh_a)
    grad_w_ih = dgi.t() @ x.to(acc)
    grad_w_hh = dgh.t() @ h.to(acc)
    dtype = x.dtype
    return (
        grad_x.to(dtype),
        grad_h.to(dtype),
        grad_w_ih.to(dtype),
        grad_w_hh.to(dtype),
        dgi.sum(0).to(dtype),
        dgh.sum(0).to(dtype),
    )


@torch.library.custom_op("fast_s2s_triton::gru_cell", mutates_args=())
def _gru_cell_op(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """(h' (B, H), gates (B, 4H)): the gates are the workspace the backward reads."""
    return _cell_forward(x, h, w_ih, w_hh, b_ih, b_hh)


_gru_cell_op.register_fake(_gru_autograd.cell_fake)


@torch.library.custom_op("fast_s2s_triton::gru_cell_backward", mutates_args=())
def _gru_cell_backward_op(
    grad_h_new: Tensor, x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, gates: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)."""
    return _cell_backward(grad_h_new, x, h, w_ih, w_hh, gates)


_gru_cell_backward_op.register_fake(_gru_autograd.cell_backward_fake)
_cell_autograd, _cell_setup = _gru_autograd.cell_autograd(_gru_cell_backward_op)
_gru_cell_op.register_autograd(_cell_autograd, setup_context=_cell_setup)


def gru_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> Tensor:
    """One GRU step, fused (torch.nn.GRUCell semantics; see fast_s2s.reference.gru_cell).

    x (B, I), h (B, H), w_ih (3H, I), w_hh (3H, H), b_ih / b_hh (3H,) or None -> h' (B, H).
    """
    return _gru_cell_op(x, h, w_ih, w_hh, b_ih, b_hh)[0]


# ---------------------------------------------------------------------------------------------
# gru_layer
# ---------------------------------------------------------------------------------------------


def _layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse):
    """x (T, B, I), h0 (B, H) -> output (T, B, H), h_n (B, H), work (T, B, 5H) float32/64.

    work[t, b] = [r, z, n, hn, h_prev] of step t (zero gates where t >= lengths[b]).
    """
    steps, batch, inp = x.shape
    hidden = h0.shape[1]
    acc = _acc_dtype(x.dtype)
    output = torch.empty((steps, batch, hidden), dtype=x.dtype, device=x.device)
    work = torch.empty((steps, batch, 5 * hidden), dtype=acc, device=x.device)
    # Two state buffers: a step reads one while writing the other.
    h_a = torch.empty((batch, hidden), dtype=acc, device=x.device).copy_(h0)
    h_b = torch.empty_like(h_a)
    if steps == 0 or batch == 0 or hidden == 0:
        return output.zero_(), h_a.to(x.dtype), work.zero_()
    # The input projection of every step at once: (T, B, I) x (I, 3H), without bias (the
    # kernel adds it). In the accumulation dtype, like the reference.
    gi = torch.matmul(x.to(acc), w_ih.to(acc).t())  # (T, B, 3H), contiguous
    cfg = _choose(batch, hidden, hidden, x.dtype, x.device)
    split = cfg.use_dot and w_hh.dtype != acc  # float32 state against 16-bit weights
    b_ih_arg = b_ih.contiguous() if b_ih is not None else work
    b_hh_arg = b_hh.contiguous() if b_hh is not None else work
    lengths_arg = _lengths_arg(lengths, work)
    flags = dict(
        HAS_B_IH=b_ih is not None,
        HAS_B_HH=b_hh is not None,
        HAS_LENGTHS=lengths is not None,
        USE_DOT=cfg.use_dot,
        SPLIT_H=split,
        BLOCK_B=cfg.block_b,
        BLOCK_H=cfg.block_h,
        BLOCK_K=cfg.block_k,
        num_warps=cfg.num_warps,
    )
    with _device_guard(x):
        if _use_persistent(hidden):
            cfg = _persistent_config(cfg, hidden)
            flags.update(BLOCK_B=cfg.block_b, BLOCK_K=cfg.block_k)
            grid = (triton.cdiv(batch, cfg.block_b),)
            gru_layer_forward_persistent_kernel[grid](
                gi, gi.stride(0), gi.stride(1),
                h_a, h_b,
                w_hh, w_hh.stride(0), w_hh.stride(1),
                b_ih_arg, b_hh_arg,
                lengths_arg,
                output, output.stride(0), output.stride(1),
                work, work.stride(0), work.stride(1),
                steps, batch, hidden,
                REVERSE=reverse, **flags,
            )  # fmt: skip
            h_n = h_a if steps % 2 == 0 else h_b
            return output, h_n.to(x.dtype), work
        grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(hidden, cfg.block_h))
        h_src, h_dst = h_a, h_b
        for step in range(steps):
            t = steps - 1 - step if reverse else step
            gi_t, out_t, work_t = gi[t], output[t], work[t]
            gru_forward_kernel[grid](
                gi_t, gi_t.stride(0), gi_t.stride(1),
                h_src, h_src.stride(0), h_src.stride(1),
                w_hh, w_hh.stride(0), w_hh.stride(1),  # placeholder: no x, no W_ih product
                w_hh, w_hh.stride(0), w_hh.stride(1),
                b_ih_arg, b_hh_arg,
                lengths_arg, t,
                h_dst, h_dst.stride(0),
                out_t, out_t.stride(0),
                work_t, work_t.stride(0),
                batch, hidden, hidden,
                HAS_X=False, HAS_OUT=True, SAVE_H_PREV=True, **flags,
            )  # fmt: skip
            h_src, h_dst = h_dst, h_src
    return output, h_src.to(x.dtype), work


def _layer_backward(grad_output, grad_h_n, x, h0, w_ih, w_hh, work, lengths, reverse):
    """Gradients of gru_layer for x, h0, w_ih, w_hh, b_ih, b_hh (the biases' always computed)."""
    steps, batch, inp = x.shape
    hidden = h0.shape[1]
    dtype = x.dtype
    acc = _acc_dtype(dtype)
    # Every step's kernel writes all of its dgi[t], dgh[t] (zeros for rows past their length).
    dgi = torch.empty((steps, batch, 3 * hidden), dtype=acc, device=x.device)
    dgh = torch.empty_like(dgi)
    # The gradient carried backwards through time, two buffers like the forward's state.
    dh_a = torch.empty((batch, hidden), dtype=acc, device=x.device).copy_(grad_h_n)
    dh_b = torch.empty_like(dh_a)
    w_hh_a = w_hh.to(acc)
    if steps > 0 and batch > 0 and hidden > 0:
        cfg = _choose(batch, hidden, 3 * hidden, dtype, x.device)
        split = cfg.use_dot and w_hh.dtype != acc
        lengths_arg = _lengths_arg(lengths, work)
        flags = dict(
            HAS_LENGTHS=lengths is not None,
            USE_DOT=cfg.use_dot,
            SPLIT=split,
            BLOCK_B=cfg.block_b,
            BLOCK_H=cfg.block_h,
            BLOCK_K=cfg.block_k,
            num_warps=cfg.num_warps,
        )
        # Steps in the opposite order to the forward.
        order = range(steps) if reverse else range(steps - 1, -1, -1)
        with _device_guard(x):
            if _use_persistent(hidden):
                cfg = _persistent_config(cfg, 3 * hidden)
                flags.update(BLOCK_B=cfg.block_b, BLOCK_K=cfg.block_k)
                grid = (triton.cdiv(batch, cfg.block_b),)
                gru_layer_backward_persistent_kernel[grid](
                    dh_a, dh_b,
                    w_hh, w_hh.stride(0), w_hh.stride(1),
                    grad_output, grad_output.stride(0), grad_output.stride(1),
                    grad_output.stride(2),
                    work, work.stride(0), work.stride(1),
                    lengths_arg,
                    dgi, dgh, dgi.stride(0), dgi.stride(1),
                    steps, batch, hidden,
                    REVERSE=reverse, **flags,
                )  # fmt: skip
                dh_src = dh_a if steps % 2 == 0 else dh_b
            else:
                grid = (triton.cdiv(batch, cfg.block_b), triton.cdiv(hidden, cfg.block_h))
                dh_src, dh_dst = dh_a, dh_b
                t_next = None
                for t in order:
                    # The product with the previous step's dgh runs inside the kernel.
                    dgh_next = dgh[t_next] if t_next is not None else dgh[t]
                    k_next = 3 * hidden if t_next is not None else 0
                    go_t, work_t = grad_output[t], work[t]
                    h_prev = work_t[:, 4 * hidden :]
                    gru_backward_kernel[grid](
                        dh_src, dh_src.stride(0), dh_src.stride(1),
                        dgh_next, dgh_next.stride(0), k_next,
                        w_hh, w_hh.stride(0), w_hh.stride(1),
                        go_t, go_t.stride(0), go_t.stride(1),
                        work_t, work_t.stride(0),
                        h_prev, h_prev.stride(0), h_prev.stride(1),
                        lengths_arg, t,
                        dgi[t], dgh[t], dgi.stride(1),
                        dh_dst, dh_dst.stride(0),
                        batch, hidden,
                        HAS_GOUT=True, **flags,
                    )  # fmt: skip
                    dh_src, dh_dst = dh_dst, dh_src
                    t_next = t
        # The last step processed (t = 0 forward, T-1 reverse) still owes its dgh @ W_hh.
        first = order[-1]
        grad_h0 = torch.addmm(dh_src, dgh[first], w_hh_a)
    else:
        grad_h0 = dh_a
    dgi2 = dgi.view(steps * batch, 3 * hidden)
    dgh2 = dgh.view(steps * batch, 3 * hidden)
    h_prev_all = work.view(steps * batch, 5 * hidden)[:, 4 * hidden :]
    grad_x = (dgi2 @ w_ih.to(acc)).view(steps, batch, inp)
    grad_w_ih = dgi2.t() @ x.to(acc).reshape(steps * batch, inp)
    grad_w_hh = dgh2.t() @ h_prev_all
    return (
        grad_x.to(dtype),
        grad_h0.to(dtype),
        grad_w_ih.to(dtype),
        grad_w_hh.to(dtype),
        dgi2.sum(0).to(dtype),
        dgh2.sum(0).to(dtype),
    )


@torch.library.custom_op("fast_s2s_triton::gru_layer", mutates_args=())
def _gru_layer_op(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """(output (T, B, H), h_n (B, H), work (T, B, 5H)): work is what the backward reads."""
    return _layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse)


_gru_layer_op.register_fake(_gru_autograd.layer_fake)


@torch.library.custom_op("fast_s2s_triton::gru_layer_backward", mutates_args=())
def _gru_layer_backward_op(
    grad_output: Tensor,
    grad_h_n: Tensor,
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    work: Tensor,
    lengths: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)."""
    return _layer_backward(grad_output, grad_h_n, x, h0, w_ih, w_hh, work, lengths, reverse)


_gru_layer_backward_op.register_fake(_gru_autograd.layer_backward_fake)
_layer_autograd, _layer_setup = _gru_autograd.layer_autograd(_gru_layer_backward_op)
_gru_layer_op.register_autograd(_layer_autograd, setup_context=_layer_setup)


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
    """One GRU layer over a padded sequence, fused (see fast_s2s.reference.gru_layer).

    x (T, B, I), h0 (B, H), weights as in gru_cell, lengths (B,) int32/int64 in [0, T] or None;
    reverse runs each row from its own last valid step down to 0.
    Returns output (T, B, H) (zeros at steps t >= lengths[b]) and h_n (B, H).
    """
    output, h_n, _ = _gru_layer_op(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, bool(reverse))
    return output, h_n
