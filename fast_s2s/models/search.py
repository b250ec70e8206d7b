"""Greedy and beam search over a Seq2Seq model, batched, in the beam-row form of the attention ops.

Both searches encode the batch once (B rows) and decode N = B * beam rows; decoder row n reads
source row n // beam, so the encoder states and the projected attention keys are never copied
per beam (only the small decoder hidden is, by Seq2Seq.initial_state).

Conventions shared by both searches (so beam_size=1 gives exactly the greedy result):

- pad and bos are never generated (their log-probs are set to -inf before choosing).
- At most max_len tokens are generated before eos: if a hypothesis has not ended after
  max_len tokens, eos is forced at step max_len + 1 (its log-prob counts in the score). Every
  hypothesis therefore ends with eos, and its attention has len(tokens) + 1 rows.
- Hypothesis.score is the total log-probability of tokens + eos (natural log).
- Beam search ranks finished hypotheses by the length-normalised score
  score / (len(tokens) + 1) ** length_penalty (the simple power form: 0 = raw total
  log-prob, 1 = mean log-prob per token, as in length_normalize).
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["Hypothesis", "beam_search", "greedy_decode", "length_normalize"]


@dataclass
class Hypothesis:
    """One decoded sentence.

    tokens: the output token ids, without bos and eos.
    score: total log-probability of tokens followed by eos (beam search ranks by
        length_normalize(score, len(tokens) + 1, length_penalty)).
    attention: (len(tokens) + 1, S_b) float32 CPU tensor: the attention weights at every
        decoder step (the last row is the eos step) over the sentence's S_b = src_lengths[b]
        valid source positions; each row sums to 1 (all zeros for an empty source, and for a
        model without attention, config.attention="none").
    """

    tokens: list[int]
    score: float
    attention: Tensor


def length_normalize(score: float, length: int, length_penalty: float = 1.0) -> float:
    """The ranking score of a finished hypothesis: score / length ** length_penalty, with
    length the number of generated tokens including eos (>= 1)."""
    return score / max(length, 1) ** length_penalty


@contextlib.contextmanager
def _eval_mode(model: Seq2Seq) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _check_args(model: Seq2Seq, max_len: int, beam_size: int = 1) -> None:
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a fast_s2s.models.Seq2Seq, got {type(model).__name__}")
    if not isinstance(max_len, numbers.Integral) or isinstance(max_len, bool) or max_len < 0:
        raise ValueError(f"max_len must be a non-negative integer, got {max_len!r}")
    if not isinstance(beam_size, numbers.Integral) or isinstance(beam_size, bool) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")


def _step(
    model: Seq2Seq,
    enc: EncoderState,
    state: DecoderState,
    prev: Tensor,
    beam: int,
    force_eos: bool,
) -> tuple[Tensor, DecoderState, Tensor]:
    """decode_step, then the search conventions: no pad / bos; only eos when force_eos."""
    cfg = model.config
    log_probs, state, weights = model.decode_step(enc, state, prev, beam)
    if force_eos:
        eos = log_probs[:, cfg.eos_id].clone()
        log_probs = torch.full_like(log_probs, float("-inf"))
        log_probs[:, cfg.eos_id] = eos
    else:
        log_probs[:, cfg.pad_id] = float("-inf")
        log_probs[:, cfg.bos_id] = float("-inf")
    return log_probs, state, weights


def greedy_decode(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_len: int = 100
) -> list[Hypothesis]:
    """Greedy decoding of a batch: the most probable token at every step, rows stop at eos.

    Args:
        model: the Seq2Seq model (run in eval mode and without gradients; its mode is restored).
        src: (B, S) int64 padded source (or (B, S, F) frames for source="frames");
            src_lengths: (B,) lengths.
        max_len: at most this many tokens before eos (see the module docstring).

    Returns:
        One Hypothesis per source row, in order.
    """
    _check_args(model, max_len)
    eos = model.config.eos_id
    with _eval_mode(model):
        enc = model.encode(src, src_lengths)
        batch = enc.batch_size
        state = model.initial_state(enc, beam=1)
        prev = torch.full((batch,), model.config.bos_id, dtype=torch.int64, device=src.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
        scores = torch.zeros(batch, dtype=torch.float32, device=src.device)
        tokens, attention = [], []
        for t in range(max_len + 1):
            log_probs, state, weights = _step(model, enc, state, prev, 1, force_eos=t == max_len)
            best, prev = log_probs.max(dim=-1)
            scores = torch.where(finished, scores, scores + best)
            tokens.append(prev)
            attention.append(weights)
            finished = finished | (prev == eos)
            if bool(finished.all()):
                break
        all_tokens = torch.stack(tokens, dim=1).cpu()  # (B, steps)
        all_attention = torch.stack(attention, dim=1).float().cpu()  # (B, steps, S)
        lengths = enc.src_lengths.cpu().tolist()
        scores_list = scores.double().cpu().tolist()
    hyps = []
    for b in range(batch):
        row = all_tokens[b].tolist()
        n = row.index(eos)
        hyps.append(
            Hypothesis(row[:n], scores_list[b], all_attention[b, : n + 1, : lengths[b]].clone())
        )
    return hyps


def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = 5,
    max_len: int = 100,
    length_penalty: float = 1.0,
) -> list[Hypothesis]:
    """Batched beam search: B sentences x beam_size hypotheses = N decoder rows per step.

    At each step every live hypothesis is extended by every token; per sentence the 2 * beam_size
    best extensions are taken. Those ending in eos among the first beam_size are finished (kept
    with their length-normalised score); the first beam_size that do not end in eos become the
    live hypotheses of the next step. A sentence is done when it has beam_size finished
    hypotheses; the search stops when every sentence is done or after max_len + 1 steps (eos
    forced at the last). The best finished hypothesis by length_normalize(score, len + 1,
    length_penalty) is returned per sentence. beam_size=1 is exactly greedy_decode.

    Args:
        model: the Seq2Seq model (run in eval mode and without gradients; its mode is restored).
        src: (B, S) int64 padded source (or (B, S, F) frames for source="frames");
            src_lengths: (B,) lengths.
        beam_size: hypotheses kept per sentence.
        max_len: at most this many tokens before eos.
        length_penalty: alpha of the length normalisation score / length ** alpha (0: none).

    Returns:
        One Hypothesis per source row, in order (score: its total log-probability).
    """
    _check_args(model, max_len, beam_size)
    if not isinstance(length_penalty, numbers.Real) or isinstance(length_penalty, bool):
        raise ValueError(f"length_penalty must be a number, got {length_penalty!r}")
    cfg = model.config
    beam = int(beam_size)
    neg_inf = float("-inf")
    with _eval_mode(model):
        enc = model.encode(src, src_lengths)
        batch, src_len = enc.batch_size, enc.states.shape[1]
        device = enc.states.device
        rows = batch * beam
        state = model.initial_state(enc, beam=beam)
        prev = torch.full((rows,), cfg.bos_id, dtype=torch.int64, device=device)
        beam_scores = torch.zeros(batch, beam, dtype=torch.float32, device=device)
        beam_scores[:, 1:] = neg_inf  # at the first step all beams are the same: expand one
        history = torch.zeros(batch, beam, 0, dtype=torch.int64, device=device)
        history_attention = enc.states.new_zeros(batch, beam, 0, src_len)
        row_base = (torch.arange(batch, device=device) * beam).unsqueeze(1)  # (B, 1)
        src_lengths_list = enc.src_lengths.cpu().tolist()
        # per sentence: (normalised score, score, tokens, attention) in the order finished
        finished: list[list[tuple[float, float, list[int], Tensor]]] = [[] for _ in range(batch)]
        done = torch.zeros(batch, dtype=torch.bool, device=device)

        for t in range(max_len + 1):
            log_probs, state, weights = _step(model, enc, state, prev, beam, force_eos=t == max_len)
            vocab = log_probs.shape[-1]
            candidates = beam_scores.unsqueeze(-1) + log_probs.view(batch, beam, vocab)
            top_scores, top_index = candidates.view(batch, beam * vocab).topk(
                min(2 * beam, beam * vocab), dim=1
            )  # sorted, best first
            top_beam = top_index // vocab
            top_token = top_index % vocab
            is_eos = top_token == cfg.eos_id

            to_finish = is_eos[:, :beam] & torch.isfinite(top_scores[:, :beam])
            to_finish &= ~done.unsqueeze(1)
            if bool(to_finish.any()):
                step_weights = weights.view(batch, beam, src_len)
                for b, j in to_finish.nonzero().tolist():
                    if len(finished[b]) >= beam:
                        continue
                    k = int(top_beam[b, j])
                    toks = history[b, k].tolist()
                    attn = torch.cat([history_attention[b, k], step_weights[b, k, None]], dim=0)
                    attn = attn[:, : src_lengths_list[b]].float().cpu()
                    score = float(top_scores[b, j])
                    norm = length_normalize(score, len(toks) + 1, length_penalty)
                    finished[b].append((norm, score, toks, attn))
                done = torch.tensor(
                    [len(f) >= beam for f in finished], dtype=torch.bool, device=device
                )
            if t == max_len or bool(done.all()):
                break

            # The live hypotheses: the first `beam` candidates that do not end in eos (there are
            # at least that many: at most one eos candidate per live beam).
            live = torch.sort(is_eos.to(torch.uint8), dim=1, stable=True).indices[:, :beam]
            beam_scores = top_scores.gather(1, live).masked_fill(done.unsqueeze(1), neg_inf)
            chosen = (row_base + top_beam.gather(1, live)).view(-1)  # (N,) rows to continue
            prev = top_token.gather(1, live).view(-1)
            state = model.reorder_state(state, chosen)
            history = torch.cat(
                [history.view(rows, t)[chosen].view(batch, beam, t), prev.view(batch, beam, 1)],
                dim=2,
            )
            history_attention = torch.cat(
                [
                    history_attention.view(rows, t, src_len)[chosen],
                    weights[chosen].unsqueeze(1),
                ],
                dim=1,
            ).view(batch, beam, t + 1, src_len)

    hyps = []
    for b in range(batch):
        best = max(finished[b], key=lambda f: f[0])  # first of equals: the earlier finished
        hyps.append(Hypothesis(best[2], best[1], best[3]))
    return hyps
