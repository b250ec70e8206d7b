"""The state the decoder carries: EncoderState (once per source batch) and DecoderState (per step).

Both are NamedTuples of tensors. Beam search never copies the encoder side: EncoderState keeps
B rows, and a DecoderState for N = B * beam rows reads source row n // beam through the
beam-row form of the attention ops.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from fast_s2s.nn import AttentionMemory

__all__ = ["DecoderState", "EncoderState"]


class EncoderState(NamedTuple):
    """What Seq2Seq.encode computes once per source batch (B rows, never repeated per beam).

    states: (B, S, H) encoder outputs (forward and backward directions concatenated; zeros at
        padded positions).
    memory: the attention memory from Attention.precompute(states): keys projected once here
        (for the additive / concat scores), values = states. None for a model without
        attention (config.attention="none").
    hidden: (config.decoder_state_layers, B, H) initial decoder state, tanh(W [h_fwd_final;
        h_bwd_final]): the stacked GRU's layers, then the post-attention GRU's row.
    src_lengths: (B,) int64 source lengths, on the device of the states.
    context: (B, H) the top encoder layer's final states [h_fwd_final; h_bwd_final], the fixed
        context vector a classic decoder reads at every step (None when not computed).
    """

    states: Tensor
    memory: AttentionMemory | None
    hidden: Tensor
    src_lengths: Tensor
    context: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.states.shape[0]


class DecoderState(NamedTuple):
    """The decoder state of N rows (N = B * beam; row n belongs to sentence n // beam).

    hidden: (config.decoder_state_layers, N, H) GRU states: the stacked layers, then the
        post-attention GRU (config.post_attention_gru).
    feed: (N, H) the previous attentional state h~ (Luong input feeding), else None.
    step: the decoder steps taken so far, the target position t of the next step (0 before the
        first): an int for every row, or an (N,) / (1,) tensor (a CUDA graph's step counter).
        Every decoder step returns step + 1; local-m attention centres its window on it.
    """

    hidden: Tensor
    feed: Tensor | None = None
    step: int | Tensor = 0

    def index_select(self, index: Tensor) -> DecoderState:
        """The rows `index` (N',) of this state (beam search reordering)."""
        step = self.step
        if isinstance(step, Tensor) and step.dim() == 1 and step.shape[0] > 1:
            step = step.index_select(0, index)
        return DecoderState(
            self.hidden.index_select(1, index),
            None if self.feed is None else self.feed.index_select(0, index),
            step,
        )
