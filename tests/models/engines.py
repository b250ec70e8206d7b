"""The search engines every engine test runs over, the models and sources they decode, and the
comparison, in the pattern of tests/backends.py: one test body, every engine, each held to the
Python loop (fast_s2s.models.decoding.python_loop, the reference) token for token.

    native             the C++ loop (NativeLoop) on a model of the cpp backend
    static-cpp         the static-buffer loop run eagerly (StaticLoop(capture=False)): the very
                       steps a CUDA graph captures, on the cpp kernels
    static-reference   the same on the reference backend (plain PyTorch ops)
    cuda-graph         the static loop captured and replayed as CUDA graphs on a GPU (marked
                       cuda: scripts/gpu_check.sh runs it; a failed capture fails the test)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models import Seq2Seq, Seq2SeqConfig
from fast_s2s.models.decoding.api import run_search
from fast_s2s.models.decoding.engine import Engine
from fast_s2s.models.decoding.native_loop import NativeLoop
from fast_s2s.models.decoding.python_loop import PythonLoop
from fast_s2s.models.decoding.result import Hypothesis
from fast_s2s.models.decoding.spec import SearchOptions
from fast_s2s.models.decoding.static_loop import StaticLoop

SRC_VOCAB, TGT_VOCAB, EOS = 11, 13, 2

# name -> Seq2SeqConfig keywords: every wiring and score, input feeding, local attention (the
# step counter), tied embeddings (E != H: the tie projection), stacked decoders and the
# post-attention GRU (a state row after the stacked layers).
WIRINGS: dict[str, dict[str, object]] = {
    "bahdanau": {"wiring": "bahdanau", "score": "additive"},
    "luong-dot": {"wiring": "luong", "score": "dot"},
    "luong-general": {"wiring": "luong", "score": "general"},
    "luong-concat": {"wiring": "luong", "score": "concat"},
    "luong-general-feed": {"wiring": "luong", "score": "general", "input_feeding": True},
    "luong-concat-feed": {"wiring": "luong", "score": "concat", "input_feeding": True},
    "classic": {"attention": "none"},
    "local-m": {"wiring": "luong", "score": "dot", "local": "m", "window": 2},
    "local-p": {"wiring": "luong", "score": "general", "local": "p", "window": 2},
    "bahdanau-2layers": {"decoder_layers": 2},
    "bahdanau-tied-2layers": {"tie_embeddings": True, "decoder_layers": 2, "embed_size": 8},
    "luong-dot-tied": {"wiring": "luong", "score": "dot", "tie_embeddings": True},
    "luong-general-post": {"wiring": "luong", "score": "general", "post_attention_gru": True},
    "luong-dot-feed-post-2layers": {
        "wiring": "luong",
        "score": "dot",
        "input_feeding": True,
        "post_attention_gru": True,
        "decoder_layers": 2,
    },
}


@dataclass(frozen=True)
class EngineCase:
    name: str
    backend: str  # the model's config.backend
    make: Callable[[], Engine]
    gpu: bool = False

    def __repr__(self) -> str:
        return self.name

    @property
    def device(self) -> str:
        return "cuda" if self.gpu else "cpu"

    @property
    def skip_reason(self) -> str | None:
        if self.backend == "cpp" and not _extension.extension_loaded():
            return f"the compiled extension is not built: {_extension.EXTENSION_ERROR}"
        return None

    @property
    def param(self):
        marks = [pytest.mark.cuda] if self.gpu else []
        if self.skip_reason:
            marks.append(pytest.mark.skip(reason=self.skip_reason))
        return pytest.param(self, id=self.name, marks=marks)

    def model(self, wiring: str, **kwargs) -> Seq2Seq:
        return make_model(wiring, self.backend, **kwargs).to(self.device)

    def decode(self, model, src, lengths, spec: SearchOptions) -> list[list[Hypothesis]]:
        return run_search(model, src.to(self.device), lengths.to(self.device), spec, self.make())


NATIVE = EngineCase("native", "cpp", NativeLoop)
STATIC_CPP = EngineCase("static-cpp", "cpp", lambda: StaticLoop(capture=False))
STATIC_REFERENCE = EngineCase("static-reference", "reference", lambda: StaticLoop(capture=False))
CUDA_GRAPH = EngineCase("cuda-graph", "auto", lambda: StaticLoop(capture=True), gpu=True)
ENGINES = [NATIVE, STATIC_CPP, STATIC_REFERENCE, CUDA_GRAPH]


def python_loop(model, src, lengths, spec: SearchOptions) -> list[list[Hypothesis]]:
    """The reference: the Python loop on the same model."""
    return run_search(model, src, lengths, spec, PythonLoop())


def make_model(
    name: str,
    backend: str = "cpp",
    seed: int = 0,
    sharpness: float = 3.0,
    eos_bias: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> Seq2Seq:
    """A random model with peaked output distributions (so the best token is not a near-tie)
    and, with eos_bias < 0, long outputs."""
    kw = dict(WIRINGS[name])
    embed = kw.pop("embed_size", 10)
    torch.manual_seed(seed)
    config = Seq2SeqConfig(
        src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB, embed_size=embed, hidden_size=12,
        backend=backend, **kw,  # type: ignore[arg-type]
    )  # fmt: skip
    model = Seq2Seq(config).to(dtype).eval()
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(sharpness)
        model.decoder.out.bias[EOS] += eos_bias
    return model


def make_source(batch: int, seed: int, width: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, width) source ids of mixed lengths in [1, width], row 0 of the full width."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (batch,), generator=gen)
    lengths[0] = width
    src = torch.randint(3, SRC_VOCAB, (batch, width), generator=gen)
    return src.masked_fill(torch.arange(width) >= lengths[:, None], 0), lengths


def assert_same_hypotheses(got, want, tol: float = 1e-4) -> None:
    """The same tokens, scores to tol, attention maps to float tolerance."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.tokens == w.tokens
        assert g.score == pytest.approx(w.score, rel=tol, abs=tol)
        assert g.attention.shape == w.attention.shape
        torch.testing.assert_close(g.attention, w.attention, atol=1e-5, rtol=1e-4)


def assert_same_lists(got, want, tol: float = 1e-4) -> None:
    """Per sentence the same ranked lists (assert_same_hypotheses)."""
    assert [len(r) for r in got] == [len(r) for r in want]
    for g, w in zip(got, want, strict=True):
        assert_same_hypotheses(g, w, tol)
