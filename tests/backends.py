"""The backends every op test runs over, the one tolerance table, and the comparisons.

A test of tests/ops/ (test_attention.py, test_gru.py, ...) takes a `Backend` as its first parameter
(pattern of pytorch/extension-cpp's test/test_extension.py and fla's tests/ops/: one test body,
every implementation). A backend says its name (the first part of a test id), the device of its
tensors, the dtypes its kernels take, how to call each op (Backend.function, or the methods
named after the ops), its custom ops (Backend.raw_op), and why it cannot run here
(Backend.skip_reason, a skip mark on its parameters):

    reference    fast_s2s.<op>(..., backend="reference"): plain PyTorch, autograd.
    cpp          fast_s2s.<op>(..., backend="cpp") on CPU tensors: the C++ kernels.
    triton       fast_s2s.kernels.<op> (what fast_s2s.<op>(..., backend="triton") calls after
                 its argument checks) on CPU tensors: the Triton kernels in Triton's
                 interpreter (TRITON_INTERPRET=1, set by conftest.py).
    emu          torch.ops.fast_s2s_emu.<op>: the CUDA kernels' own code (csrc/cuda/*.cu)
                 compiled as C++ with FAST_S2S_EMULATE_CUDA and run on the CPU under
                 csrc/cuda/emulate.h (one OS thread per CUDA thread, real barriers, warp
                 shuffles through a buffer, alignment checks on vector loads); built on first
                 use into build/cuda_emulation. Its ops get the same autograd as the compiled
                 ones (their backward ops), registered here.
    cuda         fast_s2s.<op>(..., backend="cpp") on CUDA tensors: the CUDA C++ kernels.
    triton_cuda  fast_s2s.kernels.<op> on CUDA tensors: compiled Triton.

The two GPU backends' tests carry the `cuda` marker: collected everywhere, skipped without a
GPU (conftest.py), run by `pytest -m cuda` (scripts/gpu_check.sh).
"""

from __future__ import annotations

import functools
import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension

import fast_s2s
from fast_s2s import _attention_autograd, _gru_autograd, _local_autograd, backends

