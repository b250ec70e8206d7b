"""The protocol every search engine follows: it runs a search's steps and records them (a
Trace); the options are checked (spec.py), the hypotheses ranked and assembled (result.py) and
the model's mode set (api.py) elsewhere. No engine imports another."""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from fast_s2s.models.decoding.result import Trace
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import EncoderState

__all__ = ["Engine"]


class Engine(Protocol):
    """name: what decode_path reports for it ("python", "native", "cuda-graph")."""

    name: str

    def unavailable(self, model: Seq2Seq) -> str | None:
        """None when this engine can decode `model`, else why not (one sentence)."""
        ...

    def encode(self, model: Seq2Seq, src: Tensor, src_lengths: Tensor) -> EncoderState:
        """The encoder pass the engine's search starts from (Seq2Seq.encode's result)."""
        ...

    def run(self, model: Seq2Seq, encoded: EncoderState, spec: SearchOptions) -> Trace:
        """The search's steps, in eval mode and without gradients (the front's context)."""
        ...
