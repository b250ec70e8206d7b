"""The g2p task: English grapheme-to-phoneme conversion on CMUdict (fast_s2s.data.cmudict), its
defaults for `fast-s2s train --task g2p`, and scoring a model on one part of the split.

    parts = fast_s2s.data.cmudict.load_split(None, stress="keep", seed=0)
    scores = score_part(model, src_vocab, tgt_vocab, parts["test"], beam=5)
    print(f"PER {100 * scores.per:.2f}%, WER {100 * scores.wer:.2f}%")

Words are read character by character and pronunciations phoneme by phoneme (per-side
tokenisation: source "char", target "word"). Training uses every pronunciation of every train
word as a pair; a word counts as correct when its prediction matches any of its pronunciations
(fast_s2s.training.metrics).
"""

from __future__ import annotations

import torch

from fast_s2s.data import Vocab, tokenize
from fast_s2s.data.cmudict import G2P_TASK, SRC_TOKENIZE, TGT_TOKENIZE, Lexicon, references
from fast_s2s.models import SearchOptions, Seq2Seq
from fast_s2s.training.evaluation import MAX_LEN, translate_examples
from fast_s2s.training.metrics import G2PScores, g2p_scores

__all__ = [
    "G2P_TASK",
    "MODEL_DEFAULTS",
    "OUTPUT_BOUND",
    "PROCESSES",
    "TEST_BEAM",
    "TRAIN_DEFAULTS",
    "describe",
    "score_part",
]

# `fast-s2s train --task g2p` defaults, for 2 CPU cores and a 30-minute budget (README,
# "Grapheme to phoneme on CMUdict", has the measurements they come from). An option given on
# the command line wins.
# Luong wiring without input feeding teacher-forces all target steps in one gru_layer and one
# attention call: 31.7 training steps/s against Bahdanau's step loop's 8.0 at these sizes. One
# thread: with another job on the 2-core machine, two threads ran the same steps at 0.8/s
# against 28/s on one (likely OpenMP threads waiting for a core that is busy elsewhere).
# The cosine schedule over the budget: in two 8-minute runs side by side, stress stripped, it
# reached a test WER of 33.98% against 39.95% for halving on a plateau (docs/results.md).
# Patience 10: the cosine schedule sets the run's length. With patience 3 and epochs of ~38 s,
# a stress-stripped run stopped at epoch 30 (1,226 s) with the rate still 16% of its peak; the
# same code with patience 10 ran its 40 epochs (1,523 s): test WER 29.10% and 28.53% (beam 5),
# one run each, so within what another seed could give (docs/results.md).
TRAIN_DEFAULTS: dict[str, object] = dict(
    epochs=40,
    batch_size=64,
    lr=2e-3,
    lr_schedule="cosine",
    label_smoothing=0.0,
    patience=10,
    time_budget=1680.0,
    max_len=40,
    threads=1,
)
# The post-attention GRU (DESIGN.md, "Tokenisation and g2p"): stress stripped, the whole budget,
# the 2-core AMD EPYC, one run each: test WER 27.86% against 28.53% (beam 5), PER 6.53% against
# 6.78%, best validation WER 28.88% against 30.00%, in 28 epochs of ~60 s against 40 of ~38 s.
# At 8 minutes it was no better (30.22% against 29.34% greedy): it pays once the model without it
# has reached its plateau (docs/results.md).
MODEL_DEFAULTS: dict[str, object] = dict(
    wiring="luong",
    embed_size=64,
    hidden_size=256,
    encoder_layers=1,
    decoder_layers=1,
    dropout=0.1,
    post_attention_gru=True,
)
# Data-parallel replicas of `fast-s2s train --task g2p` on the CPU (one thread each):
# on 2 cores, 8 minutes stress stripped, 31.56% test WER against 34.40% for one process, and
# 27.67-27.78% (two runs) against 29.26% (beam 5) over the whole budget (docs/results.md). Not
# measured beyond 2: more replicas also mean fewer, larger updates per epoch, another recipe.
PROCESSES = 2
TEST_BEAM = 5  # the beam of the test run that ends `fast-s2s train --task g2p`
# A pronunciation has at most 2 phonemes per letter plus 5 (SearchOptions.max_len_ratio and
# max_len_offset): every pronunciation of CMUdict 1.1.3 fits but 2 of 135,164 ("fyi", "rep":
# expansions, not readings). A g2p model's outputs are bounded so, in training's scoring,
# `evaluate` and `translate`: an acronym or odd word cannot run away to max_len phonemes.
OUTPUT_BOUND: tuple[float, int] = (2.0, 5)


def score_part(
    model: Seq2Seq,
    src_vocab: Vocab,
    tgt_vocab: Vocab,
    part: Lexicon,
    *,
    beam: int = 1,
    device: torch.device | str = "cpu",
) -> G2PScores:
    """Decode every word of `part` (greedy for beam 1; outputs bounded by OUTPUT_BOUND) and
    score PER / WER against all of its pronunciations."""
    words, refs = references(part)
    examples = [(src_vocab.encode(tokenize(w, SRC_TOKENIZE)), []) for w in words]
    ratio, offset = OUTPUT_BOUND
    options = SearchOptions(beam=beam, max_len=MAX_LEN, max_len_ratio=ratio, max_len_offset=offset)
    outputs = translate_examples(
        model, examples, tgt_vocab, TGT_TOKENIZE, device=device, options=options
    )
    return g2p_scores([tokenize(o, TGT_TOKENIZE) for o in outputs], refs)


_STRESS_LABEL = {"keep": "stress kept", "strip": "stress stripped"}


def describe(split: str, scores: G2PScores, beam: int, stress: str) -> str:
    """One report line: "test (6,303 words, beam 5, stress kept): PER 7.01%, WER 29.50%"."""
    search = "greedy" if beam == 1 else f"beam {beam}"
    return (
        f"{split} ({scores.words:,} words, {search}, {_STRESS_LABEL[stress]}): "
        f"PER {100 * scores.per:.2f}%, WER {100 * scores.wer:.2f}%"
    )
