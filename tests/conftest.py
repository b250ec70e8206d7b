"""Shared test set-up: fixed seeds, the cuda marker, and the Triton interpreter switch."""

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


def pytest_collection_modifyitems(config, items):
    # Nothing touches CUDA at import time; the check happens here, once, at collection.
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)
