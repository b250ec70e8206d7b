"""The native engine: the whole search of a CPU model in two C++ op calls, the encoder
(torch.ops.fast_s2s.encode, native_encoder.py) and the search (torch.ops.fast_s2s.decode_beam,
csrc/cpu/native_search.cpp; greedy decoding is its beam 1), with no Python per token. The op
reads the length penalty from the options' tables (rules.LengthTables) and returns the search's
Trace; python_loop.py is the reference it is held to token for token.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s.models.decoding import native_encoder, native_params
from fast_s2s.models.decoding.result import Trace
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import EncoderState

__all__ = ["NativeLoop"]


class NativeLoop:
    """The C++ loop for models on the CPU whose decoder ops resolve to the cpp backend."""

    name = "native"

    def unavailable(self, model: Seq2Seq) -> str | None:
        return native_params.unavailable(model)

    def encode(self, model: Seq2Seq, src: Tensor, src_lengths: Tensor) -> EncoderState:
        if native_encoder.unavailable(model) is None:
            return native_encoder.encode(model, src, src_lengths)
        return model.encode(src, src_lengths)

    def run(self, model: Seq2Seq, encoded: EncoderState, spec: SearchOptions) -> Trace:
        # The op packs the weights it multiplies once per call: no frozen_weights scope.
        keys, values, context, lengths = native_params.memory(encoded)
        tables, limits = spec.tables, None
        if spec.max_len_ratio is not None:  # each sentence's own limit
            limits = torch.tensor(spec.sentence_max_lens(lengths.tolist()), dtype=torch.int64)
        tokens, parents, finish_scores, attention = torch.ops.fast_s2s.decode_beam(
            *native_params.pack(model), keys, values, context, lengths, encoded.hidden,
            beam=spec.beam, max_len=spec.max_len, min_len=spec.min_len, n_best=spec.n_best,
            finish_lp=tables.finish_tensor, reach_lp=tables.reach_tensor,
            max_lens=limits,
        )  # fmt: skip
        return Trace(tokens, parents, finish_scores, attention)
