"""`fast-s2s translate`: load a checkpoint, decode sentences, optionally plot the attention.

fast-s2s translate --checkpoint dates.pt "tuesday 3 march 1998" "03/03/98"
echo "March 3rd, 1998" | fast-s2s translate --checkpoint dates.pt
fast-s2s translate --checkpoint dates.pt --file inputs.txt --beam 5 --plot attn.png
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
from rich.console import Console

from fast_s2s import checkpoint
from fast_s2s.data import Vocab, detokenize, make_batches, tokenize
from fast_s2s.models import Seq2Seq, Seq2SeqConfig
from fast_s2s.models.search import beam_search, greedy_decode


@dataclass
class Translation:
    source: str
    output: str
    source_tokens: list[str]
    output_tokens: list[str]  # ends with the end-of-sequence marker "</s>"
    attention: torch.Tensor  # (len(output_tokens), len(source_tokens))
    score: float


class Translator:
    """A trained model with its vocabularies and tokenisation, ready to decode text."""

    def __init__(self, model: Seq2Seq, src_vocab: Vocab, tgt_vocab: Vocab, mode: str) -> None:
        self.model = model.eval()
        self.src_vocab, self.tgt_vocab, self.mode = src_vocab, tgt_vocab, mode

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
            src_vocab = Vocab.from_dict(data["src_vocab"])
            tgt_vocab = Vocab.from_dict(data["tgt_vocab"])
        except (ValueError, RuntimeError, KeyError) as exc:
            raise checkpoint.CheckpointError(f"{path!r}: inconsistent checkpoint: {exc}") from exc
        return cls(model.to(device), src_vocab, tgt_vocab, str(data.get("tokenize", "word")))

    def translate(self, texts: list[str], beam: int = 5, max_len: int = 100) -> list[Translation]:
        device = next(self.model.parameters()).device
        tokens = [tokenize(t, self.mode) for t in texts]
        examples = [(self.src_vocab.encode(tok), []) for tok in tokens]
        results: list[Translation | None] = [None] * len(texts)
        v = self.tgt_vocab
        with torch.no_grad():
            for batch in make_batches(
                examples, 64, pad_id=v.pad_id, bos_id=v.bos_id, eos_id=v.eos_id
            ):
                batch = batch.to(device)
                if beam > 1:
                    hyps = beam_search(self.model, batch.src, batch.src_lengths, beam, max_len)
                else:
                    hyps = greedy_decode(self.model, batch.src, batch.src_lengths, max_len)
                for index, hyp in zip(batch.indices, hyps, strict=True):
                    out_tokens = v.decode(hyp.tokens)
                    results[index] = Translation(
                        source=texts[index],
                        output=detokenize(out_tokens, self.mode),
                        source_tokens=tokens[index],
                        output_tokens=[*out_tokens, "</s>"],
                        attention=hyp.attention[: len(out_tokens) + 1].cpu(),
                        score=hyp.score,
                    )
        return results  # type: ignore[return-value]


def run(
    checkpoint_path: str,
    texts: list[str],
    *,
    beam: int = 5,
    plot: str | None = None,
    backend: str | None = None,
    console: Console | None = None,
) -> int:
    console = console or Console()
    translator = Translator.from_checkpoint(checkpoint_path, backend=backend)
    results = translator.translate(texts, beam=beam)
    for r in results:  # plain "source<TAB>output" lines on stdout, for pipes
        print(f"{r.source}\t{r.output}", flush=True)
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
    parser.add_argument("--beam", type=int, default=5, help="beam width (1: greedy)")
    parser.add_argument("--plot", metavar="PNG", help="save the attention map of the first input")
    parser.add_argument("--backend", choices=["auto", "reference", "cpp", "triton"])


def main(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
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
    if args.beam < 1:
        print(f"fast-s2s translate: --beam must be >= 1, got {args.beam}", file=sys.stderr)
        return 2
    try:
        return run(
            args.checkpoint,
            texts,
            beam=args.beam,
            plot=args.plot,
            backend=args.backend,
            console=console,
        )
    except checkpoint.CheckpointError as exc:
        print(f"fast-s2s translate: {exc}", file=sys.stderr)
        return 2
