"""What every decoder shares: target embedding, stacked GRU, output layer, the step loop.

A decoder turns (encoder state, previous target token) into (logits, new state, attention
weights). Subclasses (bahdanau.py, luong.py, classic.py) define `step`, the wiring of one
decoder step; the teacher-forced `forward` here runs `step` over the target in a Python loop,
and LuongDecoder and ClassicDecoder override it with an all-steps-at-once version where the
wiring allows.

The stacked decoder GRU is one fast_s2s.nn.GRU (torch.nn.GRU parameters: weight_ih_l{k}, ...).
Step by step its layers run through the fused fast_s2s.ops.gru_cell on those same weights; over a
whole target (Luong without input feeding) the GRU module runs in one call (ops.gru_layer per
layer). Dropout between layers matches torch.nn.GRU's (training mode only, not after the top).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fast_s2s import ops
from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.models.state import DecoderState, EncoderState
from fast_s2s.nn import GRU, Attention

__all__ = ["Decoder"]


class Decoder(nn.Module):
    """Base class of the GRU decoders.

    Modules: ``embedding`` (tgt_vocab, E) with padding_idx=pad_id; ``rnn`` the stacked GRU
    (rnn_input_size -> H); ``attention`` (fast_s2s.nn.Attention, None for the classic decoder);
    ``out`` Linear(-> tgt_vocab)
    from the pre-output vector (H features, or E through the bias-free ``tie_proj`` when the
    embeddings are tied and E != H). With tie_embeddings, out.weight is embedding.weight, and
    the embedding is initialised N(0, E^-1/2) (the output scale of a Linear) instead of N(0, 1).
    """

    def __init__(
        self, config: Seq2SeqConfig, rnn_input_size: int, attention: Attention | None
    ) -> None:
        super().__init__()
        c = config
        self.config = c
        self.hidden_size = c.hidden_size
        self.num_layers = c.decoder_layers
        self.backend = c.backend
        self.embedding = nn.Embedding(c.tgt_vocab_size, c.embed_size, padding_idx=c.pad_id)
        self.dropout = nn.Dropout(c.dropout)
        self.rnn = GRU(
            rnn_input_size,
            c.hidden_size,
            num_layers=c.decoder_layers,
            batch_first=True,
            dropout=c.dropout if c.decoder_layers > 1 else 0.0,
            backend=c.backend,
        )
        self.attention = attention
        if c.tie_embeddings and c.embed_size != c.hidden_size:
            self.tie_proj: nn.Linear | None = nn.Linear(c.hidden_size, c.embed_size, bias=False)
        else:
            self.tie_proj = None
        out_features = c.embed_size if c.tie_embeddings else c.hidden_size
        self.out = nn.Linear(out_features, c.tgt_vocab_size)
        if c.tie_embeddings:
            nn.init.normal_(self.embedding.weight, std=c.embed_size**-0.5)
            with torch.no_grad():
                self.embedding.weight[c.pad_id].zero_()
            self.out.weight = self.embedding.weight

    # -- pieces --------------------------------------------------------------------------------

    def embed(self, tokens: Tensor) -> Tensor:
        """Embedded (and dropped-out) target tokens: (..., ) int64 -> (..., E)."""
        return self.dropout(self.embedding(tokens))

    def project(self, pre_output: Tensor) -> Tensor:
        """Logits (..., V) from the (already dropped-out) pre-output vector (..., H)."""
        if self.tie_proj is not None:
            pre_output = self.tie_proj(pre_output)
        return self.out(pre_output)

    def rnn_step(self, x: Tensor, hidden: Tensor) -> Tensor:
        """One step of the stacked GRU: x (N, I), hidden (L, N, H) -> new hidden (L, N, H)."""
        rnn = self.rnn
        new = []
        for layer in range(self.num_layers):
            if layer > 0 and rnn.dropout > 0 and self.training:
                x = F.dropout(x, p=rnn.dropout, training=True)
            x = self.cell_step(rnn, layer, x, hidden[layer])
            new.append(x)
        return new[0].unsqueeze(0) if len(new) == 1 else torch.stack(new)

    def cell_step(self, rnn: GRU, layer: int, x: Tensor, h: Tensor) -> Tensor:
        """Layer `layer` of `rnn` for one step, through the fused gru_cell on its weights:
        x (N, I), h (N, H) -> the new h (N, H)."""
        return ops.gru_cell(
            x,
            h,
            getattr(rnn, f"weight_ih_l{layer}"),
            getattr(rnn, f"weight_hh_l{layer}"),
            getattr(rnn, f"bias_ih_l{layer}"),
            getattr(rnn, f"bias_hh_l{layer}"),
            backend=self.backend,
        )

    # -- the decoder interface -----------------------------------------------------------------

    def initial_state(self, enc: EncoderState, beam: int = 1) -> DecoderState:
        """The state before the first target token, for N = B * beam rows (row n: sentence
        n // beam). Only the small decoder hidden is repeated, never the encoder states."""
        hidden = enc.hidden if beam == 1 else enc.hidden.repeat_interleave(beam, dim=1)
        return DecoderState(hidden, None)

    def step(
        self,
        enc: EncoderState,
        state: DecoderState,
        embedded: Tensor,
        beam: int = 1,
        *,
        need_weights: bool = True,
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoder step for N = B * beam rows.

        Args:
            enc: the encoder state (B rows).
            state: the decoder state (N rows).
            embedded: (N, E) the embedded previous target tokens (self.embed).
            beam: rows per sentence.
            need_weights: return the attention weights; False returns None in their place, so
                the attention op can skip writing them (teacher-forced training discards them).

        Returns:
            pre_output (N, H) (dropped out; self.project gives the logits), the new state (its
            step: state.step + 1) and the attention weights (N, S) (all zeros without
            attention), or None.
        """
        raise NotImplementedError

    def forward(self, enc: EncoderState, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, V) for target inputs tgt_in (B, T): `step` in a loop over
        the T positions (batched over B), then one output projection for all of them."""
        embedded = self.embed(tgt_in)  # (B, T, E), once for all steps
        state = self.initial_state(enc)
        outputs = []
        for t in range(tgt_in.shape[1]):
            pre_output, state, _ = self.step(enc, state, embedded[:, t], need_weights=False)
            outputs.append(pre_output)
        if not outputs:
            return embedded.new_zeros(tgt_in.shape[0], 0, self.out.out_features)
        return self.project(torch.stack(outputs, dim=1))
