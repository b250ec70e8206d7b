"""fast_s2s.nn.Attention kinds local_m and local_p (Luong et al. 2015, section 3.2) against the
paper's formulas written out here in plain PyTorch, one (row, step) at a time:

    p_t      = t (local-m)  or  L_b * sigmoid(v_p . tanh(W_p h_t)) (local-p)
    window   = {s : |s - p_t| <= D, s < L_b}
    a_t(s)   = softmax_{s in window}(score(h_t, h_s)) * exp(-(s - p_t)^2 / (2 (D / 2)^2))
    c_t      = sum_s a_t(s) h_s

at the sizes users run (S 50-200, window 10, beam 5), with gradients into W_p, v_p, W_a and the
query, the state_dict, need_weights=False, and bad arguments named. The backends the op has on
the CPU run too (skipped with the reason while a kernel is missing).
"""

from __future__ import annotations

import math

import pytest
import torch

from fast_s2s.backends import available_backends
from fast_s2s.nn import ATTENTION_KINDS, LOCAL_ATTENTION_KINDS, Attention

TOL = {"reference": 2e-5, "cpp": 5e-5, "triton": 5e-5}
B, BEAM, S, D, DV, WINDOW = 2, 5, 120, 16, 12, 10
DQ_GENERAL = 20  # general projects a 20-feature query onto the 16-feature keys


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _backends() -> list:
    params = []
    for name, reason in available_backends("local_attention", "cpu").items():
        marks = pytest.mark.skip(reason=f"backend {name!r}: {reason}") if reason else ()
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def _module(kind: str, score: str, backend: str = "reference", **kw) -> Attention:
    dq = D if score == "dot" else DQ_GENERAL
    return Attention(kind, dq, D, value_size=DV, score=score, window=WINDOW, backend=backend, **kw)


def _formula(att: Attention, query, keys, values, lengths, beam, step):
    """The paper's local attention, float64, a loop over (row, step): context and weights."""
    q3 = query if query.dim() == 3 else query[:, None]
    n_rows, steps = q3.shape[:2]
    src = keys.shape[1]
    sigma = att.window / 2
    contexts = torch.zeros(n_rows, steps, values.shape[-1], dtype=torch.float64)
    weights = torch.zeros(n_rows, steps, src, dtype=torch.float64)
    contexts, weights = list(contexts.unbind(0)), list(weights.unbind(0))
    for n in range(n_rows):
        b = n // beam
        length = src if lengths is None else int(lengths[b])
        row_ctx, row_w = [], []
        for t in range(steps):
            h = q3[n, t].double()
            if att.kind == "local_m":
                base = step if isinstance(step, int) else float(step.reshape(-1)[n])
                p = torch.tensor(base + t, dtype=torch.float64)
            else:
                w_p, v_p = att.position_proj.weight.double(), att.position_v.double()
                p = length * torch.sigmoid(v_p @ torch.tanh(w_p @ h))
            score_q = h if att.score == "dot" else att.query_proj.weight.double() @ h
            positions = torch.arange(src, dtype=torch.float64)
            inside = ((positions - p).abs() <= att.window) & (positions < length)
            idx = inside.nonzero().flatten()
            w = torch.zeros(src, dtype=torch.float64)
            if len(idx):
                scores = keys[b, idx].double() @ score_q
                gauss = torch.exp(-((idx.double() - p) ** 2) / (2 * sigma**2))
                w = w.index_put((idx,), torch.softmax(scores, 0) * gauss)
            row_w.append(w)
            row_ctx.append(w @ values[b].double())
        contexts[n], weights[n] = torch.stack(row_ctx), torch.stack(row_w)
    context, weight = torch.stack(contexts), torch.stack(weights)
    if query.dim() == 2:
        context, weight = context[:, 0], weight[:, 0]
    return context, weight


def _inputs(att: Attention, qdim: str, steps: int = 4, dtype=torch.float32):
    shape = (B * BEAM, att.query_size) if qdim == "2d" else (B * BEAM, steps, att.query_size)
    query = torch.randn(shape, dtype=dtype)
    return query, torch.randn(B, S, D, dtype=dtype), torch.randn(B, S, DV, dtype=dtype)


