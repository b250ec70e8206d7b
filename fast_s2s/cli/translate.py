"""`fast-s2s translate`: load a checkpoint, decode sentences, optionally plot the attention.

fast-s2s translate --checkpoint dates.pt "tuesday 3 march 1998" "03/03/98"
echo "March 3rd, 1998" | fast-s2s translate --checkpoint dates.pt
fast-s2s translate --checkpoint dates.pt --file inputs.txt --beam 5 --plot attn.png
fast-s2s translate --checkpoint dates.pt --n-best 3 "03/03/98"   # source, rank, scores, output
fast-s2s translate --checkpoint tones.pt --frames sounds.npz     # a model that reads frames
fast-s2s translate --checkpoint g2p.pt --max-len-ratio 1.5 --max-len-offset 3 "tomato"

A g2p model bounds each output by its source (2 phonemes per letter + 5) unless --max-len-ratio
says otherwise ("none": --max-len alone).
"""

from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console

from fast_s2s.backends import BACKENDS
from fast_s2s.cli.options import INT_MAX, Number, integer, number
from fast_s2s.data import FramesFormatError, load_frames
from fast_s2s.models.decoding import LENGTH_PENALTIES, SearchOptions
from fast_s2s.training import checkpoint
from fast_s2s.training.g2p import OUTPUT_BOUND as G2P_OUTPUT_BOUND
from fast_s2s.training.plotting import plotting_unavailable
from fast_s2s.training.translator import Translator

# alpha of the length penalty lp(L) = L ** alpha (or GNMT's): 0 ranks by total log-probability,
# the literature uses 0.6-1.0; past 10, lp of a 100-token output is 1e20 and ranks nothing.
LENGTH_PENALTY = number(0, 10)
# Output tokens per source token (--max-len-ratio), or "none": --max-len alone bounds outputs.
NO_BOUND = "none"
MAX_LEN_RATIO = Number(float, 0, 1000, words=(NO_BOUND,))


def run(
    checkpoint_path: str,
    texts: list[str] | None,
    *,
    beam: int = 5,
    plot: str | None = None,
    backend: str | None = None,
    console: Console | None = None,
    frames_file: str | None = None,
    options: SearchOptions | None = None,
    n_best: bool = False,
    task_bound: bool = True,
) -> int:
    """Translate `texts`, or the sequences of `frames_file` (.pt / .npz, see
    fast_s2s.data.frames), and print "source<TAB>output" lines (with n_best:
    "source<TAB>rank<TAB>ranking score<TAB>log-prob<TAB>output", options.n_best lines per
    source, best first); 2 on a user error. options (default: beam `beam`) says how to decode;
    task_bound: options without a bound of their own get the model's (Translator.bounded)."""
    console = console or Console()
    options = options or SearchOptions(beam=beam)
    translator = Translator.from_checkpoint(checkpoint_path, backend=backend)
    if task_bound:
        options = translator.bounded(options)
    if plot and not translator.model.has_attention:
        print(
            f"fast-s2s translate: --plot: {checkpoint_path} is a model without attention "
            "(attention='none'), so there is no attention map to plot",
            file=sys.stderr,
        )
        return 2
    if frames_file is not None:
        if not translator.reads_frames:
            print(
                f"fast-s2s translate: --frames: {checkpoint_path} is a model that reads text, "
                "not frames",
                file=sys.stderr,
            )
            return 2
        frames, targets = load_frames(frames_file, require_targets=False)
        translator.check_memory([f.shape[0] for f in frames], options)
        ranked = translator.translate_frames_ranked(
            frames, options, names=[str(i) for i in range(len(frames))]
        )
    elif translator.reads_frames:
        print(
            f"fast-s2s translate: {checkpoint_path} is a model that reads frames: give "
            "--frames FILE.pt or FILE.npz instead of text",
            file=sys.stderr,
        )
        return 2
    else:
        targets = None
        translator.check_memory(translator.source_lengths(texts or []), options)
        ranked = translator.translate_ranked(texts or [], options)
    results = [hyps[0] for hyps in ranked]
    for hyps in ranked:  # plain tab-separated lines on stdout, for pipes
        if not n_best:
            print(f"{hyps[0].source}\t{hyps[0].output}", flush=True)
            continue
        for rank, r in enumerate(hyps, start=1):
            print(f"{r.source}\t{rank}\t{r.ranking:.4f}\t{r.score:.4f}\t{r.output}", flush=True)
    if targets is not None:
        hits = sum(r.output == t for r, t in zip(results, targets, strict=True))
        console.print(f"exact match against the file's targets: {hits}/{len(targets)}")
    if plot and results:
        from fast_s2s.training.plotting import plot_attention

        first = results[0]
        plot_attention(
            first.attention, first.source_tokens, first.output_tokens, plot, title=first.source
        )
        console.print(f"attention map of {first.source!r} written to {plot}", markup=False)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="sentences to translate (default: stdin lines)")
    parser.add_argument("--checkpoint", required=True, metavar="PATH")
    parser.add_argument("--file", metavar="PATH", help="translate every line of this file")
    parser.add_argument(
        "--frames",
        metavar="FILE",
        help="translate the feature sequences of FILE.pt / FILE.npz (a model trained on frames; "
        "lines are index<TAB>output)",
    )
    parser.add_argument(
        "--beam", type=integer(1, INT_MAX), default=5, help="beam width (1: greedy)"
    )
    parser.add_argument(
        "--n-best",
        type=integer(1, INT_MAX),
        metavar="K",
        help="print the K best outputs per source (K <= --beam), one line each: "
        "source, rank, ranking score, log-probability, output",
    )
    parser.add_argument(
        "--length-penalty",
        type=LENGTH_PENALTY,
        default=1.0,
        metavar="ALPHA",
        help="rank finished outputs by log-prob / lp(length); 0: total log-prob",
    )
    parser.add_argument(
        "--penalty",
        choices=LENGTH_PENALTIES,
        default="power",
        help="lp(L): power = L ** ALPHA, gnmt = ((5 + L) / 6) ** ALPHA",
    )
    parser.add_argument(
        "--min-len", type=integer(0, INT_MAX), default=0, help="at least this many tokens"
    )
    parser.add_argument(
        "--max-len", type=integer(0, INT_MAX), default=100, help="at most this many tokens"
    )
    parser.add_argument(
        "--max-len-ratio",
        type=MAX_LEN_RATIO,
        metavar="A",
        help="at most floor(A * source length) + --max-len-offset tokens, within --min-len and "
        f"--max-len (default: the model's task's bound, g2p: A = {G2P_OUTPUT_BOUND[0]:g}, "
        f"B = {G2P_OUTPUT_BOUND[1]}; none: --max-len alone)",
    )
    parser.add_argument(
        "--max-len-offset",
        type=integer(0, INT_MAX),
        metavar="B",
        help="with --max-len-ratio: B (default 0; a g2p model without --max-len-ratio: "
        f"{G2P_OUTPUT_BOUND[1]})",
    )
    parser.add_argument("--plot", metavar="PNG", help="save the attention map of the first input")
    parser.add_argument(
        "--backend", choices=BACKENDS, help="backend of every op (default: the checkpoint's)"
    )


