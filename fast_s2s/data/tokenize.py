"""Character and word tokenisation, and their inverses.

tokenize("3 march", "char")   # ["3", " ", "m", "a", "r", "c", "h"]
tokenize("hello  world", "word")  # ["hello", "world"]
"""

from __future__ import annotations

MODES: tuple[str, ...] = ("char", "word")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"tokenization mode must be one of {list(MODES)}, got {mode!r}")


def tokenize(text: str, mode: str) -> list[str]:
    """Split `text` into tokens.

    "char": every character, spaces included, so detokenize gives the text back exactly.
    "word": str.split() on whitespace (runs of whitespace collapse; leading/trailing dropped).
    """
    _check_mode(mode)
    return list(text) if mode == "char" else text.split()


def detokenize(tokens: list[str], mode: str) -> str:
    """Join tokens back into text: "".join for "char", " ".join for "word"."""
    _check_mode(mode)
    return ("" if mode == "char" else " ").join(tokens)
