"""The model family (op "model"): training steps and decoding of the whole
fast_s2s.models.Seq2Seq, on each fast_s2s backend against the same model and weights on
backend="reference" (the peer "reference"): "vs reference" is the speedup of the fused ops inside
the whole model, everything else (embeddings, projections, loss, Adam, the search loop) the same.

Modes:
  train-step  one call = one teacher-forced training step, as `fast-s2s train` runs it: summed
              cross-entropy / target tokens, zero_grad, backward, gradient-norm clipping (1.0),
              Adam (each implementation its own). Throughput: steps per second.
  decode      one call = greedy_decode or beam_search (beam 5) of B sources of S tokens, with
              max_len = maxlen. The eos logit's output bias is -1e4, so no hypothesis ends early:
              every call runs maxlen + 1 decoder steps (the last the eos search forces), whatever
              the untrained weights, and every call checks it. Throughput: tokens per second,
              B * (maxlen + 1), the best hypothesis of each sentence with its eos; beam search's
              hypothesis tokens (B * beam * (maxlen + 1)) are the row's "hypothesis_tokens".

Rows of a decode case: the fast_s2s backends (on the CPU's "cpp" the native C++ search loop,
one op call per batch; on CUDA the loop replayed as CUDA graphs; each row's "decode_loop" says
which loop ran, fast_s2s.models.decode_path), and the peers "reference" (the same search on
backend="reference"), "python-loop" (the Python loop on backend="auto": what the native loop
replaces) and "torch.nn" (the architecture built from torch.nn modules, decoded in a Python
loop: benchmark/torch_peer.py). Decode rows also report us per token beside the
time to read the decoder's weights once ("weight_read_us", a read roofline at those bytes
measured in the same run).

Data: the reverse task's shape (symbols t0..t49, V = 54 with the 4 specials) from a seeded
random.Random, padded by fast_s2s.data.collate; training sources are ragged (lengths in
[S - 10, S], the first S), targets reversed (T = S + 1 with bos / eos). Sizes: the dates model's
(E 64, H 128). Variants: "bahdanau" (additive attention), "luong-general" (general score, no input
feeding: training runs the decoder GRU over all steps at once) and, in the full set,
"luong-general-feed" (input feeding: a step loop again).
"""

from __future__ import annotations

import random
import warnings
from dataclasses import replace

import torch

from fast_s2s.benchmark.case import DECODE, TRAIN_STEP, Case, Inputs
from fast_s2s.benchmark.family import Call, Factory, Family

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


