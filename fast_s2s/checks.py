"""Argument checks, the one home of every error message about an argument.

fast_s2s.ops runs them before any backend, fast_s2s.nn and fast_s2s.models before calling the
ops, so every path reports a bad argument in one wording: "<op or class>: <argument> must be
<what was expected>, got <what was seen>". fast_s2s.reference does no checking at all: it is
only the maths. Checks that read tensor data (the range of `lengths`) run only in eager mode
and only for lengths on the CPU, so torch.compile sees no data-dependent branch and decoding on
a GPU does not synchronise; the compiled kernels repeat them where they read the lengths anyway.

This module is the bottom layer with fast_s2s.reference: it imports nothing from fast_s2s.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

# The implementations a caller may ask for (see fast_s2s.backends for what each means).
BACKENDS: tuple[str, ...] = ("auto", "reference", "cpp", "triton")

CPU_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
LENGTH_DTYPES = (torch.int32, torch.int64)


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def check_float_tensor(op: str, name: str, t: object) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    allowed = CUDA_DTYPES if t.device.type == "cuda" else CPU_DTYPES
    if t.dtype not in allowed:
        names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
        raise ValueError(f"{op}: {name} must be one of {names} on {t.device.type}, got {t.dtype}")


def check_backend(owner: str, backend: object) -> str:
    """backend: one of BACKENDS; owner names the op or class in the message."""
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"{owner}: backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def check_bool(op: str, name: str, value: object) -> None:
    """A flag such as need_weights: a Python bool (not 0 / 1, not a tensor)."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a bool (True or False), got {value!r}")


