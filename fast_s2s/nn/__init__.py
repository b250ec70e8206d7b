"""Drop-in modules built on the fused ops: GRUCell, GRU (torch.nn parameter names) and Attention.

    from fast_s2s.nn import GRU, Attention

    encoder = GRU(emb, hidden, num_layers=2, bidirectional=True, batch_first=True)
    states, h_n = encoder(src_embedded, lengths=src_lengths)  # or a PackedSequence
    attention = Attention("general", query_size=hidden, key_size=2 * hidden)
    # or Luong local-p: Attention("local_p", hidden, 2 * hidden, score="general", window=10)
    memory = attention.precompute(states)                     # once per source batch
    context, weights = attention(decoder_state, memory, lengths=src_lengths)

GRUCell and GRU load torch.nn.GRUCell / torch.nn.GRU state_dicts and vice versa. Every module
takes `backend=` ("auto", "reference", "cpp", "triton"), passed to fast_s2s.ops.
"""

from fast_s2s.nn.attention import (
    ATTENTION_KINDS,
    GLOBAL_ATTENTION_KINDS,
    LOCAL_ATTENTION_KINDS,
    LOCAL_SCORES,
    Attention,
    AttentionMemory,
)
from fast_s2s.nn.gru import GRU, GRUCell

__all__ = [
    "ATTENTION_KINDS",
    "GLOBAL_ATTENTION_KINDS",
    "GRU",
    "LOCAL_ATTENTION_KINDS",
    "LOCAL_SCORES",
    "Attention",
    "AttentionMemory",
    "GRUCell",
]
