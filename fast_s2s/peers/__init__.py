"""What a user would run instead of fast_s2s, written as they would write it: the peers
`fast-s2s bench` (fast_s2s/benchmark) measures against. PEER_IMPLEMENTATIONS names each, in
column order, with what runs behind its label (the rows' "implementation"); the CLI reads it
without importing torch. The peer systems that are more than a call have modules here:
attention (the composite attention, SDPA on 4-D views, local attention by gathering the
window), torch_gru (torch.nn.GRU on the given weights, a padded batch packed), torch_nn_seq2seq
(the Seq2Seq model from torch.nn modules), onnx_gru (a GRU as an ONNX graph of `GRU` nodes run
by ONNX Runtime or OpenVINO; optional: fast_s2s[peers])."""

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
