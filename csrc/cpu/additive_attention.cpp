// Fused additive attention on the CPU (Bahdanau; Luong concat), forward and backward.
// Reference: fast_s2s/reference.py::additive_attention.
//
// The callers project the keys once per source sentence (keys_proj) and the query once per
// step (query_proj); this kernel does the rest for query row (n, t), b = n / beam, L = lengths[b]:
//   score[s] = sum_a v[a] tanh(query_proj[a] + keys_proj[b, s, a])    (no N x S x A tensor)
//   p        = softmax_{s < L}(score);   ctx = sum_{s < L} p[s] values[b, s]
// The unfused composite materialises the N x S x A sum and its tanh; here each tanh value lives
// in a register for one multiply-add. Rows run in parallel; beam rows share keys_proj and values.
//
// Backward runs the loop it shares with dot attention (attention_backward.h: parallel over source
// rows b, so dkeys_proj[b], dvalues[b] need no atomics); each query row recomputes its tanh values
// once into a S x A scratch buffer and reuses them:
//   dS[s]          = p[s] (dP[s] - sum_s' p[s'] dP[s']),  dP[s] = dctx . values[b, s] + dw[s]
//   g[s, a]        = dS[s] v[a] (1 - tanh^2)
//   dquery_proj[a] = sum_s g[s, a];  dkeys_proj[b, s, a] += g[s, a]
//   dv[a]         += sum_s dS[s] tanh[s, a];  dvalues[b, s] += p[s] dctx
// dv is summed per source row, then over rows in a fixed order: the result is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common/attention_checks.h"
#include "cpu/attention_backward.h"
#include "cpu/attention_rows.h"
#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "additive_attention";

// dq += g, dk += g, dv += ds * th, where g = ds * v * (1 - th^2), over n features.
template <typename A>
void additive_score_backward(A ds, const A* v, const A* th, int64_t n, A* dq, A* dk, A* dv) {
  constexpr int64_t W = Vec<A>::size();
  const Vec<A> dsv(ds), one(A(1));
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const Vec<A> t = Vec<A>::loadu(th + i);
    const Vec<A> g = dsv * Vec<A>::loadu(v + i) * (one - t * t);
    (Vec<A>::loadu(dq + i) + g).store(dq + i);
    (Vec<A>::loadu(dk + i) + g).store(dk + i);
    at::vec::fmadd(dsv, t, Vec<A>::loadu(dv + i)).store(dv + i);
  }
  for (; i < n; ++i) {
    const A g = ds * v[i] * (A(1) - th[i] * th[i]);
    dq[i] += g;
    dk[i] += g;
    dv[i] += ds * th[i];
  }
}

template <typename scalar_t>
void additive_forward_kernel(const scalar_t* qp, const scalar_t* kp, const scalar_t* vw,
                             const scalar_t* values, const std::vector<int64_t>& lens,
                             scalar_t* ctx, scalar_t* w, const AttentionGeometry& g) {
  using A = acc_t<scalar_t>;
  const int64_t Ad = g.Dq, Dv = g.Dv, S = g.S;
  // Each score costs A tanh evaluations: a far heavier row than dot attention.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, S * (4 * Ad + Dv)));
  at::parallel_for(0, g.N * g.T, grain, [&](int64_t begin, int64_t end) {
    std::vector<A> q(Ad), v(Ad), p(S), c(Dv);
    convert_row(vw, v.data(), Ad);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / g.T / g.beam;
      const int64_t L = lens[b];
      convert_row(qp + r * Ad, q.data(), Ad);
      const scalar_t* kb = kp + b * S * Ad;
      for (int64_t s = 0; s < L; ++s) {
        p[s] = additive_score<scalar_t>(q.data(), v.data(), kb + s * Ad, Ad, nullptr);
      }
      softmax_and_read<scalar_t>(p.data(), L, S, values + b * S * Dv, Dv, c.data(), ctx + r * Dv,
                                 w + r * S);
    }
  });
}

// The additive-attention half of the backward loop (attention_backward.h), one per thread: the
// weights recomputed with their tanh values kept, then dquery_proj, dkeys_proj and the source
// row's part of dv from dS (formulas at the top of the file).
template <typename scalar_t>
struct AdditiveBackwardRows {
  using A = acc_t<scalar_t>;
  const scalar_t* qp;
  const scalar_t* kp;
  scalar_t* grad_qp;
  scalar_t* grad_kp;
  A* grad_v_parts;
  int64_t Ad, S;
  std::vector<A> q, v, th, dq, dk;  // one query row, v, its tanh values, dq; dkeys_proj[b]
  A* dv = nullptr;                  // grad_v_parts of the current source row

  AdditiveBackwardRows(const scalar_t* qp_, const scalar_t* kp_, const scalar_t* vw,
                       scalar_t* grad_qp_, scalar_t* grad_kp_, A* grad_v_parts_,
                       const AttentionGeometry& g)
      : qp(qp_),
        kp(kp_),
        grad_qp(grad_qp_),
        grad_kp(grad_kp_),
        grad_v_parts(grad_v_parts_),
        Ad(g.Dq),
        S(g.S),
        q(Ad),
        v(Ad),
        th(S * Ad),
        dq(Ad),
        dk(S * Ad) {
    convert_row(vw, v.data(), Ad);
  }

  void begin_source(int64_t b) {
    dv = grad_v_parts + b * Ad;
    std::fill(dv, dv + Ad, A(0));
    std::fill(dk.begin(), dk.end(), A(0));
  }

  void weights(int64_t r, int64_t b, int64_t L, A* p) {
    convert_row(qp + r * Ad, q.data(), Ad);
    const scalar_t* kb = kp + b * S * Ad;
    for (int64_t s = 0; s < L; ++s) {
      p[s] = additive_score<scalar_t>(q.data(), v.data(), kb + s * Ad, Ad, th.data() + s * Ad);
    }
    masked_softmax_inplace<A>(p, L, S);
  }

