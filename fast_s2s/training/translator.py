"""Translator: a trained checkpoint with its vocabularies and tokenisation (per side), ready to
decode.

translator = Translator.from_checkpoint("dates.pt")
best = translator.translate(["tuesday 3 march 1998"], beam=5)     # one Translation each
ranked = translator.translate(["03/03/98"], beam=5, n_best=3)     # up to 3 each, best first

A model trained on g2p bounds each output by its source (g2p.OUTPUT_BOUND: at most 2 phonemes
per letter plus 5), unless the options set a bound of their own or translate(bounded=False).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from fast_s2s.data import Vocab, detokenize, make_batches, tokenize
from fast_s2s.data.cmudict import G2P_TASK
from fast_s2s.gemm import frozen_weights
from fast_s2s.models import Hypothesis, SearchOptions, Seq2Seq, Seq2SeqConfig, decode_path, search
from fast_s2s.training import checkpoint, memory
from fast_s2s.training.g2p import OUTPUT_BOUND

__all__ = ["BATCH_SIZE", "Translation", "Translator"]

BATCH_SIZE = 64  # sources decoded together


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
        self,
        model: Seq2Seq,
        src_vocab: Vocab | None,
        tgt_vocab: Vocab,
        mode: str,
        tgt_mode: str | None = None,
        output_bound: tuple[float, int] | None = None,
    ) -> None:
        """mode: how source text is tokenised ("char" or "word"); tgt_mode: how outputs are
        joined (default: mode too); output_bound: (ratio, offset), the bound of an output by
        its source that searches apply unless their options set one (SearchOptions's
        max_len_ratio and max_len_offset; from_checkpoint: g2p.OUTPUT_BOUND for a g2p model),
        or None."""
        self.model = model.eval()
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.src_mode, self.tgt_mode = mode, mode if tgt_mode is None else tgt_mode
        self.output_bound = output_bound

    @property
    def reads_frames(self) -> bool:
        """Whether the model's source is feature frames rather than text."""
        return self.model.config.source == "frames"

    @classmethod
    def from_checkpoint(
        cls, path: str, backend: str | None = None, device: str = "cpu"
    ) -> Translator:
        data = checkpoint.load_checkpoint(path, ("config", "src_vocab", "tgt_vocab", "model"))
        config = checkpoint.model_config(data, path)
        if backend is not None:
            config = Seq2SeqConfig.from_dict({**config.to_dict(), "backend": backend})
        try:
            model = Seq2Seq(config)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise checkpoint.CheckpointError(f"{path!r}: inconsistent checkpoint: {exc}") from exc
        checkpoint.load_weights(model, data["model"], path, "model")
        checkpoint.check_finite_weights(data["model"], path, "model")
        try:
            frames = config.source == "frames"
            src_vocab = None if frames else Vocab.from_dict(data["src_vocab"])
            tgt_vocab = Vocab.from_dict(data["tgt_vocab"])
        except (ValueError, RuntimeError, KeyError, TypeError, AttributeError) as exc:
            raise checkpoint.CheckpointError(f"{path!r}: inconsistent checkpoint: {exc}") from exc
        src_mode, tgt_mode = checkpoint.tokenization(data, path)
        settings = data.get("settings")
        task = settings.get("task") if isinstance(settings, dict) else None
        bound = OUTPUT_BOUND if task == G2P_TASK else None
        return cls(model.to(device), src_vocab, tgt_vocab, src_mode, tgt_mode, bound)

    def bounded(self, options: SearchOptions) -> SearchOptions:
        """`options` with this model's output_bound, unless they set a bound of their own."""
        if self.output_bound is None or options.max_len_ratio is not None:
            return options
        ratio, offset = self.output_bound
        return dataclasses.replace(options, max_len_ratio=ratio, max_len_offset=offset)

    def check_memory(
        self,
        source_lengths: list[int],
        options: SearchOptions,
        names: tuple[str, str | None] = ("--beam", "--max-len"),
    ) -> None:
        """Raise memory.MemoryLimitError (one line naming `names`, the options of beam and
        max_len) when decoding sources of these lengths with `options` would not fit in memory."""
        if not source_lengths:
            return
        parameter = next(self.model.parameters())
        memory.check_search(
            self.model.config,
            batch=min(BATCH_SIZE, len(source_lengths)),
            beam=options.beam,
            max_len=options.max_len,
            src_len=max(source_lengths),
            n_best=options.n_best,
            itemsize=parameter.element_size(),
            device=parameter.device,
            options=names,
            loop=decode_path(self.model, options.native),
        )

    def source_lengths(self, texts: list[str]) -> list[int]:
        """The number of source positions of each text, as translate tokenises it."""
        return [len(tokenize(t, self.src_mode)) for t in texts]

    def _decode(self, sources: list, options: SearchOptions) -> list[list[Hypothesis]]:
        """Ranked hypotheses per source (ids or a (T, F) frames tensor), in the input order."""
        device = next(self.model.parameters()).device
        results: list[list[Hypothesis]] = [[] for _ in sources]
        v = self.tgt_vocab
        examples = [(src, []) for src in sources]
        # The weights do not change while translating: the CPU kernels keep what they prepare
        # from them (the encoder's packed W_hh, the cell's weights) for every batch.
        with torch.no_grad(), frozen_weights():
            for batch in make_batches(
                examples, BATCH_SIZE, pad_id=v.pad_id, bos_id=v.bos_id, eos_id=v.eos_id
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
            output=detokenize(out_tokens, self.tgt_mode),
            source_tokens=source_tokens,
            output_tokens=[*out_tokens, "</s>"],
            attention=hyp.attention[: len(out_tokens) + 1].cpu(),
            score=hyp.score,
            ranking=options.rank(hyp),
        )

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
        bounded: bool = True,
    ) -> list[Translation] | list[list[Translation]]:
        """Decode sentences (a model whose source is text): the best Translation of each, or
        with n_best=k a ranked list of up to k per sentence (beam search options as in
        fast_s2s.models.beam_search; beam=1 is greedy). bounded: apply output_bound (False:
        max_len alone bounds every output)."""
        options = SearchOptions(
            beam=beam, max_len=max_len, min_len=min_len, length_penalty=length_penalty,
            penalty=penalty, n_best=n_best or 1,
        )  # fmt: skip
        options = self.bounded(options) if bounded else options
        return _best_or_ranked(self.translate_ranked(texts, options), n_best)

    def translate_ranked(self, texts: list[str], options: SearchOptions) -> list[list[Translation]]:
        """translate with the options in one object, as they are (bounded(options) adds the
        model's output bound): up to options.n_best per sentence."""
        if self.src_vocab is None:
            raise ValueError(
                "this model reads frames (config.source='frames'), not text: use "
                "translate_frames (CLI: fast-s2s translate --frames FILE.pt)"
            )
        tokens = [tokenize(t, self.src_mode) for t in texts]
        decoded = self._decode([self.src_vocab.encode(tok) for tok in tokens], options)
        return self._results(texts, tokens, decoded, options)

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
        options = SearchOptions(
            beam=beam, max_len=max_len, min_len=min_len, length_penalty=length_penalty,
            penalty=penalty, n_best=n_best or 1,
        )  # fmt: skip
        return _best_or_ranked(self.translate_frames_ranked(frames, options, names), n_best)

    def translate_frames_ranked(
        self, frames: list[torch.Tensor], options: SearchOptions, names: list[str] | None = None
    ) -> list[list[Translation]]:
        """translate_frames with the options in one object: up to options.n_best per sequence."""
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
        decoded = self._decode([f.float().cpu() for f in frames], options)
        positions = [[str(t) for t in range(f.shape[0])] for f in frames]
        return self._results(names, positions, decoded, options)

    def _results(
        self, sources: list[str], source_tokens: list[list[str]], decoded, options
    ) -> list[list[Translation]]:
        return [
            [self._result(src, toks, h, options) for h in hyps]
            for src, toks, hyps in zip(sources, source_tokens, decoded, strict=True)
        ]


def _best_or_ranked(
    ranked: list[list[Translation]], n_best: int | None
) -> list[Translation] | list[list[Translation]]:
    """The best of each (n_best None) or the ranked lists, as beam_search returns them."""
    return [r[0] for r in ranked] if n_best is None else ranked
