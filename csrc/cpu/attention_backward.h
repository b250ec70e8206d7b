// The backward loop both CPU attention kernels share (dot_attention.cpp, additive_attention.cpp):
// parallel over source rows b, so the gradients of K[b], V[b] (sums over the beam * T query rows
// that read b) are accumulated by one thread without atomics. Per query row r of source row b:
//   p     = the softmax weights of row r (the kind recomputes them, or copies the saved ones)
//   dP[s] = dctx . V[b, s] + dweights[s]
//   dS[s] = p[s] (dP[s] - sum_s' p[s'] dP[s'])
//   dV[b, s] += p[s] dctx
// and the kind turns dS into the gradients of the query and of the keys.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/attention_checks.h"
#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {

// make_kind() builds one thread's Kind, which owns that thread's scratch and provides:
//   begin_source(b)                  zero its accumulators of source row b
//   weights(r, b, L, p)              p[0:S] = the softmax weights of query row r (0 past L)
//   row_grads(r, b, L, p, ds)        the query gradient of row r, the key gradient of b += ...
//   end_source(b)                    write the key gradients of b
// grad_ctx (rows, Dv), grad_w (rows, S) or nullptr, values (B, S, Dv), grad_values (B, S, Dv).
template <typename scalar_t, typename MakeKind>
void attention_backward_by_source(const scalar_t* grad_ctx, const scalar_t* grad_w,
                                  const scalar_t* values, const std::vector<int64_t>& lens,
                                  scalar_t* grad_values, const AttentionGeometry& g,
                                  const MakeKind& make_kind) {
  using A = acc_t<scalar_t>;
  const int64_t Dv = g.Dv, S = g.S;
  const int64_t rows_per_source = g.beam * g.T;
  at::parallel_for(0, g.B, 1, [&](int64_t begin, int64_t end) {
    auto kind = make_kind();
    std::vector<A> p(S), dp(S), gc(Dv), dv(S * Dv);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t L = lens[b];
      const scalar_t* vb = values + b * S * Dv;
      kind.begin_source(b);
      std::fill(dv.begin(), dv.end(), A(0));
      for (int64_t r = b * rows_per_source; r < (b + 1) * rows_per_source; ++r) {
        kind.weights(r, b, L, p.data());
        convert_row(grad_ctx + r * Dv, gc.data(), Dv);
        dot_rows<scalar_t>(gc.data(), vb, Dv, L, Dv, dp.data());
        // The softmax backward, inline: as a function of its own (shared with the matrix-product
        // path of dot_attention.cpp) GCC fuses its multiply-adds differently, changing last bits.
        A p_dot_dp = 0;
        for (int64_t s = 0; s < L; ++s) {
          if (grad_w != nullptr) dp[s] += static_cast<A>(grad_w[r * S + s]);
          p_dot_dp += p[s] * dp[s];
        }
        for (int64_t s = 0; s < L; ++s) dp[s] = p[s] * (dp[s] - p_dot_dp);  // dp now holds dS
        kind.row_grads(r, b, L, p.data(), dp.data());
        for (int64_t s = 0; s < L; ++s) axpy<A>(p[s], gc.data(), Dv, dv.data() + s * Dv);
      }
      kind.end_source(b);
      convert_row(dv.data(), grad_values + b * S * Dv, S * Dv);
    }
  });
}

}  // namespace fast_s2s::cpu
