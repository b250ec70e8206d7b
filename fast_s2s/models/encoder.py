"""The encoder: embedding (or frame projection), bidirectional multi-layer fast_s2s.nn.GRU,
bridge to the decoder."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.nn import GRU

__all__ = ["Encoder", "EncoderOutput"]


class EncoderOutput(NamedTuple):
    """What Encoder.forward returns.

    states: (B, S, H) top-layer outputs, forward and backward directions concatenated.
    hidden: (config.decoder_state_layers, B, H) the initial decoder state.
    final: (B, H) the top layer's final states [h_fwd_final; h_bwd_final]: the fixed-size summary
        of the whole source that a classic (attention-free) decoder reads at every step.
    """

    states: Tensor
    hidden: Tensor
    final: Tensor


class Encoder(nn.Module):
    """Input layer -> dropout -> bidirectional GRU over the padded batch.

    The input layer is ``embedding`` (nn.Embedding, padding_idx=pad_id) for source="tokens", or
    ``frame_proj`` (nn.Linear(frame_size -> embed_size)) for source="frames": (B, T, F) float
    feature vectors (speech features, sensor frames, ...) in place of embedded tokens.

    The GRU has hidden_size // 2 units per direction, so the states have hidden_size features.
    Padded batches run through fast_s2s.nn.GRU(lengths=...): packed-sequence semantics, each
    row's backward direction starts at its own last position, padded positions output zeros
    (whatever the padded frames hold).

    The initial decoder state (Bahdanau et al. 2014 use tanh(W_s h_1_backward)) is
    tanh(bridge([h_fwd_final; h_bwd_final])) of the top encoder layer, one H-sized slice per
    row of the decoder state (its layers, and the post-attention GRU where the config has one).
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        c = config
        self.source = c.source
        if c.source == "frames":
            self.frame_proj = nn.Linear(c.frame_size, c.embed_size)
        else:
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
        self.decoder_state_layers = c.decoder_state_layers  # an H-sized slice of the bridge each
        self.hidden_size = c.hidden_size
        self.bridge = nn.Linear(c.hidden_size, c.decoder_state_layers * c.hidden_size)

    def embed(self, src: Tensor) -> Tensor:
        """The GRU input (B, S, E): embedded token ids (B, S), or projected frames (B, T, F)."""
        if self.source == "frames":
            weight = self.frame_proj.weight
            return self.dropout(self.frame_proj(src.to(weight.dtype)))
        return self.dropout(self.embedding(src))

    def forward(self, src: Tensor, src_lengths: Tensor) -> EncoderOutput:
        """src (B, S) int64 ids or (B, S, F) frames, src_lengths (B,) -> EncoderOutput."""
        states, h_n = self.rnn(self.embed(src), lengths=src_lengths)  # (2 * L_enc, B, H / 2)
        final = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # top layer, forward and backward
        hidden = torch.tanh(self.bridge(final))  # (B, L_dec * H)
        batch = src.shape[0]
        hidden = hidden.view(batch, self.decoder_state_layers, self.hidden_size).transpose(0, 1)
        return EncoderOutput(states, hidden.contiguous(), final)
