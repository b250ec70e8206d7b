"""Decoding a set of examples and scoring it: exact match and sacrebleu BLEU, and for g2p
phoneme and word error rates against every reference pronunciation."""

from __future__ import annotations

import torch

from fast_s2s.data import (
    Vocab,
    detokenize,
    make_batches,
)
from fast_s2s.models import SearchOptions, Seq2Seq, Seq2SeqConfig, search
from fast_s2s.training import distributed, memory
from fast_s2s.training.data import PreparedData
from fast_s2s.training.metrics import g2p_scores

# How translate_examples decodes by default: sources per batch, and the longest output.
BATCH_SIZE = 128
MAX_LEN = 100


def translate_examples(
    model: Seq2Seq,
    examples: list,
    tgt_vocab: Vocab,
    mode: str,
    *,
    batch_size: int = BATCH_SIZE,
    beam: int = 1,
    max_len: int = MAX_LEN,
    device: torch.device | str = "cpu",
    options: SearchOptions | None = None,
) -> list[str]:
    """Decode every example's source (ids or a frames tensor), in the input order: the best
    output of `options` (default: beam `beam`, greedy for 1, up to max_len tokens)."""
    options = options or SearchOptions(beam=beam, max_len=max_len)
    model.eval()
    outputs: list[str] = [""] * len(examples)
    batches = make_batches(
        [(src, []) for src, _ in examples],
        batch_size,
        pad_id=tgt_vocab.pad_id,
        bos_id=tgt_vocab.bos_id,
        eos_id=tgt_vocab.eos_id,
    )
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            ranked = search(model, batch.src, batch.src_lengths, options)
            for index, hyps in zip(batch.indices, ranked, strict=True):
                outputs[index] = detokenize(tgt_vocab.decode(hyps[0].tokens), mode)
    return outputs


def check_memory(
    config: Seq2SeqConfig,
    source_lengths: list[int],
    beam: int,
    option: str,
    device: torch.device | str = "cpu",
    itemsize: int = 4,
) -> None:
    """Raise memory.MemoryLimitError, naming `option` (the beam's), when translate_examples with
    this beam on sources of these lengths would not fit in memory."""
    if source_lengths:
        memory.check_search(
            config,
            batch=min(BATCH_SIZE, len(source_lengths)),
            beam=beam,
            max_len=MAX_LEN,
            src_len=max(source_lengths),
            itemsize=itemsize,
            device=device,
            options=(option, None),
        )


def evaluate(
    model: Seq2Seq,
    data: PreparedData,
    beam: int,
    device,
    world: distributed.World | None = None,
) -> dict[str, float]:
    """Exact match (fraction) and corpus BLEU (sacrebleu) on the validation set; with
    data.valid_references (g2p) also "per" and "wer" (fractions), and exact match is then
    matching any reference (1 - WER). BLEU is against the first reference. Under
    torch.distributed (`world`) each rank decodes its share and every rank gets all scores."""
    import sacrebleu

    world = world or distributed.World()
    share = data.valid[world.rank :: world.size]
    hyps = translate_examples(model, share, data.tgt_vocab, data.tgt_mode, beam=beam, device=device)
    hyps = distributed.gather_strided(hyps, len(data.valid), world)
    tokenize = "char" if data.tgt_mode == "char" else "13a"
    bleu = sacrebleu.corpus_bleu(hyps, [data.valid_refs], tokenize=tokenize).score
    if data.valid_references is None:
        exact = sum(h == r for h, r in zip(hyps, data.valid_refs, strict=True)) / max(1, len(hyps))
        return {"exact": exact, "bleu": bleu}
    scores = g2p_scores([h.split() for h in hyps], data.valid_references)
    return {"exact": 1.0 - scores.wer, "bleu": bleu, "per": scores.per, "wer": scores.wer}