def _spread_positions(att: Attention) -> None:
    """A larger v_p, so the predicted positions of random queries spread over the source (the
    default initialisation puts them all near L_b / 2)."""
    if att.kind == "local_p":
        with torch.no_grad():
            att.position_v.mul_(8.0)


# local_m steps: a 2-D query at step 37 (inside every row), 3-D from step 50 (past the end of
# the 57-long row for its last positions: partial windows), and one step per row.
STEPS = {"int": 37, "int3d": 50, "per_row": None}


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("lengths", ["nolen", "len"])
@pytest.mark.parametrize("qdim", ["2d", "3d"])
@pytest.mark.parametrize("score", ["dot", "general"])
@pytest.mark.parametrize("kind", LOCAL_ATTENTION_KINDS)
def test_local_attention_matches_the_paper(kind, score, qdim, lengths, backend):
    att = _module(kind, score, backend)
    _spread_positions(att)
    query, keys, values = _inputs(att, qdim)
    lens = torch.tensor([S, 57]) if lengths == "len" else None
    step = None
    if kind == "local_m":
        step = STEPS["int"] if qdim == "2d" else STEPS["int3d"]
    context, weights = att(query, att.precompute(keys, values), lens, beam=BEAM, step=step)
    want_context, want_weights = _formula(att, query, keys, values, lens, BEAM, step)
    t_shape = () if qdim == "2d" else (4,)
    assert context.shape == (B * BEAM, *t_shape, DV)
    assert weights.shape == (B * BEAM, *t_shape, S)
    torch.testing.assert_close(context.double(), want_context, atol=TOL[backend], rtol=0)
    torch.testing.assert_close(weights.double(), want_weights, atol=TOL[backend], rtol=0)
    # at most 2D + 1 positions are read, never one at or past the row's length
    assert int((weights != 0).sum(-1).max()) <= 2 * WINDOW + 1
    if lens is not None:
        assert torch.equal(weights[BEAM:, ..., 57:], torch.zeros_like(weights[BEAM:, ..., 57:]))


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("qdim", ["2d", "3d"])
def test_local_m_step_per_row_and_tensor_step(qdim, backend):
    """step as an (N,) tensor (every row its own t) and as a () tensor equal the int form."""
    att = _module("local_m", "general", backend)
    query, keys, values = _inputs(att, qdim)
    lens = torch.tensor([S, 57])
    memory = att.precompute(keys, values)
    per_row = torch.arange(B * BEAM) * 11 + 3  # 3 .. 102: some windows past row 1's end
    got = att(query, memory, lens, beam=BEAM, step=per_row)
    want = _formula(att, query, keys, values, lens, BEAM, per_row)
    torch.testing.assert_close(got[0].double(), want[0], atol=TOL[backend], rtol=0)
    torch.testing.assert_close(got[1].double(), want[1], atol=TOL[backend], rtol=0)
    as_int = att(query, memory, lens, beam=BEAM, step=20)
    as_tensor = att(query, memory, lens, beam=BEAM, step=torch.tensor(20.0))
    assert torch.equal(as_int[0], as_tensor[0]) and torch.equal(as_int[1], as_tensor[1])


def test_local_m_teacher_forced_equals_step_by_step():
    """A 3-D query from step s0 is the 2-D queries at steps s0, s0 + 1, ..."""
    att = _module("local_m", "dot")
    query, keys, values = _inputs(att, "3d", steps=6)
    lens = torch.tensor([S, 57])
    memory = att.precompute(keys, values)
    whole, whole_w = att(query, memory, lens, beam=BEAM, step=48)
    for t in range(6):
        one, one_w = att(query[:, t], memory, lens, beam=BEAM, step=48 + t)
        torch.testing.assert_close(whole[:, t], one, atol=1e-6, rtol=0)
        torch.testing.assert_close(whole_w[:, t], one_w, atol=1e-6, rtol=0)


