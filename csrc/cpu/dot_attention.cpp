// Fused dot-product attention on the CPU (Luong dot / general, scaled dot), forward and backward.
// Reference: fast_s2s/reference.py::dot_attention.
//
// Forward, per query row (n, t), b = n / beam, L = lengths[b]:
//   p[s]    = softmax_{s < L}(scale * q . K[b, s])        scores in a row-sized buffer
//   ctx[:]  = sum_{s < L} p[s] V[b, s, :]
// K[b] and V[b] are each read once per query row, straight from the caller's (B, S, D) tensors:
// beam rows share them without copies. Rows run in parallel (at::parallel_for); rows of one
// source row are adjacent, so a thread reuses K[b], V[b] from cache for beam and T > 1.
//
// When many query rows read one source row (T > 1 in training, wide beams), the two products are
// matrix products: K[b] is then reused from registers across rows by BLAS (at::bmm on the
// (B, beam*T, D) view of the query, still no copy of keys or values), and only mask, scale and
// softmax run in our own loop between them. Row-wise kernels stream K[b] from L2 once per row and
// are bounded by that bandwidth. Q K^T (and dC V^T) go through a register-tiled kernel of our own
// (gemm_nt.h) that skips masked keys and reads bfloat16 without copies; P V and the backward
// products, whose output is wide, through the GEMM layer (gemm.h), which measures at::bmm
// against the in-house kernel per shape.
//
// Backward takes p from the forward's weights (float32/64) or recomputes it from q and K
// (bfloat16 weights are too coarse to differentiate through). Row-wise, it runs the loop it
// shares with additive attention (attention_backward.h: parallel over source rows b, no atomics):
//   dP[s] = dctx . V[b, s] + dweights[s]
//   dS[s] = p[s] (dP[s] - sum_s' p[s'] dP[s'])
//   dq    = scale sum_s dS[s] K[b, s];  dK[b, s] += scale dS[s] q;  dV[b, s] += p[s] dctx
// and on the matrix-product path the same formulas as batched products around one dS pass.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/attention_checks.h"
#include "cpu/attention_backward.h"
#include "cpu/gemm.h"
#include "cpu/gemm_nt.h"
#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "dot_attention";

// Query rows per source row from which the products go through at::bmm (see top of file).
constexpr int64_t kGemmMinRows = 8;

bool use_gemm(const AttentionGeometry& g) { return g.beam * g.T >= kGemmMinRows && g.S > 0; }

// scores (B*m, S) in acc dtype -> in place: p = masked softmax(scale * scores); also writes the
// weights output (storage dtype) when w != nullptr.
template <typename scalar_t>
void scale_mask_softmax_rows(acc_t<scalar_t>* scores, scalar_t* w, const std::vector<int64_t>& lens,
                             const AttentionGeometry& g, double scale) {
  using A = acc_t<scalar_t>;
  const int64_t S = g.S;
  at::parallel_for(0, g.N * g.T, std::max<int64_t>(1, 4096 / S), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      A* p = scores + r * S;
      const int64_t L = lens[r / g.T / g.beam];
      for (int64_t s = 0; s < L; ++s) p[s] *= static_cast<A>(scale);
      masked_softmax_inplace<A>(p, L, S);
      if (w != nullptr) convert_row(p, w + r * S, S);
    }
  });
}

// dS = p * (dP - sum(p * dP)) * scale, in place in dp (B*m, S); dp already holds dctx . V.
template <typename A, typename scalar_t>
void softmax_backward_rows(const A* p, A* dp, const scalar_t* grad_w,
                           const std::vector<int64_t>& lens, const AttentionGeometry& g,
                           double scale) {
  const int64_t S = g.S;
  at::parallel_for(0, g.N * g.T, std::max<int64_t>(1, 4096 / S), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const A* pr = p + r * S;
      A* d = dp + r * S;
      const int64_t L = lens[r / g.T / g.beam];
      A p_dot_dp = 0;
      for (int64_t s = 0; s < L; ++s) {
        if (grad_w != nullptr) d[s] += static_cast<A>(grad_w[r * S + s]);
        p_dot_dp += pr[s] * d[s];
      }
      for (int64_t s = 0; s < L; ++s) d[s] = pr[s] * (d[s] - p_dot_dp) * static_cast<A>(scale);
      for (int64_t s = L; s < S; ++s) d[s] = A(0);
    }
  });
}