ROOT = Path(__file__).resolve().parents[1]

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Backend:
    name: str
    kind: str  # "reference" | "cpp" | "triton" | "emu": what runs
    device: str  # "cpu" | "cuda": where its tensors live
    dtypes: tuple[torch.dtype, ...]  # the floating dtypes its kernels take
    gpu: bool = False  # needs a GPU: its tests are marked `cuda`

    def __repr__(self) -> str:
        return self.name

    @property
    def skip_reason(self) -> str | None:
        """Why this backend cannot run here (None: it can). No GPU is the `cuda` marker's."""
        return _skip_reason(self.kind, self.device)

    @property
    def marks(self) -> list:
        marks = [pytest.mark.cuda] if self.gpu else []
        if self.skip_reason is not None:
            marks.append(pytest.mark.skip(reason=self.skip_reason))
        return marks

    @property
    def compile_backend(self) -> str:
        """torch.compile's backend in the compile tests: aot_eager on the CPU (the fake
        functions and autograd, no code generation), inductor on a GPU."""
        return "inductor" if self.gpu else "aot_eager"

    def param(self, *values, id: str = ""):
        """pytest.param(self, *values) with this backend's marks, id "<name>-<id>"."""
        return pytest.param(
            self, *values, id=f"{self.name}-{id}" if id else self.name, marks=self.marks
        )

    @property
    def cuda_kernels(self) -> bool:
        """Runs the CUDA C++ kernels' code (on a GPU or emulated)."""
        return self.kind == "emu" or (self.kind == "cpp" and self.device == "cuda")

    # The ops, with the signatures of fast_s2s.ops.

    def function(self, op: str):
        """The callable that runs `op` here, with the signature of fast_s2s.<op> less backend=:
        fast_s2s.<op> with backend= for reference and cpp; for Triton the function of its
        package, fast_s2s.kernels.<op>, which fast_s2s.ops dispatches to after its argument
        checks (those refuse float16 on the CPU, where the interpreter takes it); the emulated
        ops wrapped to return what fast_s2s.<op> does. Resolve it outside a torch.compile'd
        function: what it returns is plain to trace."""
        if self.kind == "emu":
            return functools.partial(_EMULATED[op], emulated_ops())
        if self.kind == "triton":
            from fast_s2s import kernels

            return getattr(kernels, op)
        return functools.partial(getattr(fast_s2s, op), backend=self.kind)

    def dot_attention(self, query, keys, values, lengths=None, scale=1.0, *, need_weights=True):
        fn = self.function("dot_attention")
        return fn(query, keys, values, lengths, scale, need_weights=need_weights)

    def additive_attention(
        self, query_proj, keys_proj, v, values, lengths=None, *, need_weights=True
    ):
        fn = self.function("additive_attention")
        return fn(query_proj, keys_proj, v, values, lengths, need_weights=need_weights)

    def local_attention(
        self, query, keys, values, centers, window, lengths=None, scale=1.0, *, need_weights=True
    ):
        fn = self.function("local_attention")
        return fn(query, keys, values, centers, window, lengths, scale, need_weights=need_weights)

    def gru_cell(self, x, h, w_ih, w_hh, b_ih=None, b_hh=None):
        return self.function("gru_cell")(x, h, w_ih, w_hh, b_ih, b_hh)

    def gru_layer(self, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False):
        return self.function("gru_layer")(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse)

    def attention(self, op: str, args, need_weights: bool = True):
        """(context, weights or None) of `op` on a sample of tests.attention_cases."""
        return self.function(op)(*args, need_weights=need_weights)

    def raw_op(self, op: str):
        """The custom op behind `op` (forward or backward), for opcheck and the workspace
        outputs: torch.ops.fast_s2s / fast_s2s_emu / the Triton ops (attention: their _op)."""
        if self.kind in ("cpp", "emu"):
            lib = torch.ops.fast_s2s if self.kind == "cpp" else emulated_ops()
            return getattr(lib, op).default
        if self.kind == "triton":
            if op.startswith("gru"):
                return getattr(torch.ops.fast_s2s_triton, op).default
            if op.startswith("local_attention"):
                from fast_s2s.kernels import local_ops

                return getattr(local_ops, op + "_op")
            from fast_s2s.kernels import attention_ops

            return getattr(attention_ops, op + "_op")
        raise ValueError(f"{self.name} has no custom ops")


def _emu_dot_attention(emu, query, keys, values, lengths=None, scale=1.0, *, need_weights=True):
    context, weights = emu.dot_attention(query, keys, values, lengths, float(scale), need_weights)
    return context, weights if need_weights else None


def _emu_additive_attention(
    emu, query_proj, keys_proj, v, values, lengths=None, *, need_weights=True
):
    context, weights = emu.additive_attention(
        query_proj, keys_proj, v, values, lengths, need_weights
    )
    return context, weights if need_weights else None


def _emu_local_attention(
    emu, query, keys, values, centers, window, lengths=None, scale=1.0, *, need_weights=True
):
    context, weights = emu.local_attention(
        query, keys, values, centers, int(window), lengths, float(scale), need_weights
    )
    return context, weights if need_weights else None


def _emu_gru_cell(emu, x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    return emu.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)[0]


def _emu_gru_layer(emu, x, h0, w_ih, w_hh, b_ih=None, b_hh=None, lengths=None, reverse=False):
    output, h_n, _ = emu.gru_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, bool(reverse))
    return output, h_n


_EMULATED = {
    "dot_attention": _emu_dot_attention,
    "additive_attention": _emu_additive_attention,
    "local_attention": _emu_local_attention,
    "gru_cell": _emu_gru_cell,
    "gru_layer": _emu_gru_layer,
}

