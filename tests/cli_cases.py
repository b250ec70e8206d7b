"""The command lines the CLI tests walk, generated from fast_s2s.cli's own parsers: every
numeric option of every subcommand, and a --resume command line for every setting the run
record holds (tests/test_argument_table.py, tests/test_properties.py)."""

from __future__ import annotations

import argparse
import os

from fast_s2s import cli
from fast_s2s.cli.options import Number, UsageError
from fast_s2s.models import Seq2SeqConfig


def cli_commands() -> dict[str, argparse.ArgumentParser]:
    """subcommand -> its parser, from fast_s2s.cli.build_parser itself."""
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def required_argv(parser: argparse.ArgumentParser) -> list[str]:
    """The least a command line of `parser` must hold: its positionals and required options."""
    argv = []
    for action in parser._actions:
        if not action.option_strings and action.nargs not in ("*", "?"):
            argv.append(action.choices[0] if action.choices else "x")
        elif action.option_strings and action.required:
            argv += [action.option_strings[0], "x.pt"]
    return argv


def numeric_options() -> list[tuple[str, str, object]]:
    """(command, option, argparse type) of every option whose type carries a range."""
    found = []
    for command, parser in cli_commands().items():
        for action in parser._actions:
            if action.option_strings and hasattr(action.type, "admits"):
                found.append((command, action.option_strings[0], action.type))
    return found


NUMERIC = numeric_options()
# The value classes of issue 26; the huge one past any int64 for integers, past float's range
# (infinity once parsed) for reals.
VALUES = ["0", "-1", "nan", "inf", "-inf", "huge"]


def spelled(value: str, kind: object) -> str:
    if value != "huge":
        return value
    return "1e400" if getattr(kind, "kind", int) is float else str(10**20)


# --------------------------------------------------------------------------------------------
# --resume with one setting changed: for every option of the run record (fast_s2s.training
# .resume.run_record, so a new model-config field or data setting is in it at once), a command
# line that differs from a base run first in that option, found by trying the option's other
# values (its choices, the flag, nearby numbers, another data file) on each base.
# --------------------------------------------------------------------------------------------

MINI_DICT = os.path.join(os.path.dirname(__file__), "data", "mini_cmudict.dict")
SMALL = ["--epochs", "1", "--embed-size", "8", "--hidden-size", "16"]


def resume_bases(folder: str) -> dict[str, list[str]]:
    """Base `train` command lines (without --checkpoint), each a run that trains in seconds;
    the TSV ones' files are written to `folder`."""
    pairs = [(f"t{i} t{i + 1}", f"t{i + 1} t{i}") for i in range(40)]
    for name, flip in (("pairs.tsv", False), ("other.tsv", True)):
        with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
            f.writelines(f"{t}\t{s}\n" if flip else f"{s}\t{t}\n" for s, t in pairs)
    generated = ["train", "--task", "copy", "--num-examples", "60", "--max-len", "4",
                 "--valid-size", "10", "--wiring", "luong", *SMALL]  # fmt: skip
    return {
        "generated": generated,
        "local": [*generated, "--local", "p", "--window", "2"],
        "tsv": ["train", "--data", os.path.join(folder, "pairs.tsv"), "--valid-size", "5", *SMALL],
        "g2p": ["train", "--data", MINI_DICT, "--test-beam", "1", "--processes", "1", *SMALL],
    }


def record_of(argv: list[str]) -> dict | None:
    """The run record of a train command line, None when the command line is refused."""
    from fast_s2s.cli import train as train_cli
    from fast_s2s.training.resume import run_record

    try:
        args = cli.build_parser().parse_args(argv)
    except UsageError:
        return None
    if train_cli.check_args(args) is not None:
        return None
    config = train_cli.config_from_args(args)
    try:  # a combination a new run would refuse (e.g. --wiring luong --score additive)
        Seq2SeqConfig(src_vocab_size=8, tgt_vocab_size=8, **config)
    except ValueError:
        return None
    return run_record(train_cli.settings_from_args(args), config)


def _candidates(action: argparse.Action, base: argparse.Namespace, folder: str) -> list[list[str]]:
    """Values of one train option to try, as command-line words."""
    name = action.option_strings[0]
    if name == "--data":
        return [[name, os.path.join(folder, "other.tsv")]]
    if action.choices:
        return [[name, str(c)] for c in action.choices]
    if action.nargs == 0:  # a flag
        return [[name]]
    kind = action.type
    if isinstance(kind, Number):
        value = getattr(base, action.dest)
        if kind.kind is float:
            values = [0.25, 0.5, (value or 0) * 2 + 1]
        else:
            start = value if value is not None else kind.low
            values = [start + 2, start + 1, kind.low, kind.low + 2]
        return [[name, str(v)] for v in values if kind.admits(str(v))]
    return []


def resume_mutation(option: str, bases: dict[str, list[str]], folder: str):
    """(base name, extra words) of a command line whose run record differs from the base's
    first in `option`, or None when no base and value give one."""
    train_parser = cli_commands()["train"]
    (action,) = [a for a in train_parser._actions if option in a.option_strings]
    for base_name, base in bases.items():
        base_record = record_of(base)
        args = cli.build_parser().parse_args(base)
        for extra in _candidates(action, args, folder):
            record = record_of([*base, *extra])
            if record is None:
                continue
            different = [k for k, v in record.items() if not _same_value(k, base_record[k], v)]
            if different and different[0] == option:
                return base_name, extra
    return None


def _same_value(key, saved, given) -> bool:
    from fast_s2s.training.resume import mismatches

    return not mismatches({key: saved}, {key: given})
