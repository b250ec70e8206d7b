"""Property tests (hypothesis): random shapes, strides, lengths (with 0 and S), beam, T, dtypes
and magnitudes (including saturating ones), every op forward and backward, every available
backend against the reference; and the command line's numeric options and --resume checks.

The default profile keeps the whole file under a minute on 2 cores; set
FAST_S2S_HYPOTHESIS=thorough for about 10x the examples (and FAST_S2S_HYPOTHESIS_SEED to vary
the draws; the default derandomises, so CI sees the same cases every run).
"""

from __future__ import annotations

import contextlib
import io
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fast_s2s
from fast_s2s import cli, reference
from fast_s2s.backends import why_unavailable
from fast_s2s.cli.options import Number, UsageError
from fast_s2s.training import TrainSettings
from fast_s2s.training.resume import run_record
from tests.cli_cases import (
    NUMERIC,
    VALUES,
    cli_commands,
    record_of,
    required_argv,
    resume_bases,
    resume_mutation,
    spelled,
)

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    derandomize="FAST_S2S_HYPOTHESIS_SEED" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=250,
    deadline=None,
    derandomize="FAST_S2S_HYPOTHESIS_SEED" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("FAST_S2S_HYPOTHESIS", "default"))
TRITON_EXAMPLES = 4  # the Triton interpreter runs a kernel in seconds, not microseconds

FUSED = [
    pytest.param(b, marks=pytest.mark.skipif(why_unavailable("gru_cell", b, "cpu") is not None,
                                             reason=str(why_unavailable("gru_cell", b, "cpu"))))
    for b in ("cpp", "triton")
]  # fmt: skip

# Relative tolerance per dtype, against the reference in the same dtype; errors are measured
# relative to the largest magnitude of the expected tensor, and widened by sqrt(magnitude) of the
# inputs: the rounding of a pre-activation grows with it, and near a gate's zero crossing the
# two summation orders then give derivatives that differ by that much (float32 at 1e4: ~3e-3).
# Saturation itself is held exactly by the tests below.
RTOL = {torch.float32: 2e-4, torch.float64: 1e-9, torch.bfloat16: 3e-2}
# Magnitudes of the inputs: ordinary, large, and saturating (tanh / sigmoid / softmax at 1e4).
MAGNITUDES = st.sampled_from([1.0, 30.0, 1e4])


def close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    what: str,
    magnitude: float = 1.0,
) -> None:
    actual, expected = actual.detach(), expected.detach()
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert torch.isfinite(actual).all(), f"{what}: non-finite values from finite inputs"
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    err = float((actual.double() - expected.double()).abs().max()) if actual.numel() else 0.0
    tolerance = RTOL[dtype] * scale * 4 * max(1.0, magnitude) ** 0.5
    assert err <= tolerance, f"{what}: max error {err:.3g} at scale {scale:.3g}"


def strided(t: torch.Tensor, non_contiguous: bool) -> torch.Tensor:
    """The same values, laid out with the last two dimensions transposed in memory."""
    if not non_contiguous or t.dim() < 2:
        return t
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)


@st.composite
def attention_problems(draw, fused: str):
    small = fused == "triton"
    batch = draw(st.integers(0 if not small else 1, 3))
    beam = draw(st.integers(1, 3))
    steps = draw(st.sampled_from([None, 1, 2, 3]))  # None: a 2-D query
    src = draw(st.integers(0 if not small else 1, 12 if small else 70))
    feat = draw(st.integers(1, 16 if small else 48))
    value_feat = draw(st.integers(1, 16 if small else 40))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    magnitude = draw(MAGNITUDES)
    lengths = draw(
        st.none()
        | st.lists(st.sampled_from([0, src]) | st.integers(0, src), min_size=batch, max_size=batch)
    )
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        batch=batch, beam=beam, steps=steps, src=src, feat=feat, value_feat=value_feat,
        dtype=dtype, magnitude=magnitude, lengths=lengths,
        non_contiguous=draw(st.booleans()), additive=draw(st.booleans()),
    )  # fmt: skip


