"""`fast-s2s evaluate`: score a saved model on a part of a task's split.

fast-s2s evaluate --checkpoint g2p.pt --task g2p --split test            # greedy
fast-s2s evaluate --checkpoint g2p.pt --task g2p --split test --beam 5   # beam search

For g2p the dictionary, the stress convention and the split seed default to the ones the
checkpoint was trained with (its saved settings), so "test" is the same held-out words; a model
trained on a TSV of word<TAB>phonemes lines is scored on CMUdict's split. Prints one line: the
part, the words, the search, the stress convention, PER and WER.
"""

from __future__ import annotations

import argparse
import sys

from fast_s2s.backends import BACKENDS
from fast_s2s.cli.options import INT_MAX, SEED, integer
from fast_s2s.data import G2P_TASK, SPLITS, STRESS, CmudictUnavailableError, load_split, tokenize
from fast_s2s.data.cmudict import SRC_TOKENIZE, TGT_TOKENIZE
from fast_s2s.training import TrainSettings, checkpoint, evaluation, g2p
from fast_s2s.training.translator import Translator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="PATH")
    parser.add_argument("--task", choices=[G2P_TASK], default=G2P_TASK, help="default g2p")
    parser.add_argument("--split", choices=SPLITS, default="test", help="default test")
    parser.add_argument(
        "--beam", type=integer(1, INT_MAX), default=1, help="beam width (default 1: greedy)"
    )
    parser.add_argument(
        "--data", metavar="FILE", help="dictionary file (default: the checkpoint's, else CMUdict)"
    )
    parser.add_argument("--stress", choices=STRESS, help="default: the checkpoint's")
    parser.add_argument("--split-seed", type=SEED, help="default: the checkpoint's")
    parser.add_argument(
        "--backend", choices=BACKENDS, help="backend of every op (default: the checkpoint's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")


def split_options(saved: dict, args: argparse.Namespace) -> tuple[str | None, str, int]:
    """(dictionary file or None, stress, split seed): the options given, else the checkpoint's
    when it was trained on g2p, else the defaults of TrainSettings."""
    d = TrainSettings()
    if saved.get("task") != G2P_TASK:
        saved = {}  # a TSV-trained model: its --data is no dictionary
    data = args.data if args.data is not None else saved.get("data")
    stress = args.stress or saved.get("stress", d.stress)
    seed = args.split_seed if args.split_seed is not None else saved.get("split_seed", d.split_seed)
    return data, stress, int(seed)


def run(args: argparse.Namespace) -> str:
    """The report line, or ValueError / CheckpointError / FileNotFoundError saying what is wrong."""
    translator = Translator.from_checkpoint(args.checkpoint, backend=args.backend)
    modes = (translator.src_mode, translator.tgt_mode)
    if translator.reads_frames or modes != (SRC_TOKENIZE, TGT_TOKENIZE):
        raise ValueError(
            f"--checkpoint {args.checkpoint} is not a g2p model: g2p reads words by character "
            f"and writes phonemes as words, this model reads "
            f"{'frames' if translator.reads_frames else translator.src_mode} and writes "
            f"{translator.tgt_mode}"
        )
    saved = checkpoint.load_checkpoint(args.checkpoint).get("settings") or {}
    data, stress, seed = split_options(saved, args)
    part = load_split(data, stress, seed)[args.split]
    if not part:
        raise ValueError(f"--split {args.split} of {data or 'CMUdict'} holds no words")
    model = translator.model.to(args.device)
    lengths = [len(tokenize(word, SRC_TOKENIZE)) for word in part]
    evaluation.check_memory(
        model.config,
        lengths,
        args.beam,
        "--beam",
        args.device,
        next(model.parameters()).element_size(),
    )
    scores = g2p.score_part(
        model, translator.src_vocab, translator.tgt_vocab, part, beam=args.beam, device=args.device
    )
    return g2p.describe(args.split, scores, args.beam, stress)


def main(args: argparse.Namespace) -> int:
    try:
        line = run(args)
    except (
        checkpoint.CheckpointError,
        ValueError,
        FileNotFoundError,
        CmudictUnavailableError,
    ) as exc:
        print(f"fast-s2s evaluate: {exc}", file=sys.stderr)
        return 2
    print(line, flush=True)
    return 0
