"""Fake (shape) functions and autograd of the compiled ops, torch.ops.fast_s2s.* (the C++ and
CUDA C++ family; the Triton family registers its own in kernels/).

Saved-tensor contract: the global attention ops save their inputs, lengths and the forward's
weights (the CPU backward reads the weights; the CUDA backward recomputes them from query and
keys and gets (0,) weights with need_weights=False); local_attention saves only its inputs
(every backward recomputes the window's weights, O(window) per row); the GRU ops save their
inputs and the float32/64 workspace the forward returns (shared with the Triton ops:
fast_s2s._gru_autograd, as local_attention's are: fast_s2s._local_autograd).
Registered on import, and only when the extension is loaded: without it, the schemas in
csrc/ops.cpp do not exist. fast_s2s.ops imports this module.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s import _extension, _gru_autograd, _local_autograd, checks


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
        checks.check_devices(
            "dot_attention", "query", query, dict(keys=keys, values=values), lengths
        )
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
        others = dict(keys_proj=keys_proj, v=v, values=values)
        checks.check_devices("additive_attention", "query_proj", query_proj, others, lengths)
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

    # local_attention shares its fake functions and autograd with the Triton and emulated ones.
    torch.library.register_fake(lib + "local_attention")(_local_autograd.forward_fake)
    torch.library.register_fake(lib + "local_attention_backward")(_local_autograd.backward_fake)
    backward, setup = _local_autograd.autograd(torch.ops.fast_s2s.local_attention_backward)
    torch.library.register_autograd(lib + "local_attention", backward, setup_context=setup)

    # The GRU ops share their fake functions and autograd with the Triton ones.
    torch.library.register_fake(lib + "gru_cell")(_gru_autograd.cell_fake)
    torch.library.register_fake(lib + "gru_cell_backward")(_gru_autograd.cell_backward_fake)
    backward, setup = _gru_autograd.cell_autograd(torch.ops.fast_s2s.gru_cell_backward)
    torch.library.register_autograd(lib + "gru_cell", backward, setup_context=setup)
    torch.library.register_fake(lib + "gru_layer")(_gru_autograd.layer_fake)
    torch.library.register_fake(lib + "gru_layer_backward")(_gru_autograd.layer_backward_fake)
    backward, setup = _gru_autograd.layer_autograd(torch.ops.fast_s2s.gru_layer_backward)
    torch.library.register_autograd(lib + "gru_layer", backward, setup_context=setup)

    @torch.library.register_fake(lib + "gru_stack")
    def _stack_fake(x, h0, weights, lengths, num_layers, bidirectional):
        dirs = 2 if bidirectional else 1
        return x.new_empty((x.shape[0], x.shape[1], dirs * h0.shape[2])), h0.new_empty(h0.shape)

    @torch.library.register_fake(lib + "cuda_smoke")
    def _smoke_fake(x):
        return torch.empty_like(x)


if _extension.extension_loaded():
    _register_compiled_ops()