  void row_grads(int64_t r, int64_t /*b*/, int64_t L, const A* /*p*/, const A* ds) {
    std::fill(dq.begin(), dq.end(), A(0));
    for (int64_t s = 0; s < L; ++s) {
      additive_score_backward<A>(ds[s], v.data(), th.data() + s * Ad, Ad, dq.data(),
                                 dk.data() + s * Ad, dv);
    }
    convert_row(dq.data(), grad_qp + r * Ad, Ad);
  }

  void end_source(int64_t b) { convert_row(dk.data(), grad_kp + b * S * Ad, S * Ad); }
};

AttentionGeometry check_additive(const char* op, const at::Tensor& query_proj,
                                 const at::Tensor& keys_proj, const at::Tensor& v,
                                 const at::Tensor& values,
                                 const std::optional<at::Tensor>& lengths) {
  const AttentionGeometry g =
      check_attention_inputs(op, query_proj, "query_proj", keys_proj, "keys_proj", values, lengths);
  TORCH_CHECK(v.dim() == 1 && v.size(0) == g.Dq, op, ": v must have shape (A,) = (", g.Dq,
              ",) like the last dimension of query_proj, got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == query_proj.scalar_type(), op,
              ": v must have the dtype of query_proj (", query_proj.scalar_type(), "), got ",
              v.scalar_type());
  TORCH_CHECK(v.device() == query_proj.device(), op, ": v must be on the device of query_proj (",
              query_proj.device(), "), got ", v.device());
  return g;
}

std::tuple<at::Tensor, at::Tensor> additive_attention_cpu(
    const at::Tensor& query_proj, const at::Tensor& keys_proj, const at::Tensor& v,
    const at::Tensor& values, const std::optional<at::Tensor>& lengths, bool need_weights) {
  (void)need_weights;  // written anyway, as in dot_attention.cpp
  const AttentionGeometry g = check_additive(kOp, query_proj, keys_proj, v, values, lengths);
  const std::vector<int64_t> lens = read_lengths(kOp, lengths, g.B, g.S);
  const at::Tensor q = query_proj.contiguous(), k = keys_proj.contiguous(), vw = v.contiguous(),
                   vals = values.contiguous();
  at::Tensor context = at::empty({g.N, g.T, g.Dv}, query_proj.options());
  at::Tensor weights = at::empty({g.N, g.T, g.S}, query_proj.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, q.scalar_type(), "additive_attention_cpu", [&] {
    additive_forward_kernel<scalar_t>(
        q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(), vw.const_data_ptr<scalar_t>(),
        vals.const_data_ptr<scalar_t>(), lens, context.mutable_data_ptr<scalar_t>(),
        weights.mutable_data_ptr<scalar_t>(), g);
  });
  if (g.query_2d) return {context.view({g.N, g.Dv}), weights.view({g.N, g.S})};
  return {context, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> additive_attention_backward_cpu(
    const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_weights,
    const at::Tensor& query_proj, const at::Tensor& keys_proj, const at::Tensor& v,
    const at::Tensor& values, const at::Tensor& weights, const std::optional<at::Tensor>& lengths) {
  (void)weights;  // recomputed in float32 (see dot_attention.cpp)
  const char* op = "additive_attention_backward";
  const AttentionGeometry g = check_additive(op, query_proj, keys_proj, v, values, lengths);
  check_output_grad(op, "grad_context", grad_context, g, g.Dv, query_proj);
  const std::vector<int64_t> lens = read_lengths(op, lengths, g.B, g.S);
  const auto dtype = query_proj.scalar_type();
  const at::Tensor q = query_proj.contiguous(), k = keys_proj.contiguous(), vw = v.contiguous(),
                   vals = values.contiguous();
  const at::Tensor gc = grad_context.to(dtype).contiguous();
  at::Tensor gw;
  if (grad_weights.has_value()) {
    check_output_grad(op, "grad_weights", *grad_weights, g, g.S, query_proj);
    gw = grad_weights->to(dtype).contiguous();
  }
  const auto acc_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor grad_q = at::empty(query_proj.sizes(), query_proj.options());
  at::Tensor grad_k = at::empty({g.B, g.S, g.Dq}, query_proj.options());
  at::Tensor grad_v_parts = at::empty({g.B, g.Dq}, query_proj.options().dtype(acc_dtype));
  at::Tensor grad_vals = at::empty({g.B, g.S, g.Dv}, query_proj.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dtype, "additive_attention_backward_cpu", [&] {
    attention_backward_by_source<scalar_t>(
        gc.const_data_ptr<scalar_t>(), gw.defined() ? gw.const_data_ptr<scalar_t>() : nullptr,
        vals.const_data_ptr<scalar_t>(), lens, grad_vals.mutable_data_ptr<scalar_t>(), g, [&] {
          return AdditiveBackwardRows<scalar_t>(
              q.const_data_ptr<scalar_t>(), k.const_data_ptr<scalar_t>(),
              vw.const_data_ptr<scalar_t>(), grad_q.mutable_data_ptr<scalar_t>(),
              grad_k.mutable_data_ptr<scalar_t>(), grad_v_parts.mutable_data_ptr<acc_t<scalar_t>>(),
              g);
        });
  });
  // Sum the per-source-row parts of dv in a fixed order (deterministic), in float32/64.
  at::Tensor grad_v = grad_v_parts.sum(0).to(dtype);
  return {grad_q, grad_k, grad_v, grad_vals};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("additive_attention", &additive_attention_cpu);
  m.impl("additive_attention_backward", &additive_attention_backward_cpu);
}

}  // namespace fast_s2s::cpu
