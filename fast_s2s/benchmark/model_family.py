"""The model family (op "model"): training steps (steps/s) and greedy or beam-5 decoding
(tokens/s over B * (max_len + 1): eos's output bias keeps every decode to max_len + 1 steps,
checked) of the whole fast_s2s.models.Seq2Seq on each backend, against the same model and
weights on backend="reference", the Python search loop and the torch.nn model (TorchNNSeq2Seq).
Data: the reverse task's shape (V = 54 with the 4 specials), seeded; the dates model's sizes."""

from __future__ import annotations

import random
import warnings
from dataclasses import replace

import torch

from fast_s2s.benchmark.family import DECODE, TRAIN_STEP, Call, Case, Factory, Family, Inputs
from fast_s2s.peers.torch_nn_seq2seq import TorchNNSeq2Seq
from fast_s2s.training.optimizer import adam, train_step

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
    """All in extra: "mode", "config", "state_dict" (the weights all load), the batch ("src",
    "src_lengths", "tgt_in", "tgt_out"), "beam", "max_len", "work", "work_unit" and the like."""
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
    """One training step per call, as fast-s2s train takes it, with this model's own Adam."""
    model.train()
    optimizer = adam(model.parameters(), LR)
    batch = x["src"], x["src_lengths"], x["tgt_in"], x["tgt_out"]

    def loss() -> torch.Tensor:
        loss_sum, n_tokens = model.loss(*batch)
        return loss_sum / max(1, n_tokens)

    return lambda: train_step(loss, optimizer, model.parameters(), CLIP)


def _decoding(x: dict, decode, tokens) -> Call:
    """A call decoding the case's batch, decode(src, lengths, beam, max_len), that fails the row
    if a hypothesis ended before max_len: the tokens per call, so the tokens/s, would be wrong."""
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


TRAIN_LEFT_OUT = {
    "python-loop": "a decode peer: a training step has no search loop",
    "torch.nn": "a decode peer (the torch.nn model is built for decoding)",
}
FAMILY = Family(
    name="model",
    cases={"cpu": {"model": CASES}, "tiny": {"model": TINY_CASES}},
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
    throughput_table=True,
    left_out=lambda case, device_type, quick: TRAIN_LEFT_OUT if case.mode == TRAIN_STEP else {},
)
