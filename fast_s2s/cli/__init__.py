"""The `fast-s2s` command: verify | bench | train | translate | evaluate | experiment, one module
each.

Each module has add_arguments(parser) and main(args) -> exit code (2 for a user error, with one
line on stderr). A command line argparse refuses (an unknown option, a number out of its range:
fast_s2s.cli.options) is such an error too: one line, exit code 2. The work itself is in the
library (fast_s2s.ops, fast_s2s.benchmark) and the application (fast_s2s.training); these
modules only parse and report.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from fast_s2s.cli.options import CommandParser, UsageError

# subcommand -> (module with add_arguments/main, help)
COMMANDS = {
    "verify": (
        "fast_s2s.cli.verify",
        "check every op on every available backend against its reference",
    ),
    "bench": ("fast_s2s.cli.bench", "time the ops against the PyTorch peers a user would use"),
    "train": (
        "fast_s2s.cli.train",
        "train a GRU seq2seq model (generated task, TSV or frames file, g2p on CMUdict)",
    ),
    "translate": ("fast_s2s.cli.translate", "decode sentences with a trained checkpoint"),
    "evaluate": (
        "fast_s2s.cli.evaluate",
        "score a trained checkpoint on a task's held-out words (g2p: PER and WER)",
    ),
    "experiment": (
        "fast_s2s.cli.experiment",
        "length: classic vs attentional model, accuracy against source length (PNG + JSON)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="fast-s2s",
        description="Fused attention and GRU kernels for RNN seq2seq models.",
        epilog=(
            "Each command has its own --help. Start with `fast-s2s verify`, then `fast-s2s "
            "bench --quick`. The ops, modules and model in Python: README.md; every command "
            "with examples: docs/usage.md; measured figures: docs/results.md."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[args.command][0]).main(args)
