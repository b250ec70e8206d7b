"""Shared test set-up: fixed seeds, the cuda marker, the Triton interpreter switch, and the
fixtures the op tests share (the backends themselves are in tests/backends.py)."""

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


def pytest_collection_modifyitems(config, items):
    # Nothing touches CUDA at import time; the check happens here, once, at collection.
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
