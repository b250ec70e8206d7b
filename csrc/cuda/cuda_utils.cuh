// Device helpers shared by the CUDA kernels: the accumulation type, 16-byte vector loads, warp and
// block reductions, and accurate math in float or double (no fast-math intrinsics: the kernels are
// held to the float64 reference).
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <cstdint>

#ifdef FAST_S2S_EMULATE_CUDA
// Compiled as C++ for the CPU emulation of the kernels (tests/test_cuda_emulation.py), whose ops
// are registered for CPU tensors under torch.ops.fast_s2s_emu.
#include "cuda/emulate.h"
#define FAST_S2S_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(fast_s2s_emu, CPU, m)
#else
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>

// FAST_S2S_LAUNCH(kernel, grid, block, stream)(args...): a kernel launch that the emulation can
// replace (kernel is a name or a pointer to a __global__ function).
#define FAST_S2S_LAUNCH(kernel, grid, block, stream) kernel<<<grid, block, 0, stream>>>
// Where the CUDA kernels register their ops.
#define FAST_S2S_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(fast_s2s, CUDA, m)
#endif

namespace fast_s2s::cuda {

// float for float16 / bfloat16 / float32, double for float64.
template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

constexpr int kWarpSize = 32;

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements per 16-byte load of scalar_t (8 for 16-bit types, 4 for float, 2 for double).
template <typename scalar_t>
constexpr int kVec16 = static_cast<int>(16 / sizeof(scalar_t));

// True when every tensor's data pointer is 16-byte aligned: with row lengths that are multiples
// of the vector width, every row then starts on a 16-byte boundary.
inline bool aligned16(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    if (t->defined() && reinterpret_cast<uintptr_t>(t->const_data_ptr()) % 16 != 0) return false;
  }
  return true;
}

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// out[i] = p[i] for i < VEC, upcast to A, in one vector load (p aligned to VEC elements).
template <typename A, typename T, int VEC>
__device__ __forceinline__ void load_pack(const T* p, A (&out)[VEC]) {
#ifdef FAST_S2S_EMULATE_CUDA
  assert(reinterpret_cast<uintptr_t>(p) % alignof(Pack<T, VEC>) == 0 && "misaligned vector load");
#endif
  const Pack<T, VEC> pk = *reinterpret_cast<const Pack<T, VEC>*>(p);
#pragma unroll
  for (int i = 0; i < VEC; ++i) out[i] = static_cast<A>(pk.v[i]);
}

// min / max for any arithmetic type (CUDA's overload set differs between int64_t spellings).
template <typename T>
__host__ __device__ __forceinline__ T dmin(T a, T b) {
  return a < b ? a : b;
}
template <typename T>
__host__ __device__ __forceinline__ T dmax(T a, T b) {
  return a < b ? b : a;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

template <typename A>
__device__ __forceinline__ A warp_max(A v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) {
    v = dmax(v, __shfl_xor_sync(0xffffffffu, v, off));
  }
  return v;
}

// Sum / max over the whole block; every thread gets the result. `scratch` holds one value per
// warp (blockDim.x / 32 <= 32). Must be reached by every thread of the block.
template <bool MAX, typename A>
__device__ A block_reduce(A v, A* scratch) {
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const int n_warps = blockDim.x / kWarpSize;
  v = MAX ? warp_max(v) : warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  A out = scratch[0];
  for (int w = 1; w < n_warps; ++w) out = MAX ? dmax(out, scratch[w]) : out + scratch[w];
  return out;
}

template <typename A>
__device__ A block_sum(A v, A* scratch) {
  return block_reduce<false>(v, scratch);
}

template <typename A>
__device__ A block_max(A v, A* scratch) {
  return block_reduce<true>(v, scratch);
}

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_log(float x) { return logf(x); }
__device__ __forceinline__ double dev_log(double x) { return log(x); }
__device__ __forceinline__ float dev_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dev_tanh(double x) { return tanh(x); }

template <typename A>
__device__ __forceinline__ A dev_sigmoid(A x) {
  return A(1) / (A(1) + dev_exp(-x));  // exp(-x) = inf for x << 0 gives 0, not NaN
}

template <typename A>
__device__ __forceinline__ A infinity() {
  return static_cast<A>(INFINITY);
}

}  // namespace fast_s2s::cuda