def _cases() -> list[Case]:
    """The targets first (greedy and beam 5 at batch 1 and 32, a training step of both
    wirings), then Luong decoding and the input-feeding training step."""
    size = {"E": 64, "H": 128, "V": 50 + NUM_SPECIALS}
    dec = {"S": 25, "maxlen": 30, **size}
    return [
        decode_case("bahdanau", B=1, **dec, target=True),
        decode_case("bahdanau", B=32, **dec, target=True),
        decode_case("bahdanau", B=1, beam=5, **dec, target=True),
        decode_case("bahdanau", B=32, beam=5, **dec, target=True),
        decode_case("bahdanau", B=8, **dec),
        decode_case("bahdanau", B=8, beam=5, **dec),
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


def model_config(case: Case, backend: str = "reference"):
    """The case's Seq2SeqConfig on `backend`."""
    from fast_s2s.models import Seq2SeqConfig

    d = case.shape
    return Seq2SeqConfig(
        src_vocab_size=d["V"], tgt_vocab_size=d["V"], embed_size=d["E"], hidden_size=d["H"],
        backend=backend, **VARIANTS[case.variant],  # type: ignore[arg-type]
    )  # fmt: skip


def make_inputs(case: Case, device: torch.device | str, dtype: torch.dtype) -> Inputs:
    """Everything is in extra: "mode", "config", "state_dict" (the weights every implementation
    loads), the batch ("src", "src_lengths"; training also "tgt_in", "tgt_out"), "beam",
    "max_len", and the throughput's "work" per call, "work_unit" and "hypothesis_tokens"."""
    from fast_s2s.data import collate
    from fast_s2s.models import Seq2Seq

    device = torch.device(device)
    d = case.shape
    B, S, V = d["B"], d["S"], d["V"]
    config = model_config(case)
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


def _check_lengths(lengths: list[int], max_len: int) -> None:
    """Fails the row if a hypothesis ended before max_len, which would make the tokens per
    call, and so the tokens/s, wrong."""
    short = [n for n in lengths if n != max_len]
    if short:
        raise RuntimeError(
            f"a hypothesis ended after {short[0]} tokens, not max_len={max_len}: the decode "
            "did not run the fixed number of steps its tokens/s assumes"
        )


def _decode(model, x: dict, native: bool = True) -> Call:
    """greedy_decode or beam_search (native: the native loop where it runs); the call's
    decode_loop says which loop ran (fast_s2s.models.decode_path)."""
    from fast_s2s.models import beam_search, decode_path, greedy_decode

    src, src_lengths, beam, max_len = x["src"], x["src_lengths"], x["beam"], x["max_len"]
    model.eval()

    def run() -> list:
        if beam == 1:
            hyps = greedy_decode(model, src, src_lengths, max_len=max_len, native=native)
        else:
            hyps = beam_search(
                model, src, src_lengths, beam_size=beam, max_len=max_len, native=native
            )
        _check_lengths([len(h.tokens) for h in hyps], max_len)
        return hyps

    run.decode_loop = decode_path(model, native)  # type: ignore[attr-defined]
    if run.decode_loop == "cuda-graph" and _capture_fails(run):  # type: ignore[attr-defined]
        run.decode_loop = "cuda-graph (capture failed, eager)"  # type: ignore[attr-defined]
    return run


def _capture_fails(run: Call) -> bool:
    """Whether a call warns that its CUDA graph capture failed (it then ran eagerly)."""
    from fast_s2s.models.decoding import CaptureFailedWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return any(issubclass(w.category, CaptureFailedWarning) for w in caught)


def model_call(op: str, backend: str, native: bool = True) -> Factory:
    """The case's model built with `backend`, loaded with the case's weights: a training step
    or a decode per call (native=False: the Python search loop)."""
    del op  # the family has one op

    def make(inputs: Inputs) -> Call:
        x = inputs.extra
        model = _load_model(x, backend)
        return _train_step(model, x) if x["mode"] == TRAIN_STEP else _decode(model, x, native)

    return make


def _load_model(x: dict, backend: str):
    """The case's model built with `backend`, on the case's device and dtype, with its weights."""
    from fast_s2s.models import Seq2Seq

    weights: dict[str, torch.Tensor] = x["state_dict"]
    model = Seq2Seq(replace(x["config"], backend=backend))
    model.to(device=x["src"].device, dtype=weights["decoder.out.weight"].dtype)
    model.load_state_dict(weights)
    return model


def torch_nn_call(inputs: Inputs) -> Call:
    """The "torch.nn" peer: the same architecture and weights from torch.nn modules, decoded
    in a Python loop (benchmark/torch_peer.py)."""
    from fast_s2s.benchmark.torch_peer import TorchNNSeq2Seq

    x = inputs.extra
    weights: dict[str, torch.Tensor] = x["state_dict"]  # type: ignore[assignment]
    peer = TorchNNSeq2Seq(x["config"])
    peer.to(device=x["src"].device, dtype=weights["decoder.out.weight"].dtype)
    peer.load_fast_s2s(weights)
    peer.eval()
    src, src_lengths, beam, max_len = x["src"], x["src_lengths"], x["beam"], x["max_len"]

    def run() -> list:
        if beam == 1:
            out = peer.greedy(src, src_lengths, max_len)  # type: ignore[arg-type]
        else:
            out = peer.beam(src, src_lengths, beam, max_len)  # type: ignore[arg-type]
        _check_lengths([len(t) for t in out], max_len)  # type: ignore[arg-type]
        return out

    return run


FAMILY = Family(
    name="model",
    cases={
        "cpu": {"model": _cases()},
        "cuda": {"model": _cases()},
        "tiny": {"model": _tiny_cases()},
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
