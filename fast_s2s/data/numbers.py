"""Numbers in digits and their English words, for a task whose outputs are long.

    rng = random.Random(0)
    random_number_pair(rng)
    # e.g. ("399417", "three hundred ninety-nine thousand four hundred seventeen")

Read character by character, the targets run 30-60 characters (NUMBER_TARGET_CHARS): long
enough that a search which stops early, or drops a segment, shows in the exact match. Numbers
are drawn uniformly from 100,000 .. 999,999 and redrawn until the words fit that range; the
words are American English without "and" ("one hundred five"), hyphenated tens ("ninety-nine").
"""

from __future__ import annotations

import random

NUMBER_RANGE: tuple[int, int] = (100_000, 999_999)
NUMBER_TARGET_CHARS: tuple[int, int] = (30, 60)

_ONES: tuple[str, ...] = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS: tuple[str, ...] = (
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
)  # fmt: skip


def _below_thousand(n: int) -> list[str]:
    """The words of 1 <= n <= 999 (an empty list for 0)."""
    words = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_TENS[tens] + (f"-{_ONES[ones]}" if ones else ""))
    elif rest:
        words.append(_ONES[rest])
    return words


def number_to_words(n: int) -> str:
    """English words of 0 <= n <= 999,999: 399417 -> "three hundred ninety-nine thousand four
    hundred seventeen"."""
    if not 0 <= n <= 999_999:
        raise ValueError(f"n must be in [0, 999999], got {n}")
    if n == 0:
        return "zero"
    thousands, rest = divmod(n, 1000)
    words = _below_thousand(thousands) + (["thousand"] if thousands else [])
    return " ".join(words + _below_thousand(rest))


def random_number_pair(rng: random.Random) -> tuple[str, str]:
    """(digits, words) for a number whose words are NUMBER_TARGET_CHARS characters long."""
    low, high = NUMBER_TARGET_CHARS
    while True:
        n = rng.randint(*NUMBER_RANGE)
        words = number_to_words(n)
        if low <= len(words) <= high:
            return str(n), words
