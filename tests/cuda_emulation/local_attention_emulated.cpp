// csrc/cuda/local_attention.cu compiled as C++ with FAST_S2S_EMULATE_CUDA (csrc/cuda/emulate.h).
#include "cuda/local_attention.cu"
