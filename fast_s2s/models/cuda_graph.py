"""Greedy decoding on CUDA with the decoder step captured once as a CUDA graph and replayed per
token, so a token costs one graph launch instead of a few dozen kernel launches from Python.

UNTESTED ON HARDWARE: written and importable without a GPU (nothing here touches CUDA at import
time), never run on one; the CPU path and CI do not use it. It is opt-in, not what
greedy_decode picks on CUDA (that runs the Python loop, search.decode_path says so), until a GPU
run holds it to greedy_decode(native=False) token for token (scripts/gpu_check.sh is the place).

How: encode once; allocate every tensor the loop touches as a static buffer (previous tokens,
decoder state, finished flags, scores, the (B, max_len + 1) token and (B, max_len + 1, S)
attention buffers and a device step counter); capture three graphs of one step each (the
ordinary step, the step before min_len with eos blocked, the last step with eos forced); each
does decode_step, the search rules, argmax, the score update and writes its row at the step
counter. The host replays them max_len + 1 times at most, reading the finished flags every
`check_every` steps (one synchronisation per check, none per token). Rows that finished keep
computing (their scores are masked), exactly as search._greedy_loop does.
"""

from __future__ import annotations

import torch
from torch import Tensor

from fast_s2s.models.search import Hypothesis, _check_args, _eval_mode
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState

__all__ = ["greedy_decode_graph"]


def greedy_decode_graph(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int = 100,
    *,
    min_len: int = 0,
    check_every: int = 8,
) -> list[Hypothesis]:
    """greedy_decode for a model on CUDA, its step loop as replayed CUDA graphs (see the module
    docstring; untested on hardware). src (B, S), src_lengths (B,) on the model's device."""
    _check_args(model, max_len, min_len)
    device = next(model.parameters()).device
    if device.type != "cuda":
        raise ValueError(f"greedy_decode_graph: the model must be on CUDA, got {device}")
    cfg = model.config
    neg_inf = float("-inf")
    with _eval_mode(model):
        enc = model.encode(src, src_lengths)
        batch, src_len, steps = enc.batch_size, enc.states.shape[1], max_len + 1
        state = model.initial_state(enc, beam=1)
        hidden = state.hidden.clone()
        feed = None if state.feed is None else state.feed.clone()
        prev = torch.full((batch,), cfg.bos_id, dtype=torch.int64, device=device)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        scores = torch.zeros(batch, dtype=torch.float32, device=device)
        tokens = torch.full((batch, steps), cfg.pad_id, dtype=torch.int64, device=device)
        attention = torch.zeros(batch, steps, src_len, dtype=torch.float32, device=device)
        t_index = torch.zeros(1, dtype=torch.int64, device=device)

        def step(force_eos: bool, block_eos: bool) -> None:
            # t_index is the step of the state (local-m attention reads it on the device)
            current = DecoderState(hidden, feed, t_index)
            log_probs, new, weights = model.decode_step(enc, current, prev)
            if force_eos:
                keep = torch.zeros_like(log_probs, dtype=torch.bool)
                keep[:, cfg.eos_id] = True
                log_probs = log_probs.masked_fill(~keep, neg_inf)
            else:
                log_probs[:, cfg.pad_id] = neg_inf
                log_probs[:, cfg.bos_id] = neg_inf
                if block_eos:
                    log_probs[:, cfg.eos_id] = neg_inf
            best, token = log_probs.max(dim=-1)
            scores.copy_(torch.where(finished, scores, scores + best))
            tokens.index_copy_(1, t_index, token[:, None])
            attention.index_copy_(1, t_index, weights.float()[:, None, :])
            finished.logical_or_(token == cfg.eos_id)
            prev.copy_(token)
            hidden.copy_(new.hidden)
            if feed is not None:
                feed.copy_(new.feed)
            t_index.add_(1)

        graphs = {}
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        kinds = {"block": (False, True), "plain": (False, False), "force": (True, False)}
        # Warm-up outside capture (allocator, lazy init), then restore the initial buffers.
        snapshot = [t.clone() for t in (hidden, prev, finished, scores, tokens, attention)]
        with torch.cuda.stream(stream):
            for force_eos, block_eos in kinds.values():
                step(force_eos, block_eos)
        torch.cuda.current_stream(device).wait_stream(stream)
        for kind, (force_eos, block_eos) in kinds.items():
            graphs[kind] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graphs[kind]):
                step(force_eos, block_eos)
        for buffer, saved in zip(
            (hidden, prev, finished, scores, tokens, attention), snapshot, strict=True
        ):
            buffer.copy_(saved)
        if feed is not None:
            feed.zero_()
        t_index.zero_()

        for t in range(steps):
            kind = "force" if t == max_len else "block" if t < min_len else "plain"
            graphs[kind].replay()
            if (t + 1) % check_every == 0 and bool(finished.all()):
                break
        token_rows = tokens.cpu().tolist()
        attention_cpu = attention.cpu()
        lengths = enc.src_lengths.cpu().tolist()
        scores_list = scores.double().cpu().tolist()
    hyps = []
    for b, row in enumerate(token_rows):
        n = row.index(cfg.eos_id)
        hyps.append(Hypothesis(row[:n], scores_list[b], attention_cpu[b, : n + 1, : lengths[b]]))
    return hyps
