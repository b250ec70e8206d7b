"""The encoder: embedding, bidirectional multi-layer fast_s2s.nn.GRU, bridge to the decoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.nn import GRU

__all__ = ["Encoder"]


class Encoder(nn.Module):
    """Embedding (padding_idx=pad_id) -> dropout -> bidirectional GRU over the padded batch.

    The GRU has hidden_size // 2 units per direction, so the states have hidden_size features.
    Padded batches run through fast_s2s.nn.GRU(lengths=...): packed-sequence semantics, each
    row's backward direction starts at its own last token, padded positions output zeros.

    The initial decoder state (Bahdanau et al. 2014 use tanh(W_s h_1_backward)) is
    tanh(bridge([h_fwd_final; h_bwd_final])) of the top encoder layer, one H-sized slice per
    decoder layer.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        c = config
        self.embedding = nn.Embedding(c.src_vocab_size, c.embed_size, padding_idx=c.pad_id)
        self.dropout = nn.Dropout(c.dropout)
        self.rnn = GRU(
            c.embed_size,
            c.hidden_size // 2,
            num_layers=c.encoder_layers,
            batch_first=True,
            dropout=c.dropout if c.encoder_layers > 1 else 0.0,
            bidirectional=True,
            backend=c.backend,
        )
        self.decoder_layers = c.decoder_layers
        self.hidden_size = c.hidden_size
        self.bridge = nn.Linear(c.hidden_size, c.decoder_layers * c.hidden_size)

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) int64, src_lengths (B,) -> states (B, S, H), decoder hidden (L_dec, B, H)."""
        x = self.dropout(self.embedding(src))
        states, h_n = self.rnn(x, lengths=src_lengths)  # (B, S, H), (2 * L_enc, B, H / 2)
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # top layer, forward and backward
        hidden = torch.tanh(self.bridge(final))  # (B, L_dec * H)
        batch = src.shape[0]
        hidden = hidden.view(batch, self.decoder_layers, self.hidden_size).transpose(0, 1)
        return states, hidden.contiguous()
