// The fused GRU step on the CPU: the hidden units split into one block per thread, and each
// task runs the gates of its units on its units' products: one parallel region per step. With
// per-block products (StepProducts) each task multiplies only the weight rows of its units,
// prepared (for MKL: packed) once per call, so no (B, 3H) product goes to memory and back and
// each thread reads only its share of the weights. docs/DESIGN.md, "Matrix products on the CPU".
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/gru_gates.h"

namespace fast_s2s::cpu {

// Units [begin(k), end(k)) of H form block k of `count`. Blocks are multiples of 16 units (a
// float32 AVX-512 vector, two AVX2 ones) so the gate pass runs without scalar tails.
struct UnitBlocks {
  int64_t H = 0, size = 0, count = 0;
  int64_t begin(int64_t k) const { return k * size; }
  int64_t end(int64_t k) const { return std::min(H, (k + 1) * size); }
  int64_t len(int64_t k) const { return end(k) - begin(k); }
};

// Inside a parallel region (each direction of gru_stack on a thread of its own) the blocks run
// serially on the calling thread: one block, so each step is one product over all of W_hh.
inline UnitBlocks unit_blocks(int64_t H) {
  const int64_t threads =
      at::in_parallel_region() ? 1 : std::max<int64_t>(1, at::get_num_threads());
  int64_t size = (H + threads - 1) / threads;
  size = (size + 15) / 16 * 16;
  size = std::max<int64_t>(1, std::min(size, H));
  return {H, size, H == 0 ? 0 : (H + size - 1) / size};
}

// Runs task(k) for every block k in one parallel region (one block per thread).
template <typename Task>
inline void for_each_block(const UnitBlocks& blocks, const Task& task) {
  at::parallel_for(0, blocks.count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) task(k);
  });
}

// The products of a GRU step, by block of units: w (G*U x K, contiguous rows) holds G groups of
// U rows (the gates r, z, n of W_hh or W_ih: G = 3, U = H; or the rows of W_hh^T, one per unit:
// G = 1), and block k of the units needs rows g*U + [begin(k), end(k)) of each group. Two ways:
//   per block (mkl_packed, inhouse): each task multiplies its own rows (prepared once; packed
//     for MKL) into its scratch, serially, so its gates read the result from cache;
//   whole (blas): one at::mm of all rows before the parallel region, threaded by the BLAS
//     itself, then the tasks read their columns of it. What torch.nn does, with fused gates.
//   whole on bfloat16 weights (mkl_bf16, A = float, w bfloat16): the float32 operand split into
//     two bfloat16 parts, a = hi + lo + r with |r| <= 2^-17 |a| (hi = a rounded, lo = the rest
//     rounded), both multiplied exactly by w in one bfloat16 product (gemm::matmul_nt_bf16, 2m
//     rows; gemm::split_bf16) and the halves added: float32's precision but for r, which lies below
//     the float32 sums' own rounding over K = 64-1024 terms, at half the weight bytes per product.
// The GEMM layer measures which is faster for the shape (gemm::choose).
template <typename A>
class StepProducts {
 public:
  StepProducts(gemm::Backend backend, const at::Tensor& w, int64_t groups, const UnitBlocks& blocks,
               int64_t m)
      : whole_(backend == gemm::Backend::kBlas || backend == gemm::Backend::kMklBf16),
        split_bf16_(backend == gemm::Backend::kMklBf16),
        groups_(groups),
        blocks_(blocks),
        m_(m) {
    const int64_t K = w.size(1);
    if (whole_) {
      w_ = w;
      out_.reset(new A[std::max<int64_t>(1, m * groups * blocks.H)]);  // uninitialised: all written
      if (split_bf16_) {
        TORCH_CHECK((std::is_same_v<A, float>) && w.scalar_type() == at::kBFloat16,
                    "StepProducts: mkl_bf16 multiplies float32 rows by bfloat16 weights");
        parts_ = at::empty({2 * m, K}, w.options());
        halves_ = at::empty({2 * m, groups * blocks.H}, w.options().dtype(at::kFloat));
      }
      return;
    }
    const A* wp = w.const_data_ptr<A>();
    per_block_.resize(blocks.count);
    if (blocks.count == 1) {
      // One block holds every unit: its rows of the G groups are all of w's rows, contiguous,
      // so one product of G*U columns writes them in the per-block layout (group g of unit j at
      // column g*U + j); at batch 1 that keeps all four FMA chains of the panel kernel busy,
      // where three products of U columns each ran half of them.
      scratch_.emplace_back(new A[std::max<int64_t>(1, m * groups * blocks.H)]);
      per_block_[0].emplace_back(backend, wp, groups * blocks.H, K, K, m);
      return;
    }
    for (int64_t k = 0; k < blocks.count; ++k) {
      scratch_.emplace_back(new A[std::max<int64_t>(1, m * groups * blocks.size)]);
      for (int64_t g = 0; g < groups; ++g) {
        const A* rows = wp + (g * blocks.H + blocks.begin(k)) * K;
        per_block_[k].emplace_back(backend, rows, blocks.len(k), K, K, m);
      }
    }
  }