// Rows per parallel task: enough work (~64K multiply-adds) to pay for a thread hand-off.
int64_t row_grain(const AttentionGeometry& g) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, g.S * (g.Dq + g.Dv)));
}

template <typename scalar_t>
void dot_forward_kernel(const scalar_t* q, const scalar_t* k, const scalar_t* v,
                        const std::vector<int64_t>& lens, scalar_t* ctx, scalar_t* w,
                        const AttentionGeometry& g, double scale) {
  using A = acc_t<scalar_t>;
  const int64_t D = g.Dq, Dv = g.Dv, S = g.S;
  at::parallel_for(0, g.N * g.T, row_grain(g), [&](int64_t begin, int64_t end) {
    std::vector<A> qs(D), p(S), c(Dv);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / g.T / g.beam;
      const int64_t L = lens[b];
      // Fold the scale into the query once: (scale q) . k costs D multiplies, not S.
      const scalar_t* qr = q + r * D;
      for (int64_t d = 0; d < D; ++d) qs[d] = static_cast<A>(qr[d]) * static_cast<A>(scale);
      dot_rows<scalar_t>(qs.data(), k + b * S * D, D, L, D, p.data());
      softmax_and_read<scalar_t>(p.data(), L, S, v + b * S * Dv, Dv, c.data(), ctx + r * Dv,
                                 w + r * S);
    }
  });
}

// The dot-attention half of the backward loop (attention_backward.h), one per thread: the weights
// of a row, then dq and dK[b] from dS (formulas at the top of the file). saved_p: the forward's
// weights when they are exact (float32/64), else nullptr (recompute).
template <typename scalar_t>
struct DotBackwardRows {
  using A = acc_t<scalar_t>;
  const scalar_t* q;
  const scalar_t* k;
  const A* saved_p;
  scalar_t* grad_q;
  scalar_t* grad_k;
  int64_t D, S;
  A sc;
  std::vector<A> qs, dq, dk;  // scale * q, dq of one row; dK of one source row

  DotBackwardRows(const scalar_t* q_, const scalar_t* k_, const A* saved_p_, scalar_t* grad_q_,
                  scalar_t* grad_k_, const AttentionGeometry& g, double scale)
      : q(q_),
        k(k_),
        saved_p(saved_p_),
        grad_q(grad_q_),
        grad_k(grad_k_),
        D(g.Dq),
        S(g.S),
        sc(static_cast<A>(scale)),
        qs(D),
        dq(D),
        dk(S * D) {}

  void begin_source(int64_t) { std::fill(dk.begin(), dk.end(), A(0)); }

  void weights(int64_t r, int64_t b, int64_t L, A* p) {
    const scalar_t* qr = q + r * D;
    for (int64_t d = 0; d < D; ++d) qs[d] = static_cast<A>(qr[d]) * sc;
    if (saved_p != nullptr) {
      std::copy(saved_p + r * S, saved_p + (r + 1) * S, p);
    } else {  // recompute the weights of this row exactly as the forward did
      dot_rows<scalar_t>(qs.data(), k + b * S * D, D, L, D, p);
      masked_softmax_inplace<A>(p, L, S);
    }
  }

  void row_grads(int64_t r, int64_t b, int64_t L, const A* /*p*/, const A* ds) {
    weighted_row_sum<scalar_t>(ds, k + b * S * D, D, L, D, dq.data(), false);
    scalar_t* gq = grad_q + r * D;
    for (int64_t d = 0; d < D; ++d) gq[d] = static_cast<scalar_t>(dq[d] * sc);
    // dK[b, s] += scale dS[s] q, from qs = scale q
    for (int64_t s = 0; s < L; ++s) axpy<A>(ds[s], qs.data(), D, dk.data() + s * D);
  }

  void end_source(int64_t b) { convert_row(dk.data(), grad_k + b * S * D, S * D); }
};