def test_local_p_centres_are_the_row_length_times_a_sigmoid():
    """p_t = L_b * sigmoid(v_p . tanh(W_p h_t)) with L_b the row's length (beam rows read
    lengths[n // beam]), S without lengths; inside [0, L_b]."""
    att = _module("local_p", "general")
    _spread_positions(att)
    query = torch.randn(B * BEAM, 3, att.query_size)
    lens = torch.tensor([S, 57])
    with torch.no_grad():
        fraction = torch.sigmoid(torch.tanh(att.position_proj(query)) @ att.position_v)
        got = att.centers(query, S, lens, beam=BEAM)
        got_no_len = att.centers(query, S, None, beam=BEAM)
    row_len = torch.tensor([S] * BEAM + [57] * BEAM, dtype=torch.float32)[:, None]
    torch.testing.assert_close(got, row_len * fraction)
    torch.testing.assert_close(got_no_len, S * fraction)
    assert got.dtype == torch.float32 and got.shape == (B * BEAM, 3)
    assert float(got[BEAM:].max()) <= 57 and float(got.min()) >= 0
    assert float(got.max() - got.min()) > 20  # the spread positions really differ


@pytest.mark.parametrize("score", ["dot", "general"])
@pytest.mark.parametrize("kind", LOCAL_ATTENTION_KINDS)
def test_local_attention_gradients(kind, score):
    """Gradients into the query, W_a, W_p and v_p (through the Gaussian of p_t), keys and
    values, equal to the formula's by autograd, in float64."""
    att = _module(kind, score, dtype=torch.float64)
    _spread_positions(att)
    query, keys, values = _inputs(att, "3d", steps=3, dtype=torch.float64)
    lens = torch.tensor([S, 57])
    step = 40 if kind == "local_m" else None
    grad_ctx = torch.randn(B * BEAM, 3, DV, dtype=torch.float64)
    grads = []
    for run in ("module", "formula"):
        att.zero_grad()
        q, k, v = (t.clone().requires_grad_() for t in (query, keys, values))
        if run == "module":
            context, weights = att(q, att.precompute(k, v), lens, beam=BEAM, step=step)
        else:
            context, weights = _formula(att, q, k, v, lens, BEAM, step)
        ((context * grad_ctx).sum() + weights.square().sum()).backward()
        params = [p.grad.clone() for _, p in sorted(att.named_parameters())]
        grads.append([q.grad, k.grad, v.grad, *params])
    names = ["query", "keys", "values", *sorted(n for n, _ in att.named_parameters())]
    for name, got, want in zip(names, *grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-7, msg=name)
        assert float(got.abs().max()) > 0, f"no gradient reaches {name}"
    if kind == "local_p":
        assert "position_v" in names and "position_proj.weight" in names


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("kind", LOCAL_ATTENTION_KINDS)
def test_local_attention_need_weights_false(kind, backend):
    att = _module(kind, "general", backend)
    query, keys, values = _inputs(att, "3d")
    lens = torch.tensor([S, 57])
    step = 10 if kind == "local_m" else None
    memory = att.precompute(keys, values)
    context, weights = att(query, memory, lens, BEAM, step=step, need_weights=False)
    assert weights is None
    want, _ = att(query, memory, lens, BEAM, step=step)
    torch.testing.assert_close(context, want, atol=TOL[backend], rtol=0)


