"""The learning-rate schedules (fast_s2s.training.schedule) and label smoothing of the training
loss: the formulas, what a run's optimizer ends with and an unknown schedule refused (the
CLI options' errors are in tests/cli/test_cli.py's table)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fast_s2s.models import Seq2Seq, Seq2SeqConfig
from fast_s2s.training import checkpoint, train
from fast_s2s.training.schedule import LR_FLOOR, cosine_factor, run_progress
from tests.training.test_training import TINY_MODEL, tiny_settings


def test_cosine_falls_from_one_to_the_floor():
    points = [cosine_factor(i / 20) for i in range(21)]
    assert points[0] == pytest.approx(1.0) and points[-1] == pytest.approx(LR_FLOOR)
    assert points[10] == pytest.approx((1 + LR_FLOOR) / 2)
    assert all(a > b for a, b in zip(points, points[1:], strict=False))


@pytest.mark.parametrize(
    "done,epochs,seconds,budget,expected",
    [
        (1.0, 4, 0.0, None, 0.25),  # no budget: epochs only
        (1.0, 4, 30.0, 60.0, 0.5),  # the budget is further along
        (3.0, 4, 30.0, 60.0, 0.75),  # the epochs are
        (5.0, 4, 0.0, None, 1.0),  # clipped
        (0.0, 4, 90.0, 60.0, 1.0),
    ],
)
def test_progress_is_the_larger_fraction(done, epochs, seconds, budget, expected):
    assert run_progress(done, epochs, seconds, budget) == pytest.approx(expected)


def _final_lr(path) -> float:
    groups = checkpoint.load_checkpoint(path)["optimizer"]["param_groups"]
    return groups[0]["lr"]


def test_a_cosine_run_sets_the_rate_before_every_batch(tmp_path):
    path = tmp_path / "cosine.pt"
    settings = tiny_settings(epochs=2, patience=99, lr=1e-2, lr_schedule="cosine")
    train(settings, TINY_MODEL, str(path))
    # The last batch of the second epoch, batch n - 1 of n, set the rate at (1 + (n - 1) / n) / 2
    # of the run (n depends on the bucketing, so any n matches; a rate set once per epoch or
    # never would be 0.5 or 1, which no n gives).
    last = _final_lr(path) / 1e-2
    assert any(
        last == pytest.approx(cosine_factor((1 + (n - 1) / n) / 2), rel=1e-9) for n in range(2, 200)
    ), last
    assert last < 0.3


def test_an_unknown_schedule_is_refused_before_any_work(tmp_path):
    path = tmp_path / "never.pt"
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \('plateau', 'cosine'\)"):
        train(tiny_settings(lr_schedule="linear"), TINY_MODEL, str(path))
    assert not path.exists()


def test_a_plateau_run_only_halves_the_rate(tmp_path):
    path = tmp_path / "plateau.pt"
    train(tiny_settings(epochs=2, patience=99, lr=1e-2), TINY_MODEL, str(path))
    halvings = math.log2(1e-2 / _final_lr(path))
    assert halvings == pytest.approx(round(halvings)) and 0 <= round(halvings) <= 2


def _tiny_model_and_batch():
    torch.manual_seed(0)
    config = Seq2SeqConfig(src_vocab_size=11, tgt_vocab_size=13, embed_size=8, hidden_size=16)
    model = Seq2Seq(config)
    src = torch.randint(4, 11, (3, 5))
    lengths = torch.tensor([5, 4, 2])
    tgt_in = torch.randint(4, 13, (3, 6))
    tgt_out = tgt_in.roll(-1, dims=1)
    tgt_out[2, 3:] = config.pad_id
    return model, src, lengths, tgt_in, tgt_out


def test_label_smoothing_mixes_the_uniform_target_in():
    model, src, lengths, tgt_in, tgt_out = _tiny_model_and_batch()
    eps = 0.1
    with torch.no_grad():
        smoothed, n = model.loss(src, lengths, tgt_in, tgt_out, label_smoothing=eps)
        plain, n_plain = model.loss(src, lengths, tgt_in, tgt_out)
        log_probs = F.log_softmax(model(src, lengths, tgt_in).double(), -1)
    keep = tgt_out != model.config.pad_id
    nll = -log_probs.gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)[keep].sum()
    uniform = -log_probs.mean(-1)[keep].sum()
    assert n == n_plain == int(keep.sum())
    torch.testing.assert_close(plain.double(), nll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(smoothed.double(), (1 - eps) * nll + eps * uniform, rtol=1e-5,
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_label_smoothing_out_of_range_is_refused(value):
    model, src, lengths, tgt_in, tgt_out = _tiny_model_and_batch()
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\)"):
        model.loss(src, lengths, tgt_in, tgt_out, label_smoothing=value)
