"""The `fast-s2s` command: verify | bench (train and translate arrive with the model issue)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from fast_s2s import benchmark, verify

    parser = argparse.ArgumentParser(
        prog="fast-s2s",
        description="Fused attention and GRU kernels for RNN seq2seq models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    verify.add_arguments(
        sub.add_parser(
            "verify", help="check every op on every available backend against its reference"
        )
    )
    benchmark.add_arguments(
        sub.add_parser("bench", help="time the ops against the PyTorch peers a user would use")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify":
        from fast_s2s import verify

        return verify.main(args)
    from fast_s2s import benchmark

    return benchmark.main(args)


if __name__ == "__main__":
    sys.exit(main())
