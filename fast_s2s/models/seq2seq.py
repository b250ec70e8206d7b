"""Seq2Seq: the GRU encoder-decoder (attentional or classic), for teacher-forced training and
step decoding.

    config = Seq2SeqConfig(src_vocab_size=100, tgt_vocab_size=120, wiring="luong", score="general")
    model = Seq2Seq(config)
    loss_sum, n_tokens = model.loss(src, src_lengths, tgt_in, tgt_out)   # training
    hyps = beam_search(model, src, src_lengths, beam_size=5)           # fast_s2s.models.decoding

Step decoding (what the engines of fast_s2s.models.decoding do): enc = encode(src, lengths)
once, state = initial_state(enc, beam), then decode_step(enc, state, prev_tokens, beam) per
target position, reorder_state(state, index) to follow the surviving beams. N = B * beam
decoder rows share the B rows of the encoder state: row n reads sentence n // beam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fast_s2s import checks
from fast_s2s.models.bahdanau import BahdanauDecoder
from fast_s2s.models.classic import ClassicDecoder
from fast_s2s.models.config import Seq2SeqConfig
from fast_s2s.models.decoder import Decoder
from fast_s2s.models.encoder import Encoder
from fast_s2s.models.luong import LuongDecoder
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = ["Seq2Seq"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(logits: Tensor) -> Tensor:
    """float16 / bfloat16 logits to float32 for the softmax; float32 / float64 stay."""
    return logits.float() if logits.dtype in _LOW_PRECISION else logits


def _check_tokens(name: str, t: object, batch: int | None = None, hint: str = "") -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"Seq2Seq: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2 or t.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"Seq2Seq: {name} must be a 2-D (B, length) int64 tensor of token ids, got shape "
            f"{tuple(t.shape)} and dtype {t.dtype}{hint}"
        )
    if batch is not None and t.shape[0] != batch:
        raise ValueError(
            f"Seq2Seq: {name} must have B = {batch} rows like src, got shape {tuple(t.shape)}"
        )
    return t if t.dtype == torch.int64 else t.long()


def _check_frames(t: object, frame_size: int) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"Seq2Seq: src must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 3 or not t.is_floating_point() or t.shape[-1] != frame_size:
        raise ValueError(
            "Seq2Seq: this model reads frames (config.source='frames'): src must be a 3-D "
            f"(B, T, frame_size={frame_size}) floating-point tensor, got shape {tuple(t.shape)} "
            f"and dtype {t.dtype}"
        )
    return t


class Seq2Seq(nn.Module):
    """Bidirectional GRU encoder and GRU decoder: attentional (Bahdanau or Luong wiring) or
    classic (config.attention="none": the fixed final encoder state, no attention).

    Submodules: ``encoder`` (fast_s2s.models.encoder.Encoder) and ``decoder``
    (BahdanauDecoder or LuongDecoder, chosen by config.wiring, or ClassicDecoder); every fused
    op runs on config.backend. See Seq2SeqConfig for the hyper-parameters.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"Seq2Seq: config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        if config.attention == "none":
            decoder_cls: type[Decoder] = ClassicDecoder
        else:
            decoder_cls = BahdanauDecoder if config.wiring == "bahdanau" else LuongDecoder
        self.decoder: Decoder = decoder_cls(config)

    @property
    def has_attention(self) -> bool:
        """False for the classic encoder-decoder (config.attention="none")."""
        return self.decoder.attention is not None

    def extra_repr(self) -> str:
        c = self.config
        if c.attention == "none":
            s = "attention='none'"
        else:
            s = f"wiring={c.wiring!r}, score={c.score!r}"
            if c.local != "none":
                s += f", local={c.local!r}, window={c.window}"
        if c.input_feeding:
            s += ", input_feeding=True"
        if c.post_attention_gru:
            s += ", post_attention_gru=True"
        if c.source == "frames":
            s += f", source='frames', frame_size={c.frame_size}"
        return s + f", backend={c.backend!r}"

    def _check_src(self, src: object) -> Tensor:
        if self.config.source == "frames":
            return _check_frames(src, self.config.frame_size)
        hint = ""
        if isinstance(src, Tensor) and src.dim() == 3:
            hint = " (this model reads token ids, config.source='tokens', not frames)"
        return _check_tokens("src", src, hint=hint)

    # -- training ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """The device of the model's weights (the decoder's embedding's: one attribute walk,
        where next(self.parameters()) walks the module tree)."""
        return self.decoder.embedding.weight.device

    def encoder_inputs(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor]:
        """encode's arguments checked: src (int64 ids or frames) and src_lengths (B,) int64 on
        the device of src, each in [0, S]."""
        src = self._check_src(src)
        if not isinstance(src_lengths, Tensor):
            src_lengths = torch.as_tensor(src_lengths, dtype=torch.int64)
        if src_lengths.dim() != 1 or src_lengths.shape[0] != src.shape[0]:
            raise ValueError(
                f"Seq2Seq: src_lengths must have shape ({src.shape[0]},) (one per src row), got "
                f"{tuple(src_lengths.shape)}"
            )
        if src_lengths.dtype != torch.int64 or src_lengths.device != src.device:
            src_lengths = src_lengths.to(device=src.device, dtype=torch.int64)
        checks.check_lengths("Seq2Seq", src_lengths, src.shape[0], src.shape[1], "S")
        return src, src_lengths

    def encode(self, src: Tensor, src_lengths: Tensor) -> EncoderState:
        """Run the encoder once per source batch.

        Args:
            src: (B, S) int64 token ids, padded with pad_id; or, for config.source="frames",
                (B, S, frame_size) float frames (padded positions are ignored).
            src_lengths: (B,) int lengths in [0, S] (a tensor or a list).

        Returns:
            EncoderState: states (B, S, H), the attention memory (keys projected once here;
            None without attention), the initial decoder hidden (decoder_state_layers, B, H), the
            lengths (int64) and the fixed context vector (B, H).
        """
        src, src_lengths = self.encoder_inputs(src, src_lengths)
        states, hidden, final = self.encoder(src, src_lengths)
        attention = self.decoder.attention
        memory = attention.precompute(states) if attention is not None else None
        return EncoderState(states, memory, hidden, src_lengths, final)

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher-forced logits (B, T, tgt_vocab_size).

        src (B, S) (or frames (B, S, F)) and src_lengths (B,) as for encode; tgt_in (B, T) int64:
        bos followed by the target, padded with pad_id (the logits at padded positions are
        computed and meaningless).
        """
        tgt_in = _check_tokens("tgt_in", tgt_in, src.shape[0] if isinstance(src, Tensor) else None)
        enc = self.encode(src, src_lengths)
        return self.decoder(enc, tgt_in)

    def loss(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        tgt_out: Tensor,
        label_smoothing: float = 0.0,
    ) -> tuple[Tensor, int]:
        """Summed cross-entropy over the non-pad positions of tgt_out (B, T) (the target
        followed by eos, padded with pad_id), and the number of those tokens. Divide the first
        by the second for the mean per token. label_smoothing in [0, 1): the target
        distribution puts that much mass uniformly over the vocabulary (Szegedy et al. 2016)."""
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"Seq2Seq.loss: label_smoothing must be in [0, 1), got {label_smoothing!r}"
            )
        logits = self(src, src_lengths, tgt_in)
        tgt_out = _check_tokens("tgt_out", tgt_out, tgt_in.shape[0])
        if tgt_out.shape != tgt_in.shape:
            raise ValueError(
                f"Seq2Seq: tgt_out must have the shape of tgt_in {tuple(tgt_in.shape)}, got "
                f"{tuple(tgt_out.shape)}"
            )
        pad = self.config.pad_id
        loss = F.cross_entropy(
            _upcast(logits.reshape(-1, logits.shape[-1])),
            tgt_out.reshape(-1),
            ignore_index=pad,
            reduction="sum",
            label_smoothing=label_smoothing,
        )
        return loss, int((tgt_out != pad).sum())

    # -- step decoding -------------------------------------------------------------------------

    def initial_state(self, enc: EncoderState, beam: int = 1) -> DecoderState:
        """The decoder state before bos for N = B * beam rows: the decoder hidden repeated per
        beam row (repeat_interleave: rows b * beam .. b * beam + beam - 1 are sentence b)."""
        return self.decoder.initial_state(enc, beam)

    def decode_step(
        self, enc: EncoderState, state: DecoderState, prev_tokens: Tensor, beam: int = 1
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoder step for N = B * beam rows.

        Args:
            enc: from encode (B rows; never repeated per beam).
            state: N rows (initial_state / a previous decode_step / reorder_state).
            prev_tokens: (N,) int64, the previous target tokens (bos at the first step).
            beam: rows per sentence; row n reads sentence n // beam.

        Returns:
            log_probs (N, V) (float32 or wider), the new state, attention weights (N, S) (all
            zeros for a model without attention).
        """
        embedded = self.decoder.embed(prev_tokens)
        pre_output, state, weights = self.decoder.step(enc, state, embedded, beam)
        log_probs = torch.log_softmax(_upcast(self.decoder.project(pre_output)), dim=-1)
        return log_probs, state, weights

    def reorder_state(self, state: DecoderState, index: Tensor) -> DecoderState:
        """The rows `index` (N',) int64 of `state` (beam search: the surviving hypotheses)."""
        return state.index_select(index)
