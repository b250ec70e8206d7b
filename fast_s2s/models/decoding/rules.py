"""The search rules, defined once: what a step may generate, the length penalty that ranks
finished hypotheses, and the bound on what a live hypothesis can still reach. Every engine
reads these: the Python loop calls them, the static loop and the native C++ loop read the
tables of length_tables instead of re-deriving the penalty (docs/DESIGN.md, "Decoding").

- pad and bos are never generated; eos not before min_len tokens, and forced at step max_len
  (its log-prob counts in the score), or at a sentence's own limit when the options bound the
  output by the source (SearchOptions.max_len_ratio): every hypothesis ends with eos.
- A finished hypothesis of L tokens (eos included) ranks by score / lp(L): power L ** alpha
  (0: total log-prob; 1: mean per token) or GNMT's ((5 + L) / 6) ** alpha (Wu et al. 2016).
- A live hypothesis after step t (total log-prob s <= 0) can only lose log-prob and finishes
  with a length in [max(t + 2, min_len + 1), max_len + 1]: it can reach at most
  s / max(lp(shortest), lp(max_len + 1)) (lp is monotone in L). A sentence's own limit lies in
  [min_len, max_len], so the same bound holds for it (looser than its own would be).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fast_s2s.models.config import Seq2SeqConfig

__all__ = [
    "KINDS",
    "LENGTH_PENALTIES",
    "LengthTables",
    "length_normalize",
    "length_penalty_factor",
    "length_tables",
    "mask_log_probs",
    "step_kind",
]

# The forms of the length penalty lp(L) that a finished score is divided by.
LENGTH_PENALTIES: tuple[str, ...] = ("power", "gnmt")

StepKind = Literal["block", "plain", "force"]
# (force_eos, block_eos) of each kind of step: eos blocked before min_len, forced at max_len.
KINDS: dict[str, tuple[bool, bool]] = {
    "block": (False, True),
    "plain": (False, False),
    "force": (True, False),
}


def step_kind(t: int, max_len: int, min_len: int) -> StepKind:
    """Which kind step t (0-based) is: eos forced at the last, blocked before min_len."""
    return "force" if t == max_len else "block" if t < min_len else "plain"


def length_penalty_factor(length: int, alpha: float = 1.0, penalty: str = "power") -> float:
    """lp(length) for a hypothesis of `length` generated tokens including eos (>= 1):
    length ** alpha ("power") or ((5 + length) / 6) ** alpha ("gnmt"). Both are 1 at alpha = 0
    and grow with length for alpha > 0."""
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


@dataclass(frozen=True)
class LengthTables:
    """The length penalty per step t = 0 .. max_len, as the engines read it.

    finish[t]: lp(t + 1), what a hypothesis finishing at step t is divided by.
    reach[t]: the largest lp a hypothesis still live after step t can finish with, which
        divides its score into the best ranking it can still reach (the stopping rule).
    finish_tensor, reach_tensor: the same as (max_len + 1,) float64 CPU tensors.
    """

    finish: tuple[float, ...]
    reach: tuple[float, ...]
    finish_tensor: Tensor
    reach_tensor: Tensor


@functools.lru_cache(maxsize=64)
def length_tables(max_len: int, min_len: int, alpha: float, penalty: str) -> LengthTables:
    """The tables of one search (cached: a search of the same options reuses them)."""

    def lp(length: int) -> float:
        return length_penalty_factor(length, alpha, penalty)

    steps = range(max_len + 1)
    finish = tuple(lp(t + 1) for t in steps)
    reach = tuple(max(lp(max(t + 2, min_len + 1)), lp(max_len + 1)) for t in steps)
    as_tensor = functools.partial(torch.tensor, dtype=torch.float64)
    return LengthTables(finish, reach, as_tensor(finish), as_tensor(reach))


def mask_log_probs(
    log_probs: Tensor,
    cfg: Seq2SeqConfig,
    force_eos: bool,
    block_eos: bool,
    force_rows: Tensor | None = None,
) -> Tensor:
    """The search rules on a step's log_probs (N, V), in place where it can (nothing is read
    back to the host, so a CUDA graph captures it): no pad / bos; only eos when force_eos, or
    in the rows where force_rows (N,) bool is True (the rows at their sentence's own limit,
    SearchOptions.sentence_max_lens); no eos when block_eos (never at a sentence's limit: it is
    at least min_len)."""
    neg_inf = float("-inf")
    if force_eos:
        keep = torch.zeros_like(log_probs, dtype=torch.bool)
        keep[:, cfg.eos_id] = True
        return log_probs.masked_fill(~keep, neg_inf)
    log_probs[:, cfg.pad_id] = neg_inf
    log_probs[:, cfg.bos_id] = neg_inf
    if block_eos:
        log_probs[:, cfg.eos_id] = neg_inf
    if force_rows is not None:
        not_eos = torch.ones_like(log_probs[0], dtype=torch.bool)
        not_eos[cfg.eos_id] = False
        log_probs.masked_fill_(force_rows.unsqueeze(1) & not_eos, neg_inf)
    return log_probs