def check_scale(op: str, value: object) -> float:
    """scale: a finite real Python number (int or float; not a bool, a string, a complex or a
    tensor, which the compiled ops and the reference would read differently)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{op}: scale must be a real number (a Python float), got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{op}: scale must be finite, got {value!r}")
    return float(value)


def check_devices(
    op: str,
    like_name: str,
    like: Tensor,
    tensors: dict[str, Tensor | None],
    lengths: Tensor | None = None,
) -> None:
    """Every tensor on the device of `like`, lengths on the CPU or that device.

    The fake (meta) functions of the ops run it: a call whose arguments mix a meta tensor with
    real ones is dispatched to them, and without it returns uninitialised memory as a result."""
    for name, t in tensors.items():
        if t is not None and t.device != like.device:
            raise ValueError(
                f"{op}: {name} must be on the device of {like_name} ({like.device}), got {t.device}"
            )
    if lengths is not None:
        _check_lengths_device(op, lengths, like, like_name)


def check_same(op: str, name: str, t: Tensor, like_name: str, like: Tensor) -> None:
    if t.dtype != like.dtype:
        raise ValueError(
            f"{op}: {name} must have the dtype of {like_name} ({like.dtype}), got {t.dtype}"
        )
    if t.device != like.device:
        raise ValueError(
            f"{op}: {name} must be on the device of {like_name} ({like.device}), got {t.device}"
        )


def _check_lengths_device(op: str, lengths: Tensor, like: Tensor, like_name: str) -> None:
    if lengths.device.type not in ("cpu", like.device.type):
        raise ValueError(
            f"{op}: lengths must be on the CPU or on the device of {like_name} ({like.device}), "
            f"got {lengths.device}"
        )


# Up to this many lengths are read into Python in one call rather than reduced by two ops: at a
# batch-1 decode the checks run cold, after the search's weights went through the caches, where
# each op dispatch costs several microseconds.
_FEW_LENGTHS = 64


def _bounds(lengths: Tensor) -> tuple[int, int]:
    """(min, max) of a CPU lengths tensor."""
    if lengths.numel() <= _FEW_LENGTHS:
        values = lengths.tolist()
        return min(values), max(values)
    return int(lengths.min()), int(lengths.max())


def check_lengths(
    op: str,
    lengths: Tensor | None,
    batch: int,
    limit: int,
    limit_name: str,
    like: Tensor | None = None,
    like_name: str = "",
) -> None:
    """lengths: (batch,) int32/int64 with 0 <= lengths[b] <= limit (limit_name: "S" or "T"), on
    the CPU or on the device of `like` (the op's main input, named like_name)."""
    if lengths is None:
        return
    if not isinstance(lengths, Tensor):
        raise TypeError(
            f"{op}: lengths must be a torch.Tensor or None, got {type(lengths).__name__}"
        )
    if like is not None:
        _check_lengths_device(op, lengths, like, like_name)
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{op}: lengths must have shape ({batch},), got {_shape(lengths)}")
    if lengths.dtype not in LENGTH_DTYPES:
        raise ValueError(f"{op}: lengths must be int32 or int64, got {lengths.dtype}")
    if torch.compiler.is_compiling() or lengths.device.type != "cpu" or lengths.numel() == 0:
        return
    if isinstance(lengths, torch._subclasses.FakeTensor):
        return
    low, high = _bounds(lengths)
    if low < 0 or high > limit:
        bad = low if low < 0 else high
        raise ValueError(
            f"{op}: lengths must lie in [0, {limit_name}] = [0, {limit}], got a length of {bad}"
        )


def check_attention(
    op: str,
    query: Tensor,
    query_name: str,
    keys: Tensor,
    keys_name: str,
    values: Tensor,
    lengths: Tensor | None,
) -> None:
    """query (N,T,D) or (N,D); keys (B,S,D); values (B,S,Dv); N a multiple of B; lengths (B,)."""
    for name, t in ((query_name, query), (keys_name, keys), ("values", values)):
        check_float_tensor(op, name, t)
    if query.dim() not in (2, 3):
        raise ValueError(
            f"{op}: {query_name} must be 3-D (N, T, D) or 2-D (N, D), got shape {_shape(query)}"
        )
    if keys.dim() != 3:
        raise ValueError(f"{op}: {keys_name} must be 3-D (B, S, D), got shape {_shape(keys)}")
    if values.dim() != 3:
        raise ValueError(f"{op}: values must be 3-D (B, S, Dv), got shape {_shape(values)}")
    check_same(op, keys_name, keys, query_name, query)
    check_same(op, "values", values, query_name, query)
    n_rows, feat = query.shape[0], query.shape[-1]
    n_src, src_len = keys.shape[0], keys.shape[1]
    if keys.shape[2] != feat:
        raise ValueError(
            f"{op}: {keys_name} feature size must equal the {query_name} feature size {feat}, "
            f"got {keys_name} of shape {_shape(keys)}"
        )
    if values.shape[0] != n_src or values.shape[1] != src_len:
        raise ValueError(
            f"{op}: values must have shape (B, S, Dv) = ({n_src}, {src_len}, Dv) like "
            f"{keys_name}, got {_shape(values)}"
        )
    if (n_src == 0 and n_rows != 0) or (n_src > 0 and n_rows % n_src != 0):
        raise ValueError(
            f"{op}: the number of {query_name} rows ({n_rows}) must be a multiple of the number "
            f"of source rows B = {n_src} (N = B * beam; row n reads source row n // beam)"
        )
    check_lengths(op, lengths, n_src, src_len, "S", query, query_name)


def check_additive_v(op: str, v: Tensor, query_proj: Tensor) -> None:
    check_float_tensor(op, "v", v)
    check_same(op, "v", v, "query_proj", query_proj)
    if v.dim() != 1 or v.shape[0] != query_proj.shape[-1]:
        raise ValueError(
            f"{op}: v must have shape (A,) = ({query_proj.shape[-1]},) like the last dimension "
            f"of query_proj, got {_shape(v)}"
        )


def check_local_window(op: str, centers: Tensor, window: object, query: Tensor) -> int:
    """centers: a floating tensor on query's device, (N, T) for a 3-D query (N, T, D) or (N,)
    for a 2-D one; window: a non-negative Python int (not a bool). Returns the window."""
    check_float_tensor(op, "centers", centers)
    if centers.device != query.device:
        raise ValueError(
            f"{op}: centers must be on the device of query ({query.device}), got {centers.device}"
        )
    expected = tuple(query.shape[:-1])
    if _shape(centers) != expected:
        layout = "(N, T)" if query.dim() == 3 else "(N,)"
        raise ValueError(
            f"{op}: centers must have shape {layout} = {expected} like the rows of query, "
            f"got {_shape(centers)}"
        )
    if not isinstance(window, numbers.Integral) or isinstance(window, bool):
        raise TypeError(f"{op}: window must be a non-negative int, got {window!r}")
    if window < 0:
        raise ValueError(f"{op}: window must be a non-negative int, got {window}")
    return int(window)


def check_gru_weights(
    op: str,
    x_name: str,
    x: Tensor,
    h_name: str,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
) -> None:
    """w_ih (3H, I), w_hh (3H, H), b_ih / b_hh (3H,) or None, all of x's dtype and device."""
    input_size, hidden = x.shape[-1], h.shape[-1]
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh)):
        check_float_tensor(op, name, t)
        check_same(op, name, t, x_name, x)
    if tuple(w_ih.shape) != (3 * hidden, input_size):
        raise ValueError(
            f"{op}: w_ih must have shape (3H, I) = ({3 * hidden}, {input_size}) for H = {hidden} "
            f"({h_name}) and I = {input_size} ({x_name}), got {_shape(w_ih)}"
        )
    if tuple(w_hh.shape) != (3 * hidden, hidden):
        raise ValueError(
            f"{op}: w_hh must have shape (3H, H) = ({3 * hidden}, {hidden}), got {_shape(w_hh)}"
        )
    for name, b in (("b_ih", b_ih), ("b_hh", b_hh)):
        if b is None:
            continue
        check_float_tensor(op, name, b)
        check_same(op, name, b, x_name, x)
        if tuple(b.shape) != (3 * hidden,):
            raise ValueError(
                f"{op}: {name} must have shape (3H,) = ({3 * hidden},), got {_shape(b)}"
            )


