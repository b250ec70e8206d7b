"""Bahdanau et al. (2014), "Neural Machine Translation by Jointly Learning to Align and Translate".

One decoder step, from the previous state s_{i-1} (top layer) and the previous token y_{i-1}:

    c_i, a_i = attention(s_{i-1}, encoder states)        additive: v^T tanh(W_q s + W_k h)
    s_i      = GRU([E y_{i-1}; c_i], s_{i-1})             context fed into the GRU input
    t_i      = tanh(W_r [s_i; c_i; E y_{i-1}] + b_r)      readout (deep output)
    logits   = W_o t_i + b_o

The readout follows the paper's deep output layer t~_i = U_o s + V_o E y_{i-1} + C_o c_i with
tanh in place of the paper's maxout, from the new state s_i as most implementations use (Nematus,
JoeyNMT). In a stacked decoder the context enters the bottom layer and the query is the top
layer's state. W_k h is computed once per source batch (Seq2Seq.encode -> Attention.precompute).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.models.decoder import Decoder
from fast_s2s.models.state import DecoderState, EncoderState
from fast_s2s.nn import Attention

__all__ = ["BahdanauDecoder"]


class BahdanauDecoder(Decoder):
    """Attention from the previous decoder state, context into the GRU, readout from [s; c; e]."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        h, e = config.hidden_size, config.embed_size
        attention = Attention(config.score, h, h, attn_size=h, backend=config.backend)
        super().__init__(config, rnn_input_size=e + h, attention=attention)
        self.readout = nn.Linear(2 * h + e, h)

    def step(
        self,
        enc: EncoderState,
        state: DecoderState,
        embedded: Tensor,
        beam: int = 1,
        *,
        need_weights: bool = True,
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        context, weights = self.attention(
            state.hidden[-1], enc.memory, enc.src_lengths, beam=beam, need_weights=need_weights
        )  # (N, H), (N, S) or None
        hidden = self.rnn_step(torch.cat([embedded, context], dim=-1), state.hidden)
        readout = torch.tanh(self.readout(torch.cat([hidden[-1], context, embedded], dim=-1)))
        return self.dropout(readout), DecoderState(hidden, None, state.step + 1), weights
