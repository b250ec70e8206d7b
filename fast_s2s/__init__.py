"""fast_s2s: fused attention and GRU kernels for RNN sequence-to-sequence models.

    import fast_s2s
    context, weights = fast_s2s.dot_attention(query, keys, values, lengths)

Every op takes `backend=` ("auto", "reference", "cpp", "triton"); see fast_s2s.backends.
"""

from fast_s2s import reference
from fast_s2s.backends import (
    BackendUnavailableError,
    available_backends,
    resolve_backend,
)
from fast_s2s.gemm import frozen_weights, gemm_report, set_gemm_backend
from fast_s2s.ops import additive_attention, dot_attention, gru_cell, gru_layer, local_attention

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "additive_attention",
    "available_backends",
    "dot_attention",
    "frozen_weights",
    "gemm_report",
    "gru_cell",
    "gru_layer",
    "local_attention",
    "reference",
    "resolve_backend",
    "set_gemm_backend",
]