def check_gru_cell(
    x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None
) -> None:
    """x (B, I), h (B, H)."""
    op = "gru_cell"
    check_float_tensor(op, "x", x)
    check_float_tensor(op, "h", h)
    if x.dim() != 2:
        raise ValueError(f"{op}: x must be 2-D (B, I), got shape {_shape(x)}")
    if h.dim() != 2 or h.shape[0] != x.shape[0]:
        raise ValueError(
            f"{op}: h must have shape (B, H) with B = {x.shape[0]} (the rows of x), got {_shape(h)}"
        )
    check_same(op, "h", h, "x", x)
    check_gru_weights(op, "x", x, "h", h, w_ih, w_hh, b_ih, b_hh)


def check_gru_layer(
    x: Tensor,
    h0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
) -> None:
    """x (T, B, I), h0 (B, H), lengths (B,) in [0, T]."""
    op = "gru_layer"
    check_float_tensor(op, "x", x)
    check_float_tensor(op, "h0", h0)
    if x.dim() != 3:
        raise ValueError(f"{op}: x must be 3-D (T, B, I), got shape {_shape(x)}")
    if h0.dim() != 2 or h0.shape[0] != x.shape[1]:
        raise ValueError(
            f"{op}: h0 must have shape (B, H) with B = {x.shape[1]} (x is (T, B, I)), "
            f"got {_shape(h0)}"
        )
    check_same(op, "h0", h0, "x", x)
    check_gru_weights(op, "x", x, "h0", h0, w_ih, w_hh, b_ih, b_hh)
    check_lengths(op, lengths, x.shape[1], x.shape[0], "T", x, "x")
