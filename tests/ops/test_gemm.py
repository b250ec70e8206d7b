"""The CPU GEMM layer (csrc/cpu/gemm.h, fast_s2s.gemm): every backend the process has, pinned in
turn, gives the reference's results for every op whose products go through it, at the sizes
users run; a pinned backend is deterministic; auto measures every candidate and says so; bad
names are refused; deterministic algorithms take blas without measuring."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import fast_s2s
import fast_s2s.nn
from fast_s2s import _extension, reference

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason="the C++ extension is not built"
)

BACKENDS = fast_s2s.gemm_report().available if _extension.extension_loaded() else ()
TOL = {torch.float32: dict(atol=2e-4, rtol=2e-4), torch.float64: dict(atol=1e-10, rtol=1e-10)}


@pytest.fixture(params=BACKENDS)
def gemm_backend(request):
    fast_s2s.set_gemm_backend(request.param)
    yield request.param
    fast_s2s.set_gemm_backend("auto")


def _weights(I: int, H: int, dtype, grad: bool = False):
    gen = torch.Generator().manual_seed(1)
    bound = H**-0.5
    shapes = ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))
    return [
        ((torch.rand(s, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
        .to(dtype)
        .requires_grad_(grad)
        for s in shapes
    ]


def _f64(tensors):
    return [t.detach().double().requires_grad_(t.requires_grad) for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B", [1, 16, 64])
def test_gru_cell_matches_reference(gemm_backend, dtype, B):
    I, H = 384, 512
    x, h = torch.randn(B, I, dtype=dtype), torch.randn(B, H, dtype=dtype)
    w = _weights(I, H, dtype)
    got = fast_s2s.gru_cell(x, h, *w, backend="cpp")
    want = reference.gru_cell(*_f64([x, h, *w]))
    torch.testing.assert_close(got.double(), want, **TOL[dtype])
    assert fast_s2s.gemm_report().forced == gemm_backend


# Inside fast_s2s.frozen_weights() gru_cell keeps its prepared (packed) weights across calls
# (csrc/cpu/prepared_cache.h): each test changes the weights between calls in a way torch tracks,
# and the next call must compute with the new values, on every backend (a stale packing fails
# these).
@pytest.fixture
def frozen():
    with fast_s2s.frozen_weights():
        yield


def _cell_check(x, h, w):
    got = fast_s2s.gru_cell(x, h, *w, backend="cpp")
    torch.testing.assert_close(got.double(), reference.gru_cell(*_f64([x, h, *w])), **TOL[x.dtype])


@pytest.mark.parametrize("B", [1, 64])
def test_gru_cell_sees_in_place_weight_updates(gemm_backend, frozen, B):
    x, h, w = torch.randn(B, 96), torch.randn(B, 64), _weights(96, 64, torch.float32)
    _cell_check(x, h, w)
    _cell_check(x, h, w)  # from the cache
    with torch.no_grad():
        w[0].mul_(-1.5)  # an optimizer step
        w[1][:8].zero_()  # a write through a view
    _cell_check(x, h, w)
    w[1].data = torch.randn_like(w[1]) * 0.1  # a swapped .data
    _cell_check(x, h, w)


def test_gru_cell_cache_tells_weights_apart(gemm_backend, frozen):
    """Two models' weights of the same shape, alternated, detached per call, and inference
    tensors (no version counter, never cached), each computing with its own values."""
    x, h = torch.randn(16, 96), torch.randn(16, 64)
    first = _weights(96, 64, torch.float32)
    second = [t * -0.7 for t in first]
    for _ in range(2):
        for w in (first, second, [t.detach() for t in first]):
            _cell_check(x, h, w)
    with torch.inference_mode():
        frozen = [t.clone() for t in first]
    _cell_check(x, h, frozen)
    with torch.inference_mode():
        frozen[0].mul_(2.0)
    _cell_check(x, h, frozen)


def test_gru_cell_cached_weights_after_the_tensor_is_freed(gemm_backend, frozen):
    """A new weight allocated where a freed one was (same address, version 0) is not mistaken
    for it: the cache holds the storage weakly, so the address stays taken while it lives."""
    x, h = torch.randn(4, 96), torch.randn(4, 64)
    for scale in (1.0, -2.0, 0.5):
        w = [t * scale for t in _weights(96, 64, torch.float32)]
        _cell_check(x, h, w)
        del w


def test_gru_cell_outside_a_frozen_scope_sees_writes_through_data(gemm_backend):
    """`.data` writes bypass the version counter: outside frozen_weights() (and after leaving
    it) nothing is reused, so they are seen too."""
    x, h, w = torch.randn(8, 96), torch.randn(8, 64), _weights(96, 64, torch.float32)
    with fast_s2s.frozen_weights():
        with fast_s2s.frozen_weights():  # nested: the outer scope still holds the packing
            _cell_check(x, h, w)
        _cell_check(x, h, w)
    w[0].data.mul_(-3.0)
    _cell_check(x, h, w)
    _cell_check(x, h, w)
    w[1].data.add_(0.25)
    _cell_check(x, h, w)


def _layer_check(x, h0, w, lengths=None, reverse=False):
    with torch.no_grad():
        got, h_n = fast_s2s.gru_layer(x, h0, *w, lengths, reverse=reverse, backend="cpp")
    want, want_h = reference.gru_layer(*_f64([x, h0, *w]), lengths, reverse=reverse)
    torch.testing.assert_close(got.double(), want, **TOL[x.dtype])
    torch.testing.assert_close(h_n.double(), want_h, **TOL[x.dtype])


@pytest.mark.parametrize("B", [1, 16])
def test_gru_layer_sees_in_place_weight_updates(gemm_backend, frozen, B):
    """gru_layer keeps its prepared W_hh and W_ih across calls in a frozen scope
    (csrc/cpu/gru_layer.cpp, layer_cache and input_cache; W_ih per chunk height: at B = 16 the
    30 steps are chunks of 256 and 224 rows): every tracked change of either is seen, in both
    directions, ragged or not."""
    T, I, H = 30, 48, 40
    x, h0, w = torch.randn(T, B, I), torch.randn(B, H), _weights(I, H, torch.float32)
    lengths = torch.randint(1, T + 1, (B,)) if B > 1 else None
    for reverse in (False, True):
        _layer_check(x, h0, w, lengths, reverse)
        _layer_check(x, h0, w, lengths, reverse)  # from the cache
    for weight in (1, 0):  # W_hh, then W_ih
        with torch.no_grad():
            w[weight].mul_(-1.25)  # an optimizer step
            w[weight][H:].zero_()  # a write through a view
        _layer_check(x, h0, w, lengths)
        w[weight].data = torch.randn_like(w[weight]) * 0.2  # a swapped .data
        _layer_check(x, h0, w, lengths, reverse=True)


def test_gru_module_one_op_in_a_frozen_scope_tells_modules_apart(gemm_backend, frozen):
    """fast_s2s.nn.GRU's one-op inference (gru_stack), two layers both ways: two modules of the
    same shape alternated, then one updated in place, each against torch.nn.GRU on its own
    weights."""
    mods = []
    for seed in (3, 4):
        torch.manual_seed(seed)
        mods.append(fast_s2s.nn.GRU(24, 32, num_layers=2, bidirectional=True).eval())
    x = torch.randn(20, 2, 24)

    def check(mod):
        peer = torch.nn.GRU(24, 32, num_layers=2, bidirectional=True)
        peer.load_state_dict(mod.state_dict())
        with torch.no_grad():
            got, want = mod(x), peer(x)
        torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)

    for _ in range(2):
        for mod in mods:
            check(mod)
    with torch.no_grad():
        mods[0].weight_hh_l1_reverse.mul_(0.5)
    check(mods[0])
    check(mods[1])


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("I,H,L", [(64, 64, 1), (256, 256, 2)])  # the bench's batch-1 encoders
def test_frozen_encoder_at_bench_sizes_is_the_per_call_one(gemm_backend, threads, I, H, L):
    """A one-sentence encoder served frozen (the cached W_hh, first call and from the cache)
    gives bit for bit what the per-call preparation gives, with the GEMM backend pinned."""
    torch.manual_seed(5)
    mod = fast_s2s.nn.GRU(I, H, num_layers=L, bidirectional=True).eval()
    x = torch.randn(25, 1, I) * 3.0  # saturating gates too
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            want = mod(x)
            with fast_s2s.frozen_weights():
                first, cached = mod(x), mod(x)
    finally:
        torch.set_num_threads(saved)
    for got in (first, cached):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_frozen_scope_reaches_the_reverse_directions_thread():
    """gru_stack runs a layer's two directions on two threads, and the frozen scope is per
    thread: the reverse direction's thread must see the caller's, so every recurrent product
    of this shape (used by no other test) is chosen and prepared as a frozen site."""
    fast_s2s.set_gemm_backend("auto")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        mod = fast_s2s.nn.GRU(20, 37, bidirectional=True).eval()
        with torch.no_grad(), fast_s2s.frozen_weights():
            mod(torch.randn(7, 3, 20))
    finally:
        torch.set_num_threads(threads)
    sites = [line.split(" m<=")[0] for line in fast_s2s.gemm_report().choices if "k=37 " in line]
    assert "gru_layer.recurrent.frozen" in sites
    assert "gru_layer.recurrent" not in sites, sites


def test_frozen_scope_is_reported_in_the_gemm_choices():
    fast_s2s.set_gemm_backend("auto")
    x, h, w = torch.randn(3, 40), torch.randn(3, 32), _weights(40, 32, torch.float32)
    with fast_s2s.frozen_weights():
        fast_s2s.gru_cell(x, h, *w, backend="cpp")
        fast_s2s.gru_layer(x[None], h, *w, backend="cpp")
    fast_s2s.gru_cell(x, h, *w, backend="cpp")
    sites = [line.split(" m<=")[0] for line in fast_s2s.gemm_report().choices]
    assert "gru_cell.frozen" in sites and "gru_cell" in sites
    assert "gru_layer.recurrent.frozen" in sites and "gru_layer.input.frozen" in sites


@pytest.mark.parametrize("threads", [1, 2])
def test_frozen_encoder_on_auto_follows_its_input_weights(threads):
    """On auto, a frozen encoder measures its input projection's backends with W_ih prepared
    once (gru_layer.input.frozen) and keeps the packed one: it agrees with torch.nn.GRU, from
    the cache too, and after its W_ih is updated in place."""
    fast_s2s.set_gemm_backend("auto")
    torch.manual_seed(6)
    mod = fast_s2s.nn.GRU(96, 80, num_layers=2, bidirectional=True).eval()
    x = torch.randn(25, 1, 96)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for update in (None, "weight_ih_l0", "weight_ih_l1_reverse"):
            if update is not None:
                with torch.no_grad():
                    getattr(mod, update).mul_(-0.5)
            peer = torch.nn.GRU(96, 80, num_layers=2, bidirectional=True)
            peer.load_state_dict(mod.state_dict())
            with torch.no_grad(), fast_s2s.frozen_weights():
                for _ in range(2):  # prepared, then from the cache
                    got, want = mod(x), peer(x)
                    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-5)
                    torch.testing.assert_close(got[1], want[1], atol=1e-5, rtol=1e-5)
    finally:
        torch.set_num_threads(saved)
    assert any(line.startswith("gru_layer.input.frozen m<=32 n=240 k=96 ")
               for line in fast_s2s.gemm_report().choices)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reverse", [False, True])
def test_gru_layer_forward_backward_matches_reference(gemm_backend, dtype, reverse):
    T, B, I, H = 40, 16, 256, 320  # H not a multiple of the thread split: uneven unit blocks
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(B, H, dtype=dtype, requires_grad=True)
    w = _weights(I, H, dtype, grad=True)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    out, h_n = fast_s2s.gru_layer(x, h0, *w, lengths=lengths, reverse=reverse, backend="cpp")
    ref_in = _f64([x, h0, *w])
    ref_out, ref_h = reference.gru_layer(*ref_in, lengths, reverse)
    torch.testing.assert_close(out.double(), ref_out, **TOL[dtype])
    torch.testing.assert_close(h_n.double(), ref_h, **TOL[dtype])
    gen = torch.Generator().manual_seed(2)
    g_out = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    g_h = torch.randn(h_n.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(
        (out.double() * g_out).sum() + (h_n.double() * g_h).sum(), [x, h0, *w]
    )
    want = torch.autograd.grad((ref_out * g_out).sum() + (ref_h * g_h).sum(), ref_in)
    for name, g, r in zip(("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"), grads, want, strict=True):
        torch.testing.assert_close(
            g.double(), r, **TOL[dtype], msg=lambda m, n=name: f"grad {n}: {m}"
        )


@pytest.mark.parametrize("threads", [1, 2])  # 2: each direction on its own thread, one block
@pytest.mark.parametrize("T", [1, 3, 40])  # few steps and many: the choice weighs the packing
@pytest.mark.parametrize("H", [20, 48])  # 20: partial panels, a depth not a multiple of 16
def test_gru_module_inference_matches_torch_on_every_backend(gemm_backend, T, H, threads):
    """The one-op inference path (gru_stack: the running state in per-thread buffers, h_n
    written in place, W_hh packed by 16 x 16 transposes, the three gates' rows in one product
    when one block holds every unit) against torch.nn.GRU: two layers, both directions, padded
    rows; run twice in one process with sizes changing between calls, so a buffer kept from an
    earlier call is never read as state."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _check_module_inference_against_torch(T, H)
    finally:
        torch.set_num_threads(previous)


