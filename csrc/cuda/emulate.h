// A CPU emulation of the slice of the CUDA execution model the kernels in this folder use, so that
// machines without a GPU (the development machines, CI) can run the kernels' own code against
// the reference. Not part of the extension: tests/backends.py (emulated_ops) compiles
// attention_forward.cu, attention_backward.cu, gru.cu and local_attention.cu as C++ with
// FAST_S2S_EMULATE_CUDA defined (cuda_utils.cuh then includes this file) and registers their ops
// as torch.ops.fast_s2s_emu.* for CPU tensors.
//
// Emulated: one std::thread per CUDA thread, blocks run one after another (so a __shared__
// variable, here a static, belongs to the running block); threadIdx / blockIdx / blockDim /
// gridDim; __syncthreads as a barrier over the block's threads; __shfl_xor_sync as an exchange
// through a per-warp buffer between two barriers over the warp. A thread that returns early drops
// out of both barriers, as an exited thread does on the GPU. atomicAdd (float / double) through
// std::atomic_ref. load_pack asserts the alignment a 16-byte vector load needs. Not emulated:
// memory-model subtleties, timing, launch limits.
#pragma once

#include <atomic>
#include <barrier>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace fast_s2s::cuda::emu {

using Barrier = std::barrier<>;

struct ThreadState {
  dim3 thread_idx, block_idx;
  Barrier* block_barrier = nullptr;
  Barrier* warp_barrier = nullptr;
  uint64_t* warp_buffer = nullptr;  // 32 slots of 8 bytes
};

inline thread_local ThreadState tls;
inline dim3 grid_dim, block_dim;

// Runs kernel(args...) over `grid` blocks of `block` threads (1-D blocks, 2-D grids).
template <typename Kernel>
struct Launch {
  Kernel kernel;
  dim3 grid, block;

  template <typename... Args>
  void operator()(const Args&... args) const {
    grid_dim = grid;
    block_dim = block;
    const unsigned n = block.x;
    const unsigned n_warps = (n + 31) / 32;
    for (unsigned by = 0; by < grid.y; ++by) {
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        Barrier block_barrier(n);
        std::vector<std::unique_ptr<Barrier>> warp_barriers;
        std::vector<uint64_t> buffers(32 * n_warps);
        for (unsigned w = 0; w < n_warps; ++w) {
          warp_barriers.push_back(std::make_unique<Barrier>(std::min(32u, n - 32 * w)));
        }
        std::vector<std::thread> threads;
        threads.reserve(n);
        for (unsigned t = 0; t < n; ++t) {
          threads.emplace_back([&, t] {
            tls.thread_idx = dim3(t);
            tls.block_idx = dim3(bx, by);
            tls.block_barrier = &block_barrier;
            tls.warp_barrier = warp_barriers[t / 32].get();
            tls.warp_buffer = buffers.data() + 32 * (t / 32);
            kernel(args...);
            tls.block_barrier->arrive_and_drop();  // an exited thread waits no more
            tls.warp_barrier->arrive_and_drop();
          });
        }
        for (auto& th : threads) th.join();
      }
    }
  }
};

template <typename Kernel>
Launch<Kernel> launch(Kernel kernel, dim3 grid, dim3 block) {
  return Launch<Kernel>{kernel, grid, block};
}

}  // namespace fast_s2s::cuda::emu

#define threadIdx (::fast_s2s::cuda::emu::tls.thread_idx)
#define blockIdx (::fast_s2s::cuda::emu::tls.block_idx)
#define blockDim (::fast_s2s::cuda::emu::block_dim)
#define gridDim (::fast_s2s::cuda::emu::grid_dim)

inline void __syncthreads() { ::fast_s2s::cuda::emu::tls.block_barrier->arrive_and_wait(); }

template <typename T>
T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t));
  auto& s = ::fast_s2s::cuda::emu::tls;
  const unsigned lane = s.thread_idx.x % 32;
  std::memcpy(&s.warp_buffer[lane], &value, sizeof(T));
  s.warp_barrier->arrive_and_wait();
  T out;
  std::memcpy(&out, &s.warp_buffer[lane ^ static_cast<unsigned>(lane_mask)], sizeof(T));
  s.warp_barrier->arrive_and_wait();  // nobody overwrites a slot before everyone has read it
  return out;
}

// atomicAdd(address, value) for float / double: returns the old value, as CUDA's does.
template <typename T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

// Host stand-ins for the CUDA runtime pieces the host code uses.
namespace at::cuda {
struct EmulatedDeviceProperties {
  int multiProcessorCount = 132;  // an H100 SXM, so split decisions match the GPU's
};
inline const EmulatedDeviceProperties* getCurrentDeviceProperties() {
  static const EmulatedDeviceProperties props;
  return &props;
}
inline int getCurrentCUDAStream() { return 0; }
}  // namespace at::cuda

namespace c10::cuda {
struct CUDAGuard {
  template <typename Device>
  explicit CUDAGuard(const Device&) {}
};
}  // namespace c10::cuda

#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (false)

// FAST_S2S_LAUNCH(kernel, grid, block, stream)(args...) runs the emulation.
#define FAST_S2S_LAUNCH(kernel, grid, block, stream) \
  ::fast_s2s::cuda::emu::launch((kernel), dim3(grid), dim3(block))
