"""The command lines the CLI tests walk, generated from fast_s2s.cli's own parsers: every
numeric option of every subcommand (tests/test_argument_table.py, tests/test_properties.py)."""

from __future__ import annotations

import argparse

from fast_s2s import cli


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
