"""What a checkpoint's model was trained on and as, recorded so that `--resume` continues that
run and nothing else.

    record = run_record(settings, config_overrides)      # saved in the checkpoint as "run"
    check_resume(state, settings, config_overrides, path) # ResumeMismatchError, or None

`--resume` with another task used to train the stored model on the new data and write over it.
The record is {option: value} in command-line terms: the task and data source (a --data file by
its SHA-256, so the same path with other contents is another source; a generated task with its
--num-examples and --seed), what decides the pairs and the vocabulary (--max-len, --min-freq,
--valid-size, g2p's --stress and --split-seed), the tokenisation of each side, and every field
of the model config a command line sets (MODEL_FIELDS). A resumed run must give the same record;
the first difference is named in one line (ResumeMismatchError) before anything is written.

Settings that do not change what is learned from which data may change on resume: --epochs,
--patience, --time-budget, --lr (the optimizer state holds the rate), --clip, --batch-size,
--eval-beam, --threads, --backend and --device. A setting that does not apply to the data
source is recorded as None (--num-examples of a --data file), so it never differs.

A checkpoint written before the record ("run") holds its TrainSettings and model config, which
say the same except the --data file's contents: it is compared on those, and refused when it was
trained on a --data file, whose contents cannot be checked (DESIGN.md, "Resuming a run").
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

from fast_s2s.data import G2P_TASK
from fast_s2s.models import Seq2SeqConfig
from fast_s2s.training import checkpoint
from fast_s2s.training.data import TrainSettings, modes

__all__ = [
    "DATA_FIELDS",
    "IMPLEMENTATION_FIELDS",
    "MODEL_FIELDS",
    "RECORD_VERSION",
    "ResumeMismatchError",
    "check_resume",
    "fingerprint",
    "mismatches",
    "run_record",
]

RECORD_VERSION = 1
# Model config fields the data decides (vocabulary sizes, special ids, the source's kind and
# frame size; trainer checks the last two against the data), and the one that only says which
# kernels compute the same model.
DATA_FIELDS = ("src_vocab_size", "tgt_vocab_size", "pad_id", "bos_id", "eos_id", "source",
               "frame_size")  # fmt: skip
IMPLEMENTATION_FIELDS = ("backend",)
# The rest are the command line's: each is `--<field>` (underscores as dashes) in the record.
MODEL_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(Seq2SeqConfig)
    if f.name not in DATA_FIELDS + IMPLEMENTATION_FIELDS
)


class ResumeMismatchError(checkpoint.CheckpointError):
    """--resume with a checkpoint of another run: one line naming the first difference."""


def option(field: str) -> str:
    """The command-line option of a settings or config field: "hidden_size" -> "--hidden-size"."""
    return "--" + field.replace("_", "-")


def fingerprint(path: str) -> dict[str, Any]:
    """{"path", "bytes", "sha256"} of a data file; sha256 None when it is not a file (reading
    the data then says what is wrong)."""
    if not os.path.isfile(path):
        return {"path": path, "bytes": None, "sha256": None}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": path, "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def _model_values(config: dict[str, Any]) -> dict[str, Any]:
    """MODEL_FIELDS of a config dict, the dataclass defaults where it has none."""
    defaults = {f.name: f.default for f in dataclasses.fields(Seq2SeqConfig)}
    return {name: config.get(name, defaults[name]) for name in MODEL_FIELDS}


def run_record(
    settings: TrainSettings,
    model: dict[str, Any],
    data: dict[str, Any] | None = None,
    tokenization: tuple[str | None, str] | None = None,
) -> dict[str, Any]:
    """{option: value} of the run `settings` and the model config (overrides) `model` describe,
    in the order they are compared. data: the --data file's fingerprint (default: computed);
    tokenization: (source, target) modes (default: data.modes(settings))."""
    g2p = settings.task == G2P_TASK
    generated = not settings.data and not g2p
    if settings.data and data is None:
        data = fingerprint(settings.data)
    src_mode, tgt_mode = tokenization or modes(settings)
    record: dict[str, Any] = {
        "--task": settings.task,
        "--data": data if settings.data else None,
        "--num-examples": settings.num_examples if generated else None,
        # generates the pairs and splits off the validation pairs (g2p: --split-seed)
        "--seed": None if g2p else settings.seed,
        "--valid-size": None if g2p else settings.valid_size,
        "--max-len": settings.max_len,
        "--min-freq": settings.min_freq,
        "--stress": settings.stress if g2p else None,
        "--split-seed": settings.split_seed if g2p else None,
        "--src-tokenize": src_mode,
        "--tgt-tokenize": tgt_mode,
    }
    record.update({option(k): v for k, v in _model_values(model).items()})
    return record


def _same(key: str, saved: Any, given: Any) -> bool:
    if key == "--data" and isinstance(saved, dict) and isinstance(given, dict):
        # a file that is not there is refused by the data loader, with its own message
        return given.get("sha256") is None or saved.get("sha256") == given.get("sha256")
    if isinstance(saved, list):  # a tuple written by torch.save comes back as a list
        saved = tuple(saved)
    return saved == given


def mismatches(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """The options whose values differ, in the record's order. An option the saved record
    lacks (a setting added after it was written) is not compared."""
    return [k for k, v in given.items() if k in saved and not _same(k, saved[k], v)]


def _show(key: str, value: Any) -> str:
    if key == "--data" and isinstance(value, dict):
        return f"{key} {value.get('path')} (sha256 {str(value.get('sha256'))[:12]})"
    if key == "--task" and value is None:
        return "a --data corpus (no --task)"
    if key == "--data" and value is None:
        return "no --data file"
    if isinstance(value, bool):
        return f"{key} {'on' if value else 'off'}"
    return f"{key} {'none' if value is None else value}"


def _legacy_record(state: dict[str, Any], path: str) -> dict[str, Any]:
    """The record of a checkpoint written before "run": from its settings and config."""
    saved = state.get("settings")
    if not isinstance(saved, dict):
        raise ResumeMismatchError(
            f"--resume: {path} holds no record of the data and settings it was trained with, so "
            "this command line cannot be checked against it; nothing was written (start a new "
            "run with another --checkpoint)"
        )
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    settings = TrainSettings(**{k: v for k, v in saved.items() if k in known})
    if settings.data:
        raise ResumeMismatchError(
            f"--resume: {path} was written before checkpoints recorded their data's contents, so "
            f"--data {settings.data} cannot be checked to be the data it was trained on; nothing "
            "was written (it still translates and evaluates; to train on, start a new run with "
            "another --checkpoint)"
        )
    return run_record(settings, state["config"], tokenization=checkpoint.tokenization(state, path))


def check_resume(state: dict[str, Any], record: dict[str, Any], path: str | os.PathLike) -> None:
    """Raise ResumeMismatchError (one line) unless the loaded checkpoint `state` was trained on
    what `record` (run_record of the command line) says."""
    path = os.fspath(path)
    run = state.get("run")
    legacy = not (isinstance(run, dict) and isinstance(run.get("settings"), dict))
    saved = _legacy_record(state, path) if legacy else dict(run["settings"])
    if not legacy:  # a setting the record predates: the model's from the stored config
        config = state.get("config") if isinstance(state.get("config"), dict) else {}
        for key, value in _model_values(config).items():
            saved.setdefault(option(key), value)
    different = mismatches(saved, record)
    if not different:
        return
    first = different[0]
    more = ""
    if len(different) > 1:
        more = f" ({len(different) - 1} more differ: {', '.join(different[1:])})"
    older = " (an older checkpoint: compared on the settings it saved)" if legacy else ""
    if first == "--data" and saved[first] and record[first]:
        if saved[first].get("path") == record[first].get("path"):
            difference = (
                f"--data {record[first]['path']} changed since it was trained on (sha256 "
                f"{saved[first]['sha256'][:12]} then, {record[first]['sha256'][:12]} now)"
            )
        else:
            difference = (
                f"it was trained on {_show(first, saved[first])}, this command line gives "
                f"{_show(first, record[first])}"
            )
    else:
        difference = (
            f"it was trained with {_show(first, saved[first])}, this command line gives "
            f"{_show(first, record[first])}"
        )
    raise ResumeMismatchError(
        f"--resume: {path} is another run: {difference}{more}{older}; nothing was written (give "
        "that run's options to continue it, or another --checkpoint to start a new one)"
    )
