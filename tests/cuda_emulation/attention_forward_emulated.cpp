// csrc/cuda/attention_forward.cu compiled as C++ with FAST_S2S_EMULATE_CUDA (csrc/cuda/emulate.h).
#include "cuda/attention_forward.cu"
