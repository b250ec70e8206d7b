"""Luong et al. (2015), "Effective Approaches to Attention-based Neural Machine Translation".

One decoder step, GRU first, then attention from the new state h_t (top layer):

    h_t       = GRU(E y_{t-1}, h_{t-1})            (input feeding: GRU([E y_{t-1}; h~_{t-1}], ...))
    c_t, a_t  = attention(h_t, encoder states)     dot / general / concat, global or local
    h~_t      = tanh(W_c [c_t; h_t])               attentional hidden state (W_c without bias)
    logits    = W_s h~_t + b_s

Without input feeding, no step depends on the previous step's attention, so teacher-forced
training runs the stacked decoder GRU over the whole target in one fast_s2s.nn.GRU call and
then ONE attention call with a 3-D query (B, T, H). With input feeding the steps are a loop.

With config.post_attention_gru, one more GRU layer runs over the attentional states and its
output is projected instead (Chen et al. 2018, RNMT+, feed the context into every decoder layer
above the one that queries the attention):

    s_t       = GRU_post(h~_t, s_{t-1})             logits = W_s s_t + b_s

It carries what the earlier steps read to the later ones, as input feeding does, without making
h_t depend on the previous step: teacher-forced training stays one GRU call, one attention call
and one more GRU call over all T positions.

Local attention (config.local "m" or "p", section 3.2 of the paper) replaces the global read by
a window of 2D + 1 source positions around p_t (fast_s2s.nn.Attention kinds local_m / local_p,
score dot or general, D = config.window). local-m centres it on the target position t: the
decoder step index, which DecoderState.step carries (0 before the first token; the 3-D
teacher-forced call uses t = 0 .. T-1). local-p predicts p_t from h_t.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.models.decoder import Decoder
from fast_s2s.models.state import DecoderState, EncoderState
from fast_s2s.nn import GRU, Attention

__all__ = ["LuongDecoder"]


class LuongDecoder(Decoder):
    """GRU, then attention from the new state, h~ = tanh(W_c [c; h]), logits = W_s h~; with
    config.post_attention_gru, s = post_rnn(h~, s) (a one-layer fast_s2s.nn.GRU, H -> H) and
    logits = W_s s."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        h, e = config.hidden_size, config.embed_size
        if config.local != "none":
            attention = Attention(
                f"local_{config.local}",
                h,
                h,
                score=config.score,
                window=config.window,
                backend=config.backend,
            )
        else:
            attn_size = h if config.score == "concat" else None
            attention = Attention(config.score, h, h, attn_size=attn_size, backend=config.backend)
        self.monotonic = config.local == "m"  # local-m: the attention reads the step index
        self.input_feeding = config.input_feeding
        rnn_input = e + h if config.input_feeding else e
        super().__init__(config, rnn_input_size=rnn_input, attention=attention)
        self.combine = nn.Linear(2 * h, h, bias=False)  # W_c
        self.post_rnn: GRU | None = None
        if config.post_attention_gru:
            self.post_rnn = GRU(h, h, batch_first=True, backend=config.backend)

    def initial_state(self, enc: EncoderState, beam: int = 1) -> DecoderState:
        state = super().initial_state(enc, beam)
        if not self.input_feeding:
            return state
        feed = state.hidden.new_zeros(state.hidden.shape[1], self.hidden_size)
        return DecoderState(state.hidden, feed, state.step)

    def _attend(
        self,
        enc: EncoderState,
        top: Tensor,
        beam: int,
        need_weights: bool = True,
        step: int | Tensor = 0,
    ) -> tuple[Tensor, Tensor | None]:
        """Attention from top (N, H) or (N, T, H), whose first row is at decoder step `step`."""
        where = {"step": step} if self.monotonic else {}
        context, weights = self.attention(
            top, enc.memory, enc.src_lengths, beam=beam, need_weights=need_weights, **where
        )
        attentional = torch.tanh(self.combine(torch.cat([context, top], dim=-1)))
        return self.dropout(attentional), weights

    def step(
        self,
        enc: EncoderState,
        state: DecoderState,
        embedded: Tensor,
        beam: int = 1,
        *,
        need_weights: bool = True,
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        x = torch.cat([embedded, state.feed], dim=-1) if self.input_feeding else embedded
        hidden = self.rnn_step(x, state.hidden)  # the stacked GRU's rows
        top = hidden[self.num_layers - 1]
        attentional, weights = self._attend(enc, top, beam, need_weights, state.step)
        feed = attentional if self.input_feeding else None
        pre_output = attentional
        if self.post_rnn is not None:
            post = self.cell_step(self.post_rnn, 0, attentional, state.hidden[self.num_layers])
            hidden = torch.cat([hidden, post.unsqueeze(0)])
            pre_output = self.dropout(post)
        return pre_output, DecoderState(hidden, feed, state.step + 1), weights

    def forward(self, enc: EncoderState, tgt_in: Tensor) -> Tensor:
        if self.input_feeding:
            return super().forward(enc, tgt_in)
        embedded = self.embed(tgt_in)  # (B, T, E)
        layers = self.num_layers
        # (B, T, H): every target step in one call
        top, _ = self.rnn(embedded, enc.hidden[:layers])
        # One attention call, 3-D query; training never reads the weights.
        attentional, _ = self._attend(enc, top, beam=1, need_weights=False, step=0)
        if self.post_rnn is not None:
            post, _ = self.post_rnn(attentional, enc.hidden[layers:])
            attentional = self.dropout(post)
        return self.project(attentional)
