"""`fast-s2s evaluate`: score a saved model on a part of a task's split.

fast-s2s evaluate --checkpoint g2p.pt --task g2p --split test            # greedy
fast-s2s evaluate --checkpoint g2p.pt --task g2p --split test --beam 5   # beam search
fast-s2s evaluate --checkpoint g2p.pt --peer phonetisaurus   # and Phonetisaurus beside it
fast-s2s evaluate --checkpoint g2p.pt --peer phonetisaurus --plot curve.png   # time to accuracy

For g2p the dictionary, the stress convention and the split seed default to the ones the
checkpoint was trained with (its saved settings), so "test" is the same held-out words; a model
trained on a TSV of word<TAB>phonemes lines is scored on CMUdict's split. Prints one line: the
part, the words, the search, the stress convention, PER and WER. With --peer, that line is
followed by a table of both systems: Phonetisaurus is trained on the train words of the same
split (fast_s2s.training.g2p_peer, extra "g2p-peer") and scored on the same words by the same
code; fast_s2s's training seconds are the checkpoint's epoch log's. --plot draws that log's
validation WER against training seconds, with the peer's point (its training seconds and its
WER on the same validation words).
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from fast_s2s.backends import BACKENDS
from fast_s2s.cli.options import INT_MAX, SEED, integer
from fast_s2s.data import G2P_TASK, SPLITS, STRESS, CmudictUnavailableError, load_split, tokenize
from fast_s2s.data.cmudict import SRC_TOKENIZE, TGT_TOKENIZE, lexicon_pairs
from fast_s2s.training import TrainSettings, checkpoint, evaluation, g2p, g2p_peer
from fast_s2s.training.metrics import G2PScores
from fast_s2s.training.plotting import plotting_unavailable
from fast_s2s.training.translator import Translator

PEERS = ("phonetisaurus",)


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
    parser.add_argument(
        "--peer",
        choices=PEERS,
        help="also train this G2P system on the train words of the same split, score it on the "
        f"same words and print both side by side (extra {g2p_peer.PEER_EXTRA}; Phonetisaurus "
        "trains for a minute or two on CMUdict)",
    )
    parser.add_argument(
        "--plot",
        metavar="PNG",
        help="time to accuracy: the checkpoint's validation WER per epoch against training "
        "seconds, and with --peer the peer's point (its WER on the same validation words)",
    )


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
    """The report line (with --peer, and the side-by-side table), or ValueError /
    CheckpointError / FileNotFoundError / PhonetisaurusError saying what is wrong."""
    translator = Translator.from_checkpoint(args.checkpoint, backend=args.backend)
    modes = (translator.src_mode, translator.tgt_mode)
    if translator.reads_frames or modes != (SRC_TOKENIZE, TGT_TOKENIZE):
        raise ValueError(
            f"--checkpoint {args.checkpoint} is not a g2p model: g2p reads words by character "
            f"and writes phonemes as words, this model reads "
            f"{'frames' if translator.reads_frames else translator.src_mode} and writes "
            f"{translator.tgt_mode}"
        )
    saved = checkpoint.load_checkpoint(args.checkpoint)
    data, stress, seed = split_options(saved.get("settings") or {}, args)
    parts = load_split(data, stress, seed)
    part = parts[args.split]
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
    line = g2p.describe(args.split, scores, args.beam, stress)
    lines, peer = [line], None
    if args.peer is not None:
        # the peer's scores on the evaluated part, and on valid for the plot's point
        peer = _phonetisaurus(parts, {args.split, "valid"} if args.plot else {args.split})
        lines += _side_by_side(args, parts, (_training_seconds(saved), scores), peer)
    if args.plot:
        lines.append(_plot(args, saved, peer))
    return "\n".join(lines)


def _phonetisaurus(parts: dict, splits: set[str]) -> tuple[float, dict[str, G2PScores]]:
    """Phonetisaurus trained on parts["train"] (in a temporary folder) and scored on each of
    `splits`: its training seconds and the scores by split."""
    with tempfile.TemporaryDirectory(prefix="fast_s2s-phonetisaurus-") as workdir:
        model = g2p_peer.train_phonetisaurus(lexicon_pairs(parts["train"]), workdir)
        return model.seconds, {s: g2p_peer.score_phonetisaurus(model, parts[s]) for s in splits}


def _side_by_side(
    args: argparse.Namespace,
    parts: dict,
    ours: tuple[float | None, G2PScores],
    peer: tuple[float, dict[str, G2PScores]],
) -> list[str]:
    """A header line and a markdown table of both systems on the evaluated part: ours and the
    peer's (training seconds, scores)."""
    part = parts[args.split]
    search = "greedy" if args.beam == 1 else f"beam {args.beam}"
    rows = [
        (f"fast_s2s ({search})", *ours),
        ("Phonetisaurus (phonetisaurus-train --seq2_del)", peer[0], peer[1][args.split]),
    ]
    return [
        f"{args.split} words: {len(part):,}; Phonetisaurus trained on the "
        f"{len(parts['train']):,} train words of the same split",
        f"| system | training | {args.split} WER | {args.split} PER |",
        "|---|---|---|---|",
        *(
            f"| {name} | {'?' if seconds is None else f'{seconds:,.1f} s'} | "
            f"{100 * s.wer:.2f}% | {100 * s.per:.2f}% |"
            for name, seconds, s in rows
        ),
    ]