at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// Forward on the matrix-product path; q (N,T,D), k, v contiguous. Writes context and weights.
// scores = Q K^T by our register-tiled kernel (skipping masked keys), then one fused
// scale-mask-softmax pass, then context = P V by BLAS straight into the output.
void dot_forward_gemm(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const std::vector<int64_t>& lens, at::Tensor& context, at::Tensor& weights,
                      const AttentionGeometry& g, double scale) {
  const auto dtype = q.scalar_type();
  const auto acc = acc_dtype(dtype);
  const int64_t m = g.beam * g.T;
  at::Tensor p = at::empty({g.B, m, g.S}, q.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "dot_scores_cpu", [&] {
    batched_gemm_nt<scalar_t>(q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
                              p.mutable_data_ptr<acc_t<scalar_t>>(), g.B, m, g.S, g.Dq,
                              [&](int64_t b) { return lens[b]; });
    scale_mask_softmax_rows<scalar_t>(p.mutable_data_ptr<acc_t<scalar_t>>(),
                                      weights.mutable_data_ptr<scalar_t>(), lens, g, scale);
  });
  if (dtype == acc) {
    at::Tensor out = context.view({g.B, m, g.Dv});
    gemm::bmm_out("dot_attention.context", p, v, out);
  } else {
    at::Tensor out = at::empty({g.B, m, g.Dv}, p.options());
    gemm::bmm_out("dot_attention.context", p, v.to(acc), out);
    context.copy_(out.view({g.N, g.T, g.Dv}));
  }
}

// Backward on the matrix-product path. Returns (grad_q, grad_k, grad_v) in the input dtype.
std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_backward_gemm(
    const at::Tensor& gc, const at::Tensor& gw, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& weights, const std::vector<int64_t>& lens,
    const AttentionGeometry& g, double scale) {
  const auto dtype = q.scalar_type();
  const auto acc = acc_dtype(dtype);
  const int64_t m = g.beam * g.T;
  at::Tensor p;
  at::Tensor ds = at::empty({g.B, m, g.S}, q.options().dtype(acc));  // dP, then scale * dS
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "dot_attention_backward_gemm_cpu", [&] {
    using A = acc_t<scalar_t>;
    auto valid = [&](int64_t b) { return lens[b]; };
    if (dtype == acc) {
      p = weights.view({g.B, m, g.S});  // float32/64 weights are exactly the forward's softmax
    } else {
      // bfloat16 weights are too coarse to differentiate through: recompute them in float32.
      p = at::empty({g.B, m, g.S}, q.options().dtype(acc));
      batched_gemm_nt<scalar_t>(q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
                                p.mutable_data_ptr<A>(), g.B, m, g.S, g.Dq, valid);
      scale_mask_softmax_rows<scalar_t>(p.mutable_data_ptr<A>(), nullptr, lens, g, scale);
    }
    batched_gemm_nt<scalar_t>(gc.const_data_ptr<scalar_t>(), v.const_data_ptr<scalar_t>(),
                              ds.mutable_data_ptr<A>(), g.B, m, g.S, g.Dv, valid);
    softmax_backward_rows<A, scalar_t>(p.const_data_ptr<A>(), ds.mutable_data_ptr<A>(),
                                       gw.defined() ? gw.const_data_ptr<scalar_t>() : nullptr, lens,
                                       g, scale);
  });
  const at::Tensor qa = q.to(acc).view({g.B, m, g.Dq});
  const at::Tensor gca = gc.to(acc).view({g.B, m, g.Dv});
  at::Tensor grad_q = at::empty({g.B, m, g.Dq}, ds.options());
  gemm::bmm_out("dot_attention.grad_query", ds, k.to(acc), grad_q);
  at::Tensor grad_k = at::empty({g.B, g.S, g.Dq}, ds.options());
  gemm::bmm_out("dot_attention.grad_keys", ds.transpose(1, 2), qa, grad_k);
  at::Tensor grad_v = at::empty({g.B, g.S, g.Dv}, ds.options());
  gemm::bmm_out("dot_attention.grad_values", p.transpose(1, 2), gca, grad_v);
  grad_q = grad_q.view(q.sizes()).to(dtype);
  grad_k = grad_k.to(dtype);
  grad_v = grad_v.to(dtype);
  return {grad_q, grad_k, grad_v};
}

