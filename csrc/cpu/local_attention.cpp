// Fused Luong local attention on the CPU, forward and backward.
// Reference: fast_s2s/reference.py::local_attention.
//
// Forward, per query row r = (n, t), b = n / beam, p = centers[r], window [lo, hi) of the
// positions s with |s - p| <= D and s < lengths[b] (common/local_window.h):
//   a[s]   = softmax_{lo <= s < hi}(scale * q . K[b, s])
//   w[s]   = a[s] g[s],  g[s] = exp(-(s - p)^2 / (2 sigma^2)),  sigma = D / 2
//   ctx[:] = sum_s w[s] V[b, s, :]
// Only the window's keys and values are read: a row costs O(D (Dk + Dv)) whatever S is, and the
// (N, T, S) weights are written (zeros outside the window) only when asked for. Rows run in
// parallel; the window is at most 2D + 1 rows of K and V, so it stays in L1 for the two passes.
//
// Backward, parallel over source rows b (the rows that read b overlap in K[b], V[b], so one
// thread owns each b and nothing needs atomics). The window's weights are recomputed from q, K
// and the centre (no (N, T, S) tensor is saved). Per row:
//   dw[s]  = dctx . V[b, s] + dweights[s]
//   da[s]  = dw[s] g[s];            ds[s] = a[s] (da[s] - sum_s' a[s'] da[s'])
//   dq     = scale sum_s ds[s] K[b, s];   dK[b, s] += scale ds[s] q;   dV[b, s] += w[s] dctx
//   dp     = sum_s dw[s] a[s] g[s] (s - p) / sigma^2     (membership of the window: no gradient)
// dK and dV are accumulated in the accumulation dtype straight into the (B, S, .) output (a
// scratch tensor for bfloat16, cast once at the end); positions no window reaches stay 0.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/attention_checks.h"
#include "common/local_window.h"
#include "cpu/attention_rows.h"
#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "local_attention";

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Everything one row needs, shared by the forward and the backward. Pointers are contiguous.
template <typename scalar_t>
struct LocalArgs {
  using A = acc_t<scalar_t>;
  const scalar_t* q;        // (rows, Dk)
  const scalar_t* k;        // (B, S, Dk)
  const scalar_t* v;        // (B, S, Dv)
  const A* centers;         // (rows,) in the accumulation dtype
  const int64_t* lens;      // (B,)
  int64_t rows_per_source;  // beam * T
  int64_t S, Dk, Dv, D;
  A scale;
  LocalGaussian<A> gauss;

  LocalWindow window(int64_t r) const {
    return local_window<A>(centers[r], D, lens[r / rows_per_source]);
  }

  // a[0:n] = softmax of the window's scores, w[0:n] = a g; qs (Dk) = scale * q as a scratch the
  // caller reuses (the backward's dK). n = win.size() may be 0.
  void weights(int64_t r, const LocalWindow& win, A* qs, A* a, A* w) const {
    const int64_t b = r / rows_per_source;
    const scalar_t* qr = q + r * Dk;
    for (int64_t d = 0; d < Dk; ++d) qs[d] = static_cast<A>(qr[d]) * scale;
    local_window_weights<scalar_t>(qs, k + b * S * Dk, Dk, win, centers[r], gauss, a, w);
  }
};

template <typename scalar_t>
LocalArgs<scalar_t> make_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& centers, const std::vector<int64_t>& lens,
                              const AttentionGeometry& g, int64_t window, double scale) {
  using A = acc_t<scalar_t>;
  return LocalArgs<scalar_t>{q.const_data_ptr<scalar_t>(),
                             k.const_data_ptr<scalar_t>(),
                             v.const_data_ptr<scalar_t>(),
                             centers.const_data_ptr<A>(),
                             lens.data(),
                             g.beam * g.T,
                             g.S,
                             g.Dq,
                             g.Dv,
                             window,
                             static_cast<A>(scale),
                             LocalGaussian<A>(window)};
}

// Most positions a window can hold: 2D + 1, and never more than S (the window is cut to
// [0, lengths[b])). Sizes every per-row buffer: a window of 10^9 over 50 positions needs 50.
int64_t max_window_size(int64_t window, int64_t S) {
  return std::max<int64_t>(1, std::min<int64_t>(2 * std::min(window, S) + 1, S));
}

