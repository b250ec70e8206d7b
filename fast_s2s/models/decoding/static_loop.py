"""The static engine: the search step as a fixed sequence of device ops over static buffers,
every write in place, so that on CUDA each kind of step is captured once as a CUDA graph and
replayed per token (cuda_graphs.py); the host never waits on the device except every
`check_every` steps. Greedy decoding is its beam 1.

python_loop.py keeps its stopping rule on the host; here everything the rule reads stays on the
device: the live beam scores, the ranking scores of each sentence's n_best best finished
hypotheses (the n_best-th is the threshold) and the done flags. Each step writes its row of the
step-indexed Trace buffers (result.py) at the device step counter; the length penalties are the
options' tables (rules.LengthTables), indexed on the device by the same counter. Done sentences
keep computing (their candidates are masked), so the result does not depend on check_every.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s.gemm import frozen_weights
from fast_s2s.models.decoding import cuda_graphs
from fast_s2s.models.decoding.result import Trace
from fast_s2s.models.decoding.rules import KINDS, mask_log_probs
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["StaticLoop"]


class StaticLoop:
    """The static-buffer engine. check_every: the host reads whether every sentence is done
    once per this many steps (its one synchronisation; the result does not depend on it).
    capture: replay CUDA graphs (needs the model on CUDA); False runs the same steps eagerly on
    any device; None: capture exactly on CUDA. eager_on_failure: a failed capture warns
    (cuda_graphs.CaptureFailedWarning) and runs eagerly instead of raising."""

    name = "cuda-graph"

    def __init__(
        self,
        check_every: int = cuda_graphs.DEFAULT_CHECK_EVERY,
        capture: bool | None = None,
        eager_on_failure: bool = False,
    ) -> None:
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"check_every must be a positive integer, got {check_every!r}")
        if capture is not None and not isinstance(capture, bool):
            raise TypeError(f"capture must be a bool or None, got {capture!r}")
        self.check_every, self.capture = check_every, capture
        self.eager_on_failure = eager_on_failure

    def unavailable(self, model: Seq2Seq) -> str | None:
        if self.capture and model.device.type != "cuda":
            return (
                f"capture=True needs the model on CUDA, it is on {model.device} "
                "(capture=False runs the same loop eagerly)"
            )
        return None

    def encode(self, model: Seq2Seq, src: Tensor, src_lengths: Tensor) -> EncoderState:
        return model.encode(src, src_lengths.to(model.device))

    def run(self, model: Seq2Seq, encoded: EncoderState, spec: SearchOptions) -> Trace:
        capture = model.device.type == "cuda" if self.capture is None else self.capture
        with frozen_weights():
            loop = _StaticBeam(model, encoded, spec)
            cuda_graphs.run_steps(
                loop, spec.max_len, spec.min_len, self.check_every, capture,
                self.eager_on_failure,
            )  # fmt: skip
            return loop.trace()


class _StaticBeam:
    """The search's buffers and its step (cuda_graphs.StaticLoopState)."""

    def __init__(self, model: Seq2Seq, enc: EncoderState, spec: SearchOptions) -> None:
        cfg, device = model.config, enc.states.device
        batch, beam, steps = enc.batch_size, spec.beam, spec.max_len + 1
        rows, src_len = batch * beam, enc.states.shape[1]
        self.model, self.enc, self.cfg, self.spec = model, enc, cfg, spec
        # the decoder state's buffers, and the state before the first step (reset() restores it)
        self.initial = model.initial_state(enc, beam=beam)
        self.hidden = self.initial.hidden.clone()
        self.feed = None if self.initial.feed is None else self.initial.feed.clone()
        # the scores' dtype is the log-probs' (float32 but for float64 models), as in python_loop
        scores = torch.float64 if enc.states.dtype == torch.float64 else torch.float32
        self.prev = torch.empty(rows, dtype=torch.int64, device=device)
        self.beam_scores = torch.empty(batch, beam, dtype=scores, device=device)
        self.best_finished = torch.empty(batch, spec.n_best, dtype=torch.float64, device=device)
        self.finished = torch.empty(batch, dtype=torch.bool, device=device)  # the done flags
        self.tokens = torch.empty(steps, batch, beam, dtype=torch.int64, device=device)
        self.parents = torch.empty(steps, batch, beam, dtype=torch.int64, device=device)
        self.finish_scores = torch.empty(steps, batch, beam, dtype=scores, device=device)
        self.attention = torch.empty(steps, rows, src_len, dtype=torch.float32, device=device)
        self.t_index = torch.empty(1, dtype=torch.int64, device=device)
        self.row_base = (torch.arange(batch, device=device) * beam).unsqueeze(1)  # (B, 1)
        self.finish_lp = spec.tables.finish_tensor.to(device)
        self.reach_lp = spec.tables.reach_tensor.to(device)
        self.row_limits = spec.row_max_lens(enc.src_lengths, beam)  # None: max_len for all
        self.reset()

    def reset(self) -> None:
        """The state before the first step (after a warm-up or a capture ran steps)."""
        self.store(self.initial)
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
        """One step of python_loop's search for every sentence, its bookkeeping on the device."""
        batch, beam, neg_inf = self.enc.batch_size, self.spec.beam, float("-inf")
        t = self.t_index
        # the step counter is the state's step: local-m attention reads it on the device
        current = DecoderState(self.hidden, self.feed, t)
        log_probs, new, weights = self.model.decode_step(self.enc, current, self.prev, beam)
        force_rows = None if self.row_limits is None else self.row_limits == t
        log_probs = mask_log_probs(log_probs, self.cfg, *KINDS[kind], force_rows)
        vocab = log_probs.shape[-1]
        candidates = self.beam_scores.unsqueeze(-1) + log_probs.view(batch, beam, vocab)
        top_scores, top_index = candidates.view(batch, beam * vocab).topk(beam, dim=1)
        parents, tokens = top_index // vocab, top_index % vocab
        is_eos = tokens == self.cfg.eos_id
        alive = torch.isfinite(top_scores) & ~self.finished.unsqueeze(1)

        finishing = top_scores.masked_fill(~(is_eos & alive), neg_inf)
        self.tokens.index_copy_(0, t, tokens[None])
        self.parents.index_copy_(0, t, parents[None])
        self.finish_scores.index_copy_(0, t, finishing[None])
        self.attention.index_copy_(0, t, weights.float()[None])
        ranking = finishing.double() / self.finish_lp.index_select(0, t)
        best = torch.cat([self.best_finished, ranking], dim=1).topk(self.spec.n_best, dim=1)
        self.best_finished.copy_(best.values)

        live_scores = top_scores.masked_fill(~(alive & ~is_eos), neg_inf)
        best_live = live_scores.max(dim=1).values  # (B,), -inf without a live hypothesis
        reach = best_live.double() / self.reach_lp.index_select(0, t)
        self.finished.logical_or_(~(torch.isfinite(best_live) & (reach > best.values[:, -1])))
        self.beam_scores.copy_(live_scores)

        self.store(new.index_select((self.row_base + parents).view(-1)))
        self.prev.copy_(tokens.view(-1))
        t.add_(1)

    def store(self, state: DecoderState) -> None:
        self.hidden.copy_(state.hidden)
        if self.feed is not None:
            self.feed.copy_(state.feed)

    def trace(self) -> Trace:
        """The buffers of the steps that ran."""
        steps = int(self.t_index)
        return Trace(
            self.tokens[:steps], self.parents[:steps], self.finish_scores[:steps],
            self.attention[:steps],
        )  # fmt: skip
