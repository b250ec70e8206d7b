// The fused GRU step on the CPU: the hidden units split into one block per thread, and each
// task multiplies only the weight rows that produce its units' r, z and n, then runs the gates
// of those units while its (B x 3 block) products are still in cache. One parallel region per
// step; no (B, 3H) product tensor goes to memory and back; each thread reads only its share of
// the weights, which it prepared (for MKL: packed) once per call. gemm.h runs the products.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "cpu/gemm.h"

namespace fast_s2s::cpu {

// Units [begin(k), end(k)) of H form block k of `count`. Blocks are multiples of 16 units (a
// float32 AVX-512 vector, two AVX2 ones) so the gate pass runs without scalar tails.
struct UnitBlocks {
  int64_t H = 0, size = 0, count = 0;
  int64_t begin(int64_t k) const { return k * size; }
  int64_t end(int64_t k) const { return std::min(H, (k + 1) * size); }
  int64_t len(int64_t k) const { return end(k) - begin(k); }
};

inline UnitBlocks unit_blocks(int64_t H) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  int64_t size = (H + threads - 1) / threads;
  size = (size + 15) / 16 * 16;
  size = std::max<int64_t>(1, std::min(size, H));
  return {H, size, H == 0 ? 0 : (H + size - 1) / size};
}

// One block's three gate products against a gate-stacked weight w (3H x K, rows [r; z; n]):
// multiply(a) gives c (m x 3 len) = [a w_r^T | a w_z^T | a w_n^T] over the block's units.
// The rows are read in place (blas, inhouse) or packed (mkl_packed), one NtWeight per gate.
template <typename A>
struct GateBlockWeights {
  std::vector<gemm::NtWeight<A>> gates;  // r, z, n
  int64_t len = 0;

  void multiply(const A* a, int64_t lda, A* c) const {
    for (int g = 0; g < 3; ++g) gates[g].multiply(a, lda, c + g * len, 3 * len);
  }
};

// w (3H x K, contiguous rows, float/double) prepared per block for products with m rows.
template <typename A>
std::vector<GateBlockWeights<A>> prepare_gate_blocks(gemm::Backend backend, const at::Tensor& w,
                                                     const UnitBlocks& blocks, int64_t m) {
  const int64_t K = w.size(1);
  const A* wp = w.const_data_ptr<A>();
  std::vector<GateBlockWeights<A>> out(blocks.count);
  for (int64_t k = 0; k < blocks.count; ++k) {
    out[k].len = blocks.len(k);
    for (int g = 0; g < 3; ++g) {
      const A* rows = wp + (g * blocks.H + blocks.begin(k)) * K;
      out[k].gates.emplace_back(backend, rows, blocks.len(k), K, K, m);
    }
  }
  return out;
}

// The backward's dh = dgh W_hh, block by block: the rows of W_hh^T for the block's units
// (len x 3H), gathered once per call into `storage` (W_hh's columns are not rows in memory).
template <typename A>
std::vector<gemm::NtWeight<A>> prepare_transposed_blocks(gemm::Backend backend,
                                                         const at::Tensor& w_t,
                                                         const UnitBlocks& blocks, int64_t m) {
  const int64_t K = w_t.size(1);  // 3H
  const A* wp = w_t.const_data_ptr<A>();
  std::vector<gemm::NtWeight<A>> out;
  for (int64_t k = 0; k < blocks.count; ++k) {
    out.emplace_back(backend, wp + blocks.begin(k) * K, blocks.len(k), K, K, m);
  }
  return out;
}

// Runs task(k) for every block k in one parallel region (one block per thread).
template <typename Task>
inline void for_each_block(const UnitBlocks& blocks, const Task& task) {
  at::parallel_for(0, blocks.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) task(k);
  });
}

}  // namespace fast_s2s::cpu
