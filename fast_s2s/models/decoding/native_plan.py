"""What the native engine learns about a model once rather than per search: whether its native
encoder and decoder can run it (native_encoder.unavailable, native_params.unavailable) and the
ops' packed arguments.

At batch 1 a native search is a few hundred microseconds, and finding these out again (module
attribute walks, backend resolution, packing) was a tenth of it, run cold after the previous
search. A plan is kept per model and used while nothing it was made from changed:

- the module structure: every parameter, buffer or submodule registration anywhere (a replaced
  weight or submodule, `module.weight = nn.Parameter(...)`) bumps a generation counter, through
  torch's global registration hooks;
- the model's config (its fields compared by value: they may be edited in place) and the
  encoder GRU's own `backend` attribute;
- the decoder weights' dtype and device (`model.to(...)` keeps the Parameter objects);
- the order `auto` resolves by (fast_s2s.backends.AUTO_PREFERENCE).

Writes into the weights (in place, through `.data`, load_state_dict) need nothing: the packed
arguments hold the Parameter objects themselves. Deleting a parameter or submodule, or changing
`_parameters` / `_modules` by hand, bypasses the hooks: do not do that to a model between
searches.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from torch import nn

from fast_s2s import backends
from fast_s2s.models.decoding import native_encoder, native_params
from fast_s2s.models.seq2seq import Seq2Seq

__all__ = ["NativePlan", "plan_for"]

_generation = 0


def _structure_changed(*_: object) -> None:
    """A registration hook: returns None, so the registered object is kept as it is."""
    global _generation
    _generation += 1


nn.modules.module.register_module_parameter_registration_hook(_structure_changed)
nn.modules.module.register_module_buffer_registration_hook(_structure_changed)
nn.modules.module.register_module_module_registration_hook(_structure_changed)


@dataclass
class NativePlan:
    """decoder_unavailable, encoder_unavailable: None or why the native decoder / encoder cannot
    run the model; the packed arguments, made on first use under no_grad (their tensors are the
    parameters, not detached copies). It holds no reference to the model: the plans are kept
    in a WeakKeyDictionary, which a plan referring to its model would keep alive."""

    key: tuple
    decoder_unavailable: str | None
    encoder_unavailable: str | None
    _encoder_args: tuple | None = field(default=None, repr=False)
    _decoder_args: native_params.Packed | None = field(default=None, repr=False)

    def encoder_args(self, model: Seq2Seq) -> tuple:
        if self._encoder_args is None:
            self._encoder_args = native_encoder.pack(model)
        return self._encoder_args

    def decoder_args(self, model: Seq2Seq) -> native_params.Packed:
        if self._decoder_args is None:
            self._decoder_args = native_params.pack(model)
        return self._decoder_args


_PLANS: weakref.WeakKeyDictionary[Seq2Seq, NativePlan] = weakref.WeakKeyDictionary()


def _key(model: Seq2Seq) -> tuple:
    weight = model._modules["decoder"]._modules["embedding"]._parameters["weight"]
    return (
        _generation,
        tuple(vars(model.config).values()),
        getattr(model._modules["encoder"]._modules.get("rnn"), "backend", None),
        weight.dtype,
        weight.device,
        backends.AUTO_PREFERENCE.get(weight.device.type),
    )


def plan_for(model: Seq2Seq) -> NativePlan:
    """The model's plan, made again when what it was made from changed (the module docstring)."""
    key = _key(model)
    plan = _PLANS.get(model)
    if plan is None or plan.key != key:
        decoder_why = native_params.unavailable(model)
        plan = _PLANS[model] = NativePlan(
            key,
            decoder_why,
            native_encoder.unavailable(model) if decoder_why is None else decoder_why,
        )
    return plan
