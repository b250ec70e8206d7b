"""What a search returns, and the one place it is made: every engine records a Trace (what each
step kept, step-indexed) and assemble turns it into ranked hypotheses, so the engines differ
only in how they run the steps, never in what they return."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from fast_s2s import _extension
from fast_s2s.models.decoding.rules import LengthTables

__all__ = ["Hypothesis", "Trace", "assemble", "assemble_reference", "ranked_hypotheses"]


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
        weighs its window by a Gaussian, so its rows sum to at most 1). It may be a view into
        one buffer of the batch's hypotheses (one copy for all, none per hypothesis).
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
    trace: Trace, src_lengths: list[int], n_best: int, tables: LengthTables
) -> list[list[Hypothesis]]:
    """Per sentence its up to n_best finished hypotheses, best first: ranked by
    score / tables.finish[t], of equal rankings the earlier finished first (by step, then
    candidate). A sentence without a finished hypothesis is an error (ValueError): it only
    happens when the model's log-probs are not finite.

    Runs torch.ops.fast_s2s.assemble_trace (csrc/cpu/assemble_trace.cpp) on the host copy of
    the trace where the extension is loaded, else assemble_reference; the tests hold the two to
    each other."""
    if not _extension.extension_loaded():
        return assemble_reference(trace, src_lengths, n_best, tables)
    assembled = torch.ops.fast_s2s.assemble_trace(
        trace.tokens.detach().cpu(), trace.parents.detach().cpu(),
        trace.finish_scores.detach().to("cpu", torch.float64),
        trace.attention.detach().to("cpu", torch.float32), tables.finish_tensor, n_best,
    )  # fmt: skip
    return ranked_hypotheses(assembled, src_lengths)


def ranked_hypotheses(
    assembled: tuple[Tensor, Tensor, Tensor, Tensor, Tensor], src_lengths: list[int]
) -> list[list[Hypothesis]]:
    """The Hypothesis lists of assemble_trace's result (sentence, length, score, tokens,
    attention: csrc/cpu/op_schemas.h), per sentence best first."""
    sentence, length, score, tokens, attention = assembled
    ranked: list[list[Hypothesis]] = [[] for _ in src_lengths]
    rows = zip(sentence.tolist(), length.tolist(), score.tolist(), tokens.tolist(), strict=True)
    for c, (b, t, total, row) in enumerate(rows):
        ranked[b].append(Hypothesis(row[:t], total, attention[c, : t + 1, : src_lengths[b]]))
    return ranked


def assemble_reference(
    trace: Trace, src_lengths: list[int], n_best: int, tables: LengthTables
) -> list[list[Hypothesis]]:
    """assemble in Python, written for reading (plain Python over flat lists and numpy on the
    host, no torch op per token or per step)."""
    if trace.tokens.shape[2] == 1:
        return _greedy(trace, src_lengths)
    batch, finish_lp = trace.tokens.shape[1], tables.finish
    finish = _host(trace.finish_scores)
    finite = np.isfinite(finish)
    t_idx, b_idx, j_idx = np.nonzero(finite)  # in the order they finished
    per_sentence: list[list[tuple[float, int, int, float]]] = [[] for _ in range(batch)]
    for t, b, j, score in zip(
        t_idx.tolist(), b_idx.tolist(), j_idx.tolist(), finish[t_idx, b_idx, j_idx].tolist(),
        strict=True,
    ):  # fmt: skip
        per_sentence[b].append((score / finish_lp[t], t, j, score))
    chosen = []  # (b, t, j, score) of every hypothesis returned, in order
    for b, finished in enumerate(per_sentence):
        if not finished:
            _no_hypothesis(b)
        finished.sort(key=lambda c: c[0], reverse=True)  # stable: earlier finished first
        chosen += [(b, t, j, score) for _, t, j, score in finished[:n_best]]
    ranked: list[list[Hypothesis]] = [[] for _ in range(batch)]
    for (b, *_), hyp in zip(chosen, _hypotheses(trace, chosen, src_lengths), strict=True):
        ranked[b].append(hyp)
    return ranked


def _greedy(trace: Trace, src_lengths: list[int]) -> list[list[Hypothesis]]:
    """assemble for beam 1, without ranking or parents: sentence b finishes at the first step t
    whose finish score is finite (it finishes once at most), with its first t tokens. The
    attention is put sentence-major in one copy, and each hypothesis's rows are a view of it."""
    steps, batch = trace.tokens.shape[:2]
    finish = _host(trace.finish_scores).reshape(steps, batch)
    finite = np.isfinite(finish)
    ends = finite.argmax(axis=0).tolist()  # the first finite step (0 where none is)
    scores = finish[ends, range(batch)].tolist()
    tokens = trace.tokens.reshape(steps, batch).t().tolist()
    attention = trace.attention.detach().to("cpu", torch.float32).transpose(0, 1).contiguous()
    width = attention.shape[2]
    hyps = []
    for b, (t, score) in enumerate(zip(ends, scores, strict=True)):
        if not finite[t, b]:
            _no_hypothesis(b)
        rows = (
            attention[b, : t + 1]
            if src_lengths[b] == width
            else attention[b, : t + 1, : src_lengths[b]]
        )
        hyps.append([Hypothesis(tokens[b][:t], score, rows)])
    return hyps


def _host(tensor: Tensor, dtype: torch.dtype | None = None) -> np.ndarray:
    """A trace tensor as a numpy array on the host, float32 or float64 as it is (or `dtype`)."""
    tensor = tensor.detach().cpu()
    if dtype is not None or tensor.dtype not in (torch.float32, torch.float64):
        tensor = tensor.to(dtype or torch.float64)
    return tensor.numpy()


def _no_hypothesis(b: int) -> None:
    raise ValueError(
        f"no hypothesis of sentence {b} has a finite log-probability (the model gives NaN or "
        "-inf log-probs: check its weights)"
    )


def _hypotheses(trace: Trace, chosen: list, src_lengths: list[int]) -> list[Hypothesis]:
    """The tokens and attention rows of each chosen (b, t, j, score): its prefix is found by
    following the parents back from step t, over the trace as flat lists (index (s * B + b) * K
    + row); its attention rows come in one gather for every hypothesis, then a view each."""
    steps, batch, beam = trace.tokens.shape
    tokens = trace.tokens.reshape(-1).tolist()
    parents = trace.parents.reshape(-1).tolist()
    rows_per_step = batch * beam  # the attention's N: step s, row b * K + r is s * N + b * K + r
    prefixes, flat = [], []
    for b, t, j, _ in chosen:
        prefix, at = [], [0] * (t + 1)
        row = parents[(t * batch + b) * beam + j]
        at[t] = t * rows_per_step + b * beam + row
        for s in range(t - 1, -1, -1):
            i = (s * batch + b) * beam + row
            prefix.append(tokens[i])
            row = parents[i]
            at[s] = s * rows_per_step + b * beam + row
        prefix.reverse()
        prefixes.append(prefix)
        flat += at
    attention = _host(trace.attention, torch.float32)
    width = attention.shape[2]
    gathered = torch.from_numpy(attention.reshape(-1, width)[flat])
    pieces = [gathered] if len(chosen) == 1 else gathered.split([t + 1 for _, t, _, _ in chosen])
    return [
        Hypothesis(
            prefix, score, piece if src_lengths[b] == width else piece[:, : src_lengths[b]].clone()
        )
        for prefix, piece, (b, _, _, score) in zip(prefixes, pieces, chosen, strict=True)
    ]