// Rows per parallel task: ~64K multiply-adds per hand-off.
int64_t row_grain(const AttentionGeometry& g, int64_t window) {
  const int64_t per_row = max_window_size(window, g.S) * (g.Dq + g.Dv) + g.S;
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, per_row));
}

template <typename scalar_t>
void local_forward_kernel(const LocalArgs<scalar_t>& a, int64_t rows, scalar_t* ctx,
                          scalar_t* weights, int64_t grain) {
  using A = acc_t<scalar_t>;
  const int64_t width = max_window_size(a.D, a.S);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> qs(a.Dk), al(width), w(width), c(a.Dv);
    for (int64_t r = begin; r < end; ++r) {
      const LocalWindow win = a.window(r);
      const int64_t n = win.size(), b = r / a.rows_per_source;
      a.weights(r, win, qs.data(), al.data(), w.data());
      weighted_row_sum_stream<scalar_t>(w.data(), a.v + (b * a.S + win.lo) * a.Dv, a.Dv, n, a.Dv,
                                        c.data());
      convert_row(c.data(), ctx + r * a.Dv, a.Dv);
      if (weights != nullptr) {
        scalar_t* wr = weights + r * a.S;
        std::fill(wr, wr + a.S, scalar_t(0));
        convert_row(w.data(), wr + win.lo, n);
      }
    }
  });
}

// grad_k / grad_v: (B, S, .) zeros in the accumulation dtype; grad_centers (rows,) likewise.
template <typename scalar_t>
void local_backward_kernel(const LocalArgs<scalar_t>& a, int64_t B, const scalar_t* grad_ctx,
                           const scalar_t* grad_w, scalar_t* grad_q, acc_t<scalar_t>* grad_k,
                           acc_t<scalar_t>* grad_v, acc_t<scalar_t>* grad_centers) {
  using A = acc_t<scalar_t>;
  const int64_t width = max_window_size(a.D, a.S);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> qs(a.Dk), al(width), w(width), gc(a.Dv), dw(width), ds(width), dq(a.Dk);
    for (int64_t b = begin; b < end; ++b) {
      const scalar_t* kb = a.k + b * a.S * a.Dk;
      const scalar_t* vb = a.v + b * a.S * a.Dv;
      for (int64_t r = b * a.rows_per_source; r < (b + 1) * a.rows_per_source; ++r) {
        const LocalWindow win = a.window(r);
        const int64_t n = win.size(), lo = win.lo;
        const A p = a.centers[r];
        a.weights(r, win, qs.data(), al.data(), w.data());
        convert_row(grad_ctx + r * a.Dv, gc.data(), a.Dv);
        dot_rows<scalar_t>(gc.data(), vb + lo * a.Dv, a.Dv, n, a.Dv, dw.data());
        A a_dot_da = 0, dp = 0;
        if (grad_w != nullptr) {
          for (int64_t i = 0; i < n; ++i) dw[i] += static_cast<A>(grad_w[r * a.S + lo + i]);
        }
        for (int64_t i = 0; i < n; ++i) {
          const A g = a.gauss.factor(lo + i, p);
          const A da = dw[i] * g;
          ds[i] = da;
          a_dot_da += al[i] * da;
          dp += dw[i] * w[i] * a.gauss.dlog_dp(lo + i, p);
        }
        for (int64_t i = 0; i < n; ++i) ds[i] = al[i] * (ds[i] - a_dot_da);
        grad_centers[r] = dp;
        // dq = scale sum_s ds[s] K[b, s]
        weighted_row_sum<scalar_t>(ds.data(), kb + lo * a.Dk, a.Dk, n, a.Dk, dq.data(), false);
        scalar_t* gq = grad_q + r * a.Dk;
        for (int64_t d = 0; d < a.Dk; ++d) gq[d] = static_cast<scalar_t>(dq[d] * a.scale);
        for (int64_t i = 0; i < n; ++i) {
          axpy<A>(ds[i], qs.data(), a.Dk, grad_k + (b * a.S + lo + i) * a.Dk);  // qs = scale q
          axpy<A>(w[i], gc.data(), a.Dv, grad_v + (b * a.S + lo + i) * a.Dv);
        }
      }
    }
  });
}

