"""Writing a file so that a reader, or a crash mid-write, never sees half of it: the checkpoints,
the shipped model's card and the benchmark's JSON and plot all go through `write_atomically`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import IO, Any


def write_atomically(
    path: str | os.PathLike, write: Callable[[IO[Any]], object], *, binary: bool = False,
    prefix: str | None = None, suffix: str = ".tmp",
) -> str:  # fmt: skip
    """Calls write(f) on a temporary file beside `path` (named `prefix`...`suffix`), flushes it
    to disk and renames it over `path`, creating the folder; the temporary file is removed if
    anything fails. The file gets the permissions a plain open() would give it (mkstemp's are
    0600). Returns the path written."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    prefix = prefix if prefix is not None else f".{os.path.basename(path)}."
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
