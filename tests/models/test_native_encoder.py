"""The native encoder (fast_s2s.models.decoding.native_encoder, op encode) held to
Seq2Seq.encode: the same EncoderState exactly (the same ATen ops and gru_stack recurrence), for
every wiring and score, the classic model, local attention, frames, stacked layers, both float
dtypes, ragged and empty rows and long sources; the same errors for bad input; and the
searches' native path running it."""

from __future__ import annotations

import pytest
import torch

from fast_s2s import _extension
from fast_s2s.models import Seq2Seq, Seq2SeqConfig, beam_search, greedy_decode
from fast_s2s.models.decoding import native_encoder
from fast_s2s.models.encoder import Encoder

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason="the native encoder is the C++ extension's"
)

SRC_VOCAB, TGT_VOCAB, FRAME_SIZE = 11, 13, 5
MODELS: dict[str, dict[str, object]] = {
    "bahdanau": {"wiring": "bahdanau", "score": "additive"},
    "luong-concat": {"wiring": "luong", "score": "concat"},
    "luong-general-feed": {"wiring": "luong", "score": "general", "input_feeding": True},
    "luong-dot": {"wiring": "luong", "score": "dot"},
    "classic": {"attention": "none"},
    "local-p": {"wiring": "luong", "score": "general", "local": "p", "window": 2},
    "layers-3-2": {"encoder_layers": 3, "decoder_layers": 2},
    "frames": {"source": "frames", "frame_size": FRAME_SIZE},
}


def make_model(name: str, dtype: torch.dtype = torch.float32, backend: str = "cpp") -> Seq2Seq:
    torch.manual_seed(0)
    config = Seq2SeqConfig(
        src_vocab_size=SRC_VOCAB, tgt_vocab_size=TGT_VOCAB, embed_size=10, hidden_size=12,
        backend=backend, **MODELS[name],  # type: ignore[arg-type]
    )  # fmt: skip
    return Seq2Seq(config).to(dtype).eval()


def make_source(model: Seq2Seq, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch with these row lengths: token ids, or frames for a frames model."""
    width = max(lengths)
    gen = torch.Generator().manual_seed(len(lengths) * 7 + width)
    pad = torch.arange(width) >= torch.tensor(lengths)[:, None]
    if model.config.source == "frames":
        frames = torch.randn(len(lengths), width, FRAME_SIZE, generator=gen)
        return frames.masked_fill(pad[..., None], 0.0), torch.tensor(lengths)
    src = torch.randint(3, SRC_VOCAB, (len(lengths), width), generator=gen)
    return src.masked_fill(pad, 0), torch.tensor(lengths)


def assert_same_state(got, want) -> None:
    for name in ("states", "hidden", "src_lengths", "context"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name
    if want.memory is None:
        assert got.memory is None
    else:
        assert torch.equal(got.memory.keys, want.memory.keys)
        assert torch.equal(got.memory.values, want.memory.values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", list(MODELS))
def test_encode_is_seq2seq_encode(name, dtype):
    model = make_model(name, dtype)
    for lengths in ([7, 3, 5], [1], [9, 0, 4, 9], [300, 17]):  # ragged, one, empty, long rows
        src, src_lengths = make_source(model, lengths)
        with torch.no_grad():
            model.encode(src, src_lengths)  # the GEMM layer measures its kernels on a first call
            want = model.encode(src, src_lengths)
            got = native_encoder.encode(model, src, src_lengths)
        assert_same_state(got, want)


def test_the_searches_encode_natively_on_the_native_path(monkeypatch):
    """On the native path the searches encode in C++ (the search op runs the native encoder):
    neither Seq2Seq.encode nor the Python encoder module runs, and the result is the Python
    loop's."""
    model = make_model("bahdanau")
    src, src_lengths = make_source(model, [6, 4])
    python = (
        greedy_decode(model, src, src_lengths, 9, native=False),
        beam_search(model, src, src_lengths, 3, 9, native=False),
    )

    def no_python_encoder(*args, **kwargs):
        raise AssertionError("the Python encoder ran")

    monkeypatch.setattr(model, "encode", no_python_encoder)
    monkeypatch.setattr(model.encoder, "forward", no_python_encoder)
    native = greedy_decode(model, src, src_lengths, 9), beam_search(model, src, src_lengths, 3, 9)
    for got, want in zip(native, python, strict=True):
        assert [h.tokens for h in got] == [h.tokens for h in want]


def test_where_it_cannot_run_it_says_why():
    assert native_encoder.unavailable(make_model("bahdanau")) is None
    reason = native_encoder.unavailable(make_model("bahdanau", backend="reference"))
    assert reason is not None and "'reference'" in reason

    class LoggingEncoder(Encoder):
        def forward(self, src, src_lengths):
            return super().forward(src, src_lengths)

    model = make_model("bahdanau")
    model.encoder = LoggingEncoder(model.config)
    reason = native_encoder.unavailable(model)
    assert reason is not None and "not fast_s2s.models.Encoder" in reason


@pytest.mark.parametrize(
    "src, lengths, error, match",
    [
        (torch.zeros(2, 4), torch.tensor([4, 4]), ValueError, "int64 tensor of token ids"),
        (torch.ones(2, 4, dtype=torch.long), torch.tensor([4]), ValueError, "src_lengths"),
        (torch.ones(2, 4, dtype=torch.long), torch.tensor([5, 4]), ValueError, r"\[0, S\]"),
        (torch.ones(2, 4, dtype=torch.long), torch.tensor([-1, 4]), ValueError, r"\[0, S\]"),
        ("abc", torch.tensor([4]), TypeError, "src must be a torch.Tensor"),
    ],
)
def test_bad_input_gets_the_errors_of_seq2seq_encode(src, lengths, error, match):
    model = make_model("bahdanau")
    for encode in (model.encode, lambda s, n: native_encoder.encode(model, s, n)):
        with torch.no_grad(), pytest.raises(error, match=match):
            encode(src, lengths)


def test_a_config_that_disagrees_with_the_bridge_is_refused_by_name():
    """The raw op with a decoder-layer count its bridge weight does not have: a message naming
    the bridge weight and both counts, not a reshape error."""
    model = make_model("bahdanau")
    src, lengths = make_source(model, [4, 2])
    params, config = native_encoder.pack(model)
    config = [config[0], config[1], 5]  # five decoder layers; the bridge has rows for one
    with pytest.raises(RuntimeError, match=r"bridge weight\) must have decoder layers \* H"):
        torch.ops.fast_s2s.encode(params, config, src, lengths)