def attention_inputs(p: dict) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    n_rows = p["batch"] * p["beam"]
    lead = (n_rows,) if p["steps"] is None else (n_rows, p["steps"])
    dt, m = p["dtype"], p["magnitude"]
    g = torch.Generator().manual_seed(p["seed"])  # the example alone fixes the tensors
    query = torch.randn(*lead, p["feat"], dtype=dt, generator=g) * m
    keys = torch.randn(p["batch"], p["src"], p["feat"], dtype=dt, generator=g)
    values = torch.randn(p["batch"], p["src"], p["value_feat"], dtype=dt, generator=g)
    vec = [torch.randn(p["feat"], dtype=dt, generator=g)] if p["additive"] else []
    tensors = [query, keys, *vec]
    tensors = [strided(t, p["non_contiguous"]) for t in [*tensors, values]]
    lengths = None if p["lengths"] is None else torch.tensor(p["lengths"], dtype=torch.int64)
    return tensors, lengths


def run_attention(p: dict, backend: str, tensors, lengths):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    if p["additive"]:
        context, weights = fast_s2s.additive_attention(*leaves, lengths, backend=backend)
    else:
        context, weights = fast_s2s.dot_attention(*leaves, lengths, 0.5, backend=backend)
    grad = torch.linspace(-1, 1, context.numel(), dtype=context.dtype).reshape(context.shape)
    (context * grad).sum().backward()
    return context, weights, [t.grad for t in leaves]


def check_attention(p: dict, fused: str) -> None:
    tensors, lengths = attention_inputs(p)
    got = run_attention(p, fused, tensors, lengths)
    ref = run_attention(p, "reference", tensors, lengths)
    m = p["magnitude"]
    close(got[0], ref[0], p["dtype"], "context", m)
    close(got[1], ref[1], p["dtype"], "weights", m)
    if lengths is not None and got[1].numel():
        empty = lengths == 0
        rows = got[1].reshape(p["batch"], -1, got[1].shape[-1])
        assert (rows[empty] == 0).all(), "a length-0 row must get zero weights"
    names = ["query", "keys", "v", "values"] if p["additive"] else ["query", "keys", "values"]
    for name, g, r in zip(names, got[2], ref[2], strict=True):
        close(g, r, p["dtype"], f"grad {name}", m)


@pytest.mark.parametrize("fused", FUSED)
def test_attention_matches_the_reference(fused):
    examples = TRITON_EXAMPLES if fused == "triton" else None

    @settings(max_examples=examples) if examples else (lambda f: f)
    @given(p=attention_problems(fused))
    def check(p):
        check_attention(p, fused)

    check()


@st.composite
def gru_problems(draw, fused: str, layer: bool):
    small = fused == "triton"
    batch = draw(st.integers(0 if not small else 1, 5))
    steps = draw(st.integers(0 if not small else 1, 4 if small else 9))
    lengths = draw(
        st.none()
        | st.lists(st.sampled_from([0, steps]) | st.integers(0, steps), min_size=batch,
                   max_size=batch)
    ) if layer else None  # fmt: skip
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        batch=batch, steps=steps, lengths=lengths, layer=layer,
        input_size=draw(st.integers(1, 12 if small else 40)),
        hidden=draw(st.integers(1, 12 if small else 40)),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])),
        magnitude=draw(MAGNITUDES), bias=draw(st.booleans()), reverse=draw(st.booleans()),
        non_contiguous=draw(st.booleans()),
    )  # fmt: skip