def _check_module_inference_against_torch(T: int, H: int) -> None:
    torch.manual_seed(0)
    ours = fast_s2s.nn.GRU(13, H, num_layers=2, bidirectional=True).eval()
    theirs = torch.nn.GRU(13, H, num_layers=2, bidirectional=True).eval()
    theirs.load_state_dict(ours.state_dict())
    x, h0 = torch.randn(T, 3, 13), torch.randn(4, 3, H)
    lengths = torch.tensor([T, max(1, T // 2), 1])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    with torch.no_grad():
        want, want_h = theirs(packed, h0)
        want = torch.nn.utils.rnn.pad_packed_sequence(want, total_length=T)[0]
        for _ in range(2):
            out, h_n = ours(x, h0, lengths=lengths)
            torch.testing.assert_close(out, want, atol=2e-5, rtol=2e-5)
            torch.testing.assert_close(h_n, want_h, atol=2e-5, rtol=2e-5)
            ours(torch.randn(2 * T + 1, 5, 13))  # other sizes in between


@pytest.mark.parametrize("threads", [1, 2])  # 2: each direction on its own thread
@pytest.mark.parametrize("longest", [50, 45])  # three full chunks of 16 steps, or two
def test_auto_prepares_w_ih_once_per_call_over_its_chunks(threads, longest):
    """On auto, outside a frozen scope, a one-thread input projection of several 256-row chunks
    may prepare W_ih once for the call (site gru_layer.input.call) and a shorter last chunk
    takes the one-shot product: against torch.nn.GRU over 50 steps of 16 rows, padded, forward
    and the gradients of a layer, with W_ih updated in place between calls."""
    fast_s2s.set_gemm_backend("auto")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        ours = fast_s2s.nn.GRU(40, 48, num_layers=2, bidirectional=True)
        theirs = torch.nn.GRU(40, 48, num_layers=2, bidirectional=True)
        theirs.load_state_dict(ours.state_dict())
        x, h0 = torch.randn(50, 16, 40), torch.randn(4, 16, 48)
        lengths = torch.tensor([longest] + [max(1, longest - 3 * i) for i in range(1, 16)])
        for _ in range(2):
            with torch.no_grad():
                packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
                want = torch.nn.utils.rnn.pad_packed_sequence(
                    theirs(packed, h0)[0], total_length=50
                )
                torch.testing.assert_close(ours(x, h0, lengths=lengths)[0], want[0], **TOL[x.dtype])
                for gru in (ours, theirs):
                    gru.weight_ih_l0.mul_(0.5)  # in place: the next call must see it
        assert any(
            c.startswith("gru_layer.input.call m<=256") for c in fast_s2s.gemm_report().choices
        )
        inputs = [x.clone(), h0[0].clone(), *_weights(40, 48, torch.float32)]
        inputs = [t.requires_grad_() for t in inputs]
        got = fast_s2s.gru_layer(*inputs, lengths, backend="cpp")[0]
        f64 = _f64(inputs)
        want = reference.gru_layer(*f64, lengths)[0]
        torch.testing.assert_close(got.double(), want, **TOL[torch.float32])
        seed = torch.randn_like(want)
        grads = torch.autograd.grad(got, inputs, seed.float())
        for g, r in zip(grads, torch.autograd.grad(want, f64, seed), strict=True):
            torch.testing.assert_close(g.double(), r, atol=1e-3, rtol=1e-3)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("D", [96, 100])  # 100: a partial column panel for the panel kernel
@pytest.mark.parametrize("T", [1, 12])
def test_dot_attention_matrix_path_matches_reference(gemm_backend, T, D):
    B, beam, S = 4, 3, 37  # beam * T rows per source row: the matrix-product path
    q = torch.randn(B * beam, T, D, requires_grad=True)
    k = torch.randn(B, S, D, requires_grad=True)
    v = torch.randn(B, S, D, requires_grad=True)
    lengths = torch.tensor([S, 20, 1, 33])
    ctx, wts = fast_s2s.dot_attention(q, k, v, lengths, backend="cpp")
    ref_in = _f64([q, k, v])
    ref_ctx, ref_w = reference.dot_attention(*ref_in, lengths)
    torch.testing.assert_close(ctx.double(), ref_ctx, **TOL[torch.float32])
    torch.testing.assert_close(wts.double(), ref_w, **TOL[torch.float32])
    g = torch.randn(ctx.shape, dtype=torch.float64)
    grads = torch.autograd.grad((ctx.double() * g).sum(), [q, k, v])
    want = torch.autograd.grad((ref_ctx * g).sum(), ref_in)
    for got, ref in zip(grads, want, strict=True):
        torch.testing.assert_close(got.double(), ref, **TOL[torch.float32])


def test_pinned_backend_is_deterministic(gemm_backend):
    T, B, H = 30, 16, 512
    x, h0 = torch.randn(T, B, H), torch.randn(B, H)
    w = _weights(H, H, torch.float32)
    first = fast_s2s.gru_layer(x, h0, *w, backend="cpp")
    second = fast_s2s.gru_layer(x, h0, *w, backend="cpp")
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_backends_agree_closely():
    """Different backends may round differently, but not by more than float32 rounding."""
    T, B, H = 30, 16, 512
    x, h0 = torch.randn(T, B, H), torch.randn(B, H)
    w = _weights(H, H, torch.float32)
    outputs = {}
    for name in BACKENDS:
        fast_s2s.set_gemm_backend(name)
        outputs[name] = fast_s2s.gru_layer(x, h0, *w, backend="cpp")[0]
    fast_s2s.set_gemm_backend("auto")
    first = next(iter(outputs.values()))
    for out in outputs.values():
        torch.testing.assert_close(out, first, atol=1e-5, rtol=1e-5)


def test_auto_measures_every_candidate_and_reports_it():
    fast_s2s.set_gemm_backend("auto")
    x, h0 = torch.randn(5, 8, 64), torch.randn(8, 64)
    fast_s2s.gru_layer(x, h0, *_weights(64, 64, torch.float32), backend="cpp")
    report = fast_s2s.gemm_report()
    assert report.forced == "auto"
    line = next(c for c in report.choices if c.startswith("gru_layer.recurrent m<=8 n=192 k=64"))
    chosen = line.split(": ", 1)[1].split(" ")[0]
    assert chosen in report.available
    timed, prepared = line.split("best us:", 1)[1].split("prepare us:")
    for name in report.available:  # every candidate's product and packing were timed
        assert f" {name} " in timed
        assert f" {name} " in prepared


def test_pinned_choice_is_reported_as_forced():
    fast_s2s.set_gemm_backend("inhouse")
    try:
        fast_s2s.gru_cell(torch.randn(2, 8), torch.randn(2, 16), *_weights(8, 16, torch.float32))
        report = fast_s2s.gemm_report()
        assert report.forced == "inhouse"
        assert any(
            c.startswith("gru_cell ") and c.endswith(": inhouse (forced)") for c in report.choices
        )
    finally:
        fast_s2s.set_gemm_backend("auto")


def test_deterministic_algorithms_run_blas_without_measuring():
    """Under torch.use_deterministic_algorithms(True) auto measures nothing: every product runs
    on blas (bit for bit what pinned blas computes, so runs repeat exactly) and is reported so;
    switched off, auto measures again."""
    T, B, H = 20, 4, 96
    x, h0, w = torch.randn(T, B, H), torch.randn(B, H), _weights(H, H, torch.float32)

    def run():
        return [*fast_s2s.gru_layer(x, h0, *w, backend="cpp"), fast_s2s.gru_cell(x[0], h0, *w)]

    fast_s2s.set_gemm_backend("blas")
    try:
        pinned = run()
    finally:
        fast_s2s.set_gemm_backend("auto")
    torch.use_deterministic_algorithms(True)
    try:
        got, report = run(), fast_s2s.gemm_report()
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a, b) for a, b in zip(got, pinned, strict=True))
    assert report.forced == "auto" and not report.bf16_native
    assert report.choices
    assert all(c.endswith(": blas (deterministic algorithms)") for c in report.choices)
    run()
    measured = [c for c in fast_s2s.gemm_report().choices if "best us:" in c]
    assert any(c.startswith("gru_layer.recurrent m<=4 n=288 k=96") for c in measured)


def test_set_gemm_backend_refuses_unknown_names():
    with pytest.raises(ValueError, match="set_gemm_backend: name must be one of"):
        fast_s2s.set_gemm_backend("mkl")


def _run_with_env(value: str) -> subprocess.CompletedProcess:
    code = (
        "import torch, fast_s2s;"
        "fast_s2s.gru_cell(torch.randn(2, 8), torch.randn(2, 16), *[torch.randn(s) for s in "
        "((48, 8), (48, 16))]);"
        "print(fast_s2s.gemm_report().forced)"
    )
    env = {**os.environ, "FAST_S2S_GEMM": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_environment_variable_pins_a_backend():
    result = _run_with_env("blas")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "blas"


def test_environment_variable_with_a_bad_value_is_refused_by_name():
    result = _run_with_env("fastest")
    assert result.returncode != 0
    assert (
        "FAST_S2S_GEMM must be auto, mkl_packed, blas, inhouse, panel or mkl_bf16, got 'fastest'"
        in result.stderr
    )
