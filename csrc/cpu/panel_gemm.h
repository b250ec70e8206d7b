// The panel GEMM of small products (the decoder step, a GRU step, the attention's short
// products; gemm.cpp's `panel` choice): out (M, N) = x (M, K) W^T with W packed once into
// column panels of W^T, so the kernel is the broadcast-FMA form (one weight vector load feeds
// every row of the tile, no horizontal sums). The dot-product form of matmul_nt_out (gemm_nt.h)
// ends each 4 x 4 tile with 16 horizontal reductions, which at short rows (K = 128..320) cost
// about as much as the multiply-adds. Measured against matmul_nt_out: see kMaxPackedRows in
// decoder_model.cpp.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {

// w (n x k, row stride ldw) into column panels of `cols` columns of w^T: panel p holds
// dst[(p * k + kk) * cols + j] = w[p * cols + j][kk], zeros past n. Each panel is the transpose
// of `cols` rows of w, done in 16 x 16 register blocks (ATen's transpose_mxn: AVX-512 or AVX2
// shuffles): the element-wise scatter it replaces cost 6.3 us for a GRU's W_hh at H = 64,
// longer than 8 of its products, which decided against packing for a short sentence.
template <typename A>
void pack_panels(const A* w, int64_t n, int64_t k, int64_t ldw, A* dst, int64_t cols) {
  constexpr int64_t kBlock = 16;
  for (int64_t p = 0; p * cols < n; ++p) {
    A* panel = dst + p * k * cols;
    const A* src = w + p * cols * ldw;
    const int64_t rows = std::min(cols, n - p * cols);
    if (rows < cols) std::fill(panel, panel + k * cols, A(0));
    int64_t r = 0;
    for (; r + kBlock <= rows; r += kBlock) {
      int64_t kk = 0;
      for (; kk + kBlock <= k; kk += kBlock) {
        at::vec::transpose_mxn<A, kBlock, kBlock>(src + r * ldw + kk, ldw, panel + kk * cols + r,
                                                  cols);
      }
      for (; kk < k; ++kk) {
        for (int64_t i = r; i < r + kBlock; ++i) panel[kk * cols + i] = src[i * ldw + kk];
      }
    }
    for (; r < rows; ++r) {
      for (int64_t kk = 0; kk < k; ++kk) panel[kk * cols + r] = src[r * ldw + kk];
    }
  }
}

// W (N, K) as panels of kCols = 2 vectors of columns of W^T: panel p holds
// data[(p * K + k) * kCols + j] = W[p * kCols + j][k] (zero past N). Two vectors keep a panel of
// the decoder's longest rows (K = 320: 40 kB) in L1 while four-row blocks of x stream past it.
template <typename A>
struct PackedWeight {
  static constexpr int64_t kCols = 2 * Vec<A>::size();
  int64_t N = 0, K = 0, panels = 0;
  std::vector<A> data;

  PackedWeight() = default;
  PackedWeight(const A* w, int64_t n, int64_t k, int64_t ldw)
      : N(n), K(k), panels((n + kCols - 1) / kCols), data(panels * k * kCols) {
    pack_panels(w, n, k, ldw, data.data(), kCols);
  }
};

// Four rows of x (rows past `rows` read row 0 and are not stored) against one panel; cols
// (<= kCols) valid output columns. Named accumulators, not arrays: GCC keeps an array of
// Vectorized accumulators on the stack and stores it every iteration (seen in perf annotate).
// 8 accumulators + 2 weight vectors + 1 broadcast fit the 16 registers of AVX2 too. The panel's
// rows are `ldp` apart: kCols in PackedWeight, or the row stride of a row-major matrix whose
// kCols columns are read in place (gemm_nn_panels). Every row holds kCols readable values.
template <typename A>
inline void panel_tile4(const A* x, int64_t ldx, int64_t rows, const A* panel, int64_t K, A* out,
                        int64_t ldo, int64_t cols, int64_t ldp = PackedWeight<A>::kCols) {
  constexpr int64_t W = Vec<A>::size();
  const int64_t C = ldp;
  const A* x0 = x;
  const A* x1 = rows > 1 ? x + ldx : x;
  const A* x2 = rows > 2 ? x + 2 * ldx : x;
  const A* x3 = rows > 3 ? x + 3 * ldx : x;
  Vec<A> a0(A(0)), a1(A(0)), b0(A(0)), b1(A(0)), c0(A(0)), c1(A(0)), d0(A(0)), d1(A(0));
  for (int64_t k = 0; k < K; ++k) {
    const Vec<A> w0 = Vec<A>::loadu(panel + k * C), w1 = Vec<A>::loadu(panel + k * C + W);
    Vec<A> u(x0[k]);
    a0 = at::vec::fmadd(u, w0, a0);
    a1 = at::vec::fmadd(u, w1, a1);
    u = Vec<A>(x1[k]);
    b0 = at::vec::fmadd(u, w0, b0);
    b1 = at::vec::fmadd(u, w1, b1);
    u = Vec<A>(x2[k]);
    c0 = at::vec::fmadd(u, w0, c0);
    c1 = at::vec::fmadd(u, w1, c1);
    u = Vec<A>(x3[k]);
    d0 = at::vec::fmadd(u, w0, d0);
    d1 = at::vec::fmadd(u, w1, d1);
  }
  auto store = [&](int64_t r, const Vec<A>& v0, const Vec<A>& v1) {
    if (r >= rows) return;
    A* o = out + r * ldo;
    v0.store(o, static_cast<int>(std::min<int64_t>(W, cols)));
    if (cols > W) v1.store(o + W, static_cast<int>(std::min<int64_t>(W, cols - W)));
  };
  store(0, a0, a1);
  store(1, b0, b1);
  store(2, c0, c1);
  store(3, d0, d1);
}

