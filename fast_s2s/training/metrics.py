"""Grapheme-to-phoneme scores: phoneme error rate (PER) and word error rate (WER) with the
multiple-pronunciation convention of the G2P literature.

    tomato = [("T", "AH0", "M", "EY1", "T", "OW2"), ("T", "AH0", "M", "AA1", "T", "OW2")]
    scores = g2p_scores([["T", "AH0", "M", "AA1", "T", "OW2"]], [tomato])
    scores.per, scores.wer       # 0.0, 0.0: the prediction matches one of the references

Per word, the reference used is the one closest to the prediction (fewest edits; the first
listed among equals). PER = the sum over words of those edit distances / the sum of those
references' lengths; WER = the fraction of words whose prediction matches no reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def edit_distance(hypothesis: Sequence[str], reference: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences: the fewest substitutions, insertions
    and deletions (each costing 1) that turn `hypothesis` into `reference`.

    The classic dynamic programme, one row at a time: row[j] is the distance between the
    hypothesis prefix read so far and reference[:j]. O(len(h) * len(r)) time, O(len(r)) memory.
    """
    row = list(range(len(reference) + 1))
    for i, h in enumerate(hypothesis, start=1):
        diagonal, row[0] = row[0], i
        for j, r in enumerate(reference, start=1):
            diagonal, row[j] = (
                row[j],
                min(
                    row[j] + 1,  # delete h
                    row[j - 1] + 1,  # insert r
                    diagonal + (h != r),  # substitute (free when equal)
                ),
            )
    return row[-1]


@dataclass(frozen=True)
class G2PScores:
    """PER and WER of a set of words, with the counts they are made of."""

    words: int  # words scored
    word_errors: int  # words whose prediction matches no reference
    phoneme_errors: int  # summed edit distance to each word's closest reference
    reference_phonemes: int  # summed length of those references

    @property
    def per(self) -> float:
        """Phoneme error rate: phoneme_errors / reference_phonemes (0 for no phonemes)."""
        return self.phoneme_errors / self.reference_phonemes if self.reference_phonemes else 0.0

    @property
    def wer(self) -> float:
        """Word error rate: the fraction of words with any error (0 for no words)."""
        return self.word_errors / self.words if self.words else 0.0


def closest_reference(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]]
) -> tuple[int, Sequence[str]]:
    """(edit distance, reference) of the reference closest to `hypothesis`; the first listed
    wins a tie, so the choice never depends on which gives the lower PER."""
    if not references:
        raise ValueError("references must hold at least one pronunciation, got none")
    return min(
        ((edit_distance(hypothesis, r), r) for r in references),
        key=lambda pair: pair[0],
    )


def g2p_scores(
    hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]
) -> G2PScores:
    """Score predicted phoneme sequences, one per word, against each word's reference
    pronunciations (one or more)."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses and references must have one entry per word, got {len(hypotheses)} "
            f"and {len(references)}"
        )
    word_errors = phoneme_errors = reference_phonemes = 0
    for hypothesis, refs in zip(hypotheses, references, strict=True):
        distance, reference = closest_reference(hypothesis, refs)
        word_errors += distance > 0
        phoneme_errors += distance
        reference_phonemes += len(reference)
    return G2PScores(len(hypotheses), word_errors, phoneme_errors, reference_phonemes)
