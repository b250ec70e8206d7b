"""The argparse types of every numeric option of every `fast-s2s` command, and the parser that
reports a usage error in one line.

    parser.add_argument("--beam", type=integer(1, INT_MAX), default=5)
    parser.add_argument("--lr", type=number(0, 10, low_open=True))   # (0, 10]
    parser.add_argument("--seed", type=SEED)

A Number parses the text, refuses what is not a finite number of its kind and what lies outside
its range, and says both in one wording: "--beam: must be an integer in [1, 2147483647], got
0". It carries its range (`describe`, `admits`), so the tests walk every parser and hold each
numeric option to it (tests/test_argument_table.py, tests/test_properties.py): an option with a
plain `type=int` or `type=float` fails them. Ranges here are what a value can mean; whether a
search fits in memory depends on the model too and is checked where the model is known
(fast_s2s.training.memory).
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass

__all__ = [
    "INT_MAX",
    "SEED",
    "SEED_MAX",
    "THREADS",
    "CommandParser",
    "Number",
    "UsageError",
    "integer",
    "number",
]

# The largest count (beam, steps, sizes) an option takes: the C++ ops index with 32-bit ints in
# places, and no search or model anywhere near it fits in memory anyway.
INT_MAX = 2**31 - 1
# torch.manual_seed takes [-2**63, 2**64); random.Random any int. Non-negative 63-bit ints are
# what both take and what a JSON reader reads back exactly.
SEED_MAX = 2**63 - 1
# More threads than this is a typo, not a machine (torch.set_num_threads would try to start them).
THREADS_MAX = 1024


class UsageError(Exception):
    """A command line argparse refused: the one line to print (prog: message)."""


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line ("fast-s2s translate: --beam: must be ...")
    raised as UsageError, which fast_s2s.cli.main prints and turns into exit code 2; argparse's
    own prints the usage block first and exits from inside the parser."""

    # What argparse takes for a negative number rather than an option: its own pattern
    # (-1, -.5) and also -1e5, -inf and -nan, so that "--lr -inf" is refused for its value
    # ("must be a finite number ...") instead of "expected one argument".
    _NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self._NEGATIVE_NUMBER

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message.removeprefix('argument ')}")


@dataclass(frozen=True)
class Number:
    """An argparse type: an int or a finite float in [low, high] (either end open, either end
    None for unbounded), or one of `words` (e.g. "none"), returned as it is."""

    kind: type  # int or float
    low: float | None
    high: float | None
    low_open: bool = False
    high_open: bool = False
    words: tuple[str, ...] = ()

    @property
    def __name__(self) -> str:  # argparse names a type by it in some messages
        return self.kind.__name__

    def _describe_range(self) -> str:
        """The range in words: "an integer in [1, 2147483647]", "a finite number in (0, 10]"."""
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} in {left}{_show(self.low)}, {_show(self.high)}{right}"
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {_show(self.low)}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {_show(self.high)}"
        return what

    def describe(self) -> str:
        """The range in words, and the words taken: "a finite number in [0, 1000] or 'none'"."""
        words = " or ".join(repr(w) for w in self.words)
        return f"{self._describe_range()} or {words}" if words else self._describe_range()

    def parse(self, text: str) -> int | float | None:
        """The value `text` spells, or None when it is not a finite number of this kind."""
        try:
            value = int(text.strip(), 10) if self.kind is int else float(text)
        except (ValueError, TypeError, AttributeError):
            return None
        return value if math.isfinite(value) else None

    def in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def admits(self, text: str) -> bool:
        """Whether the option takes `text`."""
        if text in self.words:
            return True
        value = self.parse(text)
        return value is not None and self.in_range(value)

    def __call__(self, text: str) -> int | float | str:
        if text in self.words:
            return text
        value = self.parse(text)
        if value is None or not self.in_range(value):
            shown = text if text and text.strip() == text and text.isprintable() else repr(text)
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {shown}")
        return value


def _show(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def integer(low: int | None, high: int | None) -> Number:
    """An integer option in [low, high]."""
    return Number(int, low, high)


def number(
    low: float | None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> Number:
    """A finite real option in [low, high] (low_open / high_open: that end excluded); NaN and
    infinity are always refused."""
    return Number(float, low, high, low_open, high_open)


SEED = integer(0, SEED_MAX)
THREADS = integer(1, THREADS_MAX)