def _epoch_clock(saved: dict) -> list[tuple[float, dict]]:
    """(training seconds so far, the epoch's log entry) for each logged epoch with a time, the
    seconds counted over every run (a resumed run's log starts from 0 again)."""
    clock, offset, last = [], 0.0, 0.0
    for epoch in saved.get("history") or []:
        if "seconds" not in epoch:
            continue
        seconds = float(epoch["seconds"])
        if seconds < last:  # a resumed run: its clock restarted
            offset += last
        last = seconds
        clock.append((offset + seconds, epoch))
    return clock


def training_curve(saved: dict) -> list[tuple[float, float]]:
    """(training seconds, validation WER) per epoch of a checkpoint's epoch log."""
    return [(seconds, float(e["wer"])) for seconds, e in _epoch_clock(saved) if "wer" in e]


def _training_seconds(saved: dict) -> float | None:
    """The seconds of training in a checkpoint's epoch log, over every run; None without one."""
    clock = _epoch_clock(saved)
    return clock[-1][0] if clock else None


def _plot(
    args: argparse.Namespace, saved: dict, peer: tuple[float, dict[str, G2PScores]] | None
) -> str:
    """Draw --plot; returns the line saying where it went."""
    from fast_s2s.training.plotting import plot_time_to_accuracy

    curve = training_curve(saved)
    if not curve:
        raise ValueError(f"--plot: {args.checkpoint} holds no epoch log with validation WER")
    point = None if peer is None else ("Phonetisaurus", peer[0], peer[1]["valid"].wer)
    plot_time_to_accuracy(curve, args.plot, point)
    return f"time to accuracy written to {args.plot}"


def main(args: argparse.Namespace) -> int:
    if args.peer is not None:
        reason = g2p_peer.phonetisaurus_unavailable()
        if reason is not None:
            print(f"fast-s2s evaluate: --peer {args.peer}: {reason}", file=sys.stderr)
            return 2
    if args.plot and plotting_unavailable():
        print(f"fast-s2s evaluate: --plot: {plotting_unavailable()}", file=sys.stderr)
        return 2
    try:
        line = run(args)
    except (
        checkpoint.CheckpointError,
        ValueError,
        FileNotFoundError,
        CmudictUnavailableError,
        g2p_peer.PhonetisaurusError,
    ) as exc:
        print(f"fast-s2s evaluate: {exc}", file=sys.stderr)
        return 2
    print(line, flush=True)
    return 0
