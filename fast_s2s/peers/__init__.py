"""What a user would run instead of fast_s2s, written as they would write it: the peer systems
`fast-s2s bench` times (fast_s2s/benchmark) that are more than one torch call. attention: the
composite attention, SDPA on 4-D views and local attention by gathering the window;
torch_nn_seq2seq: the Seq2Seq model from torch.nn modules; onnx_gru: a GRU as an ONNX graph of
`GRU` nodes, run by ONNX Runtime or OpenVINO (optional: fast_s2s[peers])."""
