"""Data for the seq2seq model, no network: generated tasks, a TSV corpus reader, a frames file
reader (float feature sequences), the CMU Pronouncing Dictionary (g2p), vocabularies and
length-bucketed batches.

    from fast_s2s import data

    pairs = data.generate_pairs("dates", 10_000, seed=0)        # or data.read_tsv("pairs.tsv")
    tokens = data.tokenize_pairs(pairs, data.task_tokenization("dates"))
    src_vocab, tgt_vocab = data.build_vocabs(tokens)
    train, valid = data.split(data.encode_pairs(tokens, src_vocab, tgt_vocab), 0.1, seed=0)
    batches = data.make_batches(train, 64, shuffle=True, seed=epoch)

    frames, targets = data.generate_frames("tones", 1000)    # or data.load_frames("x.npz")

    parts = data.load_split(None, stress="keep", seed=0)  # CMUdict by word: train/valid/test
"""

from fast_s2s.data.cmudict import (
    G2P_TASK,
    SPLITS,
    STRESS,
    CmudictUnavailableError,
    DictionaryFormatError,
    apply_stress,
    load_split,
    parse_cmudict,
    read_cmudict,
    split_lexicon,
    strip_stress,
)
from fast_s2s.data.dataset import (
    Batch,
    FramePair,
    build_vocabs,
    collate,
    encode_pairs,
    filter_by_length,
    make_batches,
    split,
    tokenize_pairs,
)
from fast_s2s.data.dates import DATE_PATTERNS, format_date, random_date, random_date_pair
from fast_s2s.data.frames import (
    FRAMES_EXTENSIONS,
    FramesFormatError,
    is_frames_file,
    load_frames,
    save_frames,
)
from fast_s2s.data.tasks import (
    FRAME_TASKS,
    TASKS,
    generate_frames,
    generate_pairs,
    task_tokenization,
)
from fast_s2s.data.tokenize import MODES, detokenize, tokenize
from fast_s2s.data.tones import generate_tones
from fast_s2s.data.tsv import CorpusFormatError, read_tsv
from fast_s2s.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab

__all__ = [
    "BOS",
    "G2P_TASK",
    "DATE_PATTERNS",
    "EOS",
    "FRAMES_EXTENSIONS",
    "FRAME_TASKS",
    "MODES",
    "PAD",
    "SPECIALS",
    "SPLITS",
    "STRESS",
    "TASKS",
    "UNK",
    "Batch",
    "CmudictUnavailableError",
    "CorpusFormatError",
    "DictionaryFormatError",
    "FramePair",
    "FramesFormatError",
    "Vocab",
    "apply_stress",
    "build_vocabs",
    "collate",
    "detokenize",
    "encode_pairs",
    "filter_by_length",
    "format_date",
    "generate_frames",
    "generate_pairs",
    "generate_tones",
    "is_frames_file",
    "load_frames",
    "load_split",
    "make_batches",
    "parse_cmudict",
    "random_date",
    "random_date_pair",
    "read_cmudict",
    "read_tsv",
    "save_frames",
    "split",
    "split_lexicon",
    "strip_stress",
    "task_tokenization",
    "tokenize",
    "tokenize_pairs",
]
