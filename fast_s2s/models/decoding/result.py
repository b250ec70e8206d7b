"""What a search returns, and the one place it is made: every engine records a Trace (what each
step kept, step-indexed) and assemble turns it into ranked hypotheses, so the engines differ
only in how they run the steps, never in what they return."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Hypothesis", "Trace", "assemble"]


@dataclass
class Hypothesis:
    """One decoded sentence.

    tokens: the output token ids, without bos and eos.
    score: total log-probability of tokens followed by eos (beam search ranks by
        length_normalize(score, len(tokens) + 1, length_penalty, penalty)).
    attention: (len(tokens) + 1, S_b) float32 CPU tensor: the attention weights at every
        decoder step (the last row is the eos step) over the sentence's S_b = src_lengths[b]
        valid source positions; each row sums to 1 (all zeros for an empty source, and for a
        model without attention, config.attention="none"; local attention, config.local,
        weighs its window by a Gaussian, so its rows sum to at most 1).
    """

    tokens: list[int]
    score: float
    attention: Tensor


@dataclass
class Trace:
    """What a search kept at each of its T steps, for B sentences x K beam rows (N = B * K).

    tokens: (T, B, K) int64, the token of each kept candidate.
    parents: (T, B, K) int64, the beam row (0 .. K - 1, of its sentence) the candidate extends.
    finish_scores: (T, B, K) floating, the total log-prob of a candidate that ends in eos and
        finishes at step t; -inf for every other candidate.
    attention: (T, N, S) floating, row n's attention weights at step t (rows before the step's
        reordering: candidate j's are those of row b * K + parents[t, b, j]).
    A candidate finishing at step t has t tokens before eos; its prefix is found by following
    parents back to step 0.
    """

    tokens: Tensor
    parents: Tensor
    finish_scores: Tensor
    attention: Tensor


def assemble(
    trace: Trace, src_lengths: list[int], n_best: int, finish_lp: tuple[float, ...]
) -> list[list[Hypothesis]]:
    """Per sentence its up to n_best finished hypotheses, best first: ranked by
    score / finish_lp[t] (rules.LengthTables.finish), of equal rankings the earlier finished
    first (by step, then candidate). A sentence without a finished hypothesis is an error: it
    only happens when the model's log-probs are not finite."""
    if trace.tokens.shape[2] == 1:  # greedy: one candidate per sentence, finishing once at most
        return _greedy(trace, src_lengths)
    # numpy on the host: a trace is small, and a torch op per element would cost more than it
    finish = trace.finish_scores.detach().cpu().double().numpy()
    steps, sentences, candidates = np.nonzero(np.isfinite(finish))  # in the order they finished
    per_sentence: list[list[tuple[float, int, int, float]]] = [[] for _ in src_lengths]
    for t, b, j, score in zip(
        steps.tolist(), sentences.tolist(), candidates.tolist(),
        finish[steps, sentences, candidates].tolist(), strict=True,
    ):  # fmt: skip
        per_sentence[b].append((score / finish_lp[t], t, j, score))
    chosen = []  # (b, t, j, score) of every hypothesis returned, in order
    for b, finished in enumerate(per_sentence):
        if not finished:
            _no_hypothesis(b)
        finished.sort(key=lambda c: c[0], reverse=True)  # stable: earlier finished first
        chosen += [(b, t, j, score) for _, t, j, score in finished[:n_best]]
    hyps = _hypotheses(trace, chosen, src_lengths)
    ranked: list[list[Hypothesis]] = [[] for _ in src_lengths]
    for (b, *_), hyp in zip(chosen, hyps, strict=True):
        ranked[b].append(hyp)
    return ranked


def _greedy(trace: Trace, src_lengths: list[int]) -> list[list[Hypothesis]]:
    """assemble for beam 1, without ranking: sentence b finishes at the first step t whose
    finish score is finite (it finishes once at most); its tokens are its first t. In plain
    Python over two lists: a batch-1 search is a few hundred microseconds, and numpy's or
    torch's per-call costs would be a tenth of it."""
    steps, batch = trace.tokens.shape[:2]
    finish = trace.finish_scores.reshape(steps, batch).t().tolist()  # (B, T)
    rows = trace.tokens.reshape(steps, batch).t().tolist()
    attention = trace.attention.cpu()
    hyps = []
    for b, scores in enumerate(finish):
        t = next((t for t, score in enumerate(scores) if -math.inf < score < math.inf), None)
        if t is None:
            _no_hypothesis(b)
        rows_b = attention[: t + 1, b, : src_lengths[b]]
        hyps.append([Hypothesis(rows[b][:t], scores[t], rows_b.float().clone())])
    return hyps


def _no_hypothesis(b: int) -> None:
    raise ValueError(
        f"no hypothesis of sentence {b} has a finite log-probability (the model gives NaN or "
        "-inf log-probs: check its weights)"
    )


def _hypotheses(trace: Trace, chosen: list, src_lengths: list[int]) -> list[Hypothesis]:
    """The tokens and attention rows of each chosen (b, t, j, score), following the parents."""
    beam, attention = trace.tokens.shape[2], trace.attention.cpu()
    tokens, parents = trace.tokens.tolist(), trace.parents.tolist()
    rows_per_step, src_len = attention.shape[1], attention.shape[2]
    prefixes, flat = [], []
    for b, t, j, _ in chosen:
        prefix, beam_rows = _follow(tokens, parents, b, t, j)
        prefixes.append(prefix)
        flat += [s * rows_per_step + b * beam + r for s, r in enumerate(beam_rows)]
    # one gather for every hypothesis's attention rows, then a view per hypothesis
    gathered = attention.reshape(-1, src_len).index_select(0, torch.tensor(flat, dtype=torch.long))
    pieces = gathered.split([t + 1 for _, t, _, _ in chosen])
    return [
        Hypothesis(prefix, score, piece[:, : src_lengths[b]].float().contiguous())
        for prefix, piece, (b, _, _, score) in zip(prefixes, pieces, chosen, strict=True)
    ]


def _follow(tokens: list, parents: list, b: int, t: int, j: int) -> tuple[list[int], list[int]]:
    """The tokens before eos of sentence b's candidate j finishing at step t (tokens, parents:
    the (T, B, K) trace as lists), and the beam row that computed each of its t + 1 steps."""
    row = parents[t][b][j]
    prefix, rows = [], [row]
    for s in range(t - 1, -1, -1):
        prefix.append(tokens[s][b][row])
        row = parents[s][b][row]
        rows.append(row)
    return prefix[::-1], rows[::-1]
