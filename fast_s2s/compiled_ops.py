"""Fake (shape) functions and autograd of the compiled ops, torch.ops.fast_s2s.* (the C++ and
CUDA C++ family; the Triton family registers its own in kernels/).

Saved-tensor contract: the global attention ops save their inputs, lengths and the forward's
weights (the CPU backward reads the weights; the CUDA backward recomputes them from query and
keys and gets (0,) weights with need_weights=False); local_attention saves only its inputs
(every backward recomputes the window's weights, O(window) per row); the GRU ops save their
inputs and the float32/64 workspace the forward returns. Each family's fake functions and
autograd are written once, shared with the Triton and emulated ops: fast_s2s._attention_autograd,
_local_autograd, _gru_autograd.
Registered on import, and only when the extension is loaded: without it, the schemas in
csrc/ops.cpp do not exist. fast_s2s.ops imports this module.
"""

from __future__ import annotations

import torch

from fast_s2s import _attention_autograd, _extension, _gru_autograd, _local_autograd


def _register_compiled_ops() -> None:
    lib = "fast_s2s::"

    # The attention ops share their fake functions and autograd with the emulated and Triton
    # ones (fast_s2s._attention_autograd), as local_attention and the GRU ops do theirs.
    for score in ("dot", "additive"):
        op = f"{lib}{score}_attention"
        torch.library.register_fake(op)(_attention_autograd.forward_fake(score))
        torch.library.register_fake(op + "_backward")(_attention_autograd.backward_fake(score))
        backward_op = getattr(torch.ops.fast_s2s, f"{score}_attention_backward")
        backward, setup = _attention_autograd.autograd(score, backward_op)
        torch.library.register_autograd(op, backward, setup_context=setup)

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
