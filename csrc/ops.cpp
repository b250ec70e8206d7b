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
  // A one-line CUDA kernel (x + 1) proving that the CUDA half of the build loads and runs.
  m.def("cuda_smoke(Tensor x) -> Tensor");
}
