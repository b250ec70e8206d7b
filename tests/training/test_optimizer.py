"""fast_s2s.training.optimizer.adam: fused where torch has the kernel, the same updates as
torch's default Adam up to rounding, and torch's default elsewhere."""

from __future__ import annotations

import pytest
import torch

from fast_s2s.training.optimizer import adam


def _parameters(seed: int, device: str = "cpu") -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(48, 16), (48,), (7, 3, 5)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]


def test_fused_adam_makes_torchs_updates():
    fused, looped = _parameters(0), _parameters(0)
    fused_opt = adam(fused, lr=1e-2)
    looped_opt = torch.optim.Adam(looped, lr=1e-2, foreach=False)
    assert fused_opt.defaults["fused"] is True
    gen = torch.Generator().manual_seed(1)
    for _ in range(25):
        grads = [torch.randn(p.shape, generator=gen) * 10.0 for p in fused]
        for group, opt in ((fused, fused_opt), (looped, looped_opt)):
            for p, g in zip(group, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b, start in zip(fused, looped, _parameters(0), strict=True):
        assert not torch.equal(a, start)  # 25 steps of 1e-2 moved every parameter
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_torchs_default_where_there_is_no_fused_kernel():
    assert not adam(_parameters(0, "meta"), lr=1e-3).defaults["fused"]
    with pytest.raises(ValueError, match="empty parameter list"):
        adam([], lr=1e-3)  # torch.optim.Adam's own error


def test_training_steps_with_it(tmp_path):
    from fast_s2s.training import TrainSettings, load_checkpoint, train

    settings = TrainSettings(task="copy", num_examples=64, valid_size=8, max_len=4, epochs=1)
    train(settings, dict(embed_size=8, hidden_size=8), str(tmp_path / "ckpt.pt"))
    state = load_checkpoint(str(tmp_path / "ckpt.pt"), ("optimizer",))
    assert state["optimizer"]["param_groups"][0]["fused"] is True
