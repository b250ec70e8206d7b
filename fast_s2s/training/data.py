"""Training data for `fast-s2s train`: settings, loading (generated task, TSV or frames file,
CMUdict for g2p), per-side tokenising, length filtering, the validation split, vocabularies and
encoding."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

from fast_s2s.data import (
    FRAME_TASKS,
    G2P_TASK,
    TASKS,
    Vocab,
    build_vocabs,
    detokenize,
    encode_pairs,
    filter_by_length,
    generate_frames,
    generate_pairs,
    is_frames_file,
    load_frames,
    load_split,
    read_tsv,
    split,
    task_tokenization,
    tokenize,
    tokenize_pairs,
)
from fast_s2s.data.cmudict import SRC_TOKENIZE, TGT_TOKENIZE, lexicon_pairs, references


@dataclass
class TrainSettings:
    """Everything about a run that is not the model: saved in the checkpoint for --resume."""

    task: str | None = "dates"
    data: str | None = None  # a TSV / frames corpus, or with task "g2p" a dictionary file
    tokenize: str | None = None  # both sides, unless src_tokenize / tgt_tokenize say otherwise
    src_tokenize: str | None = None
    tgt_tokenize: str | None = None
    num_examples: int = 20000
    valid_size: int = 2000
    max_len: int = 60
    min_freq: int = 1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    lr_schedule: str = "plateau"  # fast_s2s.training.schedule.SCHEDULES
    label_smoothing: float = 0.0  # of the training loss (torch.nn.functional.cross_entropy)
    clip: float = 1.0
    patience: int = 3
    time_budget: float | None = None
    seed: int = 0
    eval_beam: int = 1
    threads: int | None = None  # torch threads (torch.set_num_threads); None: torch's default
    stress: str = "keep"  # g2p: keep or strip the stress digits of the phonemes
    split_seed: int = 0  # g2p: the seed of the train/valid/test split by word


def tokenization(settings: TrainSettings, src_default: str, tgt_default: str) -> tuple[str, str]:
    """(source mode, target mode): src_tokenize / tgt_tokenize, else tokenize, else defaults."""
    src = settings.src_tokenize or settings.tokenize or src_default
    tgt = settings.tgt_tokenize or settings.tokenize or tgt_default
    return src, tgt


@dataclass
class PreparedData:
    """Encoded examples: (source ids or (T, F) frames tensor, target ids)."""

    train: list
    valid: list
    valid_refs: list[str]
    src_vocab: Vocab | None  # None for a frames source
    tgt_vocab: Vocab
    src_mode: str | None  # tokenisation of the source text; None for a frames source
    tgt_mode: str
    frame_size: int = 0  # F of a frames source, else 0
    # g2p: every reference pronunciation (phoneme lists) of each validation word, for PER/WER
    valid_references: list[list[list[str]]] | None = None


def uses_frames(settings: TrainSettings) -> bool:
    """Whether the source is frames: a frames task (tones) or a .pt / .npz --data file."""
    if settings.task == G2P_TASK:
        return False
    if settings.data:
        return is_frames_file(settings.data)
    return settings.task in FRAME_TASKS


def modes(settings: TrainSettings) -> tuple[str | None, str]:
    """(source mode, target mode) the data of `settings` is tokenised with: a frames source has
    none (its targets default to "char"), g2p is "char" in and "word" out, a generated task its
    own mode (task_tokenization), a TSV file "word"; --src-tokenize / --tgt-tokenize /
    --tokenize override the defaults (tokenization). Known before any data is read."""
    if uses_frames(settings):
        return None, tokenization(settings, "char", "char")[1]
    if settings.task == G2P_TASK:
        return tokenization(settings, SRC_TOKENIZE, TGT_TOKENIZE)
    if settings.data or settings.task not in TASKS:  # an unknown task: load_pairs refuses it
        return tokenization(settings, "word", "word")
    mode = task_tokenization(settings.task)
    return tokenization(settings, mode, mode)


def load_pairs(settings: TrainSettings) -> tuple[list[tuple[str, str]], str, str]:
    """(text pairs, source mode, target mode) from the generated task or the TSV file."""
    if settings.data:
        pairs = read_tsv(settings.data)
        if not pairs:
            raise ValueError(f"{settings.data}: the corpus is empty (no source<TAB>target lines)")
        return pairs, *modes(settings)
    if settings.task not in TASKS:
        choices = ", ".join((*TASKS, G2P_TASK, *FRAME_TASKS))
        raise ValueError(f"--task must be one of {choices}, got {settings.task!r}")
    pairs = generate_pairs(settings.task, settings.num_examples, seed=settings.seed)
    return pairs, *modes(settings)


def _split_off_validation(examples: list, settings: TrainSettings) -> tuple[list, list]:
    """(train, valid): about settings.valid_size examples, at most half, for validation. Both
    must be non-empty: validation exact match picks the checkpoint that is kept."""
    if settings.valid_size < 1:
        raise ValueError(
            "--valid-size must be >= 1 (validation picks the checkpoint that is kept), got "
            f"{settings.valid_size}"
        )
    if len(examples) < 2:
        raise ValueError(
            f"only {len(examples)} pair(s) after filtering to --max-len {settings.max_len}: "
            "training needs at least 2, one to train on and one to validate"
        )
    valid_fraction = min(0.5, settings.valid_size / len(examples))
    n_valid = max(1, round(len(examples) * valid_fraction))
    return split(examples, n_valid / len(examples), seed=settings.seed)


def _prepare_frames(settings: TrainSettings, tgt_vocab: Vocab | None) -> PreparedData:
    """The frames path of prepare_data: --max-len limits the target tokens only."""
    if settings.data:
        frames, targets = load_frames(settings.data)
    else:
        frames, targets = generate_frames(settings.task, settings.num_examples, settings.seed)
    _, mode = modes(settings)
    examples = [(f, tokenize(t, mode)) for f, t in zip(frames, targets, strict=True)]
    examples = [(f, t) for f, t in examples if t and len(t) <= settings.max_len]
    if not examples:
        raise ValueError(f"no training pairs left after filtering to --max-len {settings.max_len}")
    train_pairs, valid_pairs = _split_off_validation(examples, settings)
    if tgt_vocab is None:
        tgt_vocab = Vocab.build((t for _, t in train_pairs), min_freq=settings.min_freq)
    return PreparedData(
        train=[(f, tgt_vocab.encode(t)) for f, t in train_pairs],
        valid=[(f, tgt_vocab.encode(t)) for f, t in valid_pairs],
        valid_refs=[detokenize(t, mode) for _, t in valid_pairs],
        src_vocab=None,
        tgt_vocab=tgt_vocab,
        src_mode=None,
        tgt_mode=mode,
        frame_size=int(frames[0].shape[1]),
    )


def _check_g2p_tokenization(settings: TrainSettings) -> None:
    """g2p reads words by character and writes phonemes as words; other modes cannot work."""
    src, tgt = modes(settings)
    if (src, tgt) != (SRC_TOKENIZE, TGT_TOKENIZE):
        raise ValueError(
            f"--task {G2P_TASK} reads words by character and writes phonemes as words "
            f"(--src-tokenize {SRC_TOKENIZE} --tgt-tokenize {TGT_TOKENIZE}), got source "
            f"{src!r}, target {tgt!r}"
        )


def _prepare_g2p(
    settings: TrainSettings, vocabs: tuple[Vocab | None, Vocab] | None
) -> PreparedData:
    """The g2p path of prepare_data: CMUdict (or the --data dictionary) split by word; every
    pronunciation of a train word is a pair, each validation word is decoded once and scored
    against all of its pronunciations. --max-len filters training pairs only."""
    _check_g2p_tokenization(settings)
    parts = load_split(settings.data, settings.stress, settings.split_seed)
    if not parts["train"] or not parts["valid"]:
        raise ValueError(
            f"{settings.data or 'CMUdict'}: {len(parts['train'])} train and "
            f"{len(parts['valid'])} validation words after the split; g2p needs at least 3 words"
        )
    pairs = tokenize_pairs(lexicon_pairs(parts["train"]), SRC_TOKENIZE, TGT_TOKENIZE)
    train_pairs = filter_by_length(pairs, settings.max_len, settings.max_len)
    if not train_pairs:
        raise ValueError(f"no training pairs left after filtering to --max-len {settings.max_len}")
    words, refs = references(parts["valid"])
    valid_pairs = [(tokenize(w, SRC_TOKENIZE), r[0]) for w, r in zip(words, refs, strict=True)]
    src_vocab, tgt_vocab = vocabs or build_vocabs(train_pairs, min_freq=settings.min_freq)
    return PreparedData(
        train=encode_pairs(train_pairs, src_vocab, tgt_vocab),
        valid=encode_pairs(valid_pairs, src_vocab, tgt_vocab),
        valid_refs=[detokenize(r[0], TGT_TOKENIZE) for r in refs],
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        src_mode=SRC_TOKENIZE,
        tgt_mode=TGT_TOKENIZE,
        valid_references=refs,
    )


@contextlib.contextmanager
def _cycle_collector_paused() -> Iterator[None]:
    """Preparing the data allocates millions of small objects and keeps every one; Python's cycle
    collector would walk them all again at each of its passes and find almost nothing to free
    (27 objects in the g2p data). CMUdict for g2p (121,376 pairs): 3.85-3.95 s with it running,
    1.66-1.67 s with it paused here, in each replica (docs/results.md, "Grapheme to phoneme on
    CMUdict")."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def prepare_data(
    settings: TrainSettings, vocabs: tuple[Vocab | None, Vocab] | None = None
) -> PreparedData:
    """Tokenise, filter by length, split off validation, build (or reuse) vocabularies, encode.

    A frames source (uses_frames) has no source vocabulary (vocabs[0] is then None)."""
    with _cycle_collector_paused():
        return _prepare(settings, vocabs)


def _prepare(settings: TrainSettings, vocabs: tuple[Vocab | None, Vocab] | None) -> PreparedData:
    if uses_frames(settings):
        return _prepare_frames(settings, vocabs[1] if vocabs else None)
    if settings.task == G2P_TASK:
        return _prepare_g2p(settings, vocabs)
    pairs, src_mode, tgt_mode = load_pairs(settings)
    tokenized = tokenize_pairs(pairs, src_mode, tgt_mode)
    tokenized = filter_by_length(tokenized, settings.max_len, settings.max_len)
    if not tokenized:
        raise ValueError(f"no training pairs left after filtering to --max-len {settings.max_len}")
    train_pairs, valid_pairs = _split_off_validation(tokenized, settings)
    src_vocab, tgt_vocab = vocabs or build_vocabs(train_pairs, min_freq=settings.min_freq)
    return PreparedData(
        train=encode_pairs(train_pairs, src_vocab, tgt_vocab),
        valid=encode_pairs(valid_pairs, src_vocab, tgt_vocab),
        valid_refs=[detokenize(tgt, tgt_mode) for _, tgt in valid_pairs],
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        src_mode=src_mode,
        tgt_mode=tgt_mode,
    )
