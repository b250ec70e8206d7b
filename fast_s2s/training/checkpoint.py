"""Checkpoints: written atomically, refused with a clear message when they are not ours.

A checkpoint is one `torch.save` file holding plain data only (tensors, numbers, strings, lists,
dicts), so it is read with `torch.load(weights_only=True)`: no code runs on load. It carries
the model config and both vocabularies, so `fast-s2s translate` needs nothing else.

Writing goes to a temporary file in the same folder, flushed to disk, then renamed over the
target: a crash mid-write leaves the previous checkpoint intact, never a half-written one.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

FORMAT = "fast_s2s-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The file is missing, truncated, not a fast_s2s checkpoint, or from another version."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` (plain data) atomically to `path`, stamped with the format and version."""
    from fast_s2s import __version__

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "fast_s2s": __version__, **payload}
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint, or raise CheckpointError saying why not."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled code...
        raise CheckpointError(
            f"{path!r} is not a readable fast_s2s checkpoint (truncated or another kind of file): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a fast_s2s checkpoint (no {FORMAT!r} marker)")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path!r} has checkpoint format version {data.get('format_version')!r} (written by "
            f"fast_s2s {data.get('fast_s2s')}); this fast_s2s reads version {FORMAT_VERSION}"
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise CheckpointError(f"{path!r} is a fast_s2s checkpoint but lacks {', '.join(missing)}")
    return data
