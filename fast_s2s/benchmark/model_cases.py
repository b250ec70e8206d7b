"""The whole-model benchmark cases (op "model"): training steps and decoding, and their inputs.

A case builds one fast_s2s.models.Seq2Seq (fixed seed) and keeps its weights; every
implementation (the model on backend="cpp", "auto", ... and the reference peer, the same model on
backend="reference") loads those weights (load_state_dict), so all of them compute the same thing.

Modes (fast_s2s.benchmark.spec):
  train-step  one call = one teacher-forced training step on a batch, as `fast-s2s train` runs it:
              loss (summed cross-entropy / target tokens), zero_grad, backward, gradient-norm
              clipping (1.0) and torch.optim.Adam's step (each implementation has its own Adam).
              Throughput: steps per second.
  decode      one call = greedy_decode or beam_search (beam 5) of a batch of B sources, every
              source S tokens long, with max_len = maxlen. The eos logit's output bias is set to
              -1e4, so no hypothesis ends before max_len: every call runs maxlen + 1 decoder steps
              (the last one is the eos that search forces after max_len), whatever the untrained
              weights; each call checks that every hypothesis has maxlen tokens. Throughput:
              tokens per second, tokens = B * (maxlen + 1): the output tokens of the returned (best)
              hypothesis of each sentence, eos included, i.e. one per sentence per decoder step.
              Beam search runs B * beam decoder rows per step; its hypothesis tokens
              (B * beam * (maxlen + 1)) are in the row's JSON as "hypothesis_tokens".

Data: the reverse task's shape (fast_s2s.data: symbols t0..t49, so V = 54 with the 4 specials),
drawn from a seeded random.Random and padded by fast_s2s.data.collate. Training batches are
ragged: source lengths uniform in [S - 10, S] with the first row S long, targets the reversed
source (T = S + 1 with bos / eos). Model sizes are the dates model's (E 64, H 128, one layer each
side; the encoder is bidirectional with H / 2 per direction).

Variants: "bahdanau" (additive attention, the step loop in training too), "luong-general"
(general score, no input feeding: training runs the decoder GRU over all steps at once and one
attention call) and, in the full set, "luong-general-feed" (input feeding: a step loop again).
"""

from __future__ import annotations

import random

import torch

from fast_s2s.benchmark.spec import DECODE, TRAIN_STEP, Case, Inputs

MODEL_OPS = ("model",)
# The fast_s2s.ops the model runs (their backends decide the model's): the encoder and the
# all-steps-at-once Luong decoder run gru_layer, the step decoders gru_cell; Bahdanau attention is
# additive, Luong general / dot attention is dot_attention.
MODEL_KERNEL_OPS = ("gru_layer", "gru_cell", "additive_attention", "dot_attention")

VARIANTS: dict[str, dict[str, object]] = {
    "bahdanau": {"wiring": "bahdanau", "score": "additive"},
    "luong-general": {"wiring": "luong", "score": "general"},
    "luong-general-feed": {"wiring": "luong", "score": "general", "input_feeding": True},
}
NUM_SPECIALS = 4  # pad, bos, eos, unk (fast_s2s.data.SPECIALS)
EOS_BIAS = -1e4  # the output bias of eos in decode cases: eos is never the best token
CLIP = 1.0  # gradient-norm clipping of the training step (fast-s2s train's default)
LR = 1e-3


def train_case(
    variant: str, *, B: int, S: int, E: int, H: int, V: int, target: bool = False
) -> Case:
    """A training step on a ragged batch of B pairs, sources S tokens at most."""
    dims = (("B", B), ("S", S), ("T", S + 1), ("E", E), ("H", H), ("V", V))
    return Case("model", TRAIN_STEP, dims, "train", "ragged", target, False, variant)


def decode_case(
    variant: str, *, B: int, beam: int = 1, S: int, maxlen: int, E: int, H: int, V: int,
    target: bool = False,
) -> Case:  # fmt: skip
    """Greedy (beam=1) or beam search of B sources of S tokens, maxlen + 1 decoder steps."""
    dims = (("B", B), *((("beam", beam),) if beam > 1 else ()), ("S", S), ("maxlen", maxlen))
    dims += (("E", E), ("H", H), ("V", V))
    label = "greedy" if beam == 1 else f"beam{beam}"
    return Case("model", DECODE, dims, label, "full", target, False, variant)