REFERENCE = Backend("reference", "reference", "cpu", (F32, F64, BF16))
CPP = Backend("cpp", "cpp", "cpu", (F32, F64, BF16))
TRITON = Backend("triton", "triton", "cpu", (F32, F64, F16, BF16))
EMU = Backend("emu", "emu", "cpu", (F32, F64, BF16, F16))
CUDA = Backend("cuda", "cpp", "cuda", (F32, F64, F16, BF16), gpu=True)
TRITON_CUDA = Backend("triton_cuda", "triton", "cuda", (F32, F16, BF16), gpu=True)
# Every backend with kernels of its own, in the order the tests list them.
KERNEL_BACKENDS = (CPP, TRITON, EMU, CUDA, TRITON_CUDA)


@functools.cache
def _skip_reason(kind: str, device: str) -> str | None:
    if kind == "reference":
        return None
    if kind == "emu":
        if not torch.utils.cpp_extension.is_ninja_available() or shutil.which("c++") is None:
            return "building the CUDA emulation needs ninja and a C++ compiler"
        return None
    # The library's own answer (no extension, extension without CUDA, no triton, Triton on the
    # CPU without the interpreter); the same for every op today.
    return backends.why_unavailable("dot_attention", kind, device)


# --------------------------------------------------------------------------------------------
# The emulated CUDA ops
# --------------------------------------------------------------------------------------------


@functools.cache
def emulated_ops():
    """torch.ops.fast_s2s_emu, built once into build/cuda_emulation (about a minute) from
    tests/cuda_emulation/*.cpp (which include csrc/cuda/*.cu) and the host code the CPU and
    CUDA kernels share (csrc/common), with autograd registered."""
    here = Path(__file__).resolve().parent / "cuda_emulation"
    build = ROOT / "build" / "cuda_emulation"
    build.mkdir(parents=True, exist_ok=True)
    sources = [
        here / "library.cpp",
        here / "attention_forward_emulated.cpp",
        here / "attention_backward_emulated.cpp",
        here / "local_attention_emulated.cpp",
        here / "gru_emulated.cpp",
        *sorted((ROOT / "csrc" / "common").glob("*.cpp")),  # what the CPU and CUDA code share
    ]
    torch.utils.cpp_extension.load(
        name="fast_s2s_cuda_emulation",
        sources=[str(s) for s in sources],
        extra_cflags=[
            "-O1",
            "-std=c++20",
            "-pthread",
            "-DFAST_S2S_EMULATE_CUDA",
            "-DCPU_CAPABILITY=DEFAULT",
            "-DCPU_CAPABILITY_DEFAULT",
            "-Wno-unknown-pragmas",
        ],
        extra_ldflags=["-pthread"],
        extra_include_paths=[str(ROOT / "csrc")],
        build_directory=str(build),
        is_python_module=False,
    )
    _register_emulated_autograd(torch.ops.fast_s2s_emu)
    return torch.ops.fast_s2s_emu


def _register_emulated_autograd(emu) -> None:
    """The compiled ops' autograd for the emulated ones, from the same factories
    (fast_s2s._attention_autograd, _local_autograd, _gru_autograd) around the emulated backward
    ops."""
    lib = "fast_s2s_emu::"
    for score in ("dot", "additive"):
        backward_op = getattr(emu, f"{score}_attention_backward")
        backward, setup = _attention_autograd.autograd(score, backward_op)
        torch.library.register_autograd(f"{lib}{score}_attention", backward, setup_context=setup)
    backward, setup = _local_autograd.autograd(emu.local_attention_backward)
    torch.library.register_autograd(lib + "local_attention", backward, setup_context=setup)
    backward, setup = _gru_autograd.cell_autograd(emu.gru_cell_backward)
    torch.library.register_autograd(lib + "gru_cell", backward, setup_context=setup)
    backward, setup = _gru_autograd.layer_autograd(emu.gru_layer_backward)
    torch.library.register_autograd(lib + "gru_layer", backward, setup_context=setup)


