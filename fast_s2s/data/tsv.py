"""Reader for a parallel corpus in the common tab-separated form (one pair per line).

    pairs = read_tsv("fra.txt")   # [("Go.", "Va !"), ...]

Each line is source<TAB>target; columns after the second (the attribution columns of Tatoeba
exports) are ignored. Blank lines are skipped, a trailing "\\r" (CRLF files) and a leading UTF-8
byte-order mark are removed, and spaces around each field are stripped. Anything else that is
not a pair is refused with CorpusFormatError naming the file, the line and what was wrong.
"""

from __future__ import annotations

import codecs
import os

_EXPECTED = "expected source<TAB>target"


class CorpusFormatError(ValueError):
    """A malformed corpus line: "PATH:LINE: what was wrong (expected source<TAB>target)".

    Attributes: path, line (1-based) and reason (what was wrong).
    """

    def __init__(self, path: str | os.PathLike, line: int, reason: str) -> None:
        self.path = os.fspath(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}:{line}: {reason} ({_EXPECTED})")


def _is_utf8(encoding: str) -> bool:
    try:
        return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")
    except LookupError:
        return False


def read_tsv(path: str | os.PathLike, encoding: str = "utf-8") -> list[tuple[str, str]]:
    """Read (source, target) pairs from a tab-separated file.

    Raises FileNotFoundError (with the path) for a missing file and CorpusFormatError for a line
    without a tab, with an empty source or target, or with bytes that are not valid `encoding`.
    The encoding must write "\\n" as the byte 0x0A (UTF-8, Latin-1 and the like).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(f"corpus file {path} is a directory; give a PAIRS.tsv file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        bad = data[error.start : error.end]
        raise CorpusFormatError(
            path, line, f"bytes {bad!r} are not valid {encoding} ({error.reason})"
        ) from None
    if _is_utf8(encoding) and text.startswith("\ufeff"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]

    pairs: list[tuple[str, str]] = []
    # split("\n"), not splitlines(): the text may hold other characters that splitlines breaks on.
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip() and "\t" not in line:
            continue
        if "\t" not in line:
            raise CorpusFormatError(path, number, "no tab between source and target")
        source, target = (field.strip() for field in line.split("\t")[:2])
        if not source:
            raise CorpusFormatError(path, number, "empty source")
        if not target:
            raise CorpusFormatError(path, number, "empty target")
        pairs.append((source, target))
    return pairs
