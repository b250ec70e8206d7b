"""Attention over encoder states: Luong (2015) dot / general / concat and local-m / local-p,
scaled dot, Bahdanau (2014).

Every kind is one fused op per decoder step. The key side of the score (the projection of the
encoder states for concat and additive) is computed once per source batch by `precompute`, so
the per-step cost is the query side only:

    kind        score(q, k)                                   op
    dot         q . k                                         dot_attention
    scaled_dot  q . k / sqrt(d)                               dot_attention(scale=1/sqrt(d))
    general     q^T W_a k = (W_a^T q) . k                     query projection + dot_attention
    concat      v_a^T tanh(W_a [q; k]) = v^T tanh(W_q q + W_k k)        additive_attention
    additive    v^T tanh(W_q s + W_k h + b)                   additive_attention
    local_m     dot / general in a window around p_t = t      local_attention
    local_p     dot / general in a window around p_t =        local_attention
                L_b * sigmoid(v_p . tanh(W_p h_t))

weights = softmax over the valid source positions (s < lengths[b]) of the scores;
context = sum_s weights[s] * values[s]. The local kinds (Luong et al. 2015, section 3.2) take the
softmax over the window |s - p_t| <= D only and multiply it by a Gaussian exp(-(s - p_t)^2 /
(2 sigma^2)), sigma = D / 2 (fast_s2s.ops.local_attention). Beam search: N = B * beam query rows,
row n reads source row n // beam, without copying the memory.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor, nn

from fast_s2s import checks, ops

__all__ = [
    "ATTENTION_KINDS",
    "GLOBAL_ATTENTION_KINDS",
    "LOCAL_ATTENTION_KINDS",
    "LOCAL_SCORES",
    "Attention",
    "AttentionMemory",
]

# Global attention reads every source position; local attention a window of 2 * window + 1.
GLOBAL_ATTENTION_KINDS = ("dot", "scaled_dot", "general", "concat", "additive")
LOCAL_ATTENTION_KINDS = ("local_m", "local_p")
ATTENTION_KINDS = GLOBAL_ATTENTION_KINDS + LOCAL_ATTENTION_KINDS
# The scores of the local kinds (Luong et al. use general for local-p).
LOCAL_SCORES = ("dot", "general")
DEFAULT_WINDOW = 10  # D of Luong et al. (2015)
_DOT_KINDS = ("dot", "scaled_dot", "general")
_ADDITIVE_KINDS = ("concat", "additive")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class AttentionMemory(NamedTuple):
    """The encoder side of attention, computed once per source batch by Attention.precompute.

    keys: (B, S, key_size) raw keys for dot / scaled_dot / general / local_m / local_p;
        (B, S, attn_size) projected keys W_k k (+ b) for concat / additive.
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
    - ``local_m`` (Luong et al. 2015, local attention, monotonic): the score ``score`` ("dot" or
      "general", as the kinds of those names) over the 2 * window + 1 source positions s with
      |s - p_t| <= window only, softmax over that window, times the Gaussian exp(-(s - p_t)^2
      / (2 sigma^2)), sigma = window / 2 (not renormalised, as in the paper). p_t = t, the
      decoder step index, which forward takes as ``step``.
    - ``local_p`` (local attention, predictive): the same window and Gaussian around the
      predicted position p_t = L_b * sigmoid(v_p . tanh(W_p h_t)) for query h_t, with W_p =
      ``position_proj`` (Linear(query_size -> position_size, bias=False)) and v_p =
      ``position_v`` (position_size,). L_b is the source length of the query's row (lengths[b],
      or S when forward gets no lengths): the paper's S is the length of the source sentence,
      and in a padded batch the row's own length is that, not the padded width. p_t is real
      (in [0, L_b]); its gradient flows through the Gaussian into W_p, v_p and the query.

    Local attention clamps nothing: a centre whose window holds no valid position (local_m
    with t > L_b - 1 + window, a length-0 row) gives zero context and zero weights.

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
        score: local_m / local_p only: "dot" (q . k, needs query_size == key_size) or "general"
            (q^T W_a k); default "dot". The global kinds are their own score (None).
        window: local_m / local_p only: D >= 0, the half-width of the window (2D + 1
            positions); default 10 as in the paper. sigma = D / 2.
        position_size: local_p only: the rows of W_p (its hidden size); default query_size.
        backend: "auto", "reference", "cpp" or "triton", passed to the fast_s2s.ops call.
        device, dtype: of the parameters.

    Parameters: ``query_proj`` (general, concat, additive, and local_m / local_p with
    score="general": the same W_a^T as general), ``key_proj`` and ``v`` (A,) (concat, additive),
    ``position_proj`` (W_p) and ``position_v`` (v_p, (position_size,)) (local_p), initialised as
    torch.nn.Linear (v and position_v as a Linear(A -> 1) weight).

    Example::

        att = Attention("local_p", query_size=256, key_size=256, score="general", window=10)
        memory = att.precompute(encoder_states)                  # (B, S, 256), once
        context, weights = att(h_t, memory, lengths=src_lengths)  # (N, 256), (N, S)
        att_m = Attention("local_m", 256, 256)                   # dot score, window 10
        context, _ = att_m(h_t, memory, src_lengths, step=t)     # p_t = t
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
        score: str | None = None,
        window: int | None = None,
        position_size: int | None = None,
        backend: str = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"Attention: kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        checks.check_backend("Attention", backend)
        local = kind in LOCAL_ATTENTION_KINDS
        for name, value in (("score", score), ("window", window)):
            if value is not None and not local:
                raise ValueError(
                    f"Attention: {name} is an option of the local kinds {LOCAL_ATTENTION_KINDS}; "
                    f"kind={kind!r} does not take it, got {name}={value!r}"
                )
        if position_size is not None and kind != "local_p":
            raise ValueError(
                f"Attention: position_size is the hidden size of local_p's W_p; kind={kind!r} "
                f"does not take it, got position_size={position_size!r}"
            )
        if local:
            score = "dot" if score is None else score
            if score not in LOCAL_SCORES:
                raise ValueError(
                    f"Attention: score must be one of {LOCAL_SCORES} for kind={kind!r}, "
                    f"got {score!r}"
                )
            window = DEFAULT_WINDOW if window is None else window
            if not _is_int(window) or window < 0:
                raise ValueError(
                    f"Attention: window must be a non-negative integer (D, the window is 2D + 1 "
                    f"positions), got {window!r}"
                )
            window = int(window)
        value_size = key_size if value_size is None else value_size
        attn_size = key_size if attn_size is None else attn_size
        sizes = [
            ("query_size", query_size),
            ("key_size", key_size),
            ("value_size", value_size),
            ("attn_size", attn_size),
        ]
        if kind == "local_p":
            position_size = query_size if position_size is None else position_size
            sizes.append(("position_size", position_size))
        for name, size in sizes:
            if not _is_int(size) or size <= 0:
                raise ValueError(f"Attention: {name} must be a positive integer, got {size!r}")
        if (kind in ("dot", "scaled_dot") or (local and score == "dot")) and (
            query_size != key_size
        ):
            what = f"kind={kind!r}" + (" with score='dot'" if local else "")
            fix = "score='general'" if local else "kind='general'"
            raise ValueError(
                f"Attention: {what} needs query_size == key_size, got query_size="
                f"{query_size} and key_size={key_size} (use {fix} to project the query)"
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
        # local kinds: "dot" / "general"; global kinds: None (the kind is the score)
        self.score = score if local else None
        self.window = window if local else None
        self.position_size = position_size if kind == "local_p" else None

        if kind == "general" or self.score == "general":
            self.query_proj = nn.Linear(query_size, key_size, bias=False, **factory)
        elif kind in _ADDITIVE_KINDS:
            self.query_proj = nn.Linear(query_size, attn_size, bias=False, **factory)
            self.key_proj = nn.Linear(key_size, attn_size, bias=bias, **factory)
            self.v = nn.Parameter(torch.empty(attn_size, **factory))
            self._reset_v(self.v)
        if kind == "local_p":
            self.position_proj = nn.Linear(query_size, position_size, bias=False, **factory)
            self.position_v = nn.Parameter(torch.empty(position_size, **factory))
            self._reset_v(self.position_v)

    @staticmethod
    def _reset_v(v: Tensor) -> None:
        bound = 1.0 / math.sqrt(v.shape[0])  # torch.nn.Linear(A, 1) initialisation
        nn.init.uniform_(v, -bound, bound)

    def reset_parameters(self) -> None:
        """Re-draw every parameter (torch.nn.Linear initialisation)."""
        if hasattr(self, "query_proj"):
            self.query_proj.reset_parameters()
        if self.kind in _ADDITIVE_KINDS:
            self.key_proj.reset_parameters()
            self._reset_v(self.v)
        if self.kind == "local_p":
            self.position_proj.reset_parameters()
            self._reset_v(self.position_v)

    def extra_repr(self) -> str:
        s = f"{self.kind!r}, query_size={self.query_size}, key_size={self.key_size}"
        if self.value_size != self.key_size:
            s += f", value_size={self.value_size}"
        if self.attn_size is not None:
            s += f", attn_size={self.attn_size}"
        if self.bias:
            s += ", bias=True"
        if self.score is not None:
            s += f", score={self.score!r}, window={self.window}"
        if self.position_size is not None and self.position_size != self.query_size:
            s += f", position_size={self.position_size}"
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
        step: int | Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from the queries to the memory.

        Args:
            query: (N, query_size) for one decoder step, or (N, T, query_size) for T target
                steps at once; N = B * beam, query row n reads source row n // beam.
            memory: an AttentionMemory from precompute, or raw keys (B, S, key_size) (then the
                values are the keys and precompute runs here).
            lengths: optional (B,) int32/int64 source lengths in [0, S]; positions s >= lengths[b]
                get no weight; a length-0 row gives zero context and zero weights. local_p
                scales its predicted position by them (L_b = lengths[n // beam], S without).
            beam: query rows per source row.
            step: local_m only (required there, refused by the other kinds): the decoder step
                index t of the query, the centre p_t = t of its window. A non-negative int, or
                a tensor (real or integer dtype) of shape () or (1,) (every row) or (N,) (per
                row). A 3-D query's T positions are the steps step, step + 1, ..., step + T - 1
                (teacher forcing from the start: step=0). Centres past the source are not
                clamped (their windows are empty or partial).
            need_weights: return the attention weights (as torch.nn.MultiheadAttention). False
                returns None in their place, and the "triton" backend skips writing them (and
                the local kinds' kernels the whole (N, T, S) output).

        Returns:
            context (N, value_size) and weights (N, S) for a 2-D query; (N, T, value_size) and
            (N, T, S) for a 3-D query; weights None when need_weights is False. The local
            kinds' weights are zero outside the window.
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
        if not _is_int(beam) or beam <= 0:
            raise ValueError(f"Attention: beam must be a positive integer, got {beam!r}")
        batch = memory.keys.shape[0]
        if query.shape[0] != batch * beam:
            raise ValueError(
                f"Attention: query has N = {query.shape[0]} rows, expected B * beam = "
                f"{batch} * {beam} = {batch * beam} (B = {batch} source rows in memory, "
                f"beam = {beam}; query row n reads source row n // beam)"
            )
        if step is not None and self.kind != "local_m":
            raise ValueError(
                f"Attention: step is the decoder step of kind 'local_m' (its window's centre); "
                f"kind={self.kind!r} does not take it"
            )

        checks.check_bool("Attention", "need_weights", need_weights)
        flags = dict(backend=self.backend, need_weights=need_weights)
        if self.kind in LOCAL_ATTENTION_KINDS:
            checks.check_lengths(
                "Attention", lengths, batch, memory.keys.shape[1], "S", query, "query"
            )
            centers = self.centers(query, memory.keys.shape[1], lengths, beam, step)
            scored = self.query_proj(query) if self.score == "general" else query
            return ops.local_attention(
                scored, memory.keys, memory.values, centers, self.window, lengths, **flags
            )
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

    def centers(
        self,
        query: Tensor,
        src_len: int,
        lengths: Tensor | None = None,
        beam: int = 1,
        step: int | Tensor | None = None,
    ) -> Tensor:
        """The aligned positions p_t of the local kinds: (N,) for a 2-D query (N, query_size),
        (N, T) for a 3-D one; float32 (float64 for a float64 query), on the query's device.

        local_m: p = step (+ 0 .. T - 1 along a 3-D query). local_p: p = L_b * sigmoid(v_p .
        tanh(W_p q)), L_b = lengths[n // beam] (src_len, the S of the memory, without lengths),
        differentiable in W_p, v_p and the query.
        """
        if self.kind not in LOCAL_ATTENTION_KINDS:
            raise ValueError(f"Attention: kind={self.kind!r} has no window centres")
        dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
        device = query.device
        rows = query.shape[0]
        if self.kind == "local_m":
            if step is None:
                raise ValueError(
                    "Attention: kind='local_m' needs step=, the decoder step index t (its window "
                    "is centred on p_t = t); pass step=0 for a whole teacher-forced target"
                )
            base = self._step_tensor(step, rows, device, dtype)  # (N,)
            if query.dim() == 2:
                return base
            return base[:, None] + torch.arange(query.shape[1], device=device, dtype=dtype)
        # local_p
        predicted = torch.tanh(self.position_proj(query)) @ self.position_v  # (N,) / (N, T)
        fraction = torch.sigmoid(predicted.to(dtype))
        if lengths is None:
            return fraction * src_len
        row_len = lengths.to(device=device, dtype=dtype)
        if beam > 1:
            row_len = row_len.repeat_interleave(beam)
        return fraction * (row_len if query.dim() == 2 else row_len[:, None])

    @staticmethod
    def _step_tensor(
        step: int | Tensor, rows: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """step (an int >= 0, or a () / (1,) / (N,) tensor) as an (N,) tensor."""
        if isinstance(step, Tensor):
            if (
                step.is_complex()
                or step.dtype == torch.bool
                or step.dim() > 1
                or (step.dim() == 1 and step.shape[0] not in (1, rows))
            ):
                raise ValueError(
                    f"Attention: step must be an int or a real tensor of shape (), (1,) or "
                    f"(N,) = ({rows},), got dtype {step.dtype} and shape {tuple(step.shape)}"
                )
            return step.to(device=device, dtype=dtype).reshape(-1).expand(rows)
        if not _is_int(step) or step < 0:
            raise ValueError(
                f"Attention: step must be a non-negative int (the decoder step index) or a "
                f"tensor, got {step!r}"
            )
        return torch.full((rows,), float(step), device=device, dtype=dtype)
