"""Checkpoints: written atomically, refused with a clear message when they are not ours.

A checkpoint is one `torch.save` file holding plain data only (tensors, numbers, strings, lists,
dicts), so it is read with `torch.load(weights_only=True)`: no code runs on load. It carries
the model config, both vocabularies and the tokenisation of each side ("src_tokenize",
"tgt_tokenize"; older checkpoints hold one "tokenize" for both), so `fast-s2s translate`
needs nothing else; and "run", the record of what the model was trained on that `--resume`
checks (fast_s2s.training.resume).

Writing goes to a temporary file in the same folder (".tmp-<name>-<random>.pt"), flushed to
disk, then renamed over the target: a crash mid-write leaves the previous checkpoint intact,
never a half-written one, and at worst a temporary file that remove_stale_temporaries (run when
training starts) deletes.
"""

from __future__ import annotations

import glob
import math
import os
from typing import Any

import torch

from fast_s2s import pretrained
from fast_s2s.atomic import write_atomically
from fast_s2s.data import MODES
from fast_s2s.models import Seq2SeqConfig

FORMAT = "fast_s2s-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The file is missing, truncated, not a fast_s2s checkpoint, or from another version."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` (plain data) atomically to `path`, stamped with the format and version."""
    from fast_s2s import __version__

    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "fast_s2s": __version__, **payload}
    prefix = _temporary_prefix(os.fspath(path))
    write_atomically(path, lambda f: torch.save(data, f), binary=True, prefix=prefix, suffix=".pt")


def _temporary_prefix(path: str) -> str:
    return f".tmp-{os.path.basename(path)}-"


def remove_stale_temporaries(path: str | os.PathLike) -> list[str]:
    """Delete the temporary files an interrupted save_checkpoint(path) left; returns them."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    pattern = os.path.join(glob.escape(folder), glob.escape(_temporary_prefix(path)) + "*.pt")
    stale = sorted(glob.glob(pattern))
    for tmp in stale:
        os.unlink(tmp)
    return stale


def model_config(data: dict[str, Any], path: str | os.PathLike) -> Seq2SeqConfig:
    """The Seq2SeqConfig stored in a loaded checkpoint, or CheckpointError saying what is wrong."""
    config = data.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{os.fspath(path)!r}: its model config must be a dict of Seq2SeqConfig fields, got "
            f"{type(config).__name__}"
        )
    try:
        return Seq2SeqConfig.from_dict(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{os.fspath(path)!r}: bad model config: {exc}") from exc


def tokenization(data: dict[str, Any], path: str | os.PathLike) -> tuple[str, str]:
    """(source mode, target mode) of a loaded checkpoint: "src_tokenize" / "tgt_tokenize", or
    for a checkpoint written before per-side tokenisation its one "tokenize" mode for both
    (default "word"). A frames model has no source mode (its "tokenize" is returned, unused)."""
    legacy = data.get("tokenize") or "word"
    modes = (data.get("src_tokenize") or legacy, data.get("tgt_tokenize") or legacy)
    for key, mode in zip(("src_tokenize", "tgt_tokenize"), modes, strict=True):
        if mode not in MODES:
            raise CheckpointError(
                f"{os.fspath(path)!r}: {key} must be one of {list(MODES)}, got {mode!r}"
            )
    return modes


def check_finite_weights(state_dict: dict[str, Any], path: str | os.PathLike, key: str) -> None:
    """Refuse weights with NaN or infinity (a run that diverged): nothing can be decoded."""
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                bad = int((~torch.isfinite(value)).sum())
                raise CheckpointError(
                    f"{os.fspath(path)!r}: {key}[{name!r}] holds {bad} NaN or infinite values "
                    "(the training run that wrote it diverged); retrain, e.g. with a lower --lr"
                )
        elif isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{os.fspath(path)!r}: {key}[{name!r}] is {value}")


def weight_mismatches(model: torch.nn.Module, state_dict: dict[str, Any]) -> list[str]:
    """How the tensors of `state_dict` disagree with the ones `model` has, in the model's order
    (then the tensors it does not have): "NAME is missing", "NAME has shape (a, b), the config
    needs (c, d)", "NAME is not a tensor of this config". Empty when they agree."""
    wanted = model.state_dict()
    problems = []
    for name, tensor in wanted.items():
        value = state_dict.get(name)
        if name not in state_dict:
            problems.append(f"{name} is missing")
        elif not isinstance(value, torch.Tensor):
            problems.append(f"{name} is a {type(value).__name__}, not a tensor")
        elif value.shape != tensor.shape:
            problems.append(
                f"{name} has shape {tuple(value.shape)}, the config needs {tuple(tensor.shape)}"
            )
    problems += [
        f"{name} is not a tensor of this config" for name in state_dict if name not in wanted
    ]
    return problems


def load_weights(
    model: torch.nn.Module, state_dict: Any, path: str | os.PathLike, key: str = "model"
) -> None:
    """Load `state_dict` (the checkpoint's `key`) into `model`, or raise CheckpointError in one
    line naming the first tensor that disagrees with the model's config and how many do (torch's
    own message has a line per tensor)."""
    path = os.fspath(path)
    if not isinstance(state_dict, dict):
        raise CheckpointError(
            f"{path!r}: {key} must be a dict of tensors, got {type(state_dict).__name__}"
        )
    problems = weight_mismatches(model, state_dict)
    if problems:
        count = f"{len(problems)} tensor{'s disagree' if len(problems) > 1 else ' disagrees'}"
        raise CheckpointError(
            f"{path!r}: inconsistent checkpoint: its config does not match its {key!r} weights: "
            f"{problems[0]} ({count})"
        )
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path!r}: inconsistent checkpoint: {key!r}: {_first_line(exc)}"
        ) from exc


def load_optimizer(
    optimizer: torch.optim.Optimizer, state: Any, model: torch.nn.Module, path: str | os.PathLike
) -> None:
    """Load the checkpoint's optimizer state, or raise CheckpointError in one line: its per-
    parameter tensors (Adam's moments) must have their parameter's shape, or the first step
    would fail deep inside the optimizer."""
    path = os.fspath(path)
    if not isinstance(state, dict) or not isinstance(state.get("state"), dict):
        raise CheckpointError(f"{path!r}: optimizer must be an optimizer state dict")
    params = list(model.parameters())
    for index, entry in state["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            raise CheckpointError(
                f"{path!r}: inconsistent checkpoint: the optimizer holds state for parameter "
                f"{index!r}, the model has {len(params)}"
            )
        for name, value in entry.items() if isinstance(entry, dict) else ():
            shaped = isinstance(value, torch.Tensor) and value.dim() > 0
            if shaped and value.shape != params[index].shape:
                raise CheckpointError(
                    f"{path!r}: inconsistent checkpoint: the optimizer's {name} of parameter "
                    f"{index} has shape {tuple(value.shape)}, the parameter "
                    f"{tuple(params[index].shape)}"
                )
    try:
        optimizer.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{path!r}: inconsistent checkpoint: optimizer: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_checkpoint(path: str | os.PathLike, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint (or a shipped model's, by name: "g2p:en",
    fast_s2s.pretrained), or raise CheckpointError saying why not."""
    path = os.fspath(pretrained.resolve(path))
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a checkpoint file")
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
