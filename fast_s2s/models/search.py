"""Greedy and beam search over a Seq2Seq model, batched, in the beam-row form of the attention ops.

Both searches encode the batch once (B rows) and decode N = B * beam rows; decoder row n reads
source row n // beam, so the encoder states and the projected attention keys are never copied
per beam (only the small decoder hidden is, by Seq2Seq.initial_state).

Conventions shared by both searches (so beam_size=1 gives exactly the greedy result):

- pad and bos are never generated (their log-probs are set to -inf before choosing); eos is
  not generated before min_len tokens.
- At most max_len tokens are generated before eos: if a hypothesis has not ended after
  max_len tokens, eos is forced at step max_len + 1 (its log-prob counts in the score). Every
  hypothesis therefore ends with eos, and its attention has len(tokens) + 1 rows.
- Hypothesis.score is the total log-probability of tokens + eos (natural log).
- Beam search ranks finished hypotheses by the length-normalised score
  score / lp(len(tokens) + 1) (see length_normalize): the power form lp(L) = L ** alpha
  (0: raw total log-prob, 1: mean log-prob per token) or GNMT's ((5 + L) / 6) ** alpha.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import overload

import torch
from torch import Tensor, nn

from fast_s2s.gemm import frozen_weights
from fast_s2s.models import native as _native
from fast_s2s.models import native_encoder as _native_encoder
from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = [
    "LENGTH_PENALTIES",
    "Hypothesis",
    "SearchOptions",
    "beam_search",
    "decode_path",
    "greedy_decode",
    "length_normalize",
    "length_penalty_factor",
    "search",
]

# The forms of the length penalty lp(L) that beam search divides a finished score by.
LENGTH_PENALTIES: tuple[str, ...] = ("power", "gnmt")


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


def length_penalty_factor(length: int, alpha: float = 1.0, penalty: str = "power") -> float:
    """lp(length) for a hypothesis of `length` generated tokens including eos (>= 1):
    length ** alpha ("power") or ((5 + length) / 6) ** alpha ("gnmt", Wu et al. 2016). Both
    are 1 at alpha = 0 and grow with length for alpha > 0."""
    length = max(length, 1)
    if penalty == "power":
        return float(length) ** alpha
    if penalty == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    raise ValueError(f"penalty must be one of {list(LENGTH_PENALTIES)}, got {penalty!r}")


def length_normalize(
    score: float, length: int, length_penalty: float = 1.0, penalty: str = "power"
) -> float:
    """The ranking score of a finished hypothesis: score / lp(length), with length the number
    of generated tokens including eos (see length_penalty_factor)."""
    return score / length_penalty_factor(length, length_penalty, penalty)


def _any_training(model: nn.Module) -> bool:
    """Whether the model or any submodule is in training mode: model.modules() without its
    generator chain and memo set (a third of a batch-1 native decode's Python time)."""
    stack, seen = [model], {id(model)}
    while stack:
        module = stack.pop()
        if module.training:
            return True
        for child in module._modules.values():
            if child is not None and id(child) not in seen:  # shared or cyclic submodules
                seen.add(id(child))
                stack.append(child)
    return False


@contextlib.contextmanager
def _eval_mode(model: Seq2Seq, frozen: bool = True) -> Iterator[None]:
    # model.eval() / train() walk every submodule (~0.15 ms on the default model, as long as a
    # native batch-1 decode step loop): skip them when every module is in eval mode already.
    # The weights do not change during a search: the Python loop's gru_cell calls pack them once
    # (frozen). The native ops pack their own weights once per call and skip the scope.
    was_training = model.training
    switch = _any_training(model)
    if switch:
        model.eval()
    try:
        with torch.no_grad(), frozen_weights() if frozen else contextlib.nullcontext():
            yield
    finally:
        if switch:
            model.train(was_training)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_args(model: Seq2Seq, max_len: int, min_len: int, beam_size: int = 1) -> None:
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a fast_s2s.models.Seq2Seq, got {type(model).__name__}")
    if not _is_int(max_len) or max_len < 0:
        raise ValueError(f"max_len must be a non-negative integer, got {max_len!r}")
    if not _is_int(min_len) or not 0 <= min_len <= max_len:
        raise ValueError(f"min_len must be an integer in [0, max_len={max_len}], got {min_len!r}")
    if not _is_int(beam_size) or beam_size < 1:
        raise ValueError(f"beam_size must be a positive integer, got {beam_size!r}")


def _step(
    model: Seq2Seq,
    enc: EncoderState,
    state: DecoderState,
    prev: Tensor,
    beam: int,
    *,
    force_eos: bool,
    block_eos: bool,
) -> tuple[Tensor, DecoderState, Tensor]:
    """decode_step, then the search conventions: no pad / bos; only eos when force_eos; no eos
    when block_eos (fewer than min_len tokens so far)."""
    log_probs, state, weights = model.decode_step(enc, state, prev, beam)
    return search_rules(log_probs, model.config, force_eos, block_eos), state, weights


def search_rules(log_probs: Tensor, cfg: Seq2SeqConfig, force_eos: bool, block_eos: bool) -> Tensor:
    """The search conventions on a step's log_probs (N, V), in place where it can (nothing is
    read back to the host, so a CUDA graph captures it): no pad / bos; only eos when force_eos;
    no eos when block_eos."""
    neg_inf = float("-inf")
    if force_eos:
        keep = torch.zeros_like(log_probs, dtype=torch.bool)
        keep[:, cfg.eos_id] = True
        return log_probs.masked_fill(~keep, neg_inf)
    log_probs[:, cfg.pad_id] = neg_inf
    log_probs[:, cfg.bos_id] = neg_inf
    if block_eos:
        log_probs[:, cfg.eos_id] = neg_inf
    return log_probs


def decode_path(model: Seq2Seq, native: bool = True) -> str:
    """Which loop greedy_decode / beam_search(model, ..., native=native) run:
    "native" (the C++ loop of fast_s2s.models.native, one op call per batch; CPU models),
    "cuda-graph" (the step over static buffers replayed as CUDA graphs, one launch per token:
    fast_s2s.models.cuda_graph and cuda_graph_beam; models on CUDA), or
    "python: <why neither>" (this module's loop, the reference; e.g. for a CPU model on the
    reference backend)."""
    if not isinstance(native, bool):
        raise TypeError(f"native must be a bool, got {native!r}")
    if not native:
        return "python: native=False"
    if model.device.type == "cuda":
        return "cuda-graph"
    why = _native.unavailable(model)
    return "native" if why is None else f"python: {why}"


def _encode(model: Seq2Seq, src: Tensor, src_lengths: Tensor, native: bool) -> EncoderState:
    """The search's encoder pass: on the native path one op call (fast_s2s.models
    .native_encoder) where it runs, else Seq2Seq.encode; the same EncoderState either way."""
    if native and _native_encoder.unavailable(model) is None:
        return _native_encoder.encode(model, src, src_lengths)
    return model.encode(src, src_lengths)


def greedy_decode(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int = 100,
    *,
    min_len: int = 0,
    native: bool = True,
) -> list[Hypothesis]:
    """Greedy decoding of a batch: the most probable token at every step, rows stop at eos.

    Args:
        model: the Seq2Seq model (run in eval mode and without gradients; its mode is restored).
        src: (B, S) int64 padded source (or (B, S, F) frames for source="frames");
            src_lengths: (B,) lengths.
        max_len: at most this many tokens before eos (see the module docstring).
        min_len: at least this many tokens before eos (0 <= min_len <= max_len).
        native: run the loop natively where it can (decode_path says which loop runs): in C++
            on the CPU (fast_s2s.models.native), as replayed CUDA graphs on CUDA; False: this
            module's Python loop, the reference.

    Returns:
        One Hypothesis per source row, in order.
    """
    _check_args(model, max_len, min_len)
    path = decode_path(model, native)
    if path == "cuda-graph":
        from fast_s2s.models.cuda_graph import decode_greedy_on_cuda

        return decode_greedy_on_cuda(model, src, src_lengths, max_len, min_len)
    use_native = path == "native"
    with _eval_mode(model, frozen=not use_native):
        enc = _encode(model, src, src_lengths, use_native)
        if use_native:
            tokens, token_counts, scores, attention = _native.greedy(model, enc, max_len, min_len)
            counts = token_counts.tolist()
        else:
            tokens, scores, attention = _greedy_loop(model, enc, max_len, min_len)
            counts = [None] * enc.batch_size
        lengths = enc.src_lengths.cpu().tolist()
        scores_list = scores.double().cpu().tolist()
    eos = model.config.eos_id
    hyps = []
    for b, row in enumerate(tokens.tolist()):
        n = row.index(eos) if counts[b] is None or counts[b] < 0 else counts[b]
        hyps.append(
            Hypothesis(row[:n], scores_list[b], attention[b, : n + 1, : lengths[b]].clone())
        )
    return hyps


def _greedy_loop(
    model: Seq2Seq, enc: EncoderState, max_len: int, min_len: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The Python greedy loop: tokens (B, steps) CPU int64, scores (B,), attention (B, steps, S)
    float32 CPU."""
    eos = model.config.eos_id
    batch, device = enc.batch_size, enc.states.device
    state = model.initial_state(enc, beam=1)
    prev = torch.full((batch,), model.config.bos_id, dtype=torch.int64, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    scores = torch.zeros(batch, dtype=torch.float32, device=device)
    tokens, attention = [], []
    for t in range(max_len + 1):
        log_probs, state, weights = _step(
            model, enc, state, prev, 1, force_eos=t == max_len, block_eos=t < min_len
        )
        best, prev = log_probs.max(dim=-1)
        scores = torch.where(finished, scores, scores + best)
        tokens.append(prev)
        attention.append(weights)
        finished = finished | (prev == eos)
        if bool(finished.all()):
            break
    all_tokens = torch.stack(tokens, dim=1).cpu()  # (B, steps)
    all_attention = torch.stack(attention, dim=1).float().cpu()  # (B, steps, S)
    return all_tokens, scores, all_attention


@dataclass
class _Finished:
    """A finished hypothesis of one sentence, with its ranking score."""

    normalized: float
    hypothesis: Hypothesis


@overload
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = ...,
    max_len: int = ...,
    length_penalty: float = ...,
    *,
    n_best: None = ...,
    penalty: str = ...,
    min_len: int = ...,
    native: bool = ...,
) -> list[Hypothesis]: ...
@overload
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = ...,
    max_len: int = ...,
    length_penalty: float = ...,
    *,
    n_best: int,
    penalty: str = ...,
    min_len: int = ...,
    native: bool = ...,
) -> list[list[Hypothesis]]: ...
def beam_search(
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
    native: bool = True,
) -> list[Hypothesis] | list[list[Hypothesis]]:
    """Batched beam search: B sentences x beam_size hypotheses = N decoder rows per step.

    At each step every live hypothesis of a sentence is extended by every token, and the
    beam_size best extensions by total log-probability are kept: those ending in eos are
    finished (ranked by length_normalize(score, len + 1, length_penalty, penalty)), the others
    are the live hypotheses of the next step (fewer than beam_size after a step that finished
    some; the next step fills the beam again). With beam_size=1 this is exactly greedy_decode.

    Stopping rule: a sentence is finished when it has no live hypothesis, or when its k-th best
    finished hypothesis (k = n_best, 1 by default) ranks at least as high as the best that any
    live hypothesis could still reach, or after max_len + 1 steps (eos forced at the last). A
    live hypothesis with total log-prob s can only lose log-prob, and finishes with a length L
    in [its length + 1, max_len + 1] (and >= min_len + 1), so it can reach at most
    s / max(lp(L_min), lp(L_max)) (s <= 0). The search therefore never stops while a live
    hypothesis could still beat what it would return: with a beam wide enough to keep every
    prefix it returns the true best sequence under the ranking. (Stopping once beam_size
    hypotheses have finished, the rule of several toolkits, returns short wrong outputs on long
    targets: the correct hypothesis is still live when the quota fills.) With alpha > 0 the
    bound is loose, so sentences often run until their live hypotheses fall out of the beam.

    Args:
        model: the Seq2Seq model (run in eval mode and without gradients; its mode is restored).
        src: (B, S) int64 padded source (or (B, S, F) frames for source="frames");
            src_lengths: (B,) lengths.
        beam_size: hypotheses kept per sentence.
        max_len: at most this many tokens before eos.
        length_penalty: alpha of the length penalty (0: rank by total log-prob).
        n_best: None: return the best hypothesis per sentence; k (1 <= k <= beam_size): return
            a list of the k best finished hypotheses per sentence, best first (fewer when fewer
            finished).
        penalty: the form of the length penalty, "power" (L ** alpha) or "gnmt"
            (((5 + L) / 6) ** alpha).
        min_len: at least this many tokens before eos.
        native: run the loop natively where it can (decode_path says which loop runs): in C++
            on the CPU (fast_s2s.models.native), as replayed CUDA graphs on CUDA; False: this
            module's Python loop, the reference.

    Returns:
        One Hypothesis per source row, in order, or (n_best=k) one ranked list per row
        (Hypothesis.score: the total log-probability).
    """
    keep, alpha = _check_beam_args(
        model, beam_size, max_len, length_penalty, n_best, penalty, min_len
    )
    path = decode_path(model, native)
    if path == "cuda-graph":
        from fast_s2s.models.cuda_graph_beam import decode_beam_on_cuda

        options = SearchOptions(int(beam_size), max_len, min_len, alpha, penalty, keep)
        ranked = decode_beam_on_cuda(model, src, src_lengths, options)
        return _beam_result(ranked, n_best)
    with _eval_mode(model, frozen=path != "native"):
        enc = _encode(model, src, src_lengths, path == "native")
        run = _beam_native if path == "native" else _beam_loop
        ranked = run(model, enc, int(beam_size), max_len, min_len, alpha, penalty, keep)
    return _beam_result(ranked, n_best)


def _check_beam_args(
    model: Seq2Seq,
    beam_size: int,
    max_len: int,
    length_penalty: float,
    n_best: int | None,
    penalty: str,
    min_len: int,
) -> tuple[int, float]:
    """beam_search's argument checks; returns (hypotheses kept per sentence, alpha)."""
    _check_args(model, max_len, min_len, beam_size)
    if not isinstance(length_penalty, numbers.Real) or isinstance(length_penalty, bool):
        raise ValueError(f"length_penalty must be a number, got {length_penalty!r}")
    if penalty not in LENGTH_PENALTIES:
        raise ValueError(f"penalty must be one of {list(LENGTH_PENALTIES)}, got {penalty!r}")
    if n_best is not None and (not _is_int(n_best) or not 1 <= n_best <= beam_size):
        raise ValueError(
            f"n_best must be None or an integer in [1, beam_size={beam_size}], got {n_best!r}"
        )
    return 1 if n_best is None else int(n_best), float(length_penalty)


def _beam_result(
    ranked: list[list[Hypothesis]], n_best: int | None
) -> list[Hypothesis] | list[list[Hypothesis]]:
    """What beam_search returns from its per-sentence ranked lists; an empty list is an error."""
    for b, hyps in enumerate(ranked):
        if not hyps:
            raise ValueError(
                f"beam_search: no hypothesis of sentence {b} has a finite log-probability "
                "(the model gives NaN or -inf log-probs: check its weights)"
            )
    if n_best is None:
        return [r[0] for r in ranked]
    return ranked


def _beam_loop(
    model: Seq2Seq,
    enc: EncoderState,
    beam: int,
    max_len: int,
    min_len: int,
    alpha: float,
    penalty: str,
    keep: int,
) -> list[list[Hypothesis]]:
    """The Python beam-search loop (the reference of the native one): per sentence its up to
    `keep` best finished hypotheses, ranked (see beam_search)."""
    cfg = model.config
    neg_inf = float("-inf")

    def reachable(best_live: Tensor, length: int) -> Tensor:
        """The best ranking a live hypothesis of `length` tokens and total log-prob best_live
        (B,) can still reach (see the stopping rule)."""
        shortest = max(length + 1, min_len + 1)
        largest_lp = max(
            length_penalty_factor(shortest, alpha, penalty),
            length_penalty_factor(max_len + 1, alpha, penalty),
        )
        return best_live / largest_lp

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
    finished: list[list[_Finished]] = [[] for _ in range(batch)]  # in the order finished
    # per sentence: the ranking score of its keep-th best finished hypothesis (-inf: fewer)
    kth_best = torch.full((batch,), neg_inf, dtype=torch.float64)
    done = torch.zeros(batch, dtype=torch.bool, device=device)

    for t in range(max_len + 1):
        log_probs, state, weights = _step(
            model, enc, state, prev, beam, force_eos=t == max_len, block_eos=t < min_len
        )
        vocab = log_probs.shape[-1]
        candidates = beam_scores.unsqueeze(-1) + log_probs.view(batch, beam, vocab)
        top_scores, top_index = candidates.view(batch, beam * vocab).topk(beam, dim=1)
        top_beam = top_index // vocab
        top_token = top_index % vocab
        is_eos = top_token == cfg.eos_id
        alive = torch.isfinite(top_scores) & ~done.unsqueeze(1)

        to_finish = is_eos & alive
        if bool(to_finish.any()):
            step_weights = weights.view(batch, beam, src_len)
            for b, j in to_finish.nonzero().tolist():
                k = int(top_beam[b, j])
                attn = torch.cat([history_attention[b, k], step_weights[b, k, None]], dim=0)
                hyp = Hypothesis(
                    history[b, k].tolist(),
                    float(top_scores[b, j]),
                    attn[:, : src_lengths_list[b]].float().cpu(),
                )
                norm = length_normalize(hyp.score, len(hyp.tokens) + 1, alpha, penalty)
                finished[b].append(_Finished(norm, hyp))
                ranked = sorted((f.normalized for f in finished[b]), reverse=True)
                if len(ranked) >= keep:
                    kth_best[b] = ranked[keep - 1]
        if t == max_len:
            break

        # The live hypotheses: the non-eos candidates among the kept ones; the others
        # (finished, -inf, or of a finished sentence) become dead rows with score -inf.
        live = alive & ~is_eos
        beam_scores = top_scores.masked_fill(~live, neg_inf)
        best_live = beam_scores.max(dim=1).values  # (B,), -inf without a live hypothesis
        can_win = reachable(best_live.double().cpu(), t + 1) > kth_best
        done = done | ~(torch.isfinite(best_live) & can_win.to(device))
        if bool(done.all()):
            break

        chosen = (row_base + top_beam).view(-1)  # (N,) rows to continue
        prev = top_token.reshape(-1)
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

    # stable sort: of equal ranking scores, the earlier finished first
    return [
        [f.hypothesis for f in sorted(done_b, key=lambda f: f.normalized, reverse=True)[:keep]]
        for done_b in finished
    ]


def _beam_native(
    model: Seq2Seq,
    enc: EncoderState,
    beam: int,
    max_len: int,
    min_len: int,
    alpha: float,
    penalty: str,
    keep: int,
) -> list[list[Hypothesis]]:
    """_beam_loop's result from the native loop (fast_s2s.models.native.beam)."""
    tokens, counts, scores, attention = _native.beam(
        model, enc, beam, max_len, min_len, alpha, penalty, keep
    )
    src_lengths = enc.src_lengths.cpu().tolist()
    tokens_l, counts_l, scores_l = tokens.tolist(), counts.tolist(), scores.tolist()
    out = []
    for b in range(enc.batch_size):
        hyps = []
        for r in range(keep):
            n = counts_l[b][r]
            if n < 0:
                break
            attn = attention[b, r, : n + 1, : src_lengths[b]].clone()
            hyps.append(Hypothesis(tokens_l[b][r][:n], scores_l[b][r], attn))
        out.append(hyps)
    return out


@dataclass(frozen=True)
class SearchOptions:
    """How to decode: greedy (beam=1) or beam search, and its options (see beam_search).

    n_best: how many ranked hypotheses search() returns per sentence (<= beam).
    native: run the native loop where it can run (decode_path), else the Python loop."""

    beam: int = 5
    max_len: int = 100
    min_len: int = 0
    length_penalty: float = 1.0
    penalty: str = "power"
    n_best: int = 1
    native: bool = True

    def describe(self) -> str:
        """A short label for reports: "greedy" or "beam 5 (power 1.0)"."""
        if self.beam == 1:
            return "greedy"
        return f"beam {self.beam} ({self.penalty} {self.length_penalty:g})"

    def rank(self, hyp: Hypothesis) -> float:
        """The ranking score of a finished hypothesis under these options."""
        return length_normalize(hyp.score, len(hyp.tokens) + 1, self.length_penalty, self.penalty)


def search(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, options: SearchOptions
) -> list[list[Hypothesis]]:
    """Decode a batch as `options` says: per source row, a ranked list of up to
    options.n_best hypotheses (greedy_decode's single one when options.beam == 1)."""
    if options.beam == 1:
        if options.n_best != 1:
            raise ValueError(f"n_best must be 1 for greedy decoding (beam=1), got {options.n_best}")
        hyps = greedy_decode(
            model, src, src_lengths, options.max_len, min_len=options.min_len,
            native=options.native,
        )  # fmt: skip
        return [[h] for h in hyps]
    return beam_search(
        model,
        src,
        src_lengths,
        options.beam,
        options.max_len,
        options.length_penalty,
        n_best=options.n_best,
        penalty=options.penalty,
        min_len=options.min_len,
        native=options.native,
    )
