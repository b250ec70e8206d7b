"""bfloat16 GRU products on the CPU's own bfloat16 instructions (gemm::mm_bf16, MKL's bf16 GEMM;
the backward's weight gradients in torch's bf16 mm): used exactly where the CPU has them, the
kernels are built for AVX-512 and no GEMM backend is pinned; the cell and the layer then still
give the reference's results (bfloat16 inputs multiplied exactly, sums and the state in float32)
at the sizes users run, forward and backward, with saturating gates; a pinned backend runs them
in float32 as before."""

from __future__ import annotations

import pytest
import torch

import fast_s2s
import fast_s2s.nn
from fast_s2s import _extension, reference

pytestmark = pytest.mark.skipif(
    not _extension.extension_loaded(), reason="the C++ extension is not built"
)

# One bfloat16 rounding of outputs of magnitude up to 1 (2^-8), plus float32 sums in another
# order carried through the recurrence.
BF16_TOL = dict(atol=1e-2, rtol=1e-2)


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


NATIVE = _extension.extension_loaded() and fast_s2s.gemm_report().bf16_native
needs_native = pytest.mark.skipif(
    not NATIVE, reason="no native bfloat16 products here (CPU, build or MKL)"
)


def _weights(I: int, H: int, scale: float = 1.0, grad: bool = False):
    gen = torch.Generator().manual_seed(3)
    shapes = ((3 * H, I), (3 * H, H), (3 * H,), (3 * H,))
    return [
        ((torch.rand(s, generator=gen) * 2 - 1) * scale * H**-0.5).bfloat16().requires_grad_(grad)
        for s in shapes
    ]


def _sites(kind: str) -> list[str]:
    return [line for line in fast_s2s.gemm_report().choices if line.endswith(kind) or kind in line]


@pytest.mark.skipif(not _cpu_flags(), reason="no /proc/cpuinfo to compare with")
def test_native_exactly_where_the_cpu_build_and_mkl_have_it():
    report = fast_s2s.gemm_report()
    flags = _cpu_flags()
    expected = (
        bool({"avx512_bf16", "amx_bf16"} & flags)
        and _extension.cpu_capability() == "avx512"
        and bool(report.mkl)
        and report.forced == "auto"
    )
    assert report.bf16_native == expected


@needs_native
@pytest.mark.parametrize("B", [1, 64])
@pytest.mark.parametrize("scale", [1.0, 16.0])  # 16: gates saturate
def test_cell_matches_reference(B, scale):
    I = H = 512
    gen = torch.Generator().manual_seed(B)
    x = (torch.randn(B, I, generator=gen) * scale).bfloat16()
    h = torch.randn(B, H, generator=gen).clamp(-1, 1).bfloat16()
    w = _weights(I, H, scale)
    got = fast_s2s.gru_cell(x, h, *w, backend="cpp")
    want = reference.gru_cell(*(t.double() for t in (x, h, *w)))
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, **BF16_TOL)
    assert any(" BFloat16 " in s and s.startswith("gru_cell ") for s in _sites("mkl_bf16"))


def _assert_grads_close(got_leaves, want_leaves, rel=2e-2):
    """Each gradient within rel of its largest magnitude: bfloat16 gradients are rounded to
    8 bits, and a gradient's small entries are sums of large terms."""
    for got, want in zip(got_leaves, want_leaves, strict=True):
        scale = want.grad.abs().max().item()
        err = (got.grad.double() - want.grad).abs().max().item()
        assert err <= rel * max(scale, 1.0), (tuple(want.shape), err, scale)


@needs_native
@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_cell_backward_matches_reference(scale):
    B, I, H = 64, 512, 512
    gen = torch.Generator().manual_seed(11)
    x = (torch.randn(B, I, generator=gen) * scale).bfloat16().requires_grad_(True)
    h = torch.randn(B, H, generator=gen).clamp(-1, 1).bfloat16().requires_grad_(True)
    w = _weights(I, H, scale, grad=True)
    leaves = [t.detach().double().requires_grad_(True) for t in (x, h, *w)]
    g = torch.randn(B, H, generator=gen)
    (fast_s2s.gru_cell(x, h, *w, backend="cpp").float() * g).sum().backward()
    (reference.gru_cell(*leaves) * g.double()).sum().backward()
    _assert_grads_close((x, h, *w), leaves)
    sites = [s.split(" m<=")[0] for s in _sites("mkl_bf16")]
    assert "gru_cell.grad_x" in sites and "gru_cell.grad_h" in sites, sites


