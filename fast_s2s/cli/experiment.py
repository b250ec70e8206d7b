"""`fast-s2s experiment length`: the bottleneck experiment of fast_s2s.training.length_experiment.

fast-s2s experiment length                       # defaults: 3 models x 3000 steps, 1 thread
fast-s2s experiment length --budget 300s --out runs/bottleneck
fast-s2s experiment length --models attention,luong,local_p --window 10
fast-s2s experiment length --tiny                # seconds: a smoke test of the pipeline
"""

from __future__ import annotations

import argparse
import sys

from fast_s2s.backends import BACKENDS
from fast_s2s.cli.options import SEED, THREADS, integer
from fast_s2s.training.length_experiment import (
    DEFAULT_MODELS,
    MODEL_CHOICES,
    TINY,
    LengthSettings,
    parse_budget,
    run_length_experiment,
)


class Budget:
    """The argparse type of --budget: Adam steps ("2000") or seconds ("300s") per model, as
    (steps, seconds) with one of them None (length_experiment.parse_budget); describe / admits
    as fast_s2s.cli.options.Number, so the option tests cover it."""

    __name__ = "budget"

    def describe(self) -> str:
        return "a positive step count (2000) or seconds (300s)"

    def admits(self, text: str) -> bool:
        try:
            parse_budget(text)
        except ValueError:
            return False
        return True

    def __call__(self, text: str) -> tuple[int | None, float | None]:
        try:
            return parse_budget(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("--budget ")) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", choices=["length"], help="length: accuracy against source length, classic vs "
        "global and local attention (the bottleneck experiment)"
    )  # fmt: skip
    d = LengthSettings()
    parser.add_argument(
        "--budget",
        type=Budget(),
        default=str(d.steps),
        help=f"per model: Adam steps (e.g. 2000) or seconds (e.g. 300s); default {d.steps}",
    )
    parser.add_argument("--out", default="runs/bottleneck", help="folder for the JSON and PNG")
    parser.add_argument("--seed", type=SEED, default=d.seed, help="seed of data and weights")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes and a 6-step budget (a smoke test)"
    )
    parser.add_argument("--threads", type=THREADS, default=d.threads, help="torch threads")
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, of {', '.join(MODEL_CHOICES)} (luong: Luong general global "
        f"attention; local_p / local_m: Luong general local attention); default "
        f"{','.join(DEFAULT_MODELS)}",
    )
    parser.add_argument(
        "--window",
        type=integer(0, 1_000_000),
        default=d.window,
        help=f"D of local_p / local_m (2D + 1 positions); default {d.window}",
    )
    parser.add_argument(
        "--backend", default="auto", choices=BACKENDS, help="backend of every op (default: auto)"
    )


def settings_from_args(args: argparse.Namespace) -> LengthSettings:
    """The settings of the command line: --tiny replaces the sizes and the budget by TINY."""
    steps, seconds = args.budget
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    base = dict(
        seed=args.seed,
        backend=args.backend,
        threads=args.threads,
        models=models,
        window=args.window,
    )
    if args.tiny:
        return LengthSettings(**{**base, **TINY})
    return LengthSettings(**base, steps=steps, seconds=seconds)


def main(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"fast-s2s experiment: {exc}", file=sys.stderr)
        return 2
    run_length_experiment(settings, args.out)
    return 0
