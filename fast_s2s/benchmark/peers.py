"""The peers a benchmark row can be measured against, in column order, and what runs behind
each label (the rows' "implementation"): the one list the CLI's --peers default, the registry and
the report read. No torch import here: the CLI builds its parser from it."""

from __future__ import annotations

PEER_IMPLEMENTATIONS: dict[str, str] = {
    "reference": "fast_s2s.reference (PyTorch)",
    "python-loop": "the Python search loop on backend='auto' (native=False)",
    "torch.nn": "the model from torch.nn modules, Python loop (fast_s2s/peers/torch_nn_seq2seq.py)",
    "composite": "bmm + softmax + bmm (PyTorch, input dtype)",
    "sdpa": "torch.nn.functional.scaled_dot_product_attention",
    "local-composite": "gather the window + bmm + masked softmax + Gaussian (PyTorch)",
    "global-fused": "fast_s2s.dot_attention over all S (the global fused op, auto backend)",
    "GRUCell": "torch.nn.GRUCell",
    "GRU": "torch.nn.GRU",
    "compile": "torch.compile(fast_s2s.reference)",
    "onnxruntime": "ONNX Runtime on an ONNX graph of GRU nodes, same weights (fast_s2s[peers])",
    "openvino": "OpenVINO on the same ONNX graph, f32 pinned (fast_s2s[peers])",
}
PEER_NAMES: tuple[str, ...] = tuple(PEER_IMPLEMENTATIONS)
