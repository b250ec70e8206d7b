"""SearchOptions: what a search looks for (beam, lengths, length penalty, n_best), validated
once, when it is made. Every entry point (greedy_decode, beam_search, search, the CLI, the
Translator) builds one and every engine reads it; an engine never re-checks it."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fast_s2s.models.decoding.result import Hypothesis
from fast_s2s.models.decoding.rules import (
    LENGTH_PENALTIES,
    LengthTables,
    length_normalize,
    length_penalty_factor,
    length_tables,
)

__all__ = ["SearchOptions"]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """How to decode: greedy (beam=1) or beam search, and its options (see beam_search).

    beam: hypotheses kept per sentence (beam_search's beam_size); 1 is greedy decoding.
    max_len: at most this many tokens before eos (eos is forced after them).
    min_len: at least this many tokens before eos, 0 <= min_len <= max_len.
    max_len_ratio, max_len_offset: with a ratio a (a finite real >= 0) and offset b (an
        integer >= 0), a sentence of S source positions gets at most floor(a * S) + b tokens
        before eos, within [min_len, max_len] (fairseq's --max-len-a / --max-len-b): an output
        bounded by its source (no runaway outputs, e.g. in g2p). None: max_len for every one.
    length_penalty: alpha of the length penalty, a finite real (0: rank by total log-prob).
    penalty: its form, "power" (L ** alpha) or "gnmt" (((5 + L) / 6) ** alpha).
    n_best: how many ranked hypotheses a search returns per sentence, 1 <= n_best <= beam.
    native: which engine, not what is searched: the native loop where it can run
        (decode_path), else the Python loop, the reference.
    """

    beam: int = 5
    max_len: int = 100
    min_len: int = 0
    max_len_ratio: float | None = None
    max_len_offset: int = 0
    length_penalty: float = 1.0
    penalty: str = "power"
    n_best: int = 1
    native: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.beam) or self.beam < 1:
            raise ValueError(
                f"beam (beam_search's beam_size) must be a positive integer, got {self.beam!r}"
            )
        if not _is_int(self.max_len) or self.max_len < 0:
            raise ValueError(f"max_len must be a non-negative integer, got {self.max_len!r}")
        if not _is_int(self.min_len) or not 0 <= self.min_len <= self.max_len:
            raise ValueError(
                f"min_len must be an integer in [0, max_len={self.max_len}], got {self.min_len!r}"
            )
        ratio = self.max_len_ratio
        if ratio is not None and (
            not isinstance(ratio, numbers.Real)
            or isinstance(ratio, bool)
            or not math.isfinite(ratio)
            or ratio < 0
        ):
            raise ValueError(f"max_len_ratio must be None or a finite real >= 0, got {ratio!r}")
        if not _is_int(self.max_len_offset) or self.max_len_offset < 0:
            raise ValueError(
                f"max_len_offset must be a non-negative integer, got {self.max_len_offset!r}"
            )
        alpha = self.length_penalty
        if (
            not isinstance(alpha, numbers.Real)
            or isinstance(alpha, bool)
            or not math.isfinite(alpha)
        ):
            raise ValueError(f"length_penalty must be a finite real number, got {alpha!r}")
        if self.penalty not in LENGTH_PENALTIES:
            raise ValueError(
                f"penalty must be one of {list(LENGTH_PENALTIES)}, got {self.penalty!r}"
            )
        if not _is_int(self.n_best) or not 1 <= self.n_best <= self.beam:
            raise ValueError(
                f"n_best must be an integer in [1, beam={self.beam}], got {self.n_best!r}"
            )
        if not isinstance(self.native, bool):
            raise TypeError(f"native must be a bool, got {self.native!r}")
        # Normalised so that equal options compare (and cache) equal.
        object.__setattr__(self, "beam", int(self.beam))
        object.__setattr__(self, "max_len", int(self.max_len))
        object.__setattr__(self, "min_len", int(self.min_len))
        object.__setattr__(self, "n_best", int(self.n_best))
        object.__setattr__(self, "max_len_offset", int(self.max_len_offset))
        if ratio is not None:
            object.__setattr__(self, "max_len_ratio", float(ratio))
        object.__setattr__(self, "length_penalty", float(alpha))
        self._check_penalty_range()

    def _check_penalty_range(self) -> None:
        """lp is monotone in the length: finite and positive at 1 and max_len + 1, everywhere."""
        for length in (1, self.max_len + 1):
            try:
                lp = length_penalty_factor(length, self.length_penalty, self.penalty)
            except OverflowError:
                lp = math.inf
            if not (math.isfinite(lp) and lp > 0):
                raise ValueError(
                    f"length_penalty={self.length_penalty!r} makes the {self.penalty} length "
                    f"penalty {lp!r} at length {length} (it must be finite and positive for "
                    f"every length up to max_len + 1 = {self.max_len + 1})"
                )

    @property
    def tables(self) -> LengthTables:
        """The length penalty per step, as the engines read it (rules.length_tables)."""
        return length_tables(self.max_len, self.min_len, self.length_penalty, self.penalty)

    def sentence_max_lens(self, src_lengths: Sequence[int]) -> list[int] | None:
        """Each sentence's most tokens before eos, for sources of these lengths (the options'
        max_len_ratio bound, within [min_len, max_len]), or None without a ratio: every
        sentence gets max_len. The engines force eos at a sentence's own limit
        (rules.mask_log_probs's force_rows)."""
        if self.max_len_ratio is None:
            return None
        ratio, offset = self.max_len_ratio, self.max_len_offset
        limits = []
        for length in src_lengths:
            bound = ratio * length + offset  # a float: compared before the floor, never inf
            limit = self.max_len if bound >= self.max_len else math.floor(ratio * length) + offset
            limits.append(max(self.min_len, limit))
        return limits

    def row_max_lens(self, src_lengths: Tensor, beam: int) -> Tensor | None:
        """sentence_max_lens per decoder row: (B * beam,) int64 on src_lengths's device (row n
        is sentence n // beam's), or None without a ratio."""
        limits = self.sentence_max_lens(src_lengths.tolist())
        if limits is None:
            return None
        per_sentence = torch.tensor(limits, dtype=torch.int64, device=src_lengths.device)
        return per_sentence.repeat_interleave(beam)

    def describe(self) -> str:
        """A short label for reports: "greedy" or "beam 5 (power 1.0)"."""
        if self.beam == 1:
            return "greedy"
        return f"beam {self.beam} ({self.penalty} {self.length_penalty:g})"

    def rank(self, hyp: Hypothesis) -> float:
        """The ranking score of a finished hypothesis under these options."""
        return length_normalize(hyp.score, len(hyp.tokens) + 1, self.length_penalty, self.penalty)
