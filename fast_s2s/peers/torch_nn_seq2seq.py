"""The Seq2Seq model as a user builds it from torch.nn modules, decoded in a Python loop: the
"torch.nn" peer of `fast-s2s bench --ops model` (fast_s2s/benchmark/model_family.py). It loads a
fast_s2s Seq2Seq's state_dict, so both decode with the same weights."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["TorchNNSeq2Seq"]

# fast_s2s Seq2Seq state_dict prefix -> TorchNNSeq2Seq's, first match (fast_s2s.nn.GRU keeps
# torch.nn.GRU's parameter names; the decoder's one GRU layer drops its "_l0").
RENAMES = (
    ("encoder.embedding.", "src_embedding."),
    ("encoder.rnn.", "encoder."),
    ("encoder.", ""),
    ("decoder.rnn.", "cell."),
    ("decoder.attention.", ""),
    ("decoder.", ""),
)


class TorchNNSeq2Seq(nn.Module):
    """The benchmark's Seq2Seq as a user builds it from torch.nn modules (nn.Embedding, nn.GRU
    encoder, nn.GRUCell decoder, nn.Linear, bmm + softmax attention), decoded in a Python loop:
    bahdanau/additive or luong/general (input feeding or not), one decoder layer, untied. Greedy
    follows greedy_decode's rules; beam search is the plain loop (top-k over beam x vocabulary)."""

    def __init__(self, config) -> None:
        super().__init__()
        c = config
        if c.decoder_layers != 1 or c.tie_embeddings or c.attention != "on":
            raise ValueError("the torch.nn peer covers one-layer attentional untied decoders")
        if c.post_attention_gru:
            raise ValueError("the torch.nn peer has no post-attention GRU")
        if (c.wiring, c.score) not in (("bahdanau", "additive"), ("luong", "general")):
            raise ValueError(f"the torch.nn peer has no {c.wiring}/{c.score} decoder")
        self.config = c
        e, h = c.embed_size, c.hidden_size
        self.bahdanau = c.wiring == "bahdanau"
        self.feed = c.input_feeding
        self.src_embedding = nn.Embedding(c.src_vocab_size, e, padding_idx=c.pad_id)
        self.encoder = nn.GRU(
            e, h // 2, num_layers=c.encoder_layers, batch_first=True, bidirectional=True
        )
        self.bridge = nn.Linear(h, h)
        self.embedding = nn.Embedding(c.tgt_vocab_size, e, padding_idx=c.pad_id)
        self.cell = nn.GRUCell(e + h if self.bahdanau or self.feed else e, h)
        self.query_proj = nn.Linear(h, h, bias=False)
        if self.bahdanau:
            self.key_proj = nn.Linear(h, h, bias=False)
            self.v = nn.Parameter(torch.zeros(h))
            self.readout = nn.Linear(2 * h + e, h)
        else:
            self.combine = nn.Linear(2 * h, h, bias=False)
        self.out = nn.Linear(h, c.tgt_vocab_size)

    def load_fast_s2s(self, state: dict[str, Tensor]) -> None:
        """Loads the fast_s2s Seq2Seq's state_dict, renamed to these modules (RENAMES)."""
        mine: dict[str, Tensor] = {}
        for key, value in state.items():
            old, new = next((old, new) for old, new in RENAMES if key.startswith(old))
            name = new + key.removeprefix(old)
            mine[name.removesuffix("_l0") if new == "cell." else name] = value
        self.load_state_dict(mine)

    def decode(self, src: Tensor, lengths: Tensor, beam: int, max_len: int) -> list[list[int]]:
        if beam == 1:
            return self.greedy(src, lengths, max_len)
        return self.beam(src, lengths, beam, max_len)

    def encode(self, src: Tensor, lengths: Tensor):
        """states (B, S, H), keys (B, S, H) (projected for additive), mask (B, S), hidden (B, H)."""
        packed = pack_padded_sequence(
            self.src_embedding(src), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, h_n = self.encoder(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        hidden = torch.tanh(self.bridge(torch.cat([h_n[-2], h_n[-1]], dim=-1)))
        keys = self.key_proj(states) if self.bahdanau else states
        mask = torch.arange(src.shape[1], device=src.device)[None, :] < lengths[:, None]
        return states, keys, mask, hidden

    def attend(self, query: Tensor, states: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        """Context (N, H) of query rows (N, H) over their own (N, S, .) memory rows."""
        if self.bahdanau:
            scores = torch.tanh(self.query_proj(query)[:, None, :] + keys) @ self.v
        else:
            scores = torch.bmm(keys, self.query_proj(query)[:, :, None]).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(weights[:, None, :], states).squeeze(1)

    def step(self, prev: Tensor, hidden: Tensor, feed: Tensor | None, memory):
        """log_probs (N, V), hidden (N, H), feed (N, H) or None."""
        states, keys, mask = memory
        e = self.embedding(prev)
        if self.bahdanau:
            context = self.attend(hidden, states, keys, mask)
            hidden = self.cell(torch.cat([e, context], dim=-1), hidden)
            pre = torch.tanh(self.readout(torch.cat([hidden, context, e], dim=-1)))
        else:
            hidden = self.cell(torch.cat([e, feed], dim=-1) if self.feed else e, hidden)
            context = self.attend(hidden, states, keys, mask)
            pre = torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))
            feed = pre if self.feed else None
        return torch.log_softmax(self.out(pre), dim=-1), hidden, feed

    def _rules(self, log_probs: Tensor, last: bool) -> Tensor:
        c = self.config
        if last:
            eos = log_probs[:, c.eos_id].clone()
            log_probs = torch.full_like(log_probs, float("-inf"))
            log_probs[:, c.eos_id] = eos
            return log_probs
        log_probs[:, c.pad_id] = float("-inf")
        log_probs[:, c.bos_id] = float("-inf")
        return log_probs

    @torch.no_grad()
    def greedy(self, src: Tensor, lengths: Tensor, max_len: int) -> list[list[int]]:
        states, keys, mask, hidden = self.encode(src, lengths)
        batch = src.shape[0]
        feed = hidden.new_zeros(batch, hidden.shape[1]) if self.feed else None
        prev = torch.full((batch,), self.config.bos_id, dtype=torch.long)
        finished = torch.zeros(batch, dtype=torch.bool)
        tokens = []
        for t in range(max_len + 1):
            log_probs, hidden, feed = self.step(prev, hidden, feed, (states, keys, mask))
            prev = self._rules(log_probs, t == max_len).argmax(-1)
            tokens.append(prev)
            finished |= prev == self.config.eos_id
            if bool(finished.all()):
                break
        rows = torch.stack(tokens, 1).tolist()
        return [r[: r.index(self.config.eos_id)] for r in rows]

    @torch.no_grad()
    def beam(self, src: Tensor, lengths: Tensor, beam: int, max_len: int) -> list[list[int]]:
        states, keys, mask, hidden = self.encode(src, lengths)
        batch, vocab = src.shape[0], self.config.tgt_vocab_size
        memory = tuple(t.repeat_interleave(beam, 0) for t in (states, keys, mask))
        hidden = hidden.repeat_interleave(beam, 0)
        feed = torch.zeros_like(hidden) if self.feed else None
        scores = torch.full((batch, beam), float("-inf"))
        scores[:, 0] = 0
        prev = torch.full((batch * beam,), self.config.bos_id, dtype=torch.long)
        history = torch.zeros(batch * beam, 0, dtype=torch.long)
        base = (torch.arange(batch) * beam)[:, None]
        for t in range(max_len + 1):
            log_probs, hidden, feed = self.step(prev, hidden, feed, memory)
            log_probs = self._rules(log_probs, t == max_len)
            cand = (scores[:, :, None] + log_probs.view(batch, beam, vocab)).view(batch, -1)
            scores, index = cand.topk(beam, dim=1)
            rows = (base + index // vocab).view(-1)
            prev = (index % vocab).view(-1)
            hidden = hidden.index_select(0, rows)
            feed = feed.index_select(0, rows) if feed is not None else None
            history = torch.cat([history.index_select(0, rows), prev[:, None]], dim=1)
        best = history.view(batch, beam, -1)[:, 0].tolist()
        return [r[: r.index(self.config.eos_id)] for r in best]