# --------------------------------------------------------------------------------------------
# Tolerances
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tol:
    """How close an output (or a gradient) of a backend must be to the reference's.

    atol/rtol: elementwise (torch.testing.assert_close) against the reference run in the same
    dtype, or in `against` (16-bit gradients on Triton's GPU backend); None: no elementwise
    check. flash_floor: FlashAttention's criterion, the error against the float64 reference at
    most twice the reference's own error in that dtype plus this floor; None: not checked.
    """

    atol: float | None
    rtol: float | None
    flash_floor: float | None = None
    against: torch.dtype | None = None

    @property
    def close(self) -> dict:
        return dict(atol=self.atol, rtol=self.rtol)


# The one tolerance table: "forward" for the outputs of every op, "attention_grad" and
# "gru_grad" for the input gradients, by dtype. 16-bit outputs get both checks: within atol/rtol
# of the reference in that dtype, and the FlashAttention criterion against float64. Measured on
# the CPU backends (cpp, triton, emu) over the tests' cases, as a fraction of the bound: float32
# outputs at most 0.23 (cpp's attention), float64 0.003, 16-bit elementwise 0.19, the
# FlashAttention criterion 0.9 (Triton's bfloat16 GRU in the interpreter; the others 0.56 at
# most), float32 gradients 0.41 (cpp's attention; its GRU's 0.22).
TOLERANCES: dict[str, dict[torch.dtype, Tol]] = {
    "forward": {
        F64: Tol(atol=1e-12, rtol=1e-10),
        F32: Tol(atol=1e-5, rtol=1e-5),
        BF16: Tol(atol=2e-2, rtol=2e-2, flash_floor=1e-3),
        F16: Tol(atol=2e-3, rtol=2e-3, flash_floor=1e-3),
    },
    # Attention gradients sum over every query row of a source row and over S: twice the float32
    # tolerance of the GRU's.
    "attention_grad": {
        F64: Tol(atol=1e-10, rtol=1e-9),
        F32: Tol(atol=2e-5, rtol=2e-5),
    },
    "gru_grad": {
        F64: Tol(atol=1e-10, rtol=1e-9),
        F32: Tol(atol=1e-5, rtol=1e-5),
    },
}

# Where a backend truly needs another entry: (backend name, table) -> {dtype: Tol}.
OVERRIDES: dict[tuple[str, str], dict[torch.dtype, Tol]] = {
    # Triton's interpreter casts float32 to bfloat16 by truncation (a GPU rounds to nearest
    # even): its bfloat16 attention error reaches one ulp, not half, which the FlashAttention
    # criterion refuses (measured: 1.2 times the bound). The elementwise check stays; the GPU
    # backend checks the criterion. (Its bfloat16 GRU outputs pass the criterion.)
    ("triton", "forward/attention"): {BF16: Tol(atol=2e-2, rtol=2e-2)},
    # The two GPU backends have never run on a GPU (none here either): they keep the
    # tolerances they had before the tests were merged (tests/test_cuda_ops.py,
    # tests/test_triton_*.py), so that no check this machine cannot run is tightened blindly.
    # Tighten them to the table after a GPU run of scripts/gpu_check.sh.
    ("cuda", "forward/attention"): {
        F64: Tol(atol=1e-10, rtol=1e-9),
        F32: Tol(atol=2e-5, rtol=2e-5),
        F16: Tol(atol=None, rtol=None, flash_floor=2e-3),
        BF16: Tol(atol=None, rtol=None, flash_floor=2e-3),
    },
    ("cuda", "forward/gru"): {
        F64: Tol(atol=1e-10, rtol=1e-9),
        F32: Tol(atol=2e-5, rtol=2e-5),
        F16: Tol(atol=None, rtol=None, flash_floor=1e-2),
        BF16: Tol(atol=None, rtol=None, flash_floor=1e-2),
    },
    ("cuda", "attention_grad"): {
        F32: Tol(atol=1e-4, rtol=1e-4),
        BF16: Tol(atol=6e-2, rtol=6e-2),  # against the reference in bfloat16
    },
    ("cuda", "gru_grad"): {F32: Tol(atol=1e-4, rtol=1e-4)},
    ("triton_cuda", "forward/attention"): {
        F32: Tol(atol=2e-5, rtol=2e-5),
        F16: Tol(atol=None, rtol=None, flash_floor=1e-3),
        BF16: Tol(atol=None, rtol=None, flash_floor=1e-3),
    },
    ("triton_cuda", "forward/gru"): {
        F16: Tol(atol=None, rtol=None, flash_floor=1e-3),
        BF16: Tol(atol=None, rtol=None, flash_floor=1e-3),
    },
    # Low-precision attention gradients against a float32 reference: bounded by the rounding
    # of the inputs.
    ("triton_cuda", "attention_grad"): {
        F32: Tol(atol=5e-5, rtol=5e-5),
        F16: Tol(atol=1e-2, rtol=1e-2, against=F32),
        BF16: Tol(atol=5e-2, rtol=5e-2, against=F32),
    },
    ("triton_cuda", "gru_grad"): {
        F16: Tol(atol=5e-2, rtol=5e-2),  # against the reference in the same dtype
        BF16: Tol(atol=5e-2, rtol=5e-2),
    },
}


