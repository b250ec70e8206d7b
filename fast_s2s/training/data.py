"""Training data for `fast-s2s train`: settings, loading (generated task, TSV or frames file),
tokenising, length filtering, the validation split, vocabularies and encoding."""

from __future__ import annotations

from dataclasses import dataclass

from fast_s2s.data import (
    FRAME_TASKS,
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
    read_tsv,
    split,
    task_tokenization,
    tokenize,
    tokenize_pairs,
)


@dataclass
class TrainSettings:
    """Everything about a run that is not the model: saved in the checkpoint for --resume."""

    task: str | None = "dates"
    data: str | None = None
    tokenize: str | None = None
    num_examples: int = 20000
    valid_size: int = 2000
    max_len: int = 60
    min_freq: int = 1
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    clip: float = 1.0
    patience: int = 3
    time_budget: float | None = None
    seed: int = 0
    eval_beam: int = 1


@dataclass
class PreparedData:
    """Encoded examples: (source ids or (T, F) frames tensor, target ids)."""

    train: list
    valid: list
    valid_refs: list[str]
    src_vocab: Vocab | None  # None for a frames source
    tgt_vocab: Vocab
    mode: str
    frame_size: int = 0  # F of a frames source, else 0


def uses_frames(settings: TrainSettings) -> bool:
    """Whether the source is frames: a frames task (tones) or a .pt / .npz --data file."""
    if settings.data:
        return is_frames_file(settings.data)
    return settings.task in FRAME_TASKS


def load_pairs(settings: TrainSettings) -> tuple[list[tuple[str, str]], str]:
    """(text pairs, tokenisation mode) from the generated task or the TSV file."""
    if settings.data:
        mode = settings.tokenize or "word"
        pairs = read_tsv(settings.data)
        if not pairs:
            raise ValueError(f"{settings.data}: the corpus is empty (no source<TAB>target lines)")
        return pairs, mode
    if settings.task not in TASKS:
        choices = ", ".join(TASKS + FRAME_TASKS)
        raise ValueError(f"--task must be one of {choices}, got {settings.task!r}")
    mode = settings.tokenize or task_tokenization(settings.task)
    return generate_pairs(settings.task, settings.num_examples, seed=settings.seed), mode


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
    mode = settings.tokenize or "char"
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
        mode=mode,
        frame_size=int(frames[0].shape[1]),
    )


def prepare_data(
    settings: TrainSettings, vocabs: tuple[Vocab | None, Vocab] | None = None
) -> PreparedData:
    """Tokenise, filter by length, split off validation, build (or reuse) vocabularies, encode.

    A frames source (uses_frames) has no source vocabulary (vocabs[0] is then None)."""
    if uses_frames(settings):
        return _prepare_frames(settings, vocabs[1] if vocabs else None)
    pairs, mode = load_pairs(settings)
    tokenized = filter_by_length(tokenize_pairs(pairs, mode), settings.max_len, settings.max_len)
    if not tokenized:
        raise ValueError(f"no training pairs left after filtering to --max-len {settings.max_len}")
    train_pairs, valid_pairs = _split_off_validation(tokenized, settings)
    src_vocab, tgt_vocab = vocabs or build_vocabs(train_pairs, min_freq=settings.min_freq)
    return PreparedData(
        train=encode_pairs(train_pairs, src_vocab, tgt_vocab),
        valid=encode_pairs(valid_pairs, src_vocab, tgt_vocab),
        valid_refs=[detokenize(tgt, mode) for _, tgt in valid_pairs],
        src_vocab=src_vocab,
        tgt_vocab=tgt_vocab,
        mode=mode,
    )
