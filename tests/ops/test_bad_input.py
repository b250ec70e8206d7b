"""Bad input gets an error naming the argument, what was seen and what was expected.

Checked on every backend that can run here (the Python checks run first for all of them), and on
the compiled ops called directly (their own TORCH_CHECKs), so torch.ops users are covered too.
"""

from __future__ import annotations

import pytest
import torch

import fast_s2s
from fast_s2s import _extension, backends

BACKENDS = ["reference"] + (["cpp"] if _extension.extension_loaded() else [])


def dot_args(**over):
    args = dict(
        query=torch.randn(6, 2, 8),
        keys=torch.randn(3, 5, 8),
        values=torch.randn(3, 5, 4),
        lengths=torch.tensor([5, 0, 2]),
    )
    args.update(over)
    return args


def add_args(**over):
    args = dict(
        query_proj=torch.randn(6, 2, 8),
        keys_proj=torch.randn(3, 5, 8),
        v=torch.randn(8),
        values=torch.randn(3, 5, 4),
        lengths=torch.tensor([5, 0, 2]),
    )
    args.update(over)
    return args


DOT_BAD = [
    ("rank", dict(query=torch.randn(6, 2, 8, 1)), r"query must be 3-D .* got shape"),
    ("keys-rank", dict(keys=torch.randn(3, 40)), r"keys must be 3-D"),
    ("feature", dict(keys=torch.randn(3, 5, 9)), r"keys feature size must equal"),
    ("values-shape", dict(values=torch.randn(3, 6, 4)), r"values must have shape"),
    ("beam", dict(query=torch.randn(7, 2, 8)), r"multiple of the number of source rows"),
    ("len-negative", dict(lengths=torch.tensor([5, -1, 2])), r"lengths.*\[0, .*5\].*-1"),
    ("len-too-long", dict(lengths=torch.tensor([5, 6, 2])), r"lengths.*\[0, .*5\].*6"),
    ("len-count", dict(lengths=torch.tensor([5, 2])), r"lengths must have shape \(3,\)"),
    ("len-dtype", dict(lengths=torch.tensor([5.0, 1.0, 2.0])), r"lengths must be int32 or int64"),
    (
        "mixed-dtype",
        dict(keys=torch.randn(3, 5, 8, dtype=torch.float64)),
        r"keys must have the dtype of query",
    ),
    ("int-query", dict(query=torch.ones(6, 2, 8, dtype=torch.int64)), r"query must be one of"),
    (
        "mixed-device",
        dict(values=torch.randn(3, 5, 4, device="meta")),
        r"values must be on the device of query",
    ),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what,over,message", DOT_BAD, ids=[c[0] for c in DOT_BAD])
def test_dot_attention_bad_input(backend, what, over, message):
    with pytest.raises(ValueError, match=message):
        fast_s2s.dot_attention(**dot_args(**over), backend=backend)


ADD_BAD = [
    ("v-shape", dict(v=torch.randn(7)), r"v must have shape \(A,\) = \(8,\)"),
    (
        "v-dtype",
        dict(v=torch.randn(8, dtype=torch.float64)),
        r"v must have the dtype of query_proj",
    ),
    ("keys-feature", dict(keys_proj=torch.randn(3, 5, 7)), r"keys_proj feature size must equal"),
    ("len-too-long", dict(lengths=torch.tensor([9, 1, 1])), r"lengths.*9"),
    ("beam", dict(query_proj=torch.randn(4, 8)), r"multiple of the number of source rows"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what,over,message", ADD_BAD, ids=[c[0] for c in ADD_BAD])
def test_additive_attention_bad_input(backend, what, over, message):
    with pytest.raises(ValueError, match=message):
        fast_s2s.additive_attention(**add_args(**over), backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("flag", [1, None, "no", torch.tensor(True)], ids=repr)
def test_need_weights_must_be_a_bool(backend, flag):
    with pytest.raises(TypeError, match=r"dot_attention: need_weights must be a bool"):
        fast_s2s.dot_attention(**dot_args(), backend=backend, need_weights=flag)
    with pytest.raises(TypeError, match=r"additive_attention: need_weights must be a bool"):
        fast_s2s.additive_attention(**add_args(), backend=backend, need_weights=flag)


@pytest.mark.skipif(not _extension.extension_loaded(), reason="extension not built")
@pytest.mark.parametrize(
    "over,message",
    [
        (dict(lengths=torch.tensor([5, 7, 2])), r"lengths\[1\] = 7 is out of range"),
        (dict(query=torch.randn(7, 2, 8)), r"multiple of the number of source rows"),
        (
            dict(keys=torch.randn(3, 5, 8, dtype=torch.float64)),
            r"keys must have the dtype of query",
        ),
        (dict(lengths=torch.tensor([1, 2])), r"lengths must have shape \(B,\)"),
    ],
)
def test_compiled_op_checks_its_own_arguments(over, message):
    a = dot_args(**over)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.fast_s2s.dot_attention(a["query"], a["keys"], a["values"], a["lengths"], 1.0)


def test_unknown_backend_names_the_choices():
    with pytest.raises(ValueError, match=r"backend must be one of"):
        fast_s2s.dot_attention(**dot_args(), backend="cuda")


def test_missing_triton_kernel_says_why(monkeypatch):
    monkeypatch.setattr(backends, "TRITON_KERNELS", frozenset())
    with pytest.raises(backends.BackendUnavailableError, match="(?i)triton"):
        fast_s2s.dot_attention(**dot_args(), backend="triton")
    assert backends.BackendUnavailableError is fast_s2s.BackendUnavailableError


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setattr(backends, "TRITON_KERNELS", frozenset({"dot_attention"}))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    reason = backends.why_unavailable("dot_attention", "triton", "cpu")
    assert reason is not None and ("TRITON_INTERPRET=1" in reason or "not installed" in reason)


def test_missing_extension_says_how_to_build(monkeypatch):
    monkeypatch.setattr(_extension, "_C", None)
    monkeypatch.setattr(
        _extension, "EXTENSION_ERROR", "fast_s2s._C could not be imported; " + _extension.BUILD_HINT
    )
    with pytest.raises(
        backends.BackendUnavailableError, match=r"pip install --no-build-isolation -e \."
    ):
        fast_s2s.dot_attention(**dot_args(), backend="cpp")
    # auto falls back to the reference and says so
    assert fast_s2s.resolve_backend("dot_attention", "auto", "cpu") == "reference"
    context, _ = fast_s2s.dot_attention(**dot_args())
    assert context.shape == (6, 2, 4)
