"""The model family (op "model"): training steps (steps/s) and greedy or beam-5 decoding
(tokens/s over B * (max_len + 1): eos's output bias keeps every decode to max_len + 1 steps,
checked) of the whole fast_s2s.models.Seq2Seq on each backend, against the same model and
weights on backend="reference", the Python search loop and the torch.nn model (TorchNNSeq2Seq).
Data: the reverse task's shape (V = 54 with the 4 specials), seeded; the dates model's sizes.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from fast_s2s.benchmark.family import DECODE, TRAIN_STEP, Call, Case, Factory, Family, Inputs

# The fast_s2s.ops the model runs, whose backends decide the model's.
MODEL_KERNEL_OPS = ("gru_layer", "gru_cell", "additive_attention", "dot_attention")
VARIANTS: dict[str, dict[str, object]] = {
    "bahdanau": {"wiring": "bahdanau", "score": "additive"},
    "luong-general": {"wiring": "luong", "score": "general"},
    "luong-general-feed": {"wiring": "luong", "score": "general", "input_feeding": True},
}
NUM_SPECIALS = 4  # pad, bos, eos, unk
EOS_BIAS = -1e4  # the output bias of eos in decode cases: eos never wins before max_len
CLIP = 1.0  # fast-s2s train's gradient-norm clipping
LR = 1e-3


def train_case(variant: str, *, B: int, S: int, E: int, H: int, V: int, target=False) -> Case:
    dims = (("B", B), ("S", S), ("T", S + 1), ("E", E), ("H", H), ("V", V))
    return Case("model", TRAIN_STEP, dims, "train", "ragged", target, False, variant)


def decode_case(
    variant: str, *, B: int, beam: int = 1, S: int, maxlen: int, E: int, H: int, V: int,
    target: bool = False,
) -> Case:  # fmt: skip
    beam_dims = (("beam", beam),) if beam > 1 else ()
    dims = (("B", B), *beam_dims, ("S", S), ("maxlen", maxlen), ("E", E), ("H", H), ("V", V))
    label = "greedy" if beam == 1 else f"beam{beam}"
    return Case("model", DECODE, dims, label, "full", target, False, variant)


SIZE = {"E": 64, "H": 128, "V": 50 + NUM_SPECIALS}
DEC = {"S": 25, "maxlen": 30, **SIZE}
TINY = {"E": 8, "H": 8, "V": 16}
# The targets first (greedy and beam 5 at batch 1 and 32, a training step of both wirings), then
# Luong decoding and the input-feeding training step.
CASES = [
    *(decode_case("bahdanau", B=b, beam=k, **DEC, target=True) for k in (1, 5) for b in (1, 32)),
    decode_case("bahdanau", B=8, **DEC),
    decode_case("bahdanau", B=8, beam=5, **DEC),
    train_case("bahdanau", B=32, S=30, **SIZE, target=True),
    train_case("luong-general", B=32, S=30, **SIZE, target=True),
    decode_case("luong-general", B=1, **DEC),
    decode_case("luong-general", B=32, **DEC),
    decode_case("luong-general", B=32, beam=5, **DEC),
    train_case("luong-general-feed", B=32, S=30, **SIZE),
]
TINY_CASES = [
    decode_case("bahdanau", B=1, S=5, maxlen=4, **TINY, target=True),
    decode_case("luong-general", B=3, beam=2, S=5, maxlen=4, **TINY, target=True),
    train_case("bahdanau", B=3, S=6, **TINY, target=True),
    train_case("luong-general", B=3, S=6, **TINY, target=True),
]


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """Everything is in extra: "mode", "config", "state_dict" (the weights every implementation
    loads), the batch ("src", "src_lengths"; training also "tgt_in", "tgt_out"), "beam",
    "max_len", and the throughput's "work" per call, "work_unit" and "hypothesis_tokens"."""
    from fast_s2s.data import collate
    from fast_s2s.models import Seq2Seq, Seq2SeqConfig

    device = torch.device(device)
    d = case.shape
    B, S, V = d["B"], d["S"], d["V"]
    config = Seq2SeqConfig(
        src_vocab_size=V, tgt_vocab_size=V, embed_size=d["E"], hidden_size=d["H"],
        backend="reference", **VARIANTS[case.variant],  # type: ignore[arg-type]
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Seq2Seq(config)
    rng = random.Random(0)

    def ids(n: int) -> list[int]:
        return [rng.randrange(NUM_SPECIALS, V) for _ in range(n)]

    extra: dict[str, object] = {"config": config, "mode": case.mode}
    if case.mode == TRAIN_STEP:
        lengths = [S] + [rng.randint(max(1, S - 10), S) for _ in range(B - 1)]
        batch = collate([(s, s[::-1]) for s in map(ids, lengths)], list(range(B)))
        extra.update(tgt_in=batch.tgt_in.to(device), tgt_out=batch.tgt_out.to(device))
        extra.update(work=1, work_unit="step")
    else:
        beam, max_len = d.get("beam", 1), d["maxlen"]
        with torch.no_grad():
            model.decoder.out.bias[config.eos_id] = EOS_BIAS
        batch = collate([(ids(S), []) for _ in range(B)], list(range(B)))
        extra.update(beam=beam, max_len=max_len, work=B * (max_len + 1), work_unit="token")
        if beam > 1:
            extra["hypothesis_tokens"] = B * beam * (max_len + 1)
    model.to(device=device, dtype=dtype)
    # what one decoder step reads at least once (the roofline of a batch-1 token)
    extra["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.decoder.parameters())
    extra["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    extra.update(src=batch.src.to(device), src_lengths=batch.src_lengths.to(device))
    return Inputs(args=(), kwargs={}, extra=extra)


def _train_step(model, x: dict) -> Call:
    """One training step per call, as fast-s2s train does it, with this model's own Adam."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    parameters = [p for p in model.parameters() if p.requires_grad]

    def step() -> torch.Tensor:
        loss_sum, n_tokens = model.loss(x["src"], x["src_lengths"], x["tgt_in"], x["tgt_out"])
        loss = loss_sum / max(1, n_tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, CLIP)
        optimizer.step()
        return loss.detach()

    return step


def _decoding(x: dict, decode, tokens) -> Call:
    """A call decoding the case's batch, decode(src, lengths, beam, max_len), that fails the row
    if a hypothesis ended before max_len: the tokens per call, and so the tokens/s, would be
    wrong."""
    src, src_lengths, beam, max_len = x["src"], x["src_lengths"], x["beam"], x["max_len"]

    def run() -> list:
        hyps = decode(src, src_lengths, beam, max_len)
        if short := [n for n in map(len, map(tokens, hyps)) if n != max_len]:
            raise RuntimeError(
                f"a hypothesis ended after {short[0]} tokens, not max_len={max_len}: the decode "
                "did not run the fixed number of steps its tokens/s assumes"
            )
        return hyps

    return run


def _decode(model, x: dict, native: bool = True) -> Call:
    """greedy_decode or beam_search (native: the native loop where it runs); the call's
    decode_loop says which loop ran (fast_s2s.models.decode_path)."""
    from fast_s2s.models import beam_search, decode_path, greedy_decode
    from fast_s2s.models.decoding import CaptureFailedWarning

    def decode(src, lengths, beam: int, max_len: int) -> list:
        if beam == 1:
            return greedy_decode(model, src, lengths, max_len=max_len, native=native)
        return beam_search(model, src, lengths, beam_size=beam, max_len=max_len, native=native)

    model.eval()
    run = _decoding(x, decode, lambda h: h.tokens)
    run.decode_loop = decode_path(model, native)  # type: ignore[attr-defined]
    if run.decode_loop == "cuda-graph":  # type: ignore[attr-defined]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
        if any(issubclass(w.category, CaptureFailedWarning) for w in caught):
            run.decode_loop = "cuda-graph (capture failed, eager)"  # type: ignore[attr-defined]
    return run


def _loaded(module, x: dict):
    """`module` on the case's device and dtype; the caller loads the weights."""
    return module.to(device=x["src"].device, dtype=x["state_dict"]["decoder.out.weight"].dtype)


def model_call(op: str, backend: str, native: bool = True) -> Factory:
    """The case's model built with `backend`, loaded with the case's weights: a training step
    or a decode per call (native=False: the Python search loop)."""
    del op  # the family has one op

    def make(inputs: Inputs) -> Call:
        from fast_s2s.models import Seq2Seq

        x = inputs.extra
        model = _loaded(Seq2Seq(replace(x["config"], backend=backend)), x)
        model.load_state_dict(x["state_dict"])
        return _train_step(model, x) if x["mode"] == TRAIN_STEP else _decode(model, x, native)

    return make


def torch_nn_call(inputs: Inputs) -> Call:
    """The "torch.nn" peer: the same architecture and weights from torch.nn modules, decoded
    in a Python loop (TorchNNSeq2Seq)."""
    x = inputs.extra
    peer = _loaded(TorchNNSeq2Seq(x["config"]), x)
    peer.load_fast_s2s(x["state_dict"])
    peer.eval()
    return _decoding(x, peer.decode, lambda tokens: tokens)


FAMILY = Family(
    name="model",
    cases={
        "cpu": {"model": CASES},
        "cuda": {"model": CASES},
        "tiny": {"model": TINY_CASES},
    },
    make_inputs=make_inputs,
    peers={
        "model": {
            "reference": model_call("model", "reference"),
            "python-loop": model_call("model", "auto", native=False),
            "torch.nn": torch_nn_call,
        }
    },
    fast_s2s=model_call,
    kernel_ops={"model": MODEL_KERNEL_OPS},
    reference_is_peer=True,
    left_out={
        ("model", TRAIN_STEP): {
            "python-loop": "a decode peer: a training step has no search loop",
            "torch.nn": "a decode peer (the torch.nn model is built for decoding)",
        }
    },
    throughput_table=True,
)


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