// Six rows of x against one panel, as panel_tile4: 12 accumulators + 2 weight vectors + 1
// broadcast still fit AVX2's 16 registers, and each weight vector loaded serves 6 rows, so a
// beam of 5 or a batch of 6 reads the weights once where two 4-row tiles read them twice.
template <typename A>
inline void panel_tile6(const A* x, int64_t ldx, int64_t rows, const A* panel, int64_t K, A* out,
                        int64_t ldo, int64_t cols, int64_t ldp = PackedWeight<A>::kCols) {
  constexpr int64_t W = Vec<A>::size();
  const int64_t C = ldp;
  const A* x0 = x;
  const A* x1 = rows > 1 ? x + ldx : x;
  const A* x2 = rows > 2 ? x + 2 * ldx : x;
  const A* x3 = rows > 3 ? x + 3 * ldx : x;
  const A* x4 = rows > 4 ? x + 4 * ldx : x;
  const A* x5 = rows > 5 ? x + 5 * ldx : x;
  Vec<A> a0(A(0)), a1(A(0)), b0(A(0)), b1(A(0)), c0(A(0)), c1(A(0));
  Vec<A> d0(A(0)), d1(A(0)), e0(A(0)), e1(A(0)), f0(A(0)), f1(A(0));
  for (int64_t k = 0; k < K; ++k) {
    const Vec<A> w0 = Vec<A>::loadu(panel + k * C), w1 = Vec<A>::loadu(panel + k * C + W);
    Vec<A> u(x0[k]);
    a0 = at::vec::fmadd(u, w0, a0);
    a1 = at::vec::fmadd(u, w1, a1);
    u = Vec<A>(x1[k]);
    b0 = at::vec::fmadd(u, w0, b0);
    b1 = at::vec::fmadd(u, w1, b1);
    u = Vec<A>(x2[k]);
    c0 = at::vec::fmadd(u, w0, c0);
    c1 = at::vec::fmadd(u, w1, c1);
    u = Vec<A>(x3[k]);
    d0 = at::vec::fmadd(u, w0, d0);
    d1 = at::vec::fmadd(u, w1, d1);
    u = Vec<A>(x4[k]);
    e0 = at::vec::fmadd(u, w0, e0);
    e1 = at::vec::fmadd(u, w1, e1);
    u = Vec<A>(x5[k]);
    f0 = at::vec::fmadd(u, w0, f0);
    f1 = at::vec::fmadd(u, w1, f1);
  }
  auto store = [&](int64_t r, const Vec<A>& v0, const Vec<A>& v1) {
    if (r >= rows) return;
    A* o = out + r * ldo;
    v0.store(o, static_cast<int>(std::min<int64_t>(W, cols)));
    if (cols > W) v1.store(o + W, static_cast<int>(std::min<int64_t>(W, cols - W)));
  };
  store(0, a0, a1);
  store(1, b0, b1);
  store(2, c0, c1);
  store(3, d0, d1);
  store(4, e0, e1);
  store(5, f0, f1);
}

// Rows [0, rows) of x (row stride ldx) against one panel (row stride ldp): 6-row tiles, the last
// block of 1 to 4 rows a 4-row tile.
template <typename A>
inline void panel_rows(const A* x, int64_t ldx, int64_t rows, const A* panel, int64_t K, A* out,
                       int64_t ldo, int64_t cols, int64_t ldp = PackedWeight<A>::kCols) {
  int64_t i = 0;
  for (; rows - i > 4; i += 6) {
    panel_tile6<A>(x + i * ldx, ldx, std::min<int64_t>(6, rows - i), panel, K, out + i * ldo, ldo,
                   cols, ldp);
  }
  if (i < rows) panel_tile4<A>(x + i * ldx, ldx, rows - i, panel, K, out + i * ldo, ldo, cols, ldp);
}

