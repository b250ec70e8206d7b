"""Triton kernels (installed as fast_s2s.kernels).

Each op is a torch.library.custom_op whose body launches the Triton kernel, with register_fake
and register_autograd (backward as a custom op of its own), so one path runs on CUDA tensors and,
under TRITON_INTERPRET=1, on CPU tensors in the tests, and passes opcheck and
torch.compile(fullgraph=True) (see docs/DESIGN.md, "Backends").

The public functions have the signatures of their fast_s2s.reference counterparts (the
attention ones also take need_weights, as fast_s2s.ops does) and expect checked arguments:
fast_s2s.ops validates them before it dispatches here. They are imported on first use, so
importing this package does not import triton.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "dot_attention": "attention_ops",
    "additive_attention": "attention_ops",
    "gru_cell": "gru_ops",
    "gru_layer": "gru_ops",
    "local_attention": "local_ops",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
