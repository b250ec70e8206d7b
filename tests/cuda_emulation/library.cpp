// The op schemas again, under the namespace fast_s2s_emu, for the CPU emulation of the CUDA
// kernels (see csrc/cuda/emulate.h and tests/backends.py).
#include <torch/library.h>

#include "op_schemas.h"

TORCH_LIBRARY(fast_s2s_emu, m) {
  for (const char* schema : fast_s2s::kOpSchemas) m.def(schema);
}
