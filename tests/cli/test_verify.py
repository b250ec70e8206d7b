"""`fast-s2s verify`'s decode-loop check: it names the loop and the encoder that run, passes
when the native loop gives the Python loop's tokens, and fails (counts a failure) when it does
not or when a CUDA graph capture fell back to eager."""

from __future__ import annotations

import io
import warnings

import pytest
from rich.console import Console

from fast_s2s import _extension, models
from fast_s2s.cli import verify
from fast_s2s.models.decoding import CaptureFailedWarning

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason="the native loop is the C++ extension's"
)


def run_check(device: str = "cpu") -> tuple[int, str]:
    out = io.StringIO()
    failures = verify._check_decode_loop(Console(file=out, width=200), device)
    return failures, out.getvalue()


def test_the_native_loop_passes_and_is_named():
    failures, text = run_check()
    assert failures == 0, text
    assert "decode loop (a cpu model, backend='auto'): native, encoder: one op (encode)" in text
    assert "native loop against the Python loop (greedy, beam 3): ok" in text


def test_different_tokens_fail_the_check(monkeypatch):
    greedy = models.greedy_decode

    def off_by_one(model, src, lengths, max_len, **kwargs):
        hyps = greedy(model, src, lengths, max_len, **kwargs)
        if kwargs.get("native", True):
            hyps[0].tokens.append(3)
        return hyps

    monkeypatch.setattr(models, "greedy_decode", off_by_one)
    failures, text = run_check()
    assert failures == 1 and "DIFFERENT TOKENS" in text


def test_a_failed_capture_fails_the_check(monkeypatch):
    beam = models.beam_search

    def warns(*args, **kwargs):
        if not kwargs.get("native", True):
            return beam(*args, **kwargs)
        warnings.warn(
            "fast_s2s: capturing the decoder step as a CUDA graph failed (x); this search runs "
            "the same steps eagerly",
            CaptureFailedWarning,
            stacklevel=2,
        )
        return beam(*args, **kwargs)

    monkeypatch.setattr("fast_s2s.models.beam_search", warns)
    failures, text = run_check()
    assert failures == 1 and "CUDA graph failed" in text
