"""Beam search with the step over static buffers, as fast_s2s.models.cuda_graph does for greedy
decoding: on CUDA each kind of step is a captured CUDA graph, replayed once per token, and the
host reads the device only every `check_every` steps and once at the end.

search._beam_loop keeps its hypotheses' histories and finished lists on the host. Here every
step instead writes, at its row of step-indexed buffers, what the host needs afterwards:

    tokens[t], parents[t]   (B, K)  each kept candidate's token and the beam row it extends
    finish_scores[t]        (B, K)  a kept candidate's total log-prob when it ends in eos and
                                    finishes (its sentence not yet done), else -inf
    attention[t]            (N, S)  the step's attention weights, row n of the rows before the
                                    reordering (N = B * K)

and keeps on the device what the stopping rule reads: the live beam scores, the ranking scores
of each sentence's n_best best finished hypotheses (the k-th best is the rule's threshold) and
the done flags. The length penalties of each step are tables made before the loop with
search.length_penalty_factor, so the device divides by exactly the numbers the Python loop does.
After the loop the host ranks the finished candidates (stable, in the order they finished, as
the Python loop does) and follows the parents back for the n_best it returns.

With capture=False the same steps run eagerly on any device (tests/test_cuda_graph_beam.py
holds them to the Python loop token for token, on the CPU and on the CUDA kernels under the CPU
emulation); scripts/gpu_check.sh runs the captured form on a GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s.models.cuda_graph import (
    DEFAULT_CHECK_EVERY,
    KINDS,
    StaticState,
    check_graph_args,
    run_loop,
)
from fast_s2s.models.search import (
    Hypothesis,
    SearchOptions,
    _beam_result,
    _check_beam_args,
    _eval_mode,
    length_normalize,
    length_penalty_factor,
    search_rules,
)
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import EncoderState

__all__ = ["beam_search_graph"]


class _StaticBeam:
    """The beam loop's buffers and its step, every write in place (capturable)."""

    def __init__(self, model: Seq2Seq, enc: EncoderState, options: SearchOptions) -> None:
        """options: the search's (checked); n_best is the hypotheses kept per sentence."""
        cfg, device = model.config, enc.states.device
        beam, keep = options.beam, options.n_best
        max_len, min_len = options.max_len, options.min_len
        batch, src_len, steps = enc.batch_size, enc.states.shape[1], max_len + 1
        self.model, self.enc, self.cfg, self.options = model, enc, cfg, options
        self.beam, self.keep = beam, keep
        state = model.initial_state(enc, beam=beam)
        self.state = StaticState(state)
        rows = batch * beam
        self.prev = torch.empty(rows, dtype=torch.int64, device=device)
        self.beam_scores = torch.empty(batch, beam, dtype=torch.float32, device=device)
        self.best_finished = torch.empty(batch, keep, dtype=torch.float64, device=device)
        self.finished = torch.empty(batch, dtype=torch.bool, device=device)  # the done flags
        self.tokens = torch.empty(steps, batch, beam, dtype=torch.int64, device=device)
        self.parents = torch.empty(steps, batch, beam, dtype=torch.int64, device=device)
        self.finish_scores = torch.empty(steps, batch, beam, dtype=torch.float32, device=device)
        self.attention = torch.empty(steps, rows, src_len, dtype=torch.float32, device=device)
        self.t_index = torch.empty(1, dtype=torch.int64, device=device)
        self.row_base = (torch.arange(batch, device=device) * beam).unsqueeze(1)  # (B, 1)

        # Step t finishes hypotheses of t + 1 tokens with eos; the best a live one can still
        # reach after step t divides by the largest lp of the lengths it may finish with.
        def lp(length: int) -> float:
            return length_penalty_factor(length, options.length_penalty, options.penalty)

        table = [lp(t + 1) for t in range(steps)]
        reach = [max(lp(max(t + 2, min_len + 1)), lp(max_len + 1)) for t in range(steps)]
        self.finish_lp = torch.tensor(table, dtype=torch.float64, device=device)
        self.reach_lp = torch.tensor(reach, dtype=torch.float64, device=device)
        self.reset()

    def reset(self) -> None:
        """The state before the first step (after a warm-up or a capture ran steps)."""
        self.state.reset()
        self.prev.fill_(self.cfg.bos_id)
        self.beam_scores.fill_(float("-inf"))
        self.beam_scores[:, 0] = 0.0  # at the first step all beams are the same: expand one
        self.best_finished.fill_(float("-inf"))
        self.finished.zero_()
        self.tokens.zero_()
        self.parents.zero_()
        self.finish_scores.fill_(float("-inf"))
        self.attention.zero_()
        self.t_index.zero_()

    def step(self, kind: str) -> None:
        """One step of search._beam_loop for every sentence, its bookkeeping on the device."""
        batch, beam, neg_inf = self.enc.batch_size, self.beam, float("-inf")
        t = self.t_index
        current = self.state.current(t)
        log_probs, new, weights = self.model.decode_step(self.enc, current, self.prev, beam)
        log_probs = search_rules(log_probs, self.cfg, *KINDS[kind])
        vocab = log_probs.shape[-1]
        candidates = self.beam_scores.unsqueeze(-1) + log_probs.view(batch, beam, vocab)
        top_scores, top_index = candidates.view(batch, beam * vocab).topk(beam, dim=1)
        top_beam = top_index // vocab
        top_token = top_index % vocab
        is_eos = top_token == self.cfg.eos_id
        alive = torch.isfinite(top_scores) & ~self.finished.unsqueeze(1)

        finishing = top_scores.masked_fill(~(is_eos & alive), neg_inf)
        self.tokens.index_copy_(0, t, top_token[None])
        self.parents.index_copy_(0, t, top_beam[None])
        self.finish_scores.index_copy_(0, t, finishing[None])
        self.attention.index_copy_(0, t, weights.float()[None])
        ranking = finishing.double() / self.finish_lp.index_select(0, t)
        best = torch.cat([self.best_finished, ranking], dim=1).topk(self.keep, dim=1).values
        self.best_finished.copy_(best)

        live_scores = top_scores.masked_fill(~(alive & ~is_eos), neg_inf)
        best_live = live_scores.max(dim=1).values  # (B,), -inf without a live hypothesis
        can_win = best_live.double() / self.reach_lp.index_select(0, t) > best[:, -1]
        self.finished.logical_or_(~(torch.isfinite(best_live) & can_win))
        self.beam_scores.copy_(live_scores)

        reordered = new.index_select((self.row_base + top_beam).view(-1))
        self.prev.copy_(top_token.view(-1))
        self.state.store(reordered)
        t.add_(1)

    def hypotheses(self) -> list[list[Hypothesis]]:
        """Per sentence its up to `keep` best finished hypotheses, ranked (search._beam_loop's)."""
        steps = int(self.t_index)
        finish = self.finish_scores[:steps].cpu()
        tokens = self.tokens[:steps].cpu().tolist()
        parents = self.parents[:steps].cpu().tolist()
        attention = self.attention[:steps].cpu()
        lengths = self.enc.src_lengths.cpu().tolist()
        o = self.options
        ranked = []
        for b in range(self.enc.batch_size):
            done = []  # (ranking score, step, candidate) in the order they finished
            for t, j in torch.isfinite(finish[:, b]).nonzero().tolist():
                score = float(finish[t, b, j])
                hyp_rank = length_normalize(score, t + 1, o.length_penalty, o.penalty)
                done.append((hyp_rank, t, j))
            done.sort(key=lambda d: d[0], reverse=True)  # stable: earlier finished first
            follow = self._follow
            ranked.append(
                [
                    follow(b, t, j, finish, tokens, parents, attention, lengths[b])
                    for _, t, j in done[: self.keep]
                ]
            )
        return ranked

    def _follow(
        self,
        b: int,
        t: int,
        j: int,
        finish: Tensor,
        tokens: list,
        parents: list,
        attention: Tensor,
        src_len: int,
    ) -> Hypothesis:
        """The hypothesis candidate j of sentence b finished at step t: its tokens and attention
        rows, following the parents back to step 0."""
        base = b * self.beam
        row = parents[t][b][j]
        history, rows = [], [attention[t, base + row]]
        for s in range(t - 1, -1, -1):
            history.append(tokens[s][b][row])
            row = parents[s][b][row]
            rows.append(attention[s, base + row])
        weights = torch.stack(rows[::-1])[:, :src_len].clone()
        return Hypothesis(history[::-1], float(finish[t, b, j]), weights)


