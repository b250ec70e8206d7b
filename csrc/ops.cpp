// Every fast_s2s op schema, declared once. Kernels register implementations per dispatch key
// (csrc/cpu for CPU, csrc/cuda for CUDA); fake (meta) kernels and autograd live in
// fast_s2s/ops.py. This file also defines the Python module init, so that `import fast_s2s._C`
// loads the library and runs the static registrations. It is the only file that includes Python.h.
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "fast_s2s compiled kernels; the ops live in torch.ops.fast_s2s",
      -1,
      nullptr,
  };
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
  // Build facts that `fast-s2s verify` reports, so users see what actually ran.
  PyModule_AddStringConstant(module, "cpu_capability", FAST_S2S_CPU_CAPABILITY);
#ifdef FAST_S2S_WITH_CUDA
  PyModule_AddIntConstant(module, "with_cuda", 1);
#else
  PyModule_AddIntConstant(module, "with_cuda", 0);
#endif
  return module;
}
}

TORCH_LIBRARY(fast_s2s, m) {
  // query (N,T,D) or (N,D); keys (B,S,D); values (B,S,Dv); N = B * beam.
  m.def(
      "dot_attention(Tensor query, Tensor keys, Tensor values, Tensor? lengths=None, "
      "float scale=1.0) -> (Tensor context, Tensor weights)");
  m.def(
      "dot_attention_backward(Tensor grad_context, Tensor? grad_weights, Tensor query, "
      "Tensor keys, Tensor values, Tensor weights, Tensor? lengths, float scale) "
      "-> (Tensor grad_query, Tensor grad_keys, Tensor grad_values)");
  // query_proj (N,T,A) or (N,A); keys_proj (B,S,A); v (A,); values (B,S,Dv).
  m.def(
      "additive_attention(Tensor query_proj, Tensor keys_proj, Tensor v, Tensor values, "
      "Tensor? lengths=None) -> (Tensor context, Tensor weights)");
  m.def(
      "additive_attention_backward(Tensor grad_context, Tensor? grad_weights, "
      "Tensor query_proj, Tensor keys_proj, Tensor v, Tensor values, Tensor weights, "
      "Tensor? lengths) -> (Tensor grad_query_proj, Tensor grad_keys_proj, Tensor grad_v, "
      "Tensor grad_values)");
  // torch.nn.GRUCell semantics. `gates` is the (B, 4H) float32/64 workspace [r, z, n, W_hn h +
  // b_hn] the backward reads; fast_s2s.ops.gru_cell returns h_new only.
  m.def(
      "gru_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih=None, "
      "Tensor? b_hh=None) -> (Tensor h_new, Tensor gates)");
  m.def(
      "gru_cell_backward(Tensor grad_h_new, Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, "
      "Tensor gates) -> (Tensor grad_x, Tensor grad_h, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  // One layer, one direction: x (T, B, I), h0 (B, H) -> output (T, B, H), h_n (B, H), and the
  // (T, B, 5H) float32/64 workspace [r, z, n, W_hn h + b_hn, h_prev] per step for the backward.
  m.def(
      "gru_layer(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih=None, "
      "Tensor? b_hh=None, Tensor? lengths=None, bool reverse=False) "
      "-> (Tensor output, Tensor h_n, Tensor work)");
  m.def(
      "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor x, Tensor h0, "
      "Tensor w_ih, Tensor w_hh, Tensor work, Tensor? lengths, bool reverse) "
      "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh)");
  // A one-line CUDA kernel (x + 1) proving that the CUDA half of the build loads and runs.
  m.def("cuda_smoke(Tensor x) -> Tensor");
}
