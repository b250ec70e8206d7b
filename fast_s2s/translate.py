"""`fast-s2s translate`: load a checkpoint, decode sentences, optionally plot the attention.

fast-s2s translate --checkpoint dates.pt "tuesday 3 march 1998" "03/03/98"
echo "March 3rd, 1998" | fast-s2s translate --checkpoint dates.pt
fast-s2s translate --checkpoint dates.pt --file inputs.txt --beam 5 --plot attn.png
fast-s2s translate --checkpoint dates.pt --n-best 3 "03/03/98"   # source, rank, scores, output
fast-s2s translate --checkpoint tones.pt --frames sounds.npz     # a model that reads frames
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from rich.console import Console

from fast_s2s import checkpoint
from fast_s2s.data import FramesFormatError, Vocab, detokenize, load_frames, make_batches, tokenize
from fast_s2s.models import Hypothesis, Seq2Seq, Seq2SeqConfig
from fast_s2s.models.search import LENGTH_PENALTIES, SearchOptions, search


@dataclass
class Translation:
    source: str  # the text, or a name for frames ("frames[3]")
    output: str
    source_tokens: list[str]  # for frames: the frame indices "0", "1", ...
    output_tokens: list[str]  # ends with the end-of-sequence marker "</s>"
    attention: torch.Tensor  # (len(output_tokens), len(source_tokens)); zeros without attention
    score: float  # total log-probability of the output and eos
    ranking: float  # the length-normalised score the search ranked it by


class Translator:
    """A trained model with its vocabularies and tokenisation, ready to decode text (or, for a
    model with config.source="frames", feature frames: translate_frames; src_vocab is None)."""

    def __init__(
        self, model: Seq2Seq, src_vocab: Vocab | None, tgt_vocab: Vocab, mode: str
    ) -> None:
        self.model = model.eval()
        self.src_vocab, self.tgt_vocab, self.mode = src_vocab, tgt_vocab, mode

    @property
    def reads_frames(self) -> bool:
        """Whether the model's source is feature frames rather than text."""
        return self.model.config.source == "frames"

    @classmethod
    def from_checkpoint(
        cls, path: str, backend: str | None = None, device: str = "cpu"
    ) -> Translator:
        data = checkpoint.load_checkpoint(path, ("config", "src_vocab", "tgt_vocab", "model"))
        config_dict = dict(data["config"])
        if backend is not None:
            config_dict["backend"] = backend
        try:
            config = Seq2SeqConfig.from_dict(config_dict)
            model = Seq2Seq(config)
            model.load_state_dict(data["model"])
            frames = config.source == "frames"
            src_vocab = None if frames else Vocab.from_dict(data["src_vocab"])
            tgt_vocab = Vocab.from_dict(data["tgt_vocab"])
        except (ValueError, RuntimeError, KeyError) as exc:
            raise checkpoint.CheckpointError(f"{path!r}: inconsistent checkpoint: {exc}") from exc
        return cls(model.to(device), src_vocab, tgt_vocab, str(data.get("tokenize", "word")))

    def _decode(self, sources: list, options: SearchOptions) -> list[list[Hypothesis]]:
        """Ranked hypotheses per source (ids or a (T, F) frames tensor), in the input order."""
        device = next(self.model.parameters()).device
        results: list[list[Hypothesis]] = [[] for _ in sources]
        v = self.tgt_vocab
        examples = [(src, []) for src in sources]
        with torch.no_grad():
            for batch in make_batches(
                examples, 64, pad_id=v.pad_id, bos_id=v.bos_id, eos_id=v.eos_id
            ):
                batch = batch.to(device)
                ranked = search(self.model, batch.src, batch.src_lengths, options)
                for index, hyps in zip(batch.indices, ranked, strict=True):
                    results[index] = hyps
        return results

    def _result(
        self, source: str, source_tokens: list[str], hyp: Hypothesis, options: SearchOptions
    ) -> Translation:
        out_tokens = self.tgt_vocab.decode(hyp.tokens)
        return Translation(
            source=source,
            output=detokenize(out_tokens, self.mode),
            source_tokens=source_tokens,
            output_tokens=[*out_tokens, "</s>"],
            attention=hyp.attention[: len(out_tokens) + 1].cpu(),
            score=hyp.score,
            ranking=options.rank(hyp),
        )

    def _results(
        self, sources: list[str], source_tokens: list[list[str]], decoded, options, n_best
    ) -> list[Translation] | list[list[Translation]]:
        ranked = [
            [self._result(src, toks, h, options) for h in hyps]
            for src, toks, hyps in zip(sources, source_tokens, decoded, strict=True)
        ]
        return [r[0] for r in ranked] if n_best is None else ranked

    def translate(
        self,
        texts: list[str],
        beam: int = 5,
        max_len: int = 100,
        *,
        n_best: int | None = None,
        length_penalty: float = 1.0,
        penalty: str = "power",
        min_len: int = 0,
    ) -> list[Translation] | list[list[Translation]]:
        """Decode sentences (a model whose source is text): the best Translation of each, or
        with n_best=k a ranked list of up to k per sentence (beam search options as in
        fast_s2s.models.beam_search; beam=1 is greedy)."""
        if self.src_vocab is None:
            raise ValueError(
                "this model reads frames (config.source='frames'), not text: use "
                "translate_frames (CLI: fast-s2s translate --frames FILE.pt)"
            )
        options = SearchOptions(beam, max_len, min_len, length_penalty, penalty, n_best or 1)
        tokens = [tokenize(t, self.mode) for t in texts]
        decoded = self._decode([self.src_vocab.encode(tok) for tok in tokens], options)
        return self._results(texts, tokens, decoded, options, n_best)

    def translate_frames(
        self,
        frames: list[torch.Tensor],
        beam: int = 5,
        max_len: int = 100,
        names: list[str] | None = None,
        *,
        n_best: int | None = None,
        length_penalty: float = 1.0,
        penalty: str = "power",
        min_len: int = 0,
    ) -> list[Translation] | list[list[Translation]]:
        """Decode feature sequences, each a (T_i, frame_size) float tensor (a model whose
        source is frames). names: Translation.source of each (default "frames[i]"); the other
        options as for translate."""
        config = self.model.config
        if config.source != "frames":
            raise ValueError("this model reads text (config.source='tokens'), not frames")
        for i, f in enumerate(frames):
            if not isinstance(f, torch.Tensor) or f.dim() != 2 or not f.is_floating_point():
                what = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(f"frames[{i}] must be a 2-D (T, F) float tensor, got {what}")
            if f.shape[1] != config.frame_size:
                raise ValueError(
                    f"frames[{i}] has {f.shape[1]} features per frame; this model reads "
                    f"frame_size={config.frame_size}"
                )
        names = names or [f"frames[{i}]" for i in range(len(frames))]
        options = SearchOptions(beam, max_len, min_len, length_penalty, penalty, n_best or 1)
        decoded = self._decode([f.float().cpu() for f in frames], options)
        positions = [[str(t) for t in range(f.shape[0])] for f in frames]
        return self._results(names, positions, decoded, options, n_best)


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
) -> int:
    """Translate `texts`, or the sequences of `frames_file` (.pt / .npz, see
    fast_s2s.data.frames), and print "source<TAB>output" lines (with n_best:
    "source<TAB>rank<TAB>ranking score<TAB>log-prob<TAB>output", options.n_best lines per
    source, best first); 2 on a user error. options (default: beam `beam`) says how to decode."""
    console = console or Console()
    options = options or SearchOptions(beam=beam)
    search_kwargs = dict(
        beam=options.beam,
        max_len=options.max_len,
        n_best=options.n_best,
        length_penalty=options.length_penalty,
        penalty=options.penalty,
        min_len=options.min_len,
    )
    translator = Translator.from_checkpoint(checkpoint_path, backend=backend)
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
        ranked = translator.translate_frames(
            frames, names=[str(i) for i in range(len(frames))], **search_kwargs
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
        ranked = translator.translate(texts or [], **search_kwargs)
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
        from fast_s2s.plotting import plot_attention

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
    parser.add_argument("--beam", type=int, default=5, help="beam width (1: greedy)")
    parser.add_argument(
        "--n-best",
        type=int,
        metavar="K",
        help="print the K best outputs per source (K <= --beam), one line each: "
        "source, rank, ranking score, log-probability, output",
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
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
    parser.add_argument("--min-len", type=int, default=0, help="at least this many tokens")
    parser.add_argument("--max-len", type=int, default=100, help="at most this many tokens")
    parser.add_argument("--plot", metavar="PNG", help="save the attention map of the first input")
    parser.add_argument("--backend", choices=["auto", "reference", "cpp", "triton"])


def main(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    problem = _search_problem(args)
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
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            texts += [line.rstrip("\n\r") for line in f if line.strip()]
    if not texts and not sys.stdin.isatty():
        texts = [line.rstrip("\n\r") for line in sys.stdin if line.strip()]
    if not texts:
        print(
            "fast-s2s translate: nothing to translate (give TEXT, --file or stdin)",
            file=sys.stderr,
        )
        return 2
    return _run_guarded(args, console, texts)


def _search_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the search options, or None."""
    if args.beam < 1:
        return f"--beam must be >= 1, got {args.beam}"
    if args.n_best is not None and not 1 <= args.n_best <= args.beam:
        return f"--n-best must be in [1, --beam={args.beam}], got {args.n_best}"
    if args.max_len < 0:
        return f"--max-len must be >= 0, got {args.max_len}"
    if not 0 <= args.min_len <= args.max_len:
        return f"--min-len must be in [0, --max-len={args.max_len}], got {args.min_len}"
    return None


def _run_guarded(args: argparse.Namespace, console: Console, texts: list[str] | None) -> int:
    options = SearchOptions(
        beam=args.beam,
        max_len=args.max_len,
        min_len=args.min_len,
        length_penalty=args.length_penalty,
        penalty=args.penalty,
        n_best=args.n_best or 1,
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
        )
    except (checkpoint.CheckpointError, FramesFormatError, FileNotFoundError) as exc:
        print(f"fast-s2s translate: {exc}", file=sys.stderr)
        return 2
