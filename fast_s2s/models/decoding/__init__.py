"""Decoding: greedy and beam search over a Seq2Seq model, as one subsystem (docs/DESIGN.md,
"Decoding").

    spec.py         SearchOptions: what to search for, validated once
    rules.py        the search rules: what a step may generate, the length penalty, the bound
                    on what a live hypothesis can still reach (and their per-step tables)
    result.py       Hypothesis, Trace (what each step kept), assemble (Trace -> ranked lists)
    engine.py       the Engine protocol: unavailable(model), encode(...), run(model, enc, spec)
    python_loop.py  the reference engine (the Python loop)
    native_loop.py  the C++ engine (csrc/cpu/native_search.cpp), with native_params.py (the
                    decoder by name) and native_encoder.py (the encoder as one op)
    static_loop.py  the static-buffer engine, replayed as CUDA graphs (cuda_graphs.py)
    api.py          greedy_decode, beam_search, search, decode_path: spec, engine, assemble

Greedy decoding is beam search with beam 1 in every engine.
"""

from fast_s2s.models.decoding.api import (
    beam_search,
    beam_search_graph,
    decode_path,
    greedy_decode,
    greedy_decode_graph,
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

__all__ = [
    "LENGTH_PENALTIES",
    "CaptureFailedWarning",
    "Hypothesis",
    "SearchOptions",
    "beam_search",
    "beam_search_graph",
    "decode_path",
    "greedy_decode",
    "greedy_decode_graph",
    "length_normalize",
    "length_penalty_factor",
    "search",
]