def _cases() -> list[Case]:
    """The project's targets first (greedy and beam 5 at batch 1 and 32, a training step of
    both wirings: what --quick runs), then Luong decoding and the input-feeding training step."""
    size = {"E": 64, "H": 128, "V": 50 + NUM_SPECIALS}
    dec = {"S": 25, "maxlen": 30, **size}
    return [
        decode_case("bahdanau", B=1, **dec, target=True),
        decode_case("bahdanau", B=32, **dec, target=True),
        decode_case("bahdanau", B=1, beam=5, **dec, target=True),
        decode_case("bahdanau", B=32, beam=5, **dec, target=True),
        train_case("bahdanau", B=32, S=30, **size, target=True),
        train_case("luong-general", B=32, S=30, **size, target=True),
        decode_case("luong-general", B=1, **dec),
        decode_case("luong-general", B=32, **dec),
        decode_case("luong-general", B=32, beam=5, **dec),
        train_case("luong-general-feed", B=32, S=30, **size),
    ]


def _tiny_cases() -> list[Case]:
    size = {"E": 8, "H": 8, "V": 16}
    return [
        decode_case("bahdanau", B=1, S=5, maxlen=4, **size, target=True),
        decode_case("luong-general", B=3, beam=2, S=5, maxlen=4, **size, target=True),
        train_case("bahdanau", B=3, S=6, **size, target=True),
        train_case("luong-general", B=3, S=6, **size, target=True),
    ]


CASES: dict[str, list[Case]] = {"model": _cases()}
TINY_CASES: dict[str, list[Case]] = {"model": _tiny_cases()}


def model_config(case: Case, backend: str = "reference"):
    """The Seq2SeqConfig of `case` on `backend` (dropout 0, one layer each side)."""
    from fast_s2s.models import Seq2SeqConfig

    d = case.shape
    return Seq2SeqConfig(
        src_vocab_size=d["V"],
        tgt_vocab_size=d["V"],
        embed_size=d["E"],
        hidden_size=d["H"],
        backend=backend,
        **VARIANTS[case.variant],  # type: ignore[arg-type]
    )


def _random_ids(rng: random.Random, n: int, V: int) -> list[int]:
    return [rng.randrange(NUM_SPECIALS, V) for _ in range(n)]


def make_model_inputs(
    case: Case, device: torch.device | str, dtype: torch.dtype, requires_grad: bool = False
) -> Inputs:
    """extra: "mode", "config" (on backend "reference"), "state_dict" (the weights every
    implementation loads), the batch ("src", "src_lengths", and for training "tgt_in",
    "tgt_out"), "beam", "max_len", and the throughput: "work" (steps or tokens per call),
    "work_unit" and, for beam search, "hypothesis_tokens". `requires_grad` does not apply
    (the model's parameters are its own)."""
    from fast_s2s.data import collate
    from fast_s2s.models import Seq2Seq

    del requires_grad
    device = torch.device(device)
    d = case.shape
    B, S, V = d["B"], d["S"], d["V"]
    config = model_config(case)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Seq2Seq(config)
    rng = random.Random(0)
    extra: dict[str, object] = {"config": config, "mode": case.mode}
    if case.mode == TRAIN_STEP:
        lengths = [S] + [rng.randint(max(1, S - 10), S) for _ in range(B - 1)]
        sources = [_random_ids(rng, n, V) for n in lengths]
        batch = collate([(s, s[::-1]) for s in sources], list(range(B)))
        extra.update(tgt_in=batch.tgt_in.to(device), tgt_out=batch.tgt_out.to(device))
        extra.update(work=1, work_unit="step")
    elif case.mode == DECODE:
        beam, max_len = d.get("beam", 1), d["maxlen"]
        with torch.no_grad():
            model.decoder.out.bias[config.eos_id] = EOS_BIAS
        batch = collate([(_random_ids(rng, S, V), []) for _ in range(B)], list(range(B)))
        extra.update(beam=beam, max_len=max_len, work=B * (max_len + 1), work_unit="token")
        if beam > 1:
            extra["hypothesis_tokens"] = B * beam * (max_len + 1)
    else:
        raise ValueError(f"make_model_inputs: not a model mode: {case.mode!r}")
    model.to(device=device, dtype=dtype)
    extra["state_dict"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    extra.update(src=batch.src.to(device), src_lengths=batch.src_lengths.to(device))
    return Inputs(args=(), kwargs={}, extra=extra)