// out (M, N) = a (M, K) b (K, N), a's and b's rows contiguous (strides lda, ldb), with b read in
// place: columns [p C, p C + C) of its rows are panel p (row stride ldb), so the product is the
// broadcast-FMA form with neither b^T copied nor b packed. The last panel, if partial, is copied
// zero-padded (K x C) so no load reads past a row. Serial: the caller parallelises (one batch
// of a bmm per task). For the attention products whose depth is the source length (P V,
// dS K, dS^T Q, P^T dO: K = S, a few dozen), where BLAS spends more time packing and scaling
// than multiplying.
template <typename A>
void gemm_nn_panels(const A* a, int64_t lda, int64_t M, const A* b, int64_t ldb, int64_t K,
                    int64_t N, A* out, int64_t ldo) {
  constexpr int64_t C = PackedWeight<A>::kCols;
  const int64_t full = N / C;
  for (int64_t p = 0; p < full; ++p) {
    panel_rows<A>(a, lda, M, b + p * C, K, out + p * C, ldo, C, ldb);
  }
  const int64_t tail = N - full * C;
  if (tail == 0) return;
  std::vector<A> last(K * C, A(0));
  for (int64_t k = 0; k < K; ++k) {
    std::copy(b + k * ldb + full * C, b + k * ldb + N, last.data() + k * C);
  }
  panel_rows<A>(a, lda, M, last.data(), K, out + full * C, ldo, tail);
}

// One row of x against Count (1..4) consecutive panels (2 x Count accumulators: independent FMA
// chains, where one panel's two would wait on the FMA latency); cols: valid columns of the last
// panel. The single-row product of a GRU step at batch 1 (the encoder of one sentence). Count is
// a template argument so a short remainder runs only its own chains.
template <int Count, typename A>
inline void panel_row(const A* x, const A* panels, int64_t K, A* out, int64_t last_cols) {
  constexpr int64_t W = Vec<A>::size();
  constexpr int64_t C = PackedWeight<A>::kCols;
  Vec<A> acc[2 * Count];
  for (int i = 0; i < 2 * Count; ++i) acc[i] = Vec<A>(A(0));
  for (int64_t k = 0; k < K; ++k) {
    const Vec<A> u(x[k]);
    for (int p = 0; p < Count; ++p) {
      const A* w = panels + p * K * C + k * C;
      acc[2 * p] = at::vec::fmadd(u, Vec<A>::loadu(w), acc[2 * p]);
      acc[2 * p + 1] = at::vec::fmadd(u, Vec<A>::loadu(w + W), acc[2 * p + 1]);
    }
  }
  for (int p = 0; p < Count; ++p) {
    const int64_t cols = p == Count - 1 ? last_cols : C;
    A* o = out + p * C;
    acc[2 * p].store(o, static_cast<int>(std::min<int64_t>(W, cols)));
    if (cols > W) acc[2 * p + 1].store(o + W, static_cast<int>(std::min<int64_t>(W, cols - W)));
  }
}

// out (n) = x (K) W^T for a packed W of n columns: four panels at a time, then the remainder.
template <typename A>
inline void panel_row_all(const A* x, const A* panels, int64_t n, int64_t K, A* out) {
  constexpr int64_t C = PackedWeight<A>::kCols;
  const int64_t n_panels = (n + C - 1) / C;
  for (int64_t p = 0; p < n_panels; p += 4) {
    const int64_t count = std::min<int64_t>(4, n_panels - p);
    const int64_t last_cols = std::min(C, n - (p + count - 1) * C);
    const A* first = panels + p * K * C;
    switch (count) {
      case 4: panel_row<4>(x, first, K, out + p * C, last_cols); break;
      case 3: panel_row<3>(x, first, K, out + p * C, last_cols); break;
      case 2: panel_row<2>(x, first, K, out + p * C, last_cols); break;
      default: panel_row<1>(x, first, K, out + p * C, last_cols); break;
    }
  }
}

// out (M, N) = x (M, K) W^T; parallel over (panel, 12-row block) when `parallel`.
template <typename A>
void packed_matmul(const A* x, int64_t M, int64_t ldx, const PackedWeight<A>& w, A* out,
                   int64_t ldo, bool parallel) {
  constexpr int64_t C = PackedWeight<A>::kCols;
  constexpr int64_t kBlock = 12;  // two 6-row tiles per task
  const int64_t blocks = (M + kBlock - 1) / kBlock, K = w.K;
  const int64_t grain = parallel
                            ? std::max<int64_t>(1, 16384 / std::max<int64_t>(1, kBlock * C * K))
                            : w.panels * blocks;
  at::parallel_for(0, w.panels * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t p = item / blocks, m = (item % blocks) * kBlock;
      panel_rows<A>(x + m * ldx, ldx, std::min<int64_t>(kBlock, M - m), w.data.data() + p * K * C,
                    K, out + m * ldo + p * C, ldo, std::min(C, w.N - p * C));
    }
  });
}

}  // namespace fast_s2s::cpu
