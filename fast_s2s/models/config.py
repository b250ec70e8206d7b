"""Seq2SeqConfig: every hyper-parameter of the model, validated, and a dict round trip.

The dict form (to_dict / from_dict) is what checkpoints store; from_dict rejects unknown keys,
missing required keys and bad values with a ValueError that names the field.
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from fast_s2s.checks import check_backend

__all__ = ["ATTENTIONS", "LOCALS", "LOCAL_SCORES", "SCORES", "SOURCES", "WIRINGS", "Seq2SeqConfig"]

WIRINGS = ("bahdanau", "luong")
# "on": an attentional decoder (config.wiring); "none": the classic encoder-decoder.
ATTENTIONS = ("on", "none")
# What the encoder reads: token ids (B, S) or float feature frames (B, T, frame_size).
SOURCES = ("tokens", "frames")
# The attention scores each wiring accepts (fast_s2s.nn.Attention kinds).
SCORES: dict[str, tuple[str, ...]] = {
    "bahdanau": ("additive",),
    "luong": ("dot", "general", "concat"),
}
# Luong attention reads every source position ("none") or a window (local-m "m", local-p "p").
LOCALS = ("none", "m", "p")
# The scores local attention takes (fast_s2s.nn.LOCAL_SCORES).
LOCAL_SCORES = ("dot", "general")

_INT_FIELDS = ("src_vocab_size", "tgt_vocab_size", "embed_size", "hidden_size")
_LAYER_FIELDS = ("encoder_layers", "decoder_layers")
_ID_FIELDS = ("pad_id", "bos_id", "eos_id")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass
class Seq2SeqConfig:
    """Hyper-parameters of fast_s2s.models.Seq2Seq.

    Args:
        src_vocab_size, tgt_vocab_size: vocabulary sizes (including pad, bos, eos).
            src_vocab_size is unused when source="frames" (any positive integer; training
            sets 1).
        embed_size: E, source and target embedding size.
        hidden_size: H, the decoder state size. The encoder is a bidirectional GRU with
            H // 2 units per direction, so its concatenated states have H features (H must be
            even); Luong dot attention then compares decoder and encoder states directly.
        encoder_layers, decoder_layers: stacked GRU layers.
        wiring: "bahdanau" (attention from the previous decoder state, context fed into the GRU)
            or "luong" (GRU first, attention from the new state, h~ = tanh(W_c [c; h])).
        score: attention score; "additive" for bahdanau; "dot", "general" or "concat" for luong.
        input_feeding: luong only: feed the previous attentional state h~ into the GRU input.
        dropout: on the embeddings, between stacked GRU layers and on the decoder output
            (pre-softmax) vector; in [0, 1).
        tie_embeddings: share the decoder input embedding matrix with the output projection
            (a bias-free Linear(H -> E) is added before it when E != H).
        pad_id, bos_id, eos_id: special token ids (distinct, inside both vocabularies' range;
            bos / eos only need to be in the target vocabulary).
        backend: "auto", "reference", "cpp" or "triton", passed to every fast_s2s op / module.
        attention: "on" (the attentional decoder of `wiring`) or "none": the classic
            encoder-decoder of Sutskever et al. (2014) and Cho et al. (2014), whose decoder starts
            from the final encoder state and reads that one fixed context vector at every step
            (fast_s2s.models.classic). wiring and score are then unused; input_feeding must be
            False.
        source: "tokens" (src is (B, S) token ids, embedded) or "frames" (src is (B, T,
            frame_size) float feature vectors, projected by a Linear layer in place of the
            embedding).
        frame_size: F, the features per frame; a positive integer for source="frames", 0 for
            tokens.
        local: luong only: "none" (global attention, every source position), "m" (local-m:
            a window centred on p_t = t, the decoder step) or "p" (local-p: a window centred on
            the predicted p_t = L_b * sigmoid(v_p . tanh(W_p h_t)), L_b the sentence's source
            length), Luong et al. (2015) section 3.2 (fast_s2s.nn.Attention kinds local_m and
            local_p). Local attention needs attention="on", wiring="luong" and score "dot" or
            "general".
        window: D >= 0, the half-width of local attention's window (2D + 1 positions, Gaussian
            sigma = D / 2); default 10 as in the paper. Unused when local="none".
        post_attention_gru: luong only: one more GRU layer (H -> H) over the attentional states
            h~_t, whose output is projected to the logits. The steps' contexts then reach the
            next steps through its recurrence (what input feeding gives) while teacher-forced
            training still runs every target step in one call (fast_s2s.models.luong). Its
            state is the last row of the decoder hidden: (decoder_layers + 1, N, H).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embed_size: int = 64
    hidden_size: int = 128
    encoder_layers: int = 1
    decoder_layers: int = 1
    wiring: str = "bahdanau"
    score: str = "additive"
    input_feeding: bool = False
    dropout: float = 0.0
    tie_embeddings: bool = False
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    backend: str = "auto"
    attention: str = "on"
    source: str = "tokens"
    frame_size: int = 0
    local: str = "none"
    window: int = 10
    post_attention_gru: bool = False

    @property
    def decoder_state_layers(self) -> int:
        """Rows of the decoder hidden: the stacked GRU's layers, and the post-attention GRU's."""
        return self.decoder_layers + int(self.post_attention_gru)

    def __post_init__(self) -> None:
        for name in _INT_FIELDS + _LAYER_FIELDS:
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"Seq2SeqConfig: {name} must be a positive integer, got {value!r}")
        if self.hidden_size % 2:
            raise ValueError(
                "Seq2SeqConfig: hidden_size must be even (the bidirectional encoder has "
                f"hidden_size // 2 units per direction), got {self.hidden_size}"
            )
        for name in _ID_FIELDS:
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value < self.tgt_vocab_size:
                raise ValueError(
                    f"Seq2SeqConfig: {name} must be an integer in [0, tgt_vocab_size) = "
                    f"[0, {self.tgt_vocab_size}), got {value!r}"
                )
        if self.source not in SOURCES:
            raise ValueError(f"Seq2SeqConfig: source must be one of {SOURCES}, got {self.source!r}")
        if self.source == "frames":
            if not _is_int(self.frame_size) or self.frame_size <= 0:
                raise ValueError(
                    "Seq2SeqConfig: frame_size must be a positive integer (features per frame) "
                    f"for source='frames', got {self.frame_size!r}"
                )
        elif self.frame_size != 0:
            raise ValueError(
                "Seq2SeqConfig: frame_size must be 0 for source='tokens' (it is the features per "
                f"frame of source='frames'), got {self.frame_size!r}"
            )
        if self.source == "tokens" and self.pad_id >= self.src_vocab_size:
            raise ValueError(
                f"Seq2SeqConfig: pad_id must be < src_vocab_size = {self.src_vocab_size}, "
                f"got {self.pad_id}"
            )
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError(
                "Seq2SeqConfig: pad_id, bos_id and eos_id must be distinct, got "
                f"pad_id={self.pad_id}, bos_id={self.bos_id}, eos_id={self.eos_id}"
            )
        if self.wiring not in WIRINGS:
            raise ValueError(f"Seq2SeqConfig: wiring must be one of {WIRINGS}, got {self.wiring!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"Seq2SeqConfig: attention must be one of {ATTENTIONS}, got {self.attention!r}"
            )
        if self.score not in SCORES[self.wiring]:
            raise ValueError(
                f"Seq2SeqConfig: score must be one of {SCORES[self.wiring]} for "
                f"wiring={self.wiring!r}, got {self.score!r}"
            )
        self._check_local()
        for name in ("input_feeding", "tie_embeddings", "post_attention_gru"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"Seq2SeqConfig: {name} must be a bool, got {getattr(self, name)!r}"
                )
        if self.input_feeding and self.attention == "none":
            raise ValueError(
                "Seq2SeqConfig: input_feeding=True feeds the attentional state back and needs "
                "attention='on', got attention='none'"
            )
        if self.input_feeding and self.wiring != "luong":
            raise ValueError(
                "Seq2SeqConfig: input_feeding=True needs wiring='luong' (Bahdanau already feeds "
                f"the context into the GRU), got wiring={self.wiring!r}"
            )
        if self.post_attention_gru and (self.wiring != "luong" or self.attention != "on"):
            raise ValueError(
                "Seq2SeqConfig: post_attention_gru=True runs over Luong's attentional states and "
                f"needs wiring='luong' and attention='on', got wiring={self.wiring!r}, "
                f"attention={self.attention!r}"
            )
        if (
            not isinstance(self.dropout, numbers.Real)
            or isinstance(self.dropout, bool)
            or not 0.0 <= self.dropout < 1.0
        ):
            raise ValueError(
                f"Seq2SeqConfig: dropout must be a number in [0, 1), got {self.dropout!r}"
            )
        self.dropout = float(self.dropout)
        check_backend("Seq2SeqConfig", self.backend)

    def _check_local(self) -> None:
        if self.local not in LOCALS:
            raise ValueError(f"Seq2SeqConfig: local must be one of {LOCALS}, got {self.local!r}")
        if not _is_int(self.window) or self.window < 0:
            raise ValueError(
                "Seq2SeqConfig: window must be a non-negative integer (D: local attention reads "
                f"2D + 1 positions), got {self.window!r}"
            )
        if self.local == "none":
            return
        if self.attention != "on":
            raise ValueError(
                f"Seq2SeqConfig: local={self.local!r} is a kind of attention and needs "
                f"attention='on', got attention={self.attention!r}"
            )
        if self.wiring != "luong":
            raise ValueError(
                f"Seq2SeqConfig: local={self.local!r} (Luong local attention) needs "
                f"wiring='luong', got wiring={self.wiring!r}"
            )
        if self.score not in LOCAL_SCORES:
            raise ValueError(
                f"Seq2SeqConfig: local={self.local!r} needs score one of {LOCAL_SCORES} (local "
                f"attention scores the window by dot or general), got score={self.score!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Seq2SeqConfig:
        """Inverse of to_dict. Unknown keys, missing required keys and bad values raise
        ValueError naming the field. Keys added in later versions (attention, source,
        frame_size, local, window, post_attention_gru) may be missing: they take their
        defaults, so older checkpoints load."""
        if not isinstance(d, dict):
            raise ValueError(f"Seq2SeqConfig.from_dict: expected a dict, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(
                f"Seq2SeqConfig.from_dict: unknown field(s) {unknown}; known fields: {list(fields)}"
            )
        missing = [
            name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in d
        ]
        if missing:
            raise ValueError(f"Seq2SeqConfig.from_dict: missing required field(s) {missing}")
        return cls(**d)