std::tuple<at::Tensor, at::Tensor> dot_attention_cpu(const at::Tensor& query,
                                                     const at::Tensor& keys,
                                                     const at::Tensor& values,
                                                     const std::optional<at::Tensor>& lengths,
                                                     double scale, bool need_weights) {
  // The weights are written whatever need_weights says: the float32/64 backward reads them, and
  // writing them costs little next to reading K and V on the CPU (see csrc/op_schemas.h).
  (void)need_weights;
  const AttentionGeometry g =
      check_attention_inputs(kOp, query, "query", keys, "keys", values, lengths);
  const std::vector<int64_t> lens = read_lengths(kOp, lengths, g.B, g.S);
  const at::Tensor q = query.contiguous(), k = keys.contiguous(), v = values.contiguous();
  at::Tensor context = at::empty({g.N, g.T, g.Dv}, query.options());
  at::Tensor weights = at::empty({g.N, g.T, g.S}, query.options());
  if (use_gemm(g)) {
    dot_forward_gemm(q.view({g.N, g.T, g.Dq}), k, v, lens, context, weights, g, scale);
  } else {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, query.scalar_type(), "dot_attention_cpu", [&] {
      dot_forward_kernel<scalar_t>(q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
                                   v.const_data_ptr<scalar_t>(), lens,
                                   context.mutable_data_ptr<scalar_t>(),
                                   weights.mutable_data_ptr<scalar_t>(), g, scale);
    });
  }
  if (g.query_2d) return {context.view({g.N, g.Dv}), weights.view({g.N, g.S})};
  return {context, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward_cpu(
    const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_weights,
    const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
    const at::Tensor& weights, const std::optional<at::Tensor>& lengths, double scale) {
  const char* op = "dot_attention_backward";
  const AttentionGeometry g =
      check_attention_inputs(op, query, "query", keys, "keys", values, lengths);
  check_output_grad(op, "grad_context", grad_context, g, g.Dv, query);
  const std::vector<int64_t> lens = read_lengths(op, lengths, g.B, g.S);
  const auto dtype = query.scalar_type();
  const at::Tensor q = query.contiguous(), k = keys.contiguous(), v = values.contiguous();
  const at::Tensor gc = grad_context.to(dtype).contiguous();
  at::Tensor gw;
  if (grad_weights.has_value()) {
    check_output_grad(op, "grad_weights", *grad_weights, g, g.S, query);
    gw = grad_weights->to(dtype).contiguous();
  }
  TORCH_CHECK(weights.sizes() ==
                      (g.query_2d ? at::IntArrayRef{g.N, g.S} : at::IntArrayRef{g.N, g.T, g.S}) &&
                  weights.scalar_type() == dtype,
              op, ": weights must be the forward's weights output, of shape (N, T, S) = (", g.N,
              ", ", g.T, ", ", g.S, ") and dtype ", dtype, ", got ", weights.sizes(), " ",
              weights.scalar_type());
  // float32/64 weights are exactly the forward's softmax; bfloat16 ones are recomputed.
  const at::Tensor w = weights.contiguous();
  if (use_gemm(g)) return dot_backward_gemm(gc, gw, q, k, v, w, lens, g, scale);
  at::Tensor grad_q = at::empty(query.sizes(), query.options());
  at::Tensor grad_k = at::empty({g.B, g.S, g.Dq}, query.options());
  at::Tensor grad_v = at::empty({g.B, g.S, g.Dv}, query.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "dot_attention_backward_cpu", [&] {
    using A = acc_t<scalar_t>;
    const A* saved_p = std::is_same_v<A, scalar_t> ? w.const_data_ptr<A>() : nullptr;
    attention_backward_by_source<scalar_t>(
        gc.const_data_ptr<scalar_t>(), gw.defined() ? gw.const_data_ptr<scalar_t>() : nullptr,
        v.const_data_ptr<scalar_t>(), lens, grad_v.mutable_data_ptr<scalar_t>(), g, [&] {
          return DotBackwardRows<scalar_t>(
              q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), saved_p,
              grad_q.mutable_data_ptr<scalar_t>(), grad_k.mutable_data_ptr<scalar_t>(), g, scale);
        });
  });
  return {grad_q, grad_k, grad_v};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("dot_attention", &dot_attention_cpu);
  m.impl("dot_attention_backward", &dot_attention_backward_cpu);
}

}  // namespace fast_s2s::cpu
