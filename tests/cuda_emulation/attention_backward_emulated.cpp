// csrc/cuda/attention_backward.cu compiled as C++ with FAST_S2S_EMULATE_CUDA (csrc/cuda/emulate.h).
#include "cuda/attention_backward.cu"
