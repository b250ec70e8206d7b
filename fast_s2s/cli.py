"""The `fast-s2s` command: verify | bench | train | translate | experiment."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module with add_arguments/main, help)
COMMANDS = {
    "verify": (
        "fast_s2s.verify",
        "check every op on every available backend against its reference",
    ),
    "bench": ("fast_s2s.benchmark", "time the ops against the PyTorch peers a user would use"),
    "train": ("fast_s2s.train", "train a GRU seq2seq model (generated task, TSV or frames file)"),
    "translate": ("fast_s2s.translate", "decode sentences with a trained checkpoint"),
    "experiment": (
        "fast_s2s.experiment",
        "length: classic vs attentional model, accuracy against source length (PNG + JSON)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fast-s2s",
        description="Fused attention and GRU kernels for RNN seq2seq models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return importlib.import_module(COMMANDS[args.command][0]).main(args)


if __name__ == "__main__":
    sys.exit(main())