@needs_native
def test_layer_forward_backward_match_reference_with_ragged_lengths():
    T, B, I, H = 50, 16, 512, 512
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(T, B, I, generator=gen).bfloat16().requires_grad_(True)
    h0 = torch.randn(B, H, generator=gen).clamp(-1, 1).bfloat16().requires_grad_(True)
    w = _weights(I, H, grad=True)
    lengths = torch.tensor([T, T // 4, 3 * T // 4, 1] * (B // 4))
    out, h_n = fast_s2s.gru_layer(x, h0, *w, lengths=lengths, backend="cpp")
    leaves = [t.detach().double().requires_grad_(True) for t in (x, h0, *w)]
    ref_out, ref_h = reference.gru_layer(*leaves, lengths=lengths)
    torch.testing.assert_close(out.double(), ref_out, **BF16_TOL)
    torch.testing.assert_close(h_n.double(), ref_h, **BF16_TOL)
    assert any(s.startswith("gru_layer.input ") for s in _sites("mkl_bf16"))
    gen_g = torch.Generator().manual_seed(6)
    g_out = torch.randn(out.shape, generator=gen_g)
    (out.float() * g_out).sum().backward()
    (ref_out * g_out.double()).sum().backward()
    _assert_grads_close((x, h0, *w), leaves)


@needs_native
def test_module_matches_torch_nn_gru_in_float64():
    torch.manual_seed(0)
    ours = fast_s2s.nn.GRU(256, 256, num_layers=2, bidirectional=True)
    ours = ours.bfloat16()
    # the same bfloat16 weights, exactly, in float64: torch.nn's answer is then the exact one
    peer = torch.nn.GRU(256, 256, num_layers=2, bidirectional=True).double()
    peer.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(25, 4, 256).bfloat16()
    with torch.no_grad():
        got, got_h = ours(x)
        want, want_h = peer(x.double())
    torch.testing.assert_close(got.double(), want, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(got_h.double(), want_h, atol=2e-2, rtol=2e-2)


def test_pinned_backend_runs_bfloat16_in_float32():
    I = H = 256
    x, h = torch.randn(8, I).bfloat16(), torch.randn(8, H).clamp(-1, 1).bfloat16()
    w = _weights(I, H)
    want = reference.gru_cell(*(t.double() for t in (x, h, *w)))
    fast_s2s.set_gemm_backend("blas")
    try:
        assert not fast_s2s.gemm_report().bf16_native
        got = fast_s2s.gru_cell(x, h, *w, backend="cpp")
        assert not _sites("mkl_bf16")
        assert any(s.startswith("gru_cell ") for s in fast_s2s.gemm_report().choices)
    finally:
        fast_s2s.set_gemm_backend("auto")
    torch.testing.assert_close(got.double(), want, **BF16_TOL)


@needs_native
def test_split_recurrent_product_keeps_float32_precision():
    """mkl_bf16's recurrent product splits the float32 state into two bfloat16 parts: the saved
    float32 gates and states agree with the float32 path's (blas) to float32 rounding over 50
    steps, where one bfloat16 part alone would be off by ~2^-9."""
    T, B, I, H = 50, 16, 256, 256
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(T, B, I, generator=gen).bfloat16()
    h0 = torch.randn(B, H, generator=gen).clamp(-1, 1).bfloat16()
    w = _weights(I, H, scale=2.0)
    lengths = torch.tensor([T, 7, 31, 1] * (B // 4))
    works = {}
    try:
        for name in ("mkl_bf16", "blas"):
            fast_s2s.set_gemm_backend(name)
            out, h_n, works[name] = torch.ops.fast_s2s.gru_layer(x, h0, *w, lengths=lengths)
            recurrent = [s for s in fast_s2s.gemm_report().choices if "recurrent " in s]
            assert recurrent and all(f": {name} (forced)" in s for s in recurrent), recurrent
    finally:
        fast_s2s.set_gemm_backend("auto")
    assert works["blas"].dtype == torch.float32
    diff = (works["mkl_bf16"] - works["blas"]).abs().max().item()
    assert diff <= 2e-5, diff


@needs_native
def test_pinned_mkl_bf16_runs_float32_products_on_blas():
    I = H = 128
    x, h = torch.randn(4, I), torch.randn(4, H).clamp(-1, 1)
    w = [t.float() for t in _weights(I, H)]
    fast_s2s.set_gemm_backend("mkl_bf16")
    try:
        got = fast_s2s.gru_cell(x, h, *w, backend="cpp")
        choices = fast_s2s.gemm_report().choices
    finally:
        fast_s2s.set_gemm_backend("auto")
    assert any(s.startswith("gru_cell ") and ": blas (forced)" in s for s in choices), choices
    want = reference.gru_cell(*(t.double() for t in (x, h, *w)))
    torch.testing.assert_close(got.double(), want, atol=2e-4, rtol=2e-4)


@needs_native
def test_frozen_bfloat16_layer_sees_in_place_weight_updates():
    """Inside frozen_weights() a bfloat16 layer's prepared W_hh may be kept across calls (its
    identity is the bfloat16 tensor's): an in-place update must still be seen."""
    T, B, I, H = 20, 8, 128, 128
    x = torch.randn(T, B, I).bfloat16()
    h0 = torch.zeros(B, H).bfloat16()
    w = _weights(I, H)
    with torch.no_grad(), fast_s2s.frozen_weights():
        first = fast_s2s.gru_layer(x, h0, *w, backend="cpp")[0]
        again = fast_s2s.gru_layer(x, h0, *w, backend="cpp")[0]
        w[1].mul_(-1.0)  # W_hh, in place
        updated = fast_s2s.gru_layer(x, h0, *w, backend="cpp")[0]
    assert torch.equal(first, again)
    want = reference.gru_layer(*(t.double() for t in (x, h0, *w)))[0]
    torch.testing.assert_close(updated.double(), want, **BF16_TOL)
    assert not torch.allclose(updated.double(), first.double(), **BF16_TOL)


@pytest.mark.skipif(
    NATIVE or (_extension.extension_loaded() and fast_s2s.gemm_report().forced != "auto"),
    reason="native bfloat16 products are available here (or a backend is pinned)",
)
def test_mkl_bf16_is_refused_by_name_where_unavailable():
    with pytest.raises(RuntimeError, match="'mkl_bf16' needs a CPU with AVX512-BF16"):
        fast_s2s.set_gemm_backend("mkl_bf16")
    assert fast_s2s.gemm_report().forced == "auto"


def _native_and_float32_grads(x0, h0, I: int, H: int, loss, after_run=lambda name: None):
    """The gradients of loss(x, h, weights) for x0, h0 and the weights, run with native bfloat16
    products ("auto") and in float32 ("blas" pinned); after_run(name) checks each run's sites."""
    grads = {}
    try:
        for name in ("auto", "blas"):
            fast_s2s.set_gemm_backend(name)
            x, h = x0.clone().requires_grad_(True), h0.clone().requires_grad_(True)
            w = _weights(I, H, grad=True)
            loss(x, h, w).backward()
            grads[name] = [t.grad for t in (x, h, *w)]
            after_run(name)
    finally:
        fast_s2s.set_gemm_backend("auto")
    return grads


def _assert_equal_but_at_rounding_ties(grads) -> None:
    for native, float32 in zip(grads["auto"], grads["blas"], strict=True):
        differing = (native != float32).float().mean().item()
        assert differing <= 0.02, (tuple(native.shape), differing)


@needs_native
def test_cell_backward_agrees_with_the_float32_path_bit_for_bit_almost_everywhere():
    """The backward's float32 gradients split in two bfloat16 parts keep float32's precision:
    after the final rounding to bfloat16 the gradients equal the float32 path's (pinned blas)
    but for rare ties at a rounding boundary (0.1-0.3% of entries here), where one bfloat16
    part alone changes about 40% of them."""
    B, I, H = 64, 512, 512
    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(B, I, generator=gen).bfloat16()
    h0 = torch.randn(B, H, generator=gen).clamp(-1, 1).bfloat16()
    g = torch.randn(B, H, generator=gen)

    def loss(x, h, w):
        return (fast_s2s.gru_cell(x, h, *w, backend="cpp").float() * g).sum()

    _assert_equal_but_at_rounding_ties(_native_and_float32_grads(x0, h0, I, H, loss))


@needs_native
def test_layer_backward_agrees_with_the_float32_path_bit_for_bit_almost_everywhere():
    """The layer's backward keeps float32's precision the same way (its dx and dW_ih products on
    the split gradient of the gates, dW_hh and the recurrence in float32): over 50 steps with
    ragged lengths its bfloat16 gradients equal the float32 path's (pinned blas) but at rounding
    ties."""
    T, B, I, H = 50, 16, 512, 512
    gen = torch.Generator().manual_seed(12)
    x0 = torch.randn(T, B, I, generator=gen).bfloat16()
    h0 = torch.randn(B, H, generator=gen).clamp(-1, 1).bfloat16()
    g = torch.randn(T, B, H, generator=gen)
    lengths = torch.tensor([T, T // 4, 3 * T // 4, 1] * (B // 4))

    def loss(x, h, w):
        out, _ = fast_s2s.gru_layer(x, h, *w, lengths=lengths, backend="cpp")
        return (out.float() * g).sum()

    def split_products_ran_only_natively(name):
        sites = [s.split(" m<=")[0] for s in _sites("mkl_bf16")]
        assert ("gru_layer.grad_x" in sites) == (name == "auto"), (name, sites)

    grads = _native_and_float32_grads(x0, h0, I, H, loss, split_products_ran_only_natively)
    _assert_equal_but_at_rounding_ties(grads)
