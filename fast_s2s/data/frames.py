"""Reading and writing a frames corpus: float feature sequences and their target strings.

    frames, targets = load_frames("speech.npz")        # list of (T_i, F) tensors, list of str
    save_frames("speech.pt", frames, targets)          # either format, chosen by the extension

Two file formats, both free of pickled code (read with torch.load(weights_only=True) and
numpy.load(allow_pickle=False)):

- ``.pt``: ``torch.save({"frames": [Tensor (T_i, F), ...], "targets": [str, ...]}, path)``.
- ``.npz``: ``numpy.savez(path, frames=(sum T_i, F) float array, lengths=(N,) int array,
  targets=(N,) str array)``: the sequences one after another, cut by lengths.

Every sequence has at least one frame and the same F; values are finite. "targets" (non-empty
strings, one per sequence) is required for training and optional for translation. Anything
else is refused with FramesFormatError naming the file and what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["FRAMES_EXTENSIONS", "FramesFormatError", "is_frames_file", "load_frames", "save_frames"]

FRAMES_EXTENSIONS = (".pt", ".npz")
_LAYOUT = {
    ".pt": '{"frames": list of (T_i, F) float tensors, "targets": list of str}',
    ".npz": "arrays frames (sum T_i, F) float, lengths (N,) int, targets (N,) str",
}


class FramesFormatError(ValueError):
    """A malformed frames file: "PATH: what was wrong (expected LAYOUT)".

    Attributes: path and reason (what was wrong).
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        layout = _LAYOUT.get(_extension(self.path), " or ".join(_LAYOUT.values()))
        super().__init__(f"{self.path}: {reason} (expected {layout})")


