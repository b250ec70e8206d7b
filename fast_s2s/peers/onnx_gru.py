"""ONNX Runtime and OpenVINO, the inference runtimes a user deploys a trained
GRU on: `gru_onnx_model` writes a torch.nn.GRU or GRUCell as ONNX `GRU` nodes
(linear_before_reset=1 is torch's formula), `make_runner` compiles it for one runtime; a call is
only the runtime's own, the inputs converted to numpy beforehand (`gru_inputs`). Both runtimes
are optional (the `peers` extra) and imported only when asked for.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable

import numpy as np
import torch

RUNTIMES = ("onnxruntime", "openvino")
EXTRA = "pip install 'fast_s2s[peers]'"
OPSET = 17
# The IR version of opset 17; newer IR versions are refused by older runtimes.
IR_VERSION = 8
# torch stacks the gates r, z, n; ONNX z, r, h (h is torch's n).
_TORCH_TO_ONNX_GATES = [1, 0, 2]


def runtime_unavailable(name: str) -> str | None:
    """Why runtime `name` cannot run here (its module or onnx, needed to build the model, is
    not importable), or None."""
    if name not in RUNTIMES:
        raise ValueError(f"runtime_unavailable: name must be one of {RUNTIMES}, got {name!r}")
    for module in (name, "onnx"):
        try:
            importlib.import_module(module)
        except ImportError:
            return f"{module} is not installed: {EXTRA}"
    return None


def runtime_version(name: str) -> str:
    """The runtime's release, e.g. "1.32.0" or "2026.4.1" (OpenVINO's build suffix dropped)."""
    return importlib.import_module(name).__version__.split("-")[0]


def _onnx_weights(w: torch.Tensor) -> np.ndarray:
    """A torch (3H, ...) gate-stacked weight or bias in ONNX's gate order, float32."""
    w = w.detach().to("cpu", torch.float32)
    return w.reshape(3, -1, *w.shape[1:])[_TORCH_TO_ONNX_GATES].reshape(w.shape).numpy()


