// FAST_S2S_HOST_DEVICE marks a function that the CPU kernels and the CUDA kernels both call:
// __host__ __device__ under nvcc, nothing for a C++ compiler. The CPU emulation of the CUDA
// kernels (csrc/cuda/emulate.h) compiles the .cu files as C++, so there too it is empty.
#pragma once

#if defined(__CUDACC__)
#define FAST_S2S_HOST_DEVICE __host__ __device__
#else
#define FAST_S2S_HOST_DEVICE
#endif
