"""Data for the seq2seq model, no network: generated tasks, a TSV corpus reader, vocabularies
and length-bucketed batches.

    from fast_s2s import data

    pairs = data.generate_pairs("dates", 10_000, seed=0)        # or data.read_tsv("pairs.tsv")
    tokens = data.tokenize_pairs(pairs, data.task_tokenization("dates"))
    src_vocab, tgt_vocab = data.build_vocabs(tokens)
    train, valid = data.split(data.encode_pairs(tokens, src_vocab, tgt_vocab), 0.1, seed=0)
    batches = data.make_batches(train, 64, shuffle=True, seed=epoch)
"""

from fast_s2s.data.dataset import (
    Batch,
    build_vocabs,
    collate,
    encode_pairs,
    filter_by_length,
    make_batches,
    split,
    tokenize_pairs,
)
from fast_s2s.data.dates import DATE_PATTERNS, format_date, random_date, random_date_pair
from fast_s2s.data.tasks import TASKS, generate_pairs, task_tokenization
from fast_s2s.data.tokenize import MODES, detokenize, tokenize
from fast_s2s.data.tsv import CorpusFormatError, read_tsv
from fast_s2s.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

__all__ = [
    "BOS",
    "DATE_PATTERNS",
    "EOS",
    "MODES",
    "PAD",
    "SPECIALS",
    "TASKS",
    "UNK",
    "Batch",
    "CorpusFormatError",
    "Vocab",
    "build_vocabs",
    "collate",
    "detokenize",
    "encode_pairs",
    "filter_by_length",
    "format_date",
    "generate_pairs",
    "make_batches",
    "random_date",
    "random_date_pair",
    "read_tsv",
    "split",
    "task_tokenization",
    "tokenize",
    "tokenize_pairs",
]