def gru_inputs(p: dict) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
    dt, m, hid = p["dtype"], p["magnitude"], p["hidden"]
    g = torch.Generator().manual_seed(p["seed"])  # the example alone fixes the tensors
    lead = (p["steps"], p["batch"]) if p["layer"] else (p["batch"],)
    x = torch.randn(*lead, p["input_size"], dtype=dt, generator=g) * m
    h = torch.randn(p["batch"], hid, dtype=dt, generator=g) * m
    w_ih = torch.randn(3 * hid, p["input_size"], dtype=dt, generator=g) / p["input_size"] ** 0.5
    w_hh = torch.randn(3 * hid, hid, dtype=dt, generator=g) / hid**0.5
    biases = [torch.randn(3 * hid, dtype=dt, generator=g) for _ in range(2)]
    tensors = [strided(t, p["non_contiguous"]) for t in (x, h, w_ih, w_hh)]
    lengths = None if p["lengths"] is None else torch.tensor(p["lengths"], dtype=torch.int64)
    return tensors + (biases if p["bias"] else [None, None]), lengths


def run_gru(p: dict, backend: str, tensors, lengths):
    leaves = [None if t is None else t.detach().clone().requires_grad_(True) for t in tensors]
    if p["layer"]:
        out, h_n = fast_s2s.gru_layer(
            *leaves, lengths=lengths, reverse=p["reverse"], backend=backend
        )
        outputs = [out, h_n]
    else:
        outputs = [fast_s2s.gru_cell(*leaves, backend=backend)]
    loss = sum(
        (o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
        for o in outputs
    )
    loss.backward()
    return outputs, [None if t is None else t.grad for t in leaves]


def check_gru(p: dict, fused: str) -> None:
    tensors, lengths = gru_inputs(p)
    got_out, got_grads = run_gru(p, fused, tensors, lengths)
    ref_out, ref_grads = run_gru(p, "reference", tensors, lengths)
    m = p["magnitude"]
    for i, (g, r) in enumerate(zip(got_out, ref_out, strict=True)):
        close(g, r, p["dtype"], f"output {i}", m)
    names = ["x", "h", "w_ih", "w_hh", "b_ih", "b_hh"]
    for name, g, r in zip(names, got_grads, ref_grads, strict=True):
        if r is not None:
            close(g, r, p["dtype"], f"grad {name}", m)


@pytest.mark.parametrize("layer", [False, True], ids=["gru_cell", "gru_layer"])
@pytest.mark.parametrize("fused", FUSED)
def test_gru_matches_the_reference(fused, layer):
    examples = TRITON_EXAMPLES if fused == "triton" else None

    @settings(max_examples=examples) if examples else (lambda f: f)
    @given(p=gru_problems(fused, layer))
    def check(p):
        check_gru(p, fused)

    check()


def test_saturated_gates_give_exactly_zero_weight_gradients():
    """|x|, |h| ~ 1e4 saturate every gate: the float32 reference's weight gradients are exactly
    0 there, and the fused ones must be too (an approximation that stops short of +-1 leaves
    derivatives near 1e-7, which times 1e4 is not 0); |h| ~ 1e30 must not give NaN."""
    if why_unavailable("gru_cell", "cpp", "cpu") is not None:
        pytest.skip("C++ extension unavailable")
    torch.manual_seed(0)
    batch, size = 4, 16
    w_ih, w_hh = torch.randn(3 * size, size), torch.randn(3 * size, size)
    b = torch.full((3 * size,), 1e4)  # every pre-activation far from 0
    for magnitude in (1e4, 1e30):
        x = torch.full((batch, size), magnitude)
        h = torch.full((batch, size), magnitude)
        grads = {}
        for backend in ("reference", "cpp"):
            ws = [w_ih.clone().requires_grad_(True), w_hh.clone().requires_grad_(True)]
            out = fast_s2s.gru_cell(x, h, *ws, b, b, backend=backend)
            out.sum().backward()
            grads[backend] = [w.grad for w in ws]
        for ref, got in zip(grads["reference"], grads["cpp"], strict=True):
            assert torch.isfinite(got).all(), magnitude
            assert (got[ref == 0] == 0).all(), (magnitude, float(got[ref == 0].abs().max()))
            assert (ref == 0).float().mean() > 0.9  # the case saturates, or it tests nothing
    seq = torch.full((3, batch, size), 1e4)
    for backend in ("reference", "cpp"):
        w = w_ih.clone().requires_grad_(True)
        out, _ = fast_s2s.gru_layer(seq, torch.zeros(batch, size), w, w_hh, b, b, backend=backend)
        out.sum().backward()
        grads[backend] = w.grad
    assert (grads["cpp"][grads["reference"] == 0] == 0).all()


def test_saturated_additive_scores_give_exactly_zero_gradients():
    """tanh(query_proj + keys_proj) at |.| ~ 1e4 is exactly +-1 in float32: the gradients of
    query_proj and keys_proj through it are exactly 0 in the reference, and must be fused."""
    if why_unavailable("additive_attention", "cpp", "cpu") is not None:
        pytest.skip("C++ extension unavailable")
    torch.manual_seed(0)
    grads = {}
    for backend in ("reference", "cpp"):
        q = (torch.randn(4, 3, 8) * 1e4).requires_grad_(True)
        k = (torch.randn(2, 5, 8) * 1e4).requires_grad_(True)
        v, values = torch.randn(8), torch.randn(2, 5, 6)
        context, _ = fast_s2s.additive_attention(q, k, v, values, backend=backend)
        context.sum().backward()
        grads[backend] = (q.grad, k.grad)
    for ref, got in zip(grads["reference"], grads["cpp"], strict=True):
        assert torch.isfinite(got).all()
        assert (ref == 0).float().mean() > 0.5  # the case saturates, or it tests nothing
        assert (got[ref == 0] == 0).all(), float(got[ref == 0].abs().max())


@pytest.mark.parametrize("additive", [False, True], ids=["dot", "additive"])
@pytest.mark.parametrize("backend", ["reference", *FUSED])
def test_padded_positions_are_never_read(backend, additive):
    """The contract for positions s >= lengths[b]: their keys and values may hold anything,
    NaN and infinity included; context, weights and gradients are those of the same call with
    zeros there (and zero gradients there)."""
    torch.manual_seed(0)
    lengths = torch.tensor([3, 0, 5])
    dim = 8 if additive else 6
    query, keys, values = torch.randn(6, 2, dim), torch.randn(3, 5, dim), torch.randn(3, 5, 4)
    padded = (torch.arange(5)[None, :] >= lengths[:, None])[..., None]  # (B, S, 1)
    poisoned = [keys.masked_fill(padded, float("nan")), values.masked_fill(padded, float("inf"))]
    clean = [keys.masked_fill(padded, 0.0), values.masked_fill(padded, 0.0)]
    results = []
    for k, v in (clean, poisoned):
        leaves = [t.clone().requires_grad_(True) for t in (query, k, v)]
        if additive:
            vec = torch.randn(dim, generator=torch.Generator().manual_seed(1))
            context, weights = fast_s2s.additive_attention(
                leaves[0], leaves[1], vec, leaves[2], lengths, backend=backend
            )
        else:
            context, weights = fast_s2s.dot_attention(*leaves, lengths, backend=backend)
        context.sum().backward()
        results.append([context, weights, *(t.grad for t in leaves)])
    for want, got in zip(*results, strict=True):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_reference_is_the_plain_definition_here():
    """The property tests compare against fast_s2s.reference: make sure it is the maths (a
    check of the comparison itself, on one fixed case)."""
    q, k, v = torch.randn(2, 3, dtype=torch.float64), torch.randn(1, 4, 3), torch.randn(1, 4, 2)
    k, v = k.double(), v.double()
    context, weights = reference.dot_attention(q, k, v)
    expected = torch.softmax(q @ k[0].T, dim=-1)
    torch.testing.assert_close(weights, expected)
    torch.testing.assert_close(context, expected @ v[0])


# --------------------------------------------------------------------------------------------
# The command line: every numeric option of every subcommand (walked from the parsers, so a new
# option is drawn too) takes exactly the values of its declared range, and refuses the rest in
# one line naming the option and the range; NaN, infinity and sizes past int64 never pass.
# --------------------------------------------------------------------------------------------


def _expected(kind, text: str):
    """What the option should make of `text`, worked out here from its declared bounds (not by
    the type's own check): the value, or None for a refusal."""
    if not isinstance(kind, Number):
        return kind(text) if kind.admits(text) else None  # --budget: its own grammar
    try:
        value = int(text.strip(), 10) if kind.kind is int else float(text)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if kind.low is not None and (value < kind.low or (kind.low_open and value == kind.low)):
        return None
    if kind.high is not None and (value > kind.high or (kind.high_open and value == kind.high)):
        return None
    return value


@st.composite
def numeric_command_lines(draw):
    command, option, kind = draw(st.sampled_from(NUMERIC))
    edges = []
    for bound in (getattr(kind, "low", None), getattr(kind, "high", None)):
        if bound is not None:
            edges += [bound - 1, bound, bound + 1]
    text = draw(
        st.one_of(
            st.sampled_from([*(spelled(v, kind) for v in VALUES), str(2**63), "1.5", "", "x"]),
            st.sampled_from(edges or [0]).map(str),
            st.integers(-(2**65), 2**65).map(str),
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
        )
    )
    return command, option, kind, text


@settings(max_examples=200 if os.environ.get("FAST_S2S_HYPOTHESIS") != "thorough" else 2000)
@given(numeric_command_lines())
def test_numeric_options_take_exactly_their_declared_range(case):
    command, option, kind, text = case
    argv = [command, *required_argv(cli_commands()[command]), f"{option}={text}"]
    expected = _expected(kind, text)
    if text.lower().strip() in ("nan", "inf", "-inf", "1e400", str(10**20), str(2**63)):
        assert expected is None, f"{command} {option} takes {text}"
    try:
        args = cli.build_parser().parse_args(argv)
    except UsageError as exc:
        message = str(exc)
        assert expected is None, f"{command} {option}={text} refused: {message}"
        assert len(message.splitlines()) == 1, message
        assert message.startswith(f"fast-s2s {command}: {option}: must be {kind.describe()}")
        return
    assert expected is not None, f"{command} {option}={text} was taken"
    assert getattr(args, option.lstrip("-").replace("-", "_")) == expected


# --------------------------------------------------------------------------------------------
# --resume with several settings changed at once: refused, naming the first that differs (in the
# record's order) and every other one, the checkpoint untouched.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resume_base(tmp_path_factory):
    """A trained "generated" base run: (folder, its command line, its checkpoint, the single
    changes that apply to it, one per setting of the record)."""
    folder = tmp_path_factory.mktemp("resume")
    bases = resume_bases(str(folder))
    base = bases["generated"]
    path = folder / "base.pt"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([*base, "--checkpoint", str(path)]) == 0
    changes = {}
    for option in run_record(TrainSettings(), {}):
        found = resume_mutation(option, {"generated": base}, str(folder))
        if found is not None:
            changes[option] = found[1]
    assert len(changes) >= 18
    return folder, base, path, changes


@settings(max_examples=30 if os.environ.get("FAST_S2S_HYPOTHESIS") != "thorough" else 300)
@given(data=st.data())
def test_resume_with_several_settings_changed_names_them_all(resume_base, data):
    folder, base, path, changes = resume_base
    chosen = data.draw(
        st.lists(st.sampled_from(sorted(changes)), min_size=1, max_size=5, unique=True)
    )
    argv = [*base, *(word for option in chosen for word in changes[option])]
    expected = record_of(argv)
    assume(expected is not None)  # a combination check_args refuses on its own
    saved = record_of(base)
    different = [k for k, v in expected.items() if k in saved and saved[k] != v]
    assert set(chosen) <= set(different)
    before = path.read_bytes()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert cli.main([*argv, "--checkpoint", str(path), "--resume"]) == 2
    message = err.getvalue().strip()
    assert len(message.splitlines()) == 1, message
    assert f"is another run: it was trained with {different[0]} " in message, message
    if len(different) > 1:
        rest = ", ".join(different[1:])
        assert f"({len(different) - 1} more differ: {rest})" in message, message
    else:
        assert "more differ" not in message
    assert path.read_bytes() == before
