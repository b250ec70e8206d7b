"""The seq2seq model on the fused ops: bidirectional GRU encoder, attentional or classic GRU
decoder, over token ids or float feature frames.

    from fast_s2s.models import Seq2Seq, Seq2SeqConfig, beam_search, greedy_decode

    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=50, tgt_vocab_size=50, wiring="bahdanau"))
    loss_sum, n_tokens = model.loss(src, src_lengths, tgt_in, tgt_out)
    best = beam_search(model, src, src_lengths, beam_size=5)   # list of Hypothesis, one per row

Files: config.py (Seq2SeqConfig), encoder.py, decoder.py (shared decoder parts), bahdanau.py and
luong.py (the two attentional wirings), classic.py (no attention: Sutskever / Cho), state.py
(EncoderState, DecoderState), seq2seq.py (Seq2Seq), decoding/ (greedy and beam search: one
spec, one set of rules, one result, three engines; decode_path says which engine runs).
"""

from fast_s2s.models.bahdanau import BahdanauDecoder
from fast_s2s.models.classic import ClassicDecoder
from fast_s2s.models.config import ATTENTIONS, LOCALS, SCORES, SOURCES, WIRINGS, Seq2SeqConfig
from fast_s2s.models.decoder import Decoder
from fast_s2s.models.decoding import (
    Hypothesis,
    SearchOptions,
    beam_search,
    decode_path,
    greedy_decode,
    length_normalize,
    search,
)
from fast_s2s.models.encoder import Encoder, EncoderOutput
from fast_s2s.models.luong import LuongDecoder
from fast_s2s.models.seq2seq import Seq2Seq
from fast_s2s.models.state import DecoderState, EncoderState

__all__ = [
    "ATTENTIONS",
    "LOCALS",
    "SCORES",
    "SOURCES",
    "WIRINGS",
    "BahdanauDecoder",
    "ClassicDecoder",
    "Decoder",
    "DecoderState",
    "Encoder",
    "EncoderOutput",
    "EncoderState",
    "Hypothesis",
    "LuongDecoder",
    "SearchOptions",
    "Seq2Seq",
    "Seq2SeqConfig",
    "beam_search",
    "decode_path",
    "greedy_decode",
    "length_normalize",
    "search",
]