  // Outside the parallel region: the whole product, where that is the way.
  void before_blocks(const A* a, int64_t lda) {
    if (!whole_ || m_ == 0) return;
    if constexpr (std::is_same_v<A, float>) {
      if (split_bf16_) return split_product(a, lda);
    }
    const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value);
    const int64_t K = w_.size(1);
    at::Tensor out = at::from_blob(out_.get(), {m_, groups_ * blocks_.H}, options);
    at::mm_out(out, at::from_blob(const_cast<A*>(a), {m_, K}, {lda, 1}, options), w_.t());
  }

  // mkl_bf16: out = (hi + lo) w^T, hi and lo the bfloat16 parts of a (see above).
  void split_product(const float* a, int64_t lda) {
    const int64_t K = w_.size(1), N = groups_ * blocks_.H;
    gemm::split_bf16(a, m_, K, lda, parts_.mutable_data_ptr<at::BFloat16>());
    gemm::matmul_nt_bf16("gru_layer.recurrent.parts", parts_, w_, halves_);
    const float* two = halves_.const_data_ptr<float>();
    A* out = out_.get();
    for (int64_t i = 0; i < m_ * N; ++i) out[i] = two[i] + two[m_ * N + i];
  }

  // Inside block k's task: its own products, where that is the way.
  void block(int64_t k, const A* a, int64_t lda) {
    if (whole_) return;
    const int64_t len = blocks_.len(k);
    if (per_block_[k].size() == 1) {  // the one block, all groups in one product
      per_block_[k][0].multiply(a, lda, scratch_[k].get(), groups_ * len);
      return;
    }
    for (int64_t g = 0; g < groups_; ++g) {
      per_block_[k][g].multiply(a, lda, scratch_[k].get() + g * len, groups_ * len);
    }
  }

  // Where row b's products for block k's units are: group g of unit j at .p[g * .stride + j].
  Gated<const A*> row(int64_t k, int64_t b) const {
    if (whole_) {
      return {out_.get() + b * groups_ * blocks_.H + blocks_.begin(k), blocks_.H};
    }
    const int64_t len = blocks_.len(k);
    return {scratch_[k].get() + b * groups_ * len, len};
  }

  // Both ways run the step this one would, for timing a candidate.
  void run_step(const A* a, int64_t lda) {
    before_blocks(a, lda);
    for_each_block(blocks_, [&](int64_t k) { block(k, a, lda); });
  }

 private:
  bool whole_, split_bf16_;
  int64_t groups_;
  UnitBlocks blocks_;
  int64_t m_;
  at::Tensor w_;  // whole only; per block, the prepared NtWeights (an entry of prepared_cache.h
                  // outlives the call, and must not keep the weight alive)
  std::vector<std::vector<gemm::NtWeight<A>>> per_block_;  // [block][group], or [0][all]
  std::vector<std::unique_ptr<A[]>> scratch_;              // [block]: m x groups * len
  std::unique_ptr<A[]> out_;                               // whole: m x groups * U
  at::Tensor parts_, halves_;  // mkl_bf16: [hi; lo] (2m x K) and their products (2m x groups * U)
};

}  // namespace fast_s2s::cpu
