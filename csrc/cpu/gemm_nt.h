// The in-house C = A B^T kernel: one of the GEMM layer's candidates (gemm.h, which measures it
// against the BLAS per shape), and the kernel of attention's small, long-inner-dimension
// products (scores = Q K^T and dP = dC V^T: M, N ~ tens of rows, K = D ~ hundreds of features,
// rows contiguous in D), where it skips masked keys and reads bfloat16 without copies.
//
// BLAS is at its weakest on that shape (tiny output, long reduction): at::bmm took 609 us for
// Q K^T at B=64, M=N=30, K=512 on the 2-core AVX-512 machine against 342 us for P V of the same
// size. Here a 4 x 4 register tile of output dot products shares each loaded vector of A across
// 4 rows of B and back: 8 loads per 16 FMAs, no packing, any storage type (bfloat16 rows are
// widened on load, so no float32 copy of the keys is made).
#pragma once

#include <ATen/Parallel.h>

#include <initializer_list>
#include <vector>

#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {

// C[i][j] = sum_k A[i][k] * B[j][k] for a TM x TN block; A rows at a + i*lda, B rows at b + j*ldb.
template <int TM, int TN, typename scalar_t>
inline void nt_tile(const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb, int64_t K,
                    acc_t<scalar_t>* c, int64_t ldc) {
  using A = acc_t<scalar_t>;
  constexpr int64_t W = Vec<A>::size();
  Vec<A> acc[TM][TN];
  for (int i = 0; i < TM; ++i)
    for (int j = 0; j < TN; ++j) acc[i][j] = Vec<A>(A(0));
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    Vec<A> av[TM], bv[TN];
    for (int i = 0; i < TM; ++i) av[i] = load_acc(a + i * lda + k);
    for (int j = 0; j < TN; ++j) bv[j] = load_acc(b + j * ldb + k);
    for (int i = 0; i < TM; ++i)
      for (int j = 0; j < TN; ++j) acc[i][j] = at::vec::fmadd(av[i], bv[j], acc[i][j]);
  }
  for (int i = 0; i < TM; ++i) {
    for (int j = 0; j < TN; ++j) {
      A s = reduce_add(acc[i][j]);
      for (int64_t kk = k; kk < K; ++kk) {
        s += static_cast<A>(a[i * lda + kk]) * static_cast<A>(b[j * ldb + kk]);
      }
      c[i * ldc + j] = s;
    }
  }
}

// One row block of up to 4 rows of A against all N rows of B.
template <int TM, typename scalar_t>
inline void nt_row_block(const scalar_t* a, int64_t lda, const scalar_t* b, int64_t ldb, int64_t N,
                         int64_t K, acc_t<scalar_t>* c, int64_t ldc) {
  int64_t j = 0;
  for (; j + 4 <= N; j += 4) nt_tile<TM, 4>(a, lda, b + j * ldb, ldb, K, c + j, ldc);
  for (; j < N; ++j) nt_tile<TM, 1>(a, lda, b + j * ldb, ldb, K, c + j, ldc);
}

// Batched: for each batch g, C[g] (M x N, row stride N) = A[g] (M x K) B[g]^T (N x K), with
// A, B contiguous per batch. Rows of B beyond n_valid(g) are skipped (their C entries are left
// unwritten), so masked key positions cost nothing. Parallel over (batch, 4-row block).
template <typename scalar_t, typename NValid>
void batched_gemm_nt(const scalar_t* a, const scalar_t* b, acc_t<scalar_t>* c, int64_t batches,
                     int64_t M, int64_t N, int64_t K, NValid n_valid) {
  const int64_t blocks = (M + 3) / 4;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, 4 * N * K));
  at::parallel_for(0, batches * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t g = item / blocks, i = (item % blocks) * 4;
      const int64_t rows = std::min<int64_t>(4, M - i), n = n_valid(g);
      const scalar_t* ag = a + (g * M + i) * K;
      const scalar_t* bg = b + g * N * K;
      acc_t<scalar_t>* cg = c + (g * M + i) * N;
      switch (rows) {
        case 4: nt_row_block<4>(ag, K, bg, K, n, K, cg, N); break;
        case 3: nt_row_block<3>(ag, K, bg, K, n, K, cg, N); break;
        case 2: nt_row_block<2>(ag, K, bg, K, n, K, cg, N); break;
        default: nt_row_block<1>(ag, K, bg, K, n, K, cg, N); break;
      }
    }
  });
}

// One product C (M x N, row stride ldc) = A (M x K) B^T (B: N x K), rows contiguous in K.
template <typename scalar_t>
struct NtProduct {
  const scalar_t* a;
  int64_t M, lda;
  const scalar_t* b;
  int64_t N, ldb, K;
  acc_t<scalar_t>* c;
  int64_t ldc;
};

// Rows [j0, j0 + n) of B against every row of A, in 4 x 4 register tiles.
template <typename scalar_t>
inline void nt_column_block(const NtProduct<scalar_t>& p, int64_t j0, int64_t n) {
  for (int64_t i = 0; i < p.M; i += 4) {
    const scalar_t* ai = p.a + i * p.lda;
    const scalar_t* bj = p.b + j0 * p.ldb;
    acc_t<scalar_t>* ci = p.c + i * p.ldc + j0;
    switch (std::min<int64_t>(4, p.M - i)) {
      case 4: nt_row_block<4>(ai, p.lda, bj, p.ldb, n, p.K, ci, p.ldc); break;
      case 3: nt_row_block<3>(ai, p.lda, bj, p.ldb, n, p.K, ci, p.ldc); break;
      case 2: nt_row_block<2>(ai, p.lda, bj, p.ldb, n, p.K, ci, p.ldc); break;
      default: nt_row_block<1>(ai, p.lda, bj, p.ldb, n, p.K, ci, p.ldc); break;
    }
  }
}

// Several independent products in ONE parallel region, split over blocks of rows of each B:
// the split for matrix-vector products with few rows of A and many rows of B (a GRU step at
// small batch: x against W_ih and h against W_hh together). Each weight row is read once and
// used against every row of A from registers; one fork/join serves both products.
template <typename scalar_t>
void gemm_nt_wide(std::initializer_list<NtProduct<scalar_t>> products) {
  constexpr int64_t kBlock = 16;  // rows of B per task: 4 register tiles
  std::vector<NtProduct<scalar_t>> jobs(products);
  std::vector<int64_t> first_block(jobs.size() + 1, 0);
  int64_t work_per_block = 1;
  for (size_t k = 0; k < jobs.size(); ++k) {
    first_block[k + 1] = first_block[k] + (jobs[k].N + kBlock - 1) / kBlock;
    work_per_block = std::max<int64_t>(work_per_block, kBlock * jobs[k].K * jobs[k].M);
  }
  const int64_t grain = std::max<int64_t>(1, 16384 / work_per_block);
  at::parallel_for(0, first_block.back(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      size_t k = 0;
      while (blk >= first_block[k + 1]) ++k;
      const int64_t j0 = (blk - first_block[k]) * kBlock;
      nt_column_block(jobs[k], j0, std::min(kBlock, jobs[k].N - j0));
    }
  });
}

}  // namespace fast_s2s::cpu
