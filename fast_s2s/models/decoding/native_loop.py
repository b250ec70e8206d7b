"""The native engine: the whole search of a CPU model in C++, with no Python per token: the
encoder (torch.ops.fast_s2s.encode, native_encoder.py) and the search (torch.ops.fast_s2s.
decode_beam, csrc/cpu/native_search.cpp; greedy decoding is its beam 1), or both and the
assembly of the hypotheses in one call (torch.ops.fast_s2s.search, `search` here), which the
searches run where the native encoder can. The ops read the length penalty from the options'
tables (rules.LengthTables); decode_beam returns the search's Trace. python_loop.py is the
reference they are held to token for token.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s.models.decoding import native_encoder, native_params
from fast_s2s.models.decoding.native_plan import NativePlan, plan_for
from fast_s2s.models.decoding.result import Hypothesis, Trace, ranked_hypotheses
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import EncoderState

__all__ = ["NativeLoop"]


class NativeLoop:
    """The C++ loop for models on the CPU whose decoder ops resolve to the cpp backend."""

    name = "native"

    def unavailable(self, model: Seq2Seq) -> str | None:
        return plan_for(model).decoder_unavailable

    def encode(self, model: Seq2Seq, src: Tensor, src_lengths: Tensor) -> EncoderState:
        if native_encoder.unavailable(model) is None:
            return native_encoder.encode(model, src, src_lengths)
        return model.encode(src, src_lengths)

    def run(self, model: Seq2Seq, encoded: EncoderState, spec: SearchOptions) -> Trace:
        # The op packs the weights it multiplies once per call: no frozen_weights scope.
        keys, values, context, lengths = native_params.memory(encoded)
        tables = spec.tables
        tokens, parents, finish_scores, attention = torch.ops.fast_s2s.decode_beam(
            *native_params.pack(model), keys, values, context, lengths, encoded.hidden,
            beam=spec.beam, max_len=spec.max_len, min_len=spec.min_len, n_best=spec.n_best,
            finish_lp=tables.finish_tensor, reach_lp=tables.reach_tensor,
            max_lens=_sentence_limits(spec, lengths.tolist()),
        )  # fmt: skip
        return Trace(tokens, parents, finish_scores, attention)

    def search(
        self, model: Seq2Seq, src: Tensor, src_lengths: Tensor, spec: SearchOptions,
        plan: NativePlan,
    ) -> list[list[Hypothesis]]:  # fmt: skip
        """encode, run and result.assemble in one op call, for a model whose plan says the
        native encoder runs it; in eval mode and without gradients (the front's context)."""
        src, src_lengths = model.encoder_inputs(src, src_lengths)
        lengths = src_lengths.tolist()
        tables = spec.tables
        assembled = torch.ops.fast_s2s.search(
            *plan.encoder_args(model), src, src_lengths, *plan.decoder_args(model),
            beam=spec.beam, max_len=spec.max_len, min_len=spec.min_len, n_best=spec.n_best,
            finish_lp=tables.finish_tensor, reach_lp=tables.reach_tensor,
            max_lens=_sentence_limits(spec, lengths),
        )  # fmt: skip
        return ranked_hypotheses(assembled, lengths)


def _sentence_limits(spec: SearchOptions, lengths: list[int]) -> Tensor | None:
    """Each sentence's own output limit where the options bound outputs by their sources."""
    if spec.max_len_ratio is None:
        return None
    return torch.tensor(spec.sentence_max_lens(lengths), dtype=torch.int64)