def beam_search_graph(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = 5,
    max_len: int = 100,
    length_penalty: float = 1.0,
    *,
    n_best: int | None = None,
    penalty: str = "power",
    min_len: int = 0,
    check_every: int = DEFAULT_CHECK_EVERY,
    capture: bool | None = None,
) -> list[Hypothesis] | list[list[Hypothesis]]:
    """beam_search with the step loop over static buffers (see the module docstring); on CUDA,
    beam_search(native=True) runs this with capture.

    Args:
        model, src (B, S), src_lengths (B,), beam_size, max_len, length_penalty, n_best,
            penalty, min_len: as beam_search.
        check_every: the host reads whether every sentence is done once per this many steps;
            the result does not depend on it.
        capture: replay CUDA graphs (needs the model on CUDA); False runs the same steps
            eagerly, on any device. Default: capture exactly on CUDA.

    Returns:
        What beam_search returns for the same arguments.
    """
    keep, alpha = _check_beam_args(
        model, beam_size, max_len, length_penalty, n_best, penalty, min_len
    )
    device = model.device
    capture = check_graph_args(check_every, capture, device)
    options = SearchOptions(beam_size, max_len, min_len, alpha, penalty, keep)
    ranked = _beam(model, src, src_lengths, options, check_every, capture, False)
    return _beam_result(ranked, n_best)


def decode_beam_on_cuda(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, options: SearchOptions
) -> list[list[Hypothesis]]:
    """beam_search's CUDA path (options checked; n_best: the hypotheses kept per sentence): per
    sentence its ranked finished hypotheses; captured, eager if capture fails."""
    return _beam(model, src, src_lengths, options, DEFAULT_CHECK_EVERY, True, True)


def _beam(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    options: SearchOptions,
    check_every: int,
    capture: bool,
    eager_on_failure: bool,
) -> list[list[Hypothesis]]:
    device = model.device
    with _eval_mode(model):
        loop = _StaticBeam(model, model.encode(src, src_lengths.to(device)), options)
        run_loop(loop, options.max_len, options.min_len, check_every, capture, eager_on_failure)
        return loop.hypotheses()