struct LocalInputs {
  AttentionGeometry g;
  std::vector<int64_t> lens;
  at::Tensor q, k, v, centers;  // contiguous; centers in the accumulation dtype
};

LocalInputs prepare(const char* op, const at::Tensor& query, const at::Tensor& keys,
                    const at::Tensor& values, const at::Tensor& centers, int64_t window,
                    const std::optional<at::Tensor>& lengths) {
  LocalInputs in;
  in.g = check_attention_inputs(op, query, "query", keys, "keys", values, lengths);
  check_local_inputs(op, centers, window, query);
  in.lens = read_lengths(op, lengths, in.g.B, in.g.S);
  in.q = query.contiguous();
  in.k = keys.contiguous();
  in.v = values.contiguous();
  in.centers = centers.to(acc_dtype(query.scalar_type())).contiguous();
  return in;
}

std::tuple<at::Tensor, at::Tensor> local_attention_cpu(const at::Tensor& query,
                                                       const at::Tensor& keys,
                                                       const at::Tensor& values,
                                                       const at::Tensor& centers, int64_t window,
                                                       const std::optional<at::Tensor>& lengths,
                                                       double scale, bool need_weights) {
  const LocalInputs in = prepare(kOp, query, keys, values, centers, window, lengths);
  const AttentionGeometry& g = in.g;
  std::vector<int64_t> ctx_shape = query.sizes().vec();
  ctx_shape.back() = g.Dv;
  at::Tensor context = at::empty(ctx_shape, query.options());
  std::vector<int64_t> w_shape = query.sizes().vec();
  w_shape.back() = g.S;
  at::Tensor weights = at::empty(need_weights ? w_shape : std::vector<int64_t>{0}, query.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, query.scalar_type(), "local_attention_cpu", [&] {
    const auto args = make_args<scalar_t>(in.q, in.k, in.v, in.centers, in.lens, g, window, scale);
    local_forward_kernel<scalar_t>(args, g.N * g.T, context.mutable_data_ptr<scalar_t>(),
                                   need_weights ? weights.mutable_data_ptr<scalar_t>() : nullptr,
                                   row_grain(g, window));
  });
  return {context, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> local_attention_backward_cpu(
    const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_weights,
    const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
    const at::Tensor& centers, int64_t window, const std::optional<at::Tensor>& lengths,
    double scale) {
  const char* op = "local_attention_backward";
  const LocalInputs in = prepare(op, query, keys, values, centers, window, lengths);
  const AttentionGeometry& g = in.g;
  const auto dtype = query.scalar_type();
  const auto acc = acc_dtype(dtype);
  check_output_grad(op, "grad_context", grad_context, g, g.Dv, query);
  const at::Tensor gc = grad_context.to(dtype).contiguous();
  at::Tensor gw;
  if (grad_weights.has_value()) {
    check_output_grad(op, "grad_weights", *grad_weights, g, g.S, query);
    gw = grad_weights->to(dtype).contiguous();
  }
  at::Tensor grad_q = at::empty(query.sizes(), query.options());
  at::Tensor grad_k = at::zeros({g.B, g.S, g.Dq}, query.options().dtype(acc));
  at::Tensor grad_v = at::zeros({g.B, g.S, g.Dv}, query.options().dtype(acc));
  at::Tensor grad_p = at::empty({g.N * g.T}, query.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "local_attention_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    const auto args = make_args<scalar_t>(in.q, in.k, in.v, in.centers, in.lens, g, window, scale);
    local_backward_kernel<scalar_t>(
        args, g.B, gc.const_data_ptr<scalar_t>(),
        gw.defined() ? gw.const_data_ptr<scalar_t>() : nullptr, grad_q.mutable_data_ptr<scalar_t>(),
        grad_k.mutable_data_ptr<A>(), grad_v.mutable_data_ptr<A>(), grad_p.mutable_data_ptr<A>());
  });
  return {grad_q, grad_k.to(dtype), grad_v.to(dtype),
          grad_p.view(centers.sizes()).to(centers.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("local_attention", &local_attention_cpu);
  m.impl("local_attention_backward", &local_attention_backward_cpu);
}

}  // namespace fast_s2s::cpu
