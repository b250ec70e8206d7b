"""Generated seq2seq tasks: copy, reverse, sort (word tokens), dates and numbers (characters)
with text sources; tones with frames (float feature vectors) as the source.

pairs = generate_pairs("reverse", 1000, seed=0)   # [("t3 t17 t8", "t8 t17 t3"), ...]
mode = task_tokenization("reverse")              # "word"
frames, targets = generate_frames("tones", 1000, seed=0)   # [(T_i, 8) tensors], ["3141", ...]
"""

from __future__ import annotations

import random

from torch import Tensor

from fast_s2s.data.dates import random_date_pair
from fast_s2s.data.numbers import random_number_pair
from fast_s2s.data.tones import generate_tones

TASKS: tuple[str, ...] = ("copy", "reverse", "sort", "dates", "numbers")
# Tasks read and written character by character.
CHAR_TASKS: tuple[str, ...] = ("dates", "numbers")
# Tasks whose source is a sequence of feature frames (see generate_frames).
FRAME_TASKS: tuple[str, ...] = ("tones",)


def generate_frames(task: str, n: int, seed: int = 0) -> tuple[list[Tensor], list[str]]:
    """`n` (frames, target text) examples of a frames task (FRAME_TASKS), the same for the same
    arguments: n float32 tensors (T_i, F) and n target strings (tokenize them with "char").

    tones: a noisy keypad-tone waveform of 1-8 digits -> the digits (fast_s2s.data.tones).
    """
    if task not in FRAME_TASKS:
        raise ValueError(f"unknown frames task {task!r}; choose one of {list(FRAME_TASKS)}")
    return generate_tones(n, seed=seed)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {list(TASKS)}")


def task_tokenization(task: str) -> str:
    """The tokenization mode a task is meant for: "char" for dates and numbers, "word" for the
    others."""
    _check_task(task)
    return "char" if task in CHAR_TASKS else "word"


def symbol(index: int) -> str:
    """The symbol with index `index` in the copy/reverse/sort tasks: "t0", "t1", ..."""
    return f"t{index}"


def generate_pairs(
    task: str,
    n: int,
    seed: int = 0,
    min_len: int = 1,
    max_len: int = 25,
    vocab_size: int = 50,
) -> list[tuple[str, str]]:
    """`n` (source, target) text pairs of `task`, the same for the same arguments.

    copy/reverse/sort: the source is a space-separated sequence of symbols t0 .. t{vocab_size-1}
    drawn uniformly, its length uniform in [min_len, max_len]; the target is the same sequence,
    reversed, or sorted by symbol index. dates: (human-readable date, ISO date), see
    fast_s2s.data.dates; numbers: (digits, English words, 30-60 characters), see
    fast_s2s.data.numbers; for these two min_len, max_len and vocab_size do not apply.
    """
    _check_task(task)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    if task == "dates":
        return [random_date_pair(rng) for _ in range(n)]
    if task == "numbers":
        return [random_number_pair(rng) for _ in range(n)]
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    pairs = []
    for _ in range(n):
        length = rng.randint(min_len, max_len)
        source = [rng.randrange(vocab_size) for _ in range(length)]
        if task == "copy":
            target = source
        elif task == "reverse":
            target = source[::-1]
        else:
            target = sorted(source)
        pairs.append((" ".join(map(symbol, source)), " ".join(map(symbol, target))))
    return pairs
