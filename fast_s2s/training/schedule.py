"""Learning-rate schedules of `fast-s2s train` (--lr-schedule).

plateau: the rate stays at --lr and halves after every epoch whose validation score does not
improve (Luong et al. 2015 halve it on a fixed schedule).
cosine: the rate follows half a cosine from --lr down to LR_FLOOR x --lr over the run, set before
every batch. A run ends at --epochs or when --time-budget is spent, whichever comes first, so its
progress is the larger of the two fractions: with a time budget the rate reaches its floor when
the budget runs out, however fast the machine is. A resumed run starts a new half cosine over
its own epochs and budget (a warm restart).
"""

from __future__ import annotations

import math

SCHEDULES = ("plateau", "cosine")
LR_FLOOR = 0.02  # of --lr: the last batches still learn a little, as in SGDR's eta_min


def run_progress(
    epochs_done: float, epochs: int, seconds: float, time_budget: float | None
) -> float:
    """How far a run is, in [0, 1]: the larger of epochs_done / epochs and, with a budget,
    seconds / time_budget. epochs_done counts the current epoch's finished fraction."""
    progress = epochs_done / max(1, epochs)
    if time_budget:
        progress = max(progress, seconds / time_budget)
    return min(1.0, max(0.0, progress))


def cosine_factor(progress: float) -> float:
    """The cosine schedule's multiplier of --lr at `progress` in [0, 1]: 1 at the start,
    LR_FLOOR at the end."""
    return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))
