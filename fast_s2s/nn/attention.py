"""Attention over encoder states: Luong (2015) dot / general / concat, scaled dot, Bahdanau (2014).

Every kind is one fused op per decoder step. The key side of the score (the projection of the
encoder states for concat and additive) is computed once per source batch by `precompute`, so
the per-step cost is the query side only:

    kind        score(q, k)                                   op
    dot         q . k                                         dot_attention
    scaled_dot  q . k / sqrt(d)                               dot_attention(scale=1/sqrt(d))
    general     q^T W_a k = (W_a^T q) . k                     query projection + dot_attention
    concat      v_a^T tanh(W_a [q; k]) = v^T tanh(W_q q + W_k k)        additive_attention
    additive    v^T tanh(W_q s + W_k h + b)                   additive_attention

weights = softmax over the valid source positions (s < lengths[b]) of the scores;
context = sum_s weights[s] * values[s]. Beam search: N = B * beam query rows, row n reads source
row n // beam, without copying the memory.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fast_s2s import checks, ops

__all__ = ["ATTENTION_KINDS", "Attention", "AttentionMemory"]

ATTENTION_KINDS = ("dot", "scaled_dot", "general", "concat", "additive")
_DOT_KINDS = ("dot", "scaled_dot", "general")
_ADDITIVE_KINDS = ("concat", "additive")


class AttentionMemory(NamedTuple):
    """The encoder side of attention, computed once per source batch by Attention.precompute.

    keys: (B, S, key_size) raw keys for dot / scaled_dot / general; (B, S, attn_size) projected
        keys W_k k (+ b) for concat / additive.
    values: (B, S, value_size), the states the context is read from.
    """

    keys: Tensor
    values: Tensor


class Attention(nn.Module):
    """Attention of decoder queries over encoder memory, one fused op per call.

    Kinds (q: query, k: key, d = key_size, A = attn_size):

    - ``dot`` (Luong et al. 2015, "Effective Approaches to Attention-based Neural Machine
      Translation"): score = q . k. Needs query_size == key_size. No parameters.
    - ``scaled_dot`` (the scaling of Vaswani et al. 2017, "Attention Is All You Need"):
      score = q . k / sqrt(d). Needs query_size == key_size. No parameters.
    - ``general`` (Luong et al. 2015): score = q^T W_a k, computed as (W_a^T q) . k: the query is
      projected by ``query_proj`` (Linear(query_size -> key_size, bias=False), weight = W_a^T),
      then dot attention, so the per-step cost stays on the query side.
    - ``concat`` (Luong et al. 2015): score = v_a^T tanh(W_a [q; k]) = v^T tanh(W_q q + W_k k),
      with W_a = [W_q, W_k] split into ``query_proj`` (query_size -> A) and ``key_proj``
      (key_size -> A); W_k k is computed once by precompute.
    - ``additive`` (Bahdanau et al. 2014, "Neural Machine Translation by Jointly Learning to
      Align and Translate"): score = v^T tanh(W_q s + W_k h (+ b)) for decoder state s and
      encoder state h; same parameters and op as concat (the kinds differ in which decoder
      state the model feeds in: Luong's current h_t, Bahdanau's previous s_{i-1}).

    Args:
        kind: one of ATTENTION_KINDS.
        query_size: features of the query.
        key_size: features of the keys (the encoder memory passed to precompute / forward).
        value_size: features of the values; defaults to key_size (values are the keys unless
            precompute gets values).
        attn_size: A, hidden size of concat / additive scoring; defaults to key_size. Not used by
            the other kinds.
        bias: the bias b of concat / additive, added to the key projection (W_k k + b, computed
            once per source batch, so it costs nothing per step). Only for those kinds.
        backend: "auto", "reference", "cpp" or "triton", passed to the fast_s2s.ops call.
        device, dtype: of the parameters.

    Parameters: ``query_proj`` (general, concat, additive), ``key_proj`` and ``v`` (A,) (concat,
    additive), initialised as torch.nn.Linear (v as a Linear(A -> 1) weight).
    """

    def __init__(
        self,
        kind: str,
        query_size: int,
        key_size: int,
        value_size: int | None = None,
        attn_size: int | None = None,
        bias: bool = False,
        *,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"Attention: kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        checks.check_backend("Attention", backend)
        value_size = key_size if value_size is None else value_size
        attn_size = key_size if attn_size is None else attn_size
        for name, size in (
            ("query_size", query_size),
            ("key_size", key_size),
            ("value_size", value_size),
            ("attn_size", attn_size),
        ):
            if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size <= 0:
                raise ValueError(f"Attention: {name} must be a positive integer, got {size!r}")
        if kind in ("dot", "scaled_dot") and query_size != key_size:
            raise ValueError(
                f"Attention: kind={kind!r} needs query_size == key_size, got query_size="
                f"{query_size} and key_size={key_size} (use kind='general' to project the query)"
            )
        if bias and kind not in _ADDITIVE_KINDS:
            raise ValueError(
                f"Attention: bias=True needs kind 'concat' or 'additive', got kind={kind!r}"
            )
        factory = {"device": device, "dtype": dtype}
        self.kind = kind
        self.query_size = query_size
        self.key_size = key_size
        self.value_size = value_size
        self.attn_size = attn_size if kind in _ADDITIVE_KINDS else None
        self.bias = bias
        self.backend = backend
        self.scale = 1.0 / math.sqrt(key_size) if kind == "scaled_dot" else 1.0

        if kind == "general":
            self.query_proj = nn.Linear(query_size, key_size, bias=False, **factory)
        elif kind in _ADDITIVE_KINDS:
            self.query_proj = nn.Linear(query_size, attn_size, bias=False, **factory)
            self.key_proj = nn.Linear(key_size, attn_size, bias=bias, **factory)
            self.v = nn.Parameter(torch.empty(attn_size, **factory))
            self._reset_v()

    def _reset_v(self) -> None:
        bound = 1.0 / math.sqrt(self.v.shape[0])  # torch.nn.Linear(A, 1) initialisation
        nn.init.uniform_(self.v, -bound, bound)

    def reset_parameters(self) -> None:
        """Re-draw every parameter (torch.nn.Linear initialisation)."""
        if self.kind == "general" or self.kind in _ADDITIVE_KINDS:
            self.query_proj.reset_parameters()
        if self.kind in _ADDITIVE_KINDS:
            self.key_proj.reset_parameters()
            self._reset_v()

    def extra_repr(self) -> str:
        s = f"{self.kind!r}, query_size={self.query_size}, key_size={self.key_size}"
        if self.value_size != self.key_size:
            s += f", value_size={self.value_size}"
        if self.attn_size is not None:
            s += f", attn_size={self.attn_size}"
        if self.bias:
            s += ", bias=True"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s

    def precompute(self, keys: Tensor, values: Tensor | None = None) -> AttentionMemory:
        """The encoder side, once per source batch: keys (B, S, key_size), values (B, S, value_size)
        (default: the keys). For concat / additive the keys are projected here (W_k k + b)."""
        if not isinstance(keys, Tensor) or keys.dim() != 3 or keys.shape[-1] != self.key_size:
            shape = tuple(keys.shape) if isinstance(keys, Tensor) else type(keys).__name__
            raise ValueError(
                f"Attention: keys must have shape (B, S, key_size) with key_size = "
                f"{self.key_size}, got {shape}"
            )
        if values is None:
            values = keys
        if (
            not isinstance(values, Tensor)
            or values.dim() != 3
            or values.shape[:2] != keys.shape[:2]
            or values.shape[-1] != self.value_size
        ):
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(
                f"Attention: values must have shape (B, S, value_size) = ({keys.shape[0]}, "
                f"{keys.shape[1]}, {self.value_size}) like keys, got {shape}"
            )
        if self.kind in _ADDITIVE_KINDS:
            keys = self.key_proj(keys)  # (B, S, A)
        return AttentionMemory(keys=keys, values=values)

    def forward(
        self,
        query: Tensor,
        memory: AttentionMemory | Tensor,
        lengths: Tensor | None = None,
        beam: int = 1,
        *,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from the queries to the memory.

        Args:
            query: (N, query_size) for one decoder step, or (N, T, query_size) for T target
                steps at once; N = B * beam, query row n reads source row n // beam.
            memory: an AttentionMemory from precompute, or raw keys (B, S, key_size) (then the
                values are the keys and precompute runs here).
            lengths: optional (B,) int32/int64 source lengths in [0, S]; positions s >= lengths[b]
                get no weight; a length-0 row gives zero context and zero weights.
            beam: query rows per source row.
            need_weights: return the attention weights (as torch.nn.MultiheadAttention). False
                returns None in their place, and the "triton" backend skips writing them.

        Returns:
            context (N, value_size) and weights (N, S) for a 2-D query; (N, T, value_size) and
            (N, T, S) for a 3-D query; weights None when need_weights is False.
        """
        if not isinstance(memory, AttentionMemory):
            memory = self.precompute(memory)
        if not isinstance(query, Tensor) or query.dim() not in (2, 3):
            shape = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
            raise ValueError(
                "Attention: query must be 2-D (N, query_size) or 3-D (N, T, query_size), "
                f"got {shape}"
            )
        if query.shape[-1] != self.query_size:
            raise ValueError(
                f"Attention: query must have query_size = {self.query_size} features in its "
                f"last dimension, got shape {tuple(query.shape)}"
            )
        if not isinstance(beam, numbers.Integral) or isinstance(beam, bool) or beam <= 0:
            raise ValueError(f"Attention: beam must be a positive integer, got {beam!r}")
        batch = memory.keys.shape[0]
        if query.shape[0] != batch * beam:
            raise ValueError(
                f"Attention: query has N = {query.shape[0]} rows, expected B * beam = "
                f"{batch} * {beam} = {batch * beam} (B = {batch} source rows in memory, "
                f"beam = {beam}; query row n reads source row n // beam)"
            )

        checks.check_bool("Attention", "need_weights", need_weights)
        flags = dict(backend=self.backend, need_weights=need_weights)
        if self.kind in ("dot", "scaled_dot"):
            return ops.dot_attention(
                query, memory.keys, memory.values, lengths, self.scale, **flags
            )
        if self.kind == "general":
            return ops.dot_attention(
                self.query_proj(query), memory.keys, memory.values, lengths, **flags
            )
        return ops.additive_attention(
            self.query_proj(query), memory.keys, self.v, memory.values, lengths, **flags
        )