@pytest.mark.parametrize("score", ["dot", "general"])
@pytest.mark.parametrize("kind", LOCAL_ATTENTION_KINDS)
def test_local_attention_state_dict_round_trip(kind, score):
    att = _module(kind, score)
    expected = {
        ("local_m", "dot"): [],
        ("local_m", "general"): ["query_proj.weight"],
        ("local_p", "dot"): ["position_proj.weight", "position_v"],
        ("local_p", "general"): ["position_proj.weight", "position_v", "query_proj.weight"],
    }[kind, score]
    assert sorted(att.state_dict()) == expected
    if kind == "local_p":
        assert att.position_proj.weight.shape == (att.query_size, att.query_size)
        assert att.position_proj.bias is None  # the paper's W_p has no bias
        assert att.position_v.shape == (att.query_size,)
    torch.manual_seed(5)
    fresh = _module(kind, score)
    fresh.load_state_dict(att.state_dict())
    query, keys, values = _inputs(att, "2d")
    step = 30 if kind == "local_m" else None
    a = att(query, att.precompute(keys, values), beam=BEAM, step=step)
    b = fresh(query, fresh.precompute(keys, values), beam=BEAM, step=step)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_local_attention_defaults_and_repr():
    att = Attention("local_p", 8, 8)
    assert (att.score, att.window, att.position_size) == ("dot", 10, 8)
    assert "local_p" in ATTENTION_KINDS and "local_m" in ATTENTION_KINDS
    assert att.extra_repr() == "'local_p', query_size=8, key_size=8, score='dot', window=10"
    sized = Attention("local_p", 8, 6, score="general", window=3, position_size=5)
    assert sized.position_proj.weight.shape == (5, 8) and sized.position_v.shape == (5,)
    assert sized.extra_repr().endswith("score='general', window=3, position_size=5")
    zero = Attention("local_m", 4, 4, window=0)  # window 0: the single position s = t
    keys = torch.randn(1, 9, 4)
    context, weights = zero(torch.randn(1, 4), keys, step=3)
    assert torch.equal(weights, torch.eye(9)[3:4]) and torch.equal(context, keys[:, 3])
    assert Attention("dot", 4, 4).score is None  # a global kind is its own score


def test_local_attention_past_the_source_is_not_clamped():
    """local-m at a step whose window holds no source position reads nothing: zero context."""
    att = Attention("local_m", 4, 4, window=2)
    keys = torch.randn(2, 6, 4)
    context, weights = att(torch.randn(2, 4), keys, torch.tensor([6, 3]), step=5)
    assert float(weights[0].sum()) > 0 and torch.equal(weights[1], torch.zeros(6))
    assert torch.equal(context[1], torch.zeros(4))


def test_local_attention_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="kind must be one of"):
        Attention("local", 4, 4)
    with pytest.raises(ValueError, match="score must be one of"):
        Attention("local_p", 4, 4, score="concat")
    with pytest.raises(ValueError, match="score is an option of the local kinds"):
        Attention("general", 4, 4, score="dot")
    with pytest.raises(ValueError, match="window is an option of the local kinds"):
        Attention("dot", 4, 4, window=10)
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match="window must be a non-negative integer"):
            Attention("local_m", 4, 4, window=bad)
    with pytest.raises(ValueError, match="position_size"):
        Attention("local_m", 4, 4, position_size=8)
    with pytest.raises(ValueError, match="position_size must be a positive integer"):
        Attention("local_p", 4, 4, position_size=0)
    with pytest.raises(ValueError, match=r"score='dot' needs query_size == key_size"):
        Attention("local_p", 6, 4)
    with pytest.raises(ValueError, match="bias"):
        Attention("local_p", 4, 4, bias=True)

    keys = torch.randn(B, S, D)
    local_m, local_p = Attention("local_m", D, D), Attention("local_p", D, D)
    query = torch.randn(B, D)
    with pytest.raises(ValueError, match="needs step="):
        local_m(query, keys)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="step must be a non-negative int"):
            local_m(query, keys, step=bad)
    with pytest.raises(ValueError, match=r"step must be an int or a real tensor of shape"):
        local_m(query, keys, step=torch.zeros(B + 1))
    with pytest.raises(ValueError, match=r"step must be an int or a real tensor of shape"):
        local_m(query, keys, step=torch.zeros(B, 1))
    with pytest.raises(ValueError, match="kind='local_p' does not take it"):
        local_p(query, keys, step=0)
    with pytest.raises(ValueError, match="kind='dot' does not take it"):
        Attention("dot", D, D)(query, keys, step=0)
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        local_p(query, keys, lengths=torch.tensor([S, 1, 1]))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, S\]"):
        local_p(query, keys, lengths=torch.tensor([S + 1, 1]))
    with pytest.raises(ValueError, match=r"query.*beam"):
        local_p(torch.randn(B * 2, D), keys, beam=3)
    with pytest.raises(ValueError, match="has no window centres"):
        Attention("dot", D, D).centers(query, S)
    assert math.isfinite(float(local_p(query, keys)[0].detach().sum()))