def gru_onnx_model(
    gru: torch.nn.GRU | torch.nn.GRUCell,
    *,
    with_lengths: bool = False,
    steps: int | None = None,
    batch: int | None = None,
):
    """An onnx.ModelProto computing `gru` (time-major, float32) with ONNX GRU nodes.

    GRU: inputs "input" (T, B, I), "h0" (L * D, B, H) and with `with_lengths` "lengths" (B,)
    int32 in [1, T] (pack_padded_sequence semantics: zero output past a row's length, h_n from
    its last valid step, the backward direction starting there); outputs "output" (T, B, D * H)
    and "h_n" (L * D, B, H). GRUCell: inputs "input" (B, I), "hx" (B, H); output "h" (B, H), one
    GRU node over a sequence of 1. `steps` and `batch` fix T and B (symbolic when None).
    """
    from onnx import TensorProto, helper, numpy_helper

    cell = isinstance(gru, torch.nn.GRUCell)
    if not cell and gru.batch_first:
        raise ValueError("gru_onnx_model: batch_first is not supported (the model is time-major)")
    if cell and with_lengths:
        raise ValueError("gru_onnx_model: with_lengths applies to a GRU, not a GRUCell")
    hidden = gru.hidden_size
    dirs = 2 if not cell and gru.bidirectional else 1
    layers = 1 if cell else gru.num_layers
    T = "T" if steps is None else steps
    B = "B" if batch is None else batch
    nodes, inits = [], {}

    def const(name: str, array) -> str:  # an initializer, added once, on first use
        if name not in inits:
            array = np.asarray(array, np.int64 if isinstance(array, list) else None)
            inits[name] = numpy_helper.from_array(array, name)
        return name

    def param(layer: int, kind: str, direction: int) -> torch.Tensor:
        if cell:
            return getattr(gru, kind)
        return getattr(gru, f"{kind}_l{layer}" + ("_reverse" if direction else ""))

    def stacked(layer: int, kind: str) -> np.ndarray:
        return np.stack([_onnx_weights(param(layer, kind, d)) for d in range(dirs)])

    x = "input"
    if cell:
        nodes.append(helper.make_node("Unsqueeze", ["input", const("axis0", [0])], ["x_seq"]))
        nodes.append(helper.make_node("Unsqueeze", ["hx", "axis0"], ["h_seq"]))
        x = "x_seq"
    h_finals = []
    for layer in range(layers):
        b = ""
        if gru.bias:  # ONNX's B is [Wb; Rb] per direction
            b_ih, b_hh = stacked(layer, "bias_ih"), stacked(layer, "bias_hh")
            b = const(f"B{layer}", np.concatenate([b_ih, b_hh], axis=1))
        if cell:
            h0 = "h_seq"
        else:
            # this layer's initial states: h0[layer * dirs:(layer + 1) * dirs]
            h0 = f"h0_l{layer}"
            start, end = (const(f"at{k}", [k * dirs]) for k in (layer, layer + 1))
            nodes.append(helper.make_node("Slice", ["h0", start, end], [h0]))
        inputs = [
            x,
            const(f"W{layer}", stacked(layer, "weight_ih")),
            const(f"R{layer}", stacked(layer, "weight_hh")),
            b,
            "lengths" if with_lengths else "",
            h0,
        ]
        y, h_n = ("" if cell else f"Y{layer}"), f"h_n{layer}"
        nodes.append(
            helper.make_node(
                "GRU",
                inputs,
                [y, h_n],
                hidden_size=hidden,
                linear_before_reset=1,
                direction="bidirectional" if dirs == 2 else "forward",
            )
        )
        h_finals.append(h_n)
        # Y is (T, D, B, H); the next layer and the caller want (T, B, D * H).
        x = "output" if layer == layers - 1 else f"x{layer + 1}"
        if cell:
            continue
        if dirs == 1:
            nodes.append(helper.make_node("Squeeze", [y, const("axis1", [1])], [x]))
        else:
            nodes.append(helper.make_node("Transpose", [y], [f"{y}_t"], perm=[0, 2, 1, 3]))
            merge = const("merge_dirs", [0, 0, -1])  # Reshape's 0 keeps that dim
            nodes.append(helper.make_node("Reshape", [f"{y}_t", merge], [x]))

    f32 = TensorProto.FLOAT
    if cell:
        nodes.append(helper.make_node("Squeeze", [h_finals[0], "axis0"], ["h"]))
        graph_inputs = [
            helper.make_tensor_value_info("input", f32, [B, gru.input_size]),
            helper.make_tensor_value_info("hx", f32, [B, hidden]),
        ]
        graph_outputs = [helper.make_tensor_value_info("h", f32, [B, hidden])]
    else:
        nodes.append(helper.make_node("Concat", h_finals, ["h_n"], axis=0))
        graph_inputs = [
            helper.make_tensor_value_info("input", f32, [T, B, gru.input_size]),
            helper.make_tensor_value_info("h0", f32, [layers * dirs, B, hidden]),
        ]
        if with_lengths:
            graph_inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT32, [B]))
        graph_outputs = [
            helper.make_tensor_value_info("output", f32, [T, B, dirs * hidden]),
            helper.make_tensor_value_info("h_n", f32, [layers * dirs, B, hidden]),
        ]
    graph = helper.make_graph(
        nodes, type(gru).__name__, graph_inputs, graph_outputs, list(inits.values())
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    return model


def to_numpy(t: torch.Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """`t` as a contiguous numpy array of `dtype` for a runner's inputs; convert before
    timing."""
    return np.ascontiguousarray(t.detach().to("cpu", dtype).numpy())


def gru_inputs(
    x: torch.Tensor, h: torch.Tensor, lengths: torch.Tensor | None = None
) -> dict[str, np.ndarray]:
    """The inputs of a `gru_onnx_model` as numpy: x and h0 (a GRU) or x and hx (a GRUCell,
    told apart by x being 2-D), and lengths (int32) for a model built `with_lengths`."""
    inputs = {"input": to_numpy(x), ("hx" if x.dim() == 2 else "h0"): to_numpy(h)}
    if lengths is not None:
        inputs["lengths"] = to_numpy(lengths, torch.int32)
    return inputs


class Runner:
    """A model compiled for one runtime: call it with `gru_inputs(...)` to get the model's
    outputs (numpy, in graph order). `precision` is what the runtime reports it computes in,
    `description` one line naming the runtime, version, precision and threads."""

    def __init__(self, name: str, model, threads: int, precision: str = "f32") -> None:
        if name not in RUNTIMES:
            raise ValueError(f"make_runner: name must be one of {RUNTIMES}, got {name!r}")
        if precision not in ("f32", "default"):
            raise ValueError(
                f"make_runner: precision must be 'f32' or 'default', got {precision!r}"
            )
        if name == "onnxruntime":
            if precision != "f32":
                raise ValueError("make_runner: onnxruntime's CPU GRU runs in f32 only")
            self._call, self.precision = _onnxruntime(model, threads)
        else:
            self._call, self.precision = _openvino(model, threads, precision)
        self.name, self.threads = name, threads
        self.description = (
            f"{name} {runtime_version(name)} CPU, ONNX GRU (linear_before_reset=1), "
            f"{self.precision}, {threads} thread{'s' if threads != 1 else ''}"
        )

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._call(inputs)


def _onnxruntime(model, threads: int) -> tuple[Callable, str]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return (lambda inputs: session.run(None, inputs)), "f32"


def _openvino(model, threads: int, precision: str) -> tuple[Callable, str]:
    import openvino as ov

    core = ov.Core()
    ov_model = core.read_model(model.SerializeToString())
    if ov_model.is_dynamic() and any("lengths" in i.get_names() for i in ov_model.inputs):
        # Seen with OpenVINO 2026.4.1: with a symbolic T or B the CPU plugin runs every row to
        # T (nonzero outputs past the length, h_n from step T); fixed shapes are right.
        raise ValueError(
            "make_runner: OpenVINO ignores the lengths of a model with symbolic shapes; "
            "build it with gru_onnx_model(..., steps=T, batch=B)"
        )
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision == "f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = core.compile_model(ov_model, "CPU", config)
    request = compiled.create_infer_request()  # reused: no per-call request set-up
    outputs = compiled.outputs

    def call(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = request.infer(inputs, share_inputs=True)
        return [results[port] for port in outputs]

    # Read back rather than trust the hint: the default is bf16 on CPUs with native bf16.
    return call, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def runtime_call(
    name: str, gru: torch.nn.GRU | torch.nn.GRUCell, x: torch.Tensor, h: torch.Tensor,
    lengths: torch.Tensor | None, threads: int, precision: str = "f32",
) -> Callable[[], list[np.ndarray]]:  # fmt: skip
    """A call running `gru` (float32, on the CPU) in runtime `name` on x and h (gru_inputs; the
    graph's shapes fixed to x's), the inputs converted once, outside the call; its
    `implementation` is the runner's description."""
    T, B = (None, x.shape[0]) if x.dim() == 2 else x.shape[:2]
    graph = gru_onnx_model(gru, with_lengths=lengths is not None, steps=T, batch=B)
    runner = make_runner(name, graph, threads, precision=precision)
    call = functools.partial(runner, gru_inputs(x, h, lengths))
    call.implementation = runner.description  # type: ignore[attr-defined]
    return call


def make_runner(name: str, model, threads: int, *, precision: str = "f32") -> Runner:
    """Compile `model` (an onnx.ModelProto) for runtime `name` on the CPU with `threads`
    threads. precision: "f32" pins OpenVINO to float32; "default" is OpenVINO's own choice
    (bf16 on CPUs with native bf16), for a bf16 row. ONNX Runtime runs f32 only."""
    return Runner(name, model, threads, precision)
