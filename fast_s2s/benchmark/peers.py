"""The implementations each case times: every fast_s2s backend and the peers a user would
otherwise write.

An `Impl` turns a case's `Inputs` into a zero-argument callable returning the context. Work a
user does once per batch of source sentences and not at every decoder step (building the padding
mask, tiling the encoder states over the beam, as OpenNMT's beam search does) happens in that
set-up, outside the timed call, except where the tensor needs a gradient: then it is part of the
graph and timed.

Peers (labels):
  reference  fast_s2s.reference (the pure-PyTorch definition, float32 accumulation)
  composite  bmm + masked softmax + bmm, as a user writes it in the input dtype (additive: tanh
             of the broadcast sum, times v), keys and values repeat_interleave'd over the beam
  sdpa       torch.nn.functional.scaled_dot_product_attention (dot only), as one head of 4-D
             (batch, heads, length, width) tensors (the fused flash / memory-efficient / CPU
             kernels take only 4-D inputs; 3-D ones fall back to the unfused math path), beam
             rows folded into the query length so keys are not copied, boolean attn_mask from
             lengths
  GRUCell    torch.nn.GRUCell (gru_cell), on the case's weights
  GRU        torch.nn.GRU (gru_layer: one layer; gru: the module's layers and directions), on the
             case's weights, over a packed sequence when there are lengths (gru_peers); on CUDA
             the row says whether torch ran it on cuDNN (torch.cudnn_is_acceptable)
  compile    torch.compile(fast_s2s.reference.<op>, dynamic=False), compiled per case before
             timing; a compile error becomes a failed row, not a crash
  reference  (op "model") the same fast_s2s.models.Seq2Seq, same weights, on backend="reference"

The GRU peers, and the fast_s2s rows of module ops (op "gru": fast_s2s.nn.GRU), live in
gru_peers; the whole-model rows (op "model") live in model_peers (the model's fast_s2s backends
leave out "reference": it is the peer). --quick leaves some peers out of some cases
(gru_peers.quick_left_out); they come back as rows that were not timed, with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fast_s2s.benchmark import gru_peers, model_peers
from fast_s2s.benchmark.gru_cases import MODULE_OPS
from fast_s2s.benchmark.model_cases import MODEL_OPS
from fast_s2s.benchmark.spec import Case, Inputs

Call = Callable[[], torch.Tensor]
Factory = Callable[[Inputs], Call]

FAST_S2S = "fast_s2s"
PEER = "peer"

CONCRETE_BACKENDS = ("reference", "cpp", "triton")

# What runs behind each label, for the JSON's "implementation" (see implementation_name).
PEER_IMPLEMENTATIONS = {
    "reference": "fast_s2s.reference (PyTorch)",
    "composite": "bmm + softmax + bmm (PyTorch, input dtype)",
    "sdpa": "torch.nn.functional.scaled_dot_product_attention",
    "GRUCell": "torch.nn.GRUCell",
    "GRU": "torch.nn.GRU",
    "compile": "torch.compile(fast_s2s.reference)",
}


@dataclass
class Impl:
    """One row of a case: `make(inputs)` returns the call to time (it returns the context).

    `reason` is set (and `make` is None) when the implementation cannot run here.
    """

    label: str
    kind: str  # FAST_S2S or PEER
    make: Factory | None
    backend_requested: str | None = None
    backend: str | None = None  # the concrete fast_s2s backend that runs
    reason: str | None = None


# ----------------------------------------------------------------------------- fast_s2s backends


def kernel_op(op: str) -> str:
    """The fast_s2s.ops op whose backends an op runs on (a module op runs its layer op's)."""
    return MODULE_OPS[op][1] if op in MODULE_OPS else op


def missing_reason(op: str) -> str | None:
    """None if fast_s2s has `op` (a fast_s2s.ops function, a fast_s2s.nn module for a module
    op, fast_s2s.models for "model"), else what is missing."""
    if op in MODEL_OPS:
        return model_peers.missing_reason()
    if op in MODULE_OPS:
        import fast_s2s.nn

        name = MODULE_OPS[op][0]
        return None if hasattr(fast_s2s.nn, name) else f"fast_s2s.nn has no {name}"
    from fast_s2s import ops

    return None if hasattr(ops, op) else f"fast_s2s.ops has no {op}"


def primary_output(out: torch.Tensor | tuple | list) -> torch.Tensor:
    """What a call is timed (and differentiated) for: the context of the attention ops, the
    output of gru_layer and the GRU module, h' of gru_cell (the ops that return one tensor)."""
    return out[0] if isinstance(out, (tuple, list)) else out


def _backend_name(backend: str, device_type: str) -> str:
    if backend == "cpp":
        return "CUDA C++ (fast_s2s._C)" if device_type == "cuda" else "C++ (fast_s2s._C)"
    if backend == "triton":
        return "Triton (fast_s2s.kernels)" + (" in the interpreter" if device_type == "cpu" else "")
    if backend == "reference":
        return "fast_s2s.reference (PyTorch)"
    return backend


def implementation_name(impl: Impl, device: torch.device | str) -> str | None:
    """What code runs behind a row, in words: "CUDA C++ (fast_s2s._C)", "Triton (...)",
    "torch.nn.GRU" ... None for a fast_s2s row whose backend could not be resolved. A call may
    say more once built (its `implementation` attribute, e.g. the GRU peer on CUDA: "(cuDNN)" or
    not; runner.time_impl takes it)."""
    device_type = torch.device(device).type
    if impl.kind == FAST_S2S:
        if impl.backend is None:
            return None
        return " + ".join(_backend_name(b, device_type) for b in impl.backend.split("+"))
    return PEER_IMPLEMENTATIONS.get(impl.label, impl.label)


def fast_s2s_label(requested: str, concrete: str | None) -> str:
    if requested == "auto":
        return f"fast_s2s[auto->{concrete}]" if concrete else "fast_s2s[auto]"
    return f"fast_s2s[{requested}]"


def default_backends(
    op: str, device: torch.device | str, quick: bool = False
) -> tuple[list[str], dict[str, str]]:
    """Every available concrete backend plus "auto", and the ones left out with the reason.

    Triton on CPU tensors runs only in the interpreter (TRITON_INTERPRET=1): a correctness tool,
    not a performance path, so it is timed on CPU only when asked for explicitly; on CUDA with
    TRITON_INTERPRET=1 set it would run interpreted too, so it is left out there as well. On the
    CPU `quick` also leaves out the reference backend (the reference peer plus dispatch, and the
    slowest row); on CUDA every available backend is timed, quick or not (cpp, triton and
    reference: the fastest-backend summary compares them). The model always leaves the
    reference backend out (its reference peer is that very model).
    """
    from fast_s2s.backends import available_backends

    if op in MODEL_OPS:
        available = model_peers.available_model_backends(device)
    else:
        available = available_backends(kernel_op(op), device)
    device_type = torch.device(device).type
    chosen: list[str] = []
    left_out: dict[str, str] = {}
    for backend, reason in available.items():
        if reason is not None:
            left_out[backend] = reason
        elif backend == "reference" and op in MODEL_OPS:
            left_out[backend] = model_peers.REFERENCE_IS_THE_PEER
        elif backend == "triton" and device_type == "cpu":
            left_out[backend] = (
                "Triton runs on CPU tensors only in the interpreter (TRITON_INTERPRET=1), which "
                "is not a performance path; pass --backends triton to time it anyway"
            )
        elif backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
            left_out[backend] = (
                "TRITON_INTERPRET=1 is set, so Triton would run in its interpreter, not on the "
                "GPU; unset it (or set TRITON_INTERPRET=0) to time the Triton kernels"
            )
        elif backend == "reference" and quick and device_type == "cpu":
            left_out[backend] = (
                "--quick leaves it out (it is the reference peer plus dispatch); name it in "
                "--backends to time it"
            )
        else:
            chosen.append(backend)
    return [*chosen, "auto"], left_out


def fast_s2s_impl(op: str, backend: str, device: torch.device | str) -> Impl:
    """The fast_s2s op (or module, for a module op; the Seq2Seq model for "model") with
    `backend=...`, labelled with the concrete backend that runs."""
    from fast_s2s import ops
    from fast_s2s.backends import BackendUnavailableError, resolve_backend

    try:
        if op in MODEL_OPS:
            concrete = model_peers.resolve_model_backend(backend, device)
        else:
            concrete = resolve_backend(kernel_op(op), backend, device)
    except (BackendUnavailableError, ValueError) as exc:
        return Impl(fast_s2s_label(backend, None), FAST_S2S, None, backend, None, str(exc))
    missing = missing_reason(op)
    if missing is not None:
        return Impl(fast_s2s_label(backend, concrete), FAST_S2S, None, backend, concrete, missing)
    if op in MODEL_OPS:
        make = model_peers.model_factory(backend)
        return Impl(fast_s2s_label(backend, concrete), FAST_S2S, make, backend, concrete)
    if op in MODULE_OPS:
        make = gru_peers.fast_s2s_module(op, backend)
        return Impl(fast_s2s_label(backend, concrete), FAST_S2S, make, backend, concrete)
    fn = getattr(ops, op)

    def make(inputs: Inputs) -> Call:
        args, kwargs = inputs.args, inputs.kwargs
        return lambda: primary_output(fn(*args, **kwargs, backend=backend))

    return Impl(fast_s2s_label(backend, concrete), FAST_S2S, make, backend, concrete)


# ----------------------------------------------------------------------------- peers


def _row_lengths(lengths: torch.Tensor | None, beam: int) -> torch.Tensor | None:
    if lengths is None or beam == 1:
        return lengths
    return lengths.repeat_interleave(beam)


def _pad_mask(lengths: torch.Tensor | None, S: int, device: torch.device) -> torch.Tensor | None:
    """(rows, 1, S) bool, True where the position is padding."""
    if lengths is None:
        return None
    return (torch.arange(S, device=device)[None, :] >= lengths[:, None])[:, None, :]


def _tile(t: torch.Tensor, beam: int) -> torch.Tensor:
    return t if beam == 1 else t.repeat_interleave(beam, dim=0)


def _masked_softmax_bmm(scores: torch.Tensor, pad: torch.Tensor | None, values: torch.Tensor):
    if pad is not None:
        scores = scores.masked_fill(pad, float("-inf"))
    return torch.bmm(torch.softmax(scores, dim=-1), values)


def _reference(op: str) -> Factory:
    def make(inputs: Inputs) -> Call:
        from fast_s2s import reference

        fn = getattr(reference, op)
        args, kwargs = inputs.args, inputs.kwargs
        return lambda: primary_output(fn(*args, **kwargs))

    return make


def _compile(op: str) -> Factory:
    def make(inputs: Inputs) -> Call:
        from fast_s2s import reference

        disabled = compile_disabled_reason()
        if disabled is not None:
            raise RuntimeError(f"torch.compile would run eagerly: {disabled}")
        torch.compiler.reset()  # fresh caches per case: no recompile limit, no dynamic shapes
        fn = torch.compile(getattr(reference, op), dynamic=False)
        args, kwargs = inputs.args, inputs.kwargs
        return lambda: primary_output(fn(*args, **kwargs))

    return make


def _dot_composite(inputs: Inputs) -> Call:
    query, keys, values = inputs.args
    lengths, scale, beam = inputs.kwargs["lengths"], inputs.kwargs["scale"], inputs.beam
    pad = _pad_mask(_row_lengths(lengths, beam), keys.shape[1], keys.device)
    if keys.requires_grad or values.requires_grad:  # tiling is part of the graph

        def call() -> torch.Tensor:
            k, v = _tile(keys, beam), _tile(values, beam)
            return _masked_softmax_bmm(torch.bmm(query, k.transpose(1, 2)) * scale, pad, v)

        return call
    k, v = _tile(keys, beam), _tile(values, beam)  # once per source batch
    return lambda: _masked_softmax_bmm(torch.bmm(query, k.transpose(1, 2)) * scale, pad, v)


def _dot_sdpa(inputs: Inputs) -> Call:
    query, keys, values = inputs.args
    lengths, scale, beam = inputs.kwargs["lengths"], inputs.kwargs["scale"], inputs.beam
    B, S, _ = keys.shape
    N, T, D = query.shape
    Dv = values.shape[-1]
    mask = None  # bool, True = may attend; (B, 1, 1, S) broadcasts over the beam*T query rows
    if lengths is not None:
        mask = (torch.arange(S, device=keys.device)[None, :] < lengths[:, None])[:, None, None, :]

    def call() -> torch.Tensor:
        # One head, 4-D views (no copies): beam rows of one source share its keys.
        q, k, v = query.reshape(B, 1, beam * T, D), keys.unsqueeze(1), values.unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        return out.reshape(N, T, Dv)

    return call


def _additive_composite(inputs: Inputs) -> Call:
    query_proj, keys_proj, v, values = inputs.args
    lengths, beam = inputs.kwargs["lengths"], inputs.beam
    pad = _pad_mask(_row_lengths(lengths, beam), keys_proj.shape[1], keys_proj.device)

    def scores(kp: torch.Tensor) -> torch.Tensor:  # (N,T,1,A) + (N,1,S,A) -> (N,T,S)
        return torch.tanh(query_proj.unsqueeze(2) + kp.unsqueeze(1)) @ v

    if keys_proj.requires_grad or values.requires_grad:
        return lambda: _masked_softmax_bmm(scores(_tile(keys_proj, beam)), pad, _tile(values, beam))
    kp, vals = _tile(keys_proj, beam), _tile(values, beam)
    return lambda: _masked_softmax_bmm(scores(kp), pad, vals)


# Per op: peer label -> factory. Order is the column order of the report.
PEERS: dict[str, dict[str, Factory]] = {
    "dot_attention": {
        "reference": _reference("dot_attention"),
        "composite": _dot_composite,
        "sdpa": _dot_sdpa,
        "compile": _compile("dot_attention"),
    },
    "additive_attention": {
        "reference": _reference("additive_attention"),
        "composite": _additive_composite,
        "compile": _compile("additive_attention"),
    },
    "gru_cell": {
        "reference": _reference("gru_cell"),
        "GRUCell": gru_peers.torch_gru_cell,
        "compile": _compile("gru_cell"),
    },
    "gru_layer": {
        "reference": _reference("gru_layer"),
        "GRU": gru_peers.torch_gru_layer,
        "compile": _compile("gru_layer"),
    },
    "gru": {"GRU": gru_peers.torch_gru_module},
    "model": {"reference": model_peers.model_factory("reference")},
}
PEER_NAMES = ("reference", "composite", "sdpa", "GRUCell", "GRU", "compile")


def peer_impls(
    op: str, names: list[str] | None = None, left_out: dict[str, str] | None = None
) -> list[Impl]:
    """The peers of `op` among `names` (all by default), in PEERS order; a peer that does not
    apply to the op (sdpa for additive attention) is left out. Peers in `left_out` come back
    with that reason and nothing to run (rows that are not timed)."""
    table = PEERS.get(op, {})
    left_out = left_out or {}
    wanted = list(table) if names is None else [n for n in table if n in names]
    return [
        Impl(label, PEER, None, reason=left_out[label])
        if label in left_out
        else Impl(label, PEER, table[label])
        for label in wanted
    ]


def build_impls(
    case: Case,
    device: torch.device | str,
    backends: list[str] | None = None,
    peers: list[str] | None = None,
    quick: bool = False,
) -> list[Impl]:
    """Every implementation timed for `case`: fast_s2s backends first, then peers. Backends
    that cannot run come back with `reason` set (and no `make`). `backends=None` means
    default_backends(op, device, quick); `quick` also leaves out the peers
    gru_peers.quick_left_out names for the case."""
    if backends is None:
        chosen, left_out = default_backends(case.op, device, quick)
        impls = [fast_s2s_impl(case.op, b, device) for b in chosen]
        impls += [
            Impl(fast_s2s_label(b, None), FAST_S2S, None, b, None, reason)
            for b, reason in left_out.items()
        ]
    else:
        impls = [fast_s2s_impl(case.op, b, device) for b in backends]
    left_out_peers = gru_peers.quick_left_out(case) if quick else {}
    return impls + peer_impls(case.op, peers, left_out_peers)


def compile_disabled_reason() -> str | None:
    """Why torch.compile will not run, if that is known up front."""
    if os.environ.get("TORCHDYNAMO_DISABLE") == "1":
        return "TORCHDYNAMO_DISABLE=1 is set"
    return None