def main(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    problem = _search_problem(args)
    if problem is None and args.plot and plotting_unavailable():
        problem = f"--plot: {plotting_unavailable()}"
    if problem:
        print(f"fast-s2s translate: {problem}", file=sys.stderr)
        return 2
    if args.frames:
        if args.texts or args.file:
            print(
                "fast-s2s translate: give either --frames or text (TEXT, --file), not both",
                file=sys.stderr,
            )
            return 2
        return _run_guarded(args, console, None)
    texts = list(args.texts)
    try:
        if args.file:
            texts += _read_lines(args.file)
        stdin = sys.stdin  # None when the shell closed it (`<&-`)
        if not texts and stdin is not None and not stdin.isatty():
            texts = _read_stdin(stdin)
    except InputError as exc:
        print(f"fast-s2s translate: {exc}", file=sys.stderr)
        return 2
    if not texts:
        print(
            "fast-s2s translate: nothing to translate (give TEXT, --file or stdin)",
            file=sys.stderr,
        )
        return 2
    return _run_guarded(args, console, texts)


class InputError(ValueError):
    """A --file that cannot be read as UTF-8 text lines."""


def _nonblank(lines: list[str]) -> list[str]:
    return [line.rstrip("\r") for line in lines if line.strip()]


def _decode_lines(data: bytes, where: str) -> list[str]:
    """The non-blank lines of UTF-8 bytes, or InputError naming the line that is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{where}:{line}: not UTF-8 text ({exc.reason})") from None
    return _nonblank(text.removeprefix("\ufeff").split("\n"))


def _read_lines(path: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file, or InputError saying why it cannot be read."""
    if os.path.isdir(path):
        raise InputError(f"--file {path} is a directory, not a text file")
    if not os.path.isfile(path):
        raise InputError(f"--file {path}: no such file")
    with open(path, "rb") as f:
        return _decode_lines(f.read(), f"--file {path}")


def _read_stdin(stdin) -> list[str]:
    """stdin's non-blank lines, decoded strictly as UTF-8 (the text layer may not be strict)."""
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # a text stream without bytes beneath (tests, embedding)
        return _nonblank(stdin.read().split("\n"))
    return _decode_lines(buffer.read(), "stdin")


def _search_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the search options, or None."""
    if args.n_best is not None and not 1 <= args.n_best <= args.beam:
        return f"--n-best must be in [1, --beam={args.beam}], got {args.n_best}"
    if not 0 <= args.min_len <= args.max_len:
        return f"--min-len must be in [0, --max-len={args.max_len}], got {args.min_len}"
    if args.max_len_offset is not None and not isinstance(args.max_len_ratio, float):
        return "--max-len-offset needs --max-len-ratio A (a number)"
    return None


def _run_guarded(args: argparse.Namespace, console: Console, texts: list[str] | None) -> int:
    options = SearchOptions(
        beam=args.beam,
        max_len=args.max_len,
        min_len=args.min_len,
        length_penalty=args.length_penalty,
        penalty=args.penalty,
        n_best=args.n_best or 1,
        max_len_ratio=args.max_len_ratio if isinstance(args.max_len_ratio, float) else None,
        max_len_offset=args.max_len_offset or 0,
    )
    try:
        return run(
            args.checkpoint,
            texts,
            options=options,
            n_best=args.n_best is not None,
            plot=args.plot,
            backend=args.backend,
            console=console,
            frames_file=args.frames,
            task_bound=args.max_len_ratio is None,
        )
    except (checkpoint.CheckpointError, FramesFormatError, FileNotFoundError, ValueError) as exc:
        # ValueError: fast_s2s's own argument checks, e.g. a model that yields no finite output
        print(f"fast-s2s translate: {exc}", file=sys.stderr)
        return 2