def _extension(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def is_frames_file(path: str | os.PathLike) -> bool:
    """Whether `path` names a frames file by its extension (.pt or .npz)."""
    return _extension(os.fspath(path)) in FRAMES_EXTENSIONS


def _check_sequences(path: str, frames: Sequence[object]) -> list[Tensor]:
    if len(frames) == 0:
        raise FramesFormatError(path, "'frames' holds no sequences")
    out: list[Tensor] = []
    size = None
    for i, f in enumerate(frames):
        if not isinstance(f, Tensor):
            raise FramesFormatError(path, f"frames[{i}] is a {type(f).__name__}, not a tensor")
        if f.dim() != 2 or not f.is_floating_point():
            raise FramesFormatError(
                path,
                f"frames[{i}] must be a 2-D (T, F) float tensor, got shape {tuple(f.shape)} "
                f"and dtype {f.dtype}",
            )
        if f.shape[0] == 0:
            raise FramesFormatError(path, f"frames[{i}] has no frames (T = 0)")
        if size is None:
            size = f.shape[1]
        if f.shape[1] != size or size == 0:
            raise FramesFormatError(
                path, f"frames[{i}] has F = {f.shape[1]} features per frame, frames[0] has {size}"
            )
        if not bool(torch.isfinite(f).all()):
            raise FramesFormatError(path, f"frames[{i}] holds NaN or infinite values")
        out.append(f.detach().to(torch.float32).cpu())
    return out


def _check_targets(path: str, targets: object, n: int) -> list[str]:
    if isinstance(targets, np.ndarray):
        if targets.ndim != 1 or targets.dtype.kind != "U":
            raise FramesFormatError(
                path, f"'targets' must be a 1-D str array, got shape {targets.shape} and dtype "
                f"{targets.dtype}"
            )  # fmt: skip
        targets = targets.tolist()
    if not isinstance(targets, (list, tuple)):
        raise FramesFormatError(
            path, f"'targets' must be a list of str, got {type(targets).__name__}"
        )
    if len(targets) != n:
        raise FramesFormatError(
            path, f"{len(targets)} targets for {n} frame sequences (need one per sequence)"
        )
    for i, t in enumerate(targets):
        if not isinstance(t, str):
            raise FramesFormatError(path, f"targets[{i}] is a {type(t).__name__}, not a str")
        if not t.strip():
            raise FramesFormatError(path, f"targets[{i}] is empty")
    return [t.strip() for t in targets]


def _load_pt(path: str) -> tuple[object, object]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FramesFormatError(
            path, f"not a readable torch file: {type(exc).__name__}: {first}"
        ) from None
    if not isinstance(data, dict) or "frames" not in data:
        found = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise FramesFormatError(path, f"no 'frames' entry (found {found})")
    if not isinstance(data["frames"], (list, tuple)):
        raise FramesFormatError(
            path, f"'frames' must be a list of tensors, got {type(data['frames']).__name__}"
        )
    return data["frames"], data.get("targets")


def _load_npz(path: str) -> tuple[object, object]:
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise FramesFormatError(path, "not an .npz file (no zip archive header)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FramesFormatError(
            path, f"not a readable .npz file: {type(exc).__name__}: {first}"
        ) from None
    missing = [key for key in ("frames", "lengths") if key not in arrays]
    if missing:
        raise FramesFormatError(path, f"missing array(s) {missing} (found {sorted(arrays)})")
    flat, lengths = arrays["frames"], arrays["lengths"]
    if flat.ndim != 2 or flat.dtype.kind != "f":
        raise FramesFormatError(
            path, f"'frames' must be a 2-D (sum T_i, F) float array, got shape {flat.shape} and "
            f"dtype {flat.dtype}"
        )  # fmt: skip
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise FramesFormatError(
            path, f"'lengths' must be a 1-D int array, got shape {lengths.shape} and dtype "
            f"{lengths.dtype}"
        )  # fmt: skip
    if (lengths <= 0).any():
        i = int(np.flatnonzero(lengths <= 0)[0])
        raise FramesFormatError(
            path, f"lengths[{i}] = {int(lengths[i])}; every sequence needs >= 1 frame"
        )
    if int(lengths.sum()) != flat.shape[0]:
        raise FramesFormatError(
            path, f"'lengths' sum to {int(lengths.sum())} but 'frames' has {flat.shape[0]} rows"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(flat))
    frames = list(torch.split(tensor, [int(n) for n in lengths])) if len(lengths) else []
    return frames, arrays.get("targets")


def load_frames(
    path: str | os.PathLike, require_targets: bool = True
) -> tuple[list[Tensor], list[str] | None]:
    """Read a frames file (.pt or .npz, see the module docstring).

    Returns:
        (frames, targets): N float32 CPU tensors (T_i, F), and N target strings (stripped), or
        None when the file has none and require_targets is False.

    Raises:
        FileNotFoundError for a missing file; FramesFormatError for anything malformed.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(f"frames file {path} is a directory; give a .pt or .npz file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"frames file not found: {path}")
    ext = _extension(path)
    if ext not in FRAMES_EXTENSIONS:
        raise FramesFormatError(path, f"unknown extension {ext!r}; use .pt or .npz")
    raw_frames, raw_targets = _load_pt(path) if ext == ".pt" else _load_npz(path)
    frames = _check_sequences(path, raw_frames)
    if raw_targets is None:
        if require_targets:
            raise FramesFormatError(path, "no 'targets' (training needs one string per sequence)")
        return frames, None
    return frames, _check_targets(path, raw_targets, len(frames))


def save_frames(
    path: str | os.PathLike, frames: Sequence[Tensor], targets: Sequence[str] | None = None
) -> None:
    """Write frames (and targets) to `path` in the format of its extension (.pt or .npz)."""
    path = os.fspath(path)
    ext = _extension(path)
    if ext not in FRAMES_EXTENSIONS:
        raise ValueError(f"save_frames: {path}: unknown extension {ext!r}; use .pt or .npz")
    frames = _check_sequences(path, list(frames))
    if targets is not None:
        targets = _check_targets(path, list(targets), len(frames))
    if ext == ".pt":
        data: dict[str, object] = {"frames": frames}
        if targets is not None:
            data["targets"] = targets
        torch.save(data, path)
        return
    arrays = {
        "frames": torch.cat(frames).numpy(),
        "lengths": np.array([f.shape[0] for f in frames], dtype=np.int64),
    }
    if targets is not None:
        arrays["targets"] = np.array(targets, dtype=str)
    with open(path, "wb") as f:  # np.savez would append ".npz" to a path without it
        np.savez(f, **arrays)
