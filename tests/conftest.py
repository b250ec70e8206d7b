"""Shared test set-up: fixed seeds, the cuda marker, the Triton interpreter switch, and the
fixtures the op, search, training and CLI tests share (the backends themselves are in
tests/backends.py)."""

from __future__ import annotations

import os
import random

# Triton kernels run on CPU tensors only in interpreter mode; set before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def fixed_seed():
    """Every test starts from the same random state, so failures reproduce."""
    random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture
def nan_filled_empty():
    """torch.empty / at::empty return NaN-filled memory: a kernel that leaves part of an output
    unwritten shows up as NaN in the comparison."""
    old = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    yield
    torch.use_deterministic_algorithms(old)
    torch.utils.deterministic.fill_uninitialized_memory = old_fill


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One small dates model (checkpoint path, training result), shared by the training and
    command-line tests that translate with it or copy its checkpoint (none changes it)."""
    from fast_s2s.training import TrainSettings, train

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("ckpt") / "dates.pt"
    settings = TrainSettings(task="dates", num_examples=1500, valid_size=100, epochs=2)
    result = train(settings, dict(embed_size=16, hidden_size=48), str(path))
    return path, result


# The fused ops a model's decoder step calls, for the search loops a CUDA graph captures.
_EMULATED_OPS = ("dot_attention", "additive_attention", "local_attention", "gru_cell")


@pytest.fixture
def emulated_cuda_kernels(monkeypatch):
    """The CUDA kernels' code (csrc/cuda/*.cu) under the CPU emulation in place of the fused ops
    (what a captured graph replays on a GPU); returns the calls counted per op."""
    from fast_s2s import ops
    from tests.backends import EMU

    if EMU.skip_reason:
        pytest.skip(EMU.skip_reason)
    calls = {op: 0 for op in _EMULATED_OPS}

    def emulated(op):
        kernel = EMU.function(op)

        def run(*args, backend=None, **kwargs):
            calls[op] += 1
            return kernel(*args, **kwargs)

        return run

    for op in _EMULATED_OPS:
        monkeypatch.setattr(ops, op, emulated(op))
    return calls


def pytest_collection_modifyitems(config, items):
    # Nothing touches CUDA at import time; the check happens here, once, at collection.
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
