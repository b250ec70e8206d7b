"""The Python search loop: the reference engine, written for reading; every other engine is held
to it token for token (tests/models/test_search_engines.py).

Greedy decoding (beam 1) and beam search: B sentences x K beam rows = N decoder rows per step;
row n reads source row n // K (the encoder states are never copied per beam). Each step extends
every live hypothesis by every token and keeps the K best extensions per sentence by total
log-prob: those ending in eos finish, the others live on. A sentence is done when its n_best-th
best finished hypothesis ranks at least as high as the best any live one could still reach
(rules.py), when none is live, or after max_len + 1 steps (eos is forced at max_len, or at
the sentence's own limit when the options bound outputs by their sources): it never stops while
a live hypothesis could still beat what it returns, so a beam that keeps every prefix returns
the true best. (Stopping once K hypotheses have finished, the rule of several toolkits,
returns short wrong outputs on long targets: the right hypothesis is still live then.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fast_s2s.gemm import frozen_weights
from fast_s2s.models.decoding.result import Trace
from fast_s2s.models.decoding.rules import KINDS, mask_log_probs, step_kind
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["PythonLoop", "step"]


def step(
    model: Seq2Seq,
    enc: EncoderState,
    state: DecoderState,
    prev: Tensor,
    beam: int,
    *,
    force_eos: bool,
    block_eos: bool,
    force_rows: Tensor | None = None,
) -> tuple[Tensor, DecoderState, Tensor]:
    """One decoder step for the N = B * beam rows, then the search rules on its log-probs
    (force_rows: (N,) bool, the rows at their sentence's own limit): log_probs (N, V), the new
    state and the attention weights (N, S)."""
    log_probs, state, weights = model.decode_step(enc, state, prev, beam)
    masked = mask_log_probs(log_probs, model.config, force_eos, block_eos, force_rows)
    return masked, state, weights


def _forced_rows(row_limits: Tensor | None, t: int) -> Tensor | None:
    return None if row_limits is None else row_limits == t


class PythonLoop:
    """The reference engine: one model.decode_step per token, bookkeeping on the host."""

    name = "python"

    def unavailable(self, model: Seq2Seq) -> str | None:
        return None  # every model, device and backend

    def encode(self, model: Seq2Seq, src: Tensor, src_lengths: Tensor) -> EncoderState:
        return model.encode(src, src_lengths)

    def run(self, model: Seq2Seq, encoded: EncoderState, spec: SearchOptions) -> Trace:
        # The weights do not change during a search: gru_cell packs them once (frozen).
        with frozen_weights():
            return (_greedy if spec.beam == 1 else _search)(model, encoded, spec)


def _search(model: Seq2Seq, enc: EncoderState, spec: SearchOptions) -> Trace:
    """The search of the module docstring, at any beam."""
    cfg, neg_inf = model.config, float("-inf")
    batch, beam, device = enc.batch_size, spec.beam, enc.states.device
    tables = spec.tables
    state = model.initial_state(enc, beam=beam)
    prev = torch.full((batch * beam,), cfg.bos_id, dtype=torch.int64, device=device)
    beam_scores = torch.full((batch, beam), neg_inf, device=device)
    beam_scores[:, 0] = 0.0  # at the first step all beams are the same: expand one
    row_base = (torch.arange(batch, device=device) * beam).unsqueeze(1)  # (B, 1)
    finished_ranks: list[list[float]] = [[] for _ in range(batch)]  # best first
    done = [False] * batch
    done_rows = torch.zeros(batch, dtype=torch.bool, device=device)
    trace: dict[str, list[Tensor]] = {"tokens": [], "parents": [], "finish": [], "attention": []}
    row_limits = spec.row_max_lens(enc.src_lengths, beam)

    for t in range(spec.max_len + 1):
        force_eos, block_eos = KINDS[step_kind(t, spec.max_len, spec.min_len)]
        log_probs, state, weights = step(
            model, enc, state, prev, beam, force_eos=force_eos, block_eos=block_eos,
            force_rows=_forced_rows(row_limits, t),
        )  # fmt: skip
        vocab = log_probs.shape[-1]
        candidates = beam_scores.unsqueeze(-1) + log_probs.view(batch, beam, vocab)
        top_scores, top_index = candidates.view(batch, beam * vocab).topk(beam, dim=1)
        parents, tokens = top_index // vocab, top_index % vocab
        alive = torch.isfinite(top_scores) & ~done_rows.unsqueeze(1)
        is_eos = tokens == cfg.eos_id
        finishing = top_scores.masked_fill(~(alive & is_eos), neg_inf)
        for name, value in zip(trace, (tokens, parents, finishing, weights), strict=True):
            trace[name].append(value)

        for b, j in torch.isfinite(finishing).nonzero().tolist():
            finished_ranks[b].append(float(finishing[b, j]) / tables.finish[t])
            finished_ranks[b].sort(reverse=True)
        if t == spec.max_len:
            break

        # The live hypotheses: the kept candidates not ending in eos; the others (finished,
        # -inf, or of a done sentence) become dead rows with score -inf.
        beam_scores = top_scores.masked_fill(~(alive & ~is_eos), neg_inf)
        best_live = beam_scores.max(dim=1).values.double().tolist()  # -inf where none live
        for b, live in enumerate(best_live):
            ranks = finished_ranks[b]
            kth_best = ranks[spec.n_best - 1] if len(ranks) >= spec.n_best else neg_inf
            if not (math.isfinite(live) and live / tables.reach[t] > kth_best):
                done[b] = True
        if all(done):
            break
        done_rows = torch.tensor(done, device=device)

        state = model.reorder_state(state, (row_base + parents).view(-1))
        prev = tokens.view(-1)

    stacked = {name: torch.stack(values) for name, values in trace.items()}
    return Trace(stacked["tokens"], stacked["parents"], stacked["finish"], stacked["attention"])


def _greedy(model: Seq2Seq, enc: EncoderState, spec: SearchOptions) -> Trace:
    """_search at beam 1 without the beam's bookkeeping, which cost a third of this loop's
    batch-1 time (docs/DESIGN.md): each row continues itself (no reordering), and a sentence is
    done once its hypothesis ended in eos. The same candidates (the same top-1 over the same
    sums) and the same result: a done row keeps stepping with its scores, its candidates masked
    from finishing; a row whose scores are not finite never finishes (as in _search)."""
    cfg = model.config
    batch, device = enc.batch_size, enc.states.device
    state = model.initial_state(enc, beam=1)
    prev = torch.full((batch,), cfg.bos_id, dtype=torch.int64, device=device)
    scores = torch.zeros(batch, 1, device=device)
    done = torch.zeros(batch, 1, dtype=torch.bool, device=device)
    tokens, finish, attention = [], [], []
    row_limits = spec.row_max_lens(enc.src_lengths, 1)
    for t in range(spec.max_len + 1):
        force_eos, block_eos = KINDS[step_kind(t, spec.max_len, spec.min_len)]
        log_probs, state, weights = step(
            model, enc, state, prev, 1, force_eos=force_eos, block_eos=block_eos,
            force_rows=_forced_rows(row_limits, t),
        )  # fmt: skip
        scores, top = (scores + log_probs).topk(1, dim=1)  # (B, 1) each
        is_eos = top == cfg.eos_id
        tokens.append(top)
        finish.append(scores.masked_fill(done | ~is_eos, float("-inf")))
        attention.append(weights)
        done = done | is_eos
        if t == spec.max_len or bool(done.all()):
            break
        prev = top.view(-1)
    steps = torch.stack(tokens)  # (T, B, 1)
    return Trace(steps, torch.zeros_like(steps), torch.stack(finish), torch.stack(attention))
