"""The one assembler of every engine's Trace: torch.ops.fast_s2s.assemble_trace (C++) held to
result.assemble_reference (Python) on random traces, ties, long outputs, several finishing per
sentence, greedy traces, and the error for a sentence without a finished hypothesis."""

from __future__ import annotations

import math
import random

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models.decoding.result import Trace, assemble, assemble_reference
from fast_s2s.models.decoding.rules import length_tables

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason=_extension.EXTENSION_ERROR or ""
)


def random_trace(
    rng: random.Random, steps: int, batch: int, beam: int, *, greedy: bool = False
) -> Trace:
    """A trace of the engines' form: each sentence finishes at least once (greedy: exactly
    once, as a beam of 1 does); scores drawn from a few values, so that rankings tie."""
    src = rng.randint(1, 9)
    tokens = torch.randint(
        3, 40, (steps, batch, beam), generator=torch.Generator().manual_seed(rng.randrange(1 << 30))
    )
    parents = torch.tensor(
        [[[rng.randrange(beam) for _ in range(beam)] for _ in range(batch)] for _ in range(steps)]
    )
    finish = torch.full((steps, batch, beam), -math.inf, dtype=torch.float64)
    for b in range(batch):
        ends = (
            [rng.randrange(steps)]
            if greedy
            else [rng.randrange(steps) for _ in range(rng.randint(1, 2 * beam))]
        )
        for t in ends:
            j = 0 if greedy else rng.randrange(beam)
            finish[t, b, j] = -rng.choice((0.5, 1.0, 2.0, 3.25)) * (t + 1)
    attention = torch.rand(steps, batch * beam, src)
    return Trace(tokens, parents, finish, attention)


def assert_same(got, want) -> None:
    assert len(got) == len(want)
    for g_hyps, w_hyps in zip(got, want, strict=True):
        assert len(g_hyps) == len(w_hyps)
        for g, w in zip(g_hyps, w_hyps, strict=True):
            assert g.tokens == w.tokens
            assert g.score == w.score
            assert g.attention.dtype == w.attention.dtype == torch.float32
            torch.testing.assert_close(g.attention, w.attention, rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(40))
def test_op_matches_reference_on_random_traces(seed):
    rng = random.Random(seed)
    steps, batch, beam = rng.randint(1, 12), rng.randint(1, 5), rng.randint(2, 6)
    trace = random_trace(rng, steps, batch, beam)
    lengths = [rng.randint(0, trace.attention.shape[2]) for _ in range(batch)]
    tables = length_tables(steps - 1 + rng.randint(0, 3), 0, rng.choice((0.0, 0.6, 1.0)), "gnmt")
    for n_best in range(1, beam + 1):
        got = assemble(trace, lengths, n_best, tables)
        assert_same(got, assemble_reference(trace, lengths, n_best, tables))
        assert all(1 <= len(h) <= n_best for h in got)


@pytest.mark.parametrize("seed", range(10))
def test_op_matches_reference_on_greedy_traces(seed):
    rng = random.Random(seed)
    trace = random_trace(rng, rng.randint(1, 30), rng.randint(1, 33), 1, greedy=True)
    lengths = [trace.attention.shape[2]] * trace.tokens.shape[1]
    tables = length_tables(trace.tokens.shape[0] - 1, 0, 1.0, "power")
    assert_same(assemble(trace, lengths, 1, tables), assemble_reference(trace, lengths, 1, tables))


def test_long_outputs():
    """200-step traces at beam 5 over 4 sentences: the prefixes followed back 200 steps."""
    rng = random.Random(7)
    trace = random_trace(rng, 201, 4, 5)
    lengths = [trace.attention.shape[2]] * 4
    tables = length_tables(200, 0, 1.0, "power")
    got = assemble(trace, lengths, 5, tables)
    assert_same(got, assemble_reference(trace, lengths, 5, tables))
    assert max(len(h.tokens) for hyps in got for h in hyps) > 100


def test_prefix_follows_the_parents():
    """A hand-built beam of 2: candidate 1 finishing at step 2 (row 0 computed it) extends
    candidate 0 of step 1 (token 7, computed by row 1), which extends candidate 1 of step 0
    (token 6, computed by row 0)."""
    tokens = torch.tensor([[[5, 6]], [[7, 8]], [[9, 2]]])  # (T=3, B=1, K=2)
    parents = torch.tensor([[[0, 0]], [[1, 0]], [[0, 0]]])
    finish = torch.full((3, 1, 2), -math.inf, dtype=torch.float64)
    finish[2, 0, 1] = -1.5
    attention = torch.arange(3 * 2 * 2, dtype=torch.float32).reshape(3, 2, 2)
    trace = Trace(tokens, parents, finish, attention)
    tables = length_tables(2, 0, 1.0, "power")
    for run in (assemble, assemble_reference):
        (hyp,) = run(trace, [2], 1, tables)[0]
        assert hyp.tokens == [6, 7]  # step 0 row 1, step 1 row 0
        assert hyp.score == -1.5
        # the rows that computed each step: step 0 row 0, step 1 row 1, step 2 row 0
        assert hyp.attention.tolist() == [[0.0, 1.0], [6.0, 7.0], [8.0, 9.0]]


def test_a_sentence_without_a_finished_hypothesis_is_refused():
    rng = random.Random(3)
    trace = random_trace(rng, 4, 3, 2)
    trace.finish_scores[:, 1] = -math.inf
    tables = length_tables(3, 0, 1.0, "power")
    for run in (assemble, assemble_reference):
        with pytest.raises(ValueError, match="no hypothesis of sentence 1 has a finite"):
            run(trace, [1, 1, 1], 1, tables)


def test_op_names_a_malformed_argument():
    rng = random.Random(4)
    trace = random_trace(rng, 3, 1, 2)
    table = length_tables(2, 0, 1.0, "power").finish_tensor
    with pytest.raises(RuntimeError, match="finish_scores must be a 3-D Double CPU tensor"):
        torch.ops.fast_s2s.assemble_trace(
            trace.tokens, trace.parents, trace.finish_scores.float(), trace.attention, table, 1
        )
    with pytest.raises(RuntimeError, match="n_best must lie in"):
        torch.ops.fast_s2s.assemble_trace(
            trace.tokens, trace.parents, trace.finish_scores, trace.attention, table, 3
        )