def tolerance(backend: Backend, table: str, dtype: torch.dtype, family: str = "") -> Tol:
    """TOLERANCES[table][dtype], or the backend's override; `family` ("attention" or "gru")
    picks a forward override."""
    for key in ((backend.name, f"{table}/{family}"), (backend.name, table)):
        if dtype in OVERRIDES.get(key, {}):
            return OVERRIDES[key][dtype]
    return TOLERANCES[table][dtype]


def assert_close_to_reference(got, low, exact, tol: Tol):
    """`got` (a backend's output) against the reference's output `low` in the same dtype and
    `exact` in float64 (the same inputs, cast), as `tol` says."""
    assert got.shape == low.shape, (got.shape, low.shape)
    assert not got.isnan().any(), "NaN in the output (an element left unwritten?)"
    if tol.atol is not None:
        torch.testing.assert_close(got, low, **tol.close)
    if tol.flash_floor is not None:
        fused_err = (got.double().cpu() - exact.double().cpu()).abs().max().item()
        ref_err = (low.double().cpu() - exact.double().cpu()).abs().max().item()
        assert fused_err <= 2 * ref_err + tol.flash_floor, (fused_err, ref_err)


def cast(args, dtype, requires_grad: bool = False):
    """The same arguments with every floating tensor detached and in `dtype`."""
    return tuple(
        a.detach().to(dtype).requires_grad_(requires_grad)
        if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    )


def transposed_storage(t):
    """The same values with transposed storage (non-contiguous); non-tensors, integer tensors
    and 1-D tensors come back unchanged. Kernels must not assume contiguity."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.dim() < 2:
        return t
    return t.transpose(0, -1).contiguous().transpose(0, -1)


def diff_inputs(args) -> list[torch.Tensor]:
    """The arguments that require a gradient."""
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, else float32: the dtype losses and gradients are compared in."""
    return F64 if dtype == F64 else F32


# --------------------------------------------------------------------------------------------
# Parametrisation
# --------------------------------------------------------------------------------------------


def _id(value) -> str:
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    if hasattr(value, "id"):
        return value.id
    return str(value)


def grid(backend: Backend, *axes) -> list:
    """Every combination of the axes' values for one backend: pytest.params (backend, *values)
    with its marks and ids "<backend>-<value>-<value>..." (an empty id part is left out)."""
    params = []
    for combo in itertools.product(*axes):
        parts = [_id(v) for v in combo]
        params.append(backend.param(*combo, id="-".join(p for p in parts if p)))
    return params
