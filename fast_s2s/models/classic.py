"""The classic encoder-decoder without attention: Sutskever et al. (2014), "Sequence to Sequence
Learning with Neural Networks", and Cho et al. (2014), "Learning Phrase Representations using
RNN Encoder-Decoder for Statistical Machine Translation".

The whole source is squeezed into one fixed vector c, the top encoder layer's final states
[h_fwd_final; h_bwd_final] (H features). The decoder starts from it (s_0 = tanh(W_b c), the
encoder bridge, as in Cho et al.) and, as in Cho et al., reads the same c at every step:

    s_i    = GRU([E y_{i-1}; c], s_{i-1})             c fed into the GRU input at every step
    t_i    = tanh(W_r [s_i; c; E y_{i-1}] + b_r)      readout (deep output)
    logits = W_o t_i + b_o

This is the Bahdanau decoder (bahdanau.py) with the attended context c_i replaced by the fixed
c: the same sizes and parameters except the attention's, so the two differ only in the
bottleneck. No attention op runs. Since no step depends on an attention read, teacher-forced
training runs the stacked GRU over the whole target in one fast_s2s.nn.GRU call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.models.decoder import Decoder
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["ClassicDecoder"]


class ClassicDecoder(Decoder):
    """GRU decoder reading the fixed context vector c at every step; ``attention`` is None."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        h, e = config.hidden_size, config.embed_size
        super().__init__(config, rnn_input_size=e + h, attention=None)
        self.readout = nn.Linear(2 * h + e, h)

    @staticmethod
    def _context(enc: EncoderState, beam: int) -> Tensor:
        if enc.context is None:
            raise ValueError("ClassicDecoder: the EncoderState has no context vector")
        return enc.context if beam == 1 else enc.context.repeat_interleave(beam, dim=0)

    def step(
        self,
        enc: EncoderState,
        state: DecoderState,
        embedded: Tensor,
        beam: int = 1,
        *,
        need_weights: bool = True,
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        context = self._context(enc, beam)  # (N, H): one small vector per row
        hidden = self.rnn_step(torch.cat([embedded, context], dim=-1), state.hidden)
        readout = torch.tanh(self.readout(torch.cat([hidden[-1], context, embedded], dim=-1)))
        new_state = DecoderState(hidden, None, state.step + 1)
        if not need_weights:
            return self.dropout(readout), new_state, None
        weights = embedded.new_zeros(embedded.shape[0], enc.states.shape[1])  # no attention
        return self.dropout(readout), new_state, weights

    def forward(self, enc: EncoderState, tgt_in: Tensor) -> Tensor:
        embedded = self.embed(tgt_in)  # (B, T, E)
        context = self._context(enc, 1).unsqueeze(1).expand(-1, tgt_in.shape[1], -1)
        top, _ = self.rnn(torch.cat([embedded, context], dim=-1), enc.hidden)  # (B, T, H)
        readout = torch.tanh(self.readout(torch.cat([top, context, embedded], dim=-1)))
        return self.project(self.dropout(readout))
