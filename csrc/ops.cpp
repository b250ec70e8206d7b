// Declares every fast_s2s op schema (the list is in op_schemas.h). Kernels register
// implementations per dispatch key (csrc/cpu for CPU, csrc/cuda for CUDA); fake (meta) kernels and
// autograd are registered from Python (fast_s2s/compiled_ops.py). This file also defines the Python
// module init, so that `import fast_s2s._C` loads the library and runs the static registrations. It
// is the only file that includes Python.h.
#include <Python.h>
#include <torch/library.h>

#include "op_schemas.h"

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
  for (const char* schema : fast_s2s::kOpSchemas) m.def(schema);
  for (const char* schema : fast_s2s::kDecoderOpSchemas) m.def(schema);
}
