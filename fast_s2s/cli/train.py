"""`fast-s2s train`: data, model, Adam with clipping, bucketed batches, validation, checkpoints.

    fast-s2s train --task dates --checkpoint dates.pt          # generated task, no download
    fast-s2s train --data pairs.tsv --tokenize word ...          # source<TAB>target per line
    fast-s2s train --task tones ...                              # frames source (generated)
    fast-s2s train --data frames.npz ...                         # frames source (.pt / .npz)
    fast-s2s train --attention none ...                          # classic, no attention
    fast-s2s train ... --resume                                  # continue from --checkpoint
    torchrun --nproc-per-node 2 -m fast_s2s.cli train ...        # DistributedDataParallel

Each epoch ends with greedy decoding of the validation set (exact match and sacrebleu BLEU);
the checkpoint (model config, vocabularies, weights of the best epoch and the state to resume)
is rewritten atomically after every epoch by rank 0 only. An epoch without a better validation
exact match halves the learning rate; training stops after --epochs, after --patience such
epochs in a row, or once --time-budget is spent.
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from fast_s2s.backends import BACKENDS
from fast_s2s.data import (
    FRAME_TASKS,
    TASKS,
    is_frames_file,
)
from fast_s2s.models import SearchOptions, Seq2SeqConfig
from fast_s2s.training import TrainSettings, checkpoint, train
from fast_s2s.training.plotting import plotting_unavailable


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--task",
        choices=TASKS + FRAME_TASKS,
        default=None,
        help="generated task (default dates; tones has frames as its source)",
    )
    source.add_argument(
        "--data",
        metavar="FILE",
        help="parallel corpus PAIRS.tsv (source<TAB>target per line), or a frames file "
        "FRAMES.pt / FRAMES.npz (float feature sequences and target strings, see "
        "fast_s2s.data.frames)",
    )
    parser.add_argument(
        "--tokenize",
        choices=["char", "word"],
        help="default: char for dates and frames sources, else word",
    )
    parser.add_argument("--checkpoint", metavar="PATH", help="where to save (and --resume from)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --checkpoint")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --checkpoint (a new run)"
    )
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--device", default="cpu")
    d = TrainSettings()
    parser.add_argument("--num-examples", type=int, default=d.num_examples, help="generated pairs")
    parser.add_argument("--valid-size", type=int, default=d.valid_size)
    parser.add_argument("--max-len", type=int, default=d.max_len, help="drop longer pairs (tokens)")
    parser.add_argument(
        "--min-freq", type=int, default=d.min_freq, help="rarer tokens become <unk>"
    )
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--clip", type=float, default=d.clip, help="gradient norm clipping")
    parser.add_argument("--patience", type=int, default=d.patience, help="early stopping")
    parser.add_argument(
        "--time-budget", type=float, help="seconds; stop after the epoch that passes it"
    )
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--eval-beam",
        type=int,
        default=d.eval_beam,
        help="beam width for validation (1: greedy; beam search ranks by mean log-prob)",
    )
    c = Seq2SeqConfig(src_vocab_size=4, tgt_vocab_size=4)
    parser.add_argument(
        "--attention",
        choices=["on", "none"],
        default=c.attention,
        help="none: the classic encoder-decoder (Sutskever / Cho): the fixed final encoder "
        "state, no attention",
    )
    parser.add_argument("--wiring", choices=["bahdanau", "luong"], default=c.wiring)
    parser.add_argument("--score", choices=["additive", "dot", "general", "concat"], default=None)
    parser.add_argument("--input-feeding", action="store_true")
    parser.add_argument("--embed-size", type=int, default=c.embed_size)
    parser.add_argument("--hidden-size", type=int, default=c.hidden_size)
    parser.add_argument("--encoder-layers", type=int, default=c.encoder_layers)
    parser.add_argument("--decoder-layers", type=int, default=c.decoder_layers)
    parser.add_argument("--dropout", type=float, default=c.dropout)
    parser.add_argument("--tie-embeddings", action="store_true")
    parser.add_argument("--demo", nargs="*", metavar="TEXT", help="translate these after training")
    parser.add_argument("--plot", metavar="PNG", help="with --demo: attention map of the first")


def settings_from_args(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(
        task=None if args.data else (args.task or "dates"),
        data=args.data,
        tokenize=args.tokenize,
        num_examples=args.num_examples,
        valid_size=args.valid_size,
        max_len=args.max_len,
        min_freq=args.min_freq,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        clip=args.clip,
        patience=args.patience,
        time_budget=args.time_budget,
        seed=args.seed,
        eval_beam=args.eval_beam,
    )


def config_from_args(args: argparse.Namespace) -> dict:
    score = args.score or ("additive" if args.wiring == "bahdanau" else "general")
    return dict(
        embed_size=args.embed_size,
        hidden_size=args.hidden_size,
        encoder_layers=args.encoder_layers,
        decoder_layers=args.decoder_layers,
        wiring=args.wiring,
        score=score,
        input_feeding=args.input_feeding,
        dropout=args.dropout,
        tie_embeddings=args.tie_embeddings,
        backend=args.backend,
        attention=args.attention,
    )


def check_args(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of options, before any work; None if nothing."""
    if args.plot and args.attention == "none":
        return "--plot: a model without attention (--attention none) has no attention map"
    if args.plot and plotting_unavailable():
        return f"--plot: {plotting_unavailable()}"
    if args.valid_size < 1:
        return f"--valid-size must be >= 1 (validation picks the checkpoint), got {args.valid_size}"
    if args.eval_beam < 1:
        return f"--eval-beam must be >= 1, got {args.eval_beam}"
    if args.resume and args.overwrite:
        return "give --resume (continue the run) or --overwrite (start a new one), not both"
    if args.resume and not args.checkpoint:
        return "--resume needs --checkpoint PATH"
    if args.checkpoint and os.path.isdir(args.checkpoint):
        return f"--checkpoint {args.checkpoint} is a directory; give a file path such as m.pt"
    if args.checkpoint and os.path.exists(args.checkpoint) and not (args.resume or args.overwrite):
        return (
            f"--checkpoint {args.checkpoint} exists: give --resume to continue that run or "
            "--overwrite to replace it"
        )
    frames = args.task in FRAME_TASKS or (args.data and is_frames_file(args.data))
    if args.demo and frames:
        return (
            "--demo translates text, but this model reads frames; translate frames with "
            "`fast-s2s translate --checkpoint PATH --frames FILE.pt`"
        )
    return None


def main(args: argparse.Namespace) -> int:
    # Under torchrun every process runs main(); only rank 0 talks.
    console = Console(quiet=int(os.environ.get("RANK", "0")) != 0)
    problem = check_args(args)
    if problem:
        print(f"fast-s2s train: {problem}", file=sys.stderr)
        return 2
    try:
        result = train(
            settings_from_args(args),
            config_from_args(args),
            args.checkpoint,
            resume=args.resume,
            device=args.device,
        )
    except (checkpoint.CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"fast-s2s train: {exc}", file=sys.stderr)
        return 2
    console.print(
        f"best validation exact match ({SearchOptions(beam=args.eval_beam).describe()}) "
        f"{100 * result.best_exact:.2f}%, BLEU {result.best_bleu:.2f}"
        + (f"; checkpoint {args.checkpoint}" if args.checkpoint else "")
    )
    if args.demo and args.checkpoint:
        from fast_s2s.cli import translate

        return translate.run(args.checkpoint, args.demo, beam=5, plot=args.plot, console=console)
    return 0
