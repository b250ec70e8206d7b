"""The whole-model implementations: fast_s2s.models.Seq2Seq on a backend, built per case.

Every implementation of a model case is the case's model (model_cases.make_model_inputs) built
with `backend=...` and loaded with the case's weights (load_state_dict). The fast_s2s rows are
the model on "cpp", "auto", ...; the peer "reference" is the same model on backend="reference"
(the pure-PyTorch ops), so "vs reference" is the speedup of the fused ops inside the whole model,
with everything else (embeddings, projections, loss, Adam, the search loop) the same code.

A backend can run the model when it can run every op the model uses
(model_cases.MODEL_KERNEL_OPS); "auto" resolves per op, so its label names every backend it
picks (e.g. fast_s2s[auto->cpp]).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fast_s2s.benchmark.model_cases import CLIP, LR, MODEL_KERNEL_OPS
from fast_s2s.benchmark.spec import DECODE, TRAIN_STEP, Inputs

Call = Callable[[], object]

REFERENCE_IS_THE_PEER = (
    "it is the reference peer (the same model on backend='reference'); name it in --backends "
    "to time it as a fast_s2s row too"
)


def missing_reason() -> str | None:
    """None if fast_s2s.models (Seq2Seq, greedy_decode, beam_search) imports, else why not."""
    try:
        from fast_s2s.models import Seq2Seq, beam_search, greedy_decode  # noqa: F401
    except Exception as exc:
        return f"fast_s2s.models could not be imported ({type(exc).__name__}: {exc})"
    return None


def available_model_backends(device: torch.device | str) -> dict[str, str | None]:
    """Every concrete backend mapped to None (it runs every op of the model on `device`) or the
    first reason one of the ops cannot run on it."""
    from fast_s2s.backends import BACKENDS, why_unavailable

    out: dict[str, str | None] = {}
    for backend in BACKENDS:
        if backend == "auto":
            continue
        reasons = [
            f"{op}: {reason}"
            for op in MODEL_KERNEL_OPS
            if (reason := why_unavailable(op, backend, device)) is not None
        ]
        out[backend] = reasons[0] if reasons else None
    return out


def resolve_model_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend(s) the model runs on `device` when built with `backend`: one name,
    or several joined by "+" when "auto" picks different ones for different ops. Raises
    BackendUnavailableError (fast_s2s.backends) when an explicit backend cannot run every op."""
    from fast_s2s.backends import resolve_backend

    picked = [resolve_backend(op, backend, device) for op in MODEL_KERNEL_OPS]
    return "+".join(dict.fromkeys(picked))


def _model(inputs: Inputs, backend: str, device: torch.device, dtype: torch.dtype):
    """The case's model on `backend`, with the case's weights."""
    from dataclasses import replace

    from fast_s2s.models import Seq2Seq

    config = replace(inputs.extra["config"], backend=backend)  # type: ignore[type-var]
    model = Seq2Seq(config).to(device=device, dtype=dtype)
    model.load_state_dict(inputs.extra["state_dict"])  # type: ignore[arg-type]
    return model


def train_step_call(model, inputs: Inputs) -> Call:
    """One training step per call, as fast-s2s train does it: mean loss per target token,
    zero_grad, backward, clip_grad_norm_(CLIP), Adam step (this model's own Adam)."""
    x = inputs.extra
    src, src_lengths, tgt_in, tgt_out = x["src"], x["src_lengths"], x["tgt_in"], x["tgt_out"]
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    parameters = [p for p in model.parameters() if p.requires_grad]

    def step() -> torch.Tensor:
        loss_sum, n_tokens = model.loss(src, src_lengths, tgt_in, tgt_out)
        loss = loss_sum / max(1, n_tokens)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, CLIP)
        optimizer.step()
        return loss.detach()

    return step


def decode_call(model, inputs: Inputs) -> Call:
    """greedy_decode (beam 1) or beam_search of the case's sources; every call checks that no
    hypothesis ended before max_len (so every call decoded the same number of tokens)."""
    from fast_s2s.models import beam_search, greedy_decode

    x = inputs.extra
    src, src_lengths = x["src"], x["src_lengths"]
    beam, max_len = int(x["beam"]), int(x["max_len"])  # type: ignore[call-overload]
    model.eval()

    def run() -> list:
        if beam == 1:
            hyps = greedy_decode(model, src, src_lengths, max_len=max_len)
        else:
            hyps = beam_search(model, src, src_lengths, beam_size=beam, max_len=max_len)
        short = [len(h.tokens) for h in hyps if len(h.tokens) != max_len]
        if short:
            raise RuntimeError(
                f"a hypothesis ended after {short[0]} tokens, not max_len={max_len}: the decode "
                "did not run the fixed number of steps its tokens/s assumes"
            )
        return hyps

    return run


def model_factory(backend: str) -> Callable[[Inputs], Call]:
    """make(inputs) -> the call of the case (inputs.extra["mode"]: a training step or a decode)
    on the model built with `backend`."""

    def make(inputs: Inputs) -> Call:
        mode = inputs.extra["mode"]
        if mode not in (TRAIN_STEP, DECODE):
            raise ValueError(f"model_factory: not a model mode: {mode!r}")
        src = inputs.extra["src"]
        dtype = inputs.extra["state_dict"]["decoder.out.weight"].dtype  # type: ignore[index]
        model = _model(inputs, backend, src.device, dtype)  # type: ignore[union-attr]
        if mode == TRAIN_STEP:
            return train_step_call(model, inputs)
        return decode_call(model, inputs)

    return make
