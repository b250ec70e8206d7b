"""From text pairs to padded, length-bucketed batches of ids.

pairs = tokenize_pairs(read_tsv("pairs.tsv"), "word")
pairs = filter_by_length(pairs, max_src_len=50, max_tgt_len=50)
src_vocab, tgt_vocab = build_vocabs(pairs, min_freq=2)
examples = encode_pairs(pairs, src_vocab, tgt_vocab)
train, valid = split(examples, valid_fraction=0.1, seed=0)
for batch in make_batches(train, 64, shuffle=True, seed=epoch):
    batch = batch.to(device)   # src (B, S), tgt_in / tgt_out (B, T), lengths, indices
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from fast_s2s.data.tokenize import tokenize
from fast_s2s.data.vocab import Vocab

T = TypeVar("T")
TokenPair = tuple[list[str], list[str]]
IdPair = tuple[list[int], list[int]]
# A frames example: (source frames (T, F) float tensor, target ids). collate pads either kind.
FramePair = tuple[Tensor, list[int]]


def tokenize_pairs(
    pairs: list[tuple[str, str]], mode: str, tgt_mode: str | None = None
) -> list[TokenPair]:
    """Tokenize every (source, target) text pair: the source with `mode` ("char" or "word"),
    the target with `tgt_mode` (default: `mode` too), e.g. "char" then "word" for a word and
    its space-separated phonemes."""
    tgt_mode = mode if tgt_mode is None else tgt_mode
    return [(tokenize(source, mode), tokenize(target, tgt_mode)) for source, target in pairs]


def filter_by_length(
    pairs: list[TokenPair],
    max_src_len: int | None,
    max_tgt_len: int | None,
) -> list[TokenPair]:
    """Keep the pairs whose sides are non-empty and no longer than the limits (None: no limit).

    Lengths count tokens, without the bos/eos added at batching.
    """
    return [
        (source, target)
        for source, target in pairs
        if source
        and target
        and (max_src_len is None or len(source) <= max_src_len)
        and (max_tgt_len is None or len(target) <= max_tgt_len)
    ]


def build_vocabs(
    pairs: list[TokenPair], min_freq: int = 1, shared: bool = False
) -> tuple[Vocab, Vocab]:
    """Source and target vocabularies of `pairs` (see Vocab.build).

    shared=True builds one vocabulary from both sides and returns it twice (the same object),
    as tied source/target embeddings need.
    """
    if shared:
        vocab = Vocab.build(
            [side for pair in pairs for side in pair],
            min_freq=min_freq,
        )
        return vocab, vocab
    return (
        Vocab.build((source for source, _ in pairs), min_freq=min_freq),
        Vocab.build((target for _, target in pairs), min_freq=min_freq),
    )


def encode_pairs(pairs: list[TokenPair], src_vocab: Vocab, tgt_vocab: Vocab) -> list[IdPair]:
    """Ids of both sides (unknown tokens to unk_id); bos/eos are added later, by make_batches."""
    return [(src_vocab.encode(source), tgt_vocab.encode(target)) for source, target in pairs]


@dataclass
class Batch:
    """A padded batch. B examples, S = longest source, T = longest target + 1.

    src: (B, S) int64, padded with pad_id (not reversed); for frames examples (source a
        (T, F) float tensor) (B, S, F) float32, padded with zeros.
    src_lengths: (B,) int64.
    tgt_in: (B, T) int64, bos + target, padded: the decoder inputs under teacher forcing.
    tgt_out: (B, T) int64, target + eos, padded: the prediction targets.
    tgt_lengths: (B,) int64, len(target) + 1 (valid positions of tgt_in and tgt_out).
    indices: positions of these examples in the list given to make_batches.
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_lengths: Tensor
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def num_target_tokens(self) -> int:
        """Prediction targets in the batch (eos included): the sum of tgt_lengths."""
        return int(self.tgt_lengths.sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on `device`."""
        return Batch(
            src=self.src.to(device, non_blocking=non_blocking),
            src_lengths=self.src_lengths.to(device, non_blocking=non_blocking),
            tgt_in=self.tgt_in.to(device, non_blocking=non_blocking),
            tgt_out=self.tgt_out.to(device, non_blocking=non_blocking),
            tgt_lengths=self.tgt_lengths.to(device, non_blocking=non_blocking),
            indices=list(self.indices),
        )


def _pad_frames(sources: list[Tensor], width: int) -> Tensor:
    """(T_i, F) float tensors -> (B, width, F) float32, zeros after each T_i."""
    features = sources[0].shape[-1]
    out = torch.zeros(len(sources), width, features, dtype=torch.float32)
    for row, frames in enumerate(sources):
        out[row, : frames.shape[0]] = frames
    return out


def collate(
    examples: Sequence[IdPair | FramePair],
    indices: list[int],
    *,
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
) -> Batch:
    """Pad the examples at `indices` into one Batch (widths are at least 1).

    Sources are lists of ids, or (T, F) float tensors of frames (padded with zero frames).
    """
    if not indices:
        raise ValueError("cannot make a batch of no examples")
    sources = [examples[i][0] for i in indices]
    targets = [examples[i][1] for i in indices]
    width_src = max(1, max(len(s) for s in sources))
    width_tgt = max(len(t) for t in targets) + 1
    if isinstance(sources[0], Tensor):
        src = _pad_frames(sources, width_src)
    else:
        src = torch.tensor(
            [s + [pad_id] * (width_src - len(s)) for s in sources], dtype=torch.int64
        )
    tgt_in = [[bos_id, *t] + [pad_id] * (width_tgt - len(t) - 1) for t in targets]
    tgt_out = [[*t, eos_id] + [pad_id] * (width_tgt - len(t) - 1) for t in targets]
    return Batch(
        src=src,
        src_lengths=torch.tensor([len(s) for s in sources], dtype=torch.int64),
        tgt_in=torch.tensor(tgt_in, dtype=torch.int64),
        tgt_out=torch.tensor(tgt_out, dtype=torch.int64),
        tgt_lengths=torch.tensor([len(t) + 1 for t in targets], dtype=torch.int64),
        indices=list(indices),
    )


def _shuffle_in_runs(groups: list[T], run: int, rng: random.Random) -> list[T]:
    """`groups` (in length order) shuffled in runs of `run` neighbours; the len % run groups
    that make no whole run, picked at random, last. A run of 1 is a plain shuffle."""
    if run == 1:
        rng.shuffle(groups)
        return groups
    spare = set(rng.sample(range(len(groups)), len(groups) % run))
    kept = [group for i, group in enumerate(groups) if i not in spare]
    runs = [kept[start : start + run] for start in range(0, len(kept), run)]
    rng.shuffle(runs)
    return [group for r in runs for group in r] + [groups[i] for i in sorted(spare)]


def make_batches(
    examples: Sequence[IdPair | FramePair],
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    bucket: bool = True,
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
    replicas: int = 1,
) -> list[Batch]:
    """Cut (source ids, target ids) examples into padded batches of at most `batch_size`.

    Sources may also be (T, F) float tensors of frames (FramePair): lengths are then T.

    bucket=True: examples are sorted (stably) by source length, then target length, and cut in
    order, so each batch holds similar lengths; with shuffle the examples are shuffled before the
    sort (so equal-length examples meet different partners each seed) and the order of the
    batches is shuffled after it. bucket=False keeps the input order, or a shuffled order with
    shuffle. Shuffling is deterministic given `seed` (pass the epoch number for a new order each
    epoch). Targets may be empty (inference): tgt_in is then just bos. Batch.indices restore
    the input order.

    replicas > 1 (data-parallel training, each replica taking every replicas-th batch:
    fast_s2s.training.distributed.shard): with shuffle and bucket, the batches are shuffled in
    runs of `replicas` neighbours in length order, so the batches the replicas take at one
    step have about the same lengths (every replica waits for the slowest at each step). The
    len % replicas batches left over, picked at random, come last.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    order = list(range(len(examples)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(order)
    if bucket:
        order.sort(key=lambda i: (len(examples[i][0]), len(examples[i][1])))
    groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if shuffle and bucket:
        groups = _shuffle_in_runs(groups, replicas, rng)
    return [
        collate(examples, group, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id) for group in groups
    ]


def split(examples: list[T], valid_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split into (train, valid) at random, deterministically given `seed`.

    valid holds round(len(examples) * valid_fraction) examples; both parts keep the input order.
    """
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    n_valid = round(len(examples) * valid_fraction)
    chosen = set(random.Random(seed).sample(range(len(examples)), n_valid))
    train = [example for i, example in enumerate(examples) if i not in chosen]
    valid = [example for i, example in enumerate(examples) if i in chosen]
    return train, valid
