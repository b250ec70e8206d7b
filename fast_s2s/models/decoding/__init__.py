"""Decoding: greedy and beam search over a Seq2Seq model as one subsystem: a spec (spec.py),
the rules (rules.py), one result (result.py) and engines behind one protocol (engine.py):
python_loop.py (the reference), native_loop.py (C++), static_loop.py (CUDA graphs). Greedy is
beam 1 everywhere. The map and how to add an option: docs/DESIGN.md, "Decoding".
"""

from fast_s2s.models.decoding.api import (
    beam_search,
    decode_path,
    greedy_decode,
    search,
)
from fast_s2s.models.decoding.cuda_graphs import CaptureFailedWarning
from fast_s2s.models.decoding.result import Hypothesis
from fast_s2s.models.decoding.rules import (
    LENGTH_PENALTIES,
    length_normalize,
    length_penalty_factor,
)
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.decoding.static_loop import StaticLoop

__all__ = [
    "LENGTH_PENALTIES",
    "CaptureFailedWarning",
    "Hypothesis",
    "SearchOptions",
    "StaticLoop",
    "beam_search",
    "decode_path",
    "greedy_decode",
    "length_normalize",
    "length_penalty_factor",
    "search",
]
