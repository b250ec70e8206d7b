// Fused dot-product and additive attention on CUDA: the backward.
// Reference: fast_s2s/reference.py::dot_attention and ::additive_attention.
// Rows, lengths and what the forward shares: csrc/cuda/attention_common.cuh; the forward:
// csrc/cuda/attention_forward.cu.
//
// Backward: attention_backward_rows_kernel, one block per row, recomputes the scores in float32
// (float16 / bfloat16 weights are too coarse to differentiate through) together with
// dP[s] = dC . V[b, s] + dW[s], then P = softmax, delta = sum_s P dP and dS = P (dP - delta), all
// to float scratch (rows, S). The sums over rows that need no tanh are then batched matrix
// products (cuBLAS) on the (B, beam * T, .) views: dot dQ = dS K, dK = dS^T Q (dS carries the
// scale), and dV = P^T dC for both kinds. Additive attention's dQP is summed by the row kernel
// itself (dQP[a] = v[a] sum_s dS[s] (1 - tanh^2)), and dKP and dv by
// additive_backward_keys_kernel, one block per source position, over the rows that read it (no
// atomics).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <utility>

#include "common/attention_checks.h"
#include "cuda/attention_common.cuh"
#include "cuda/cuda_utils.cuh"

namespace fast_s2s::cuda {
namespace {

// dC . V[b, s], by one warp; every lane gets it.
template <typename scalar_t, int VEC>
__device__ __forceinline__ acc_t<scalar_t> warp_dot(const scalar_t* x, const scalar_t* y, int64_t n,
                                                    int lane) {
  using A = acc_t<scalar_t>;
  A part = 0;
  for (int64_t i = static_cast<int64_t>(lane) * VEC; i < n; i += kWarpSize * VEC) {
    A xv[VEC], yv[VEC];
    load_pack<A, scalar_t, VEC>(x + i, xv);
    load_pack<A, scalar_t, VEC>(y + i, yv);
#pragma unroll
    for (int e = 0; e < VEC; ++e) part += xv[e] * yv[e];
  }
  return warp_sum(part);
}

template <typename scalar_t>
struct BackwardArgs {
  const scalar_t* grad_context;  // (rows, Dv)
  const scalar_t* grad_weights;  // (rows, S) or nullptr
  acc_t<scalar_t>* P;            // (rows, S) scratch -> softmax weights, zeros past L
  acc_t<scalar_t>* dS;           // (rows, S) scratch -> dS, zeros past L
  acc_t<scalar_t>* d_query;      // (rows, D): additive only (dQP), else unused
};

template <typename scalar_t, int VEC, bool ADDITIVE>
__global__ void __launch_bounds__(kThreads)
    attention_backward_rows_kernel(const AttnArgs<scalar_t> a, const BackwardArgs<scalar_t> g) {
  using A = acc_t<scalar_t>;
  __shared__ A red[kWarps];
  const int64_t row = blockIdx.x;
  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int64_t b = row / a.R;
  const int64_t L = valid_length(a, b);
  const scalar_t* q = a.query + row * a.D;
  const scalar_t* dc = g.grad_context + row * a.Dv;
  const scalar_t* kb = a.keys + b * a.S * a.D;
  const scalar_t* vb = a.values + b * a.S * a.Dv;
  // Written and read back by different threads of this block only, across __syncthreads.
  A* P = g.P + row * a.S;
  A* dS = g.dS + row * a.S;

  A m = -infinity<A>();
  for (int64_t s = warp; s < L; s += kWarps) {
    const A score = warp_score<scalar_t, VEC, ADDITIVE>(a, q, kb + s * a.D, lane);
    A dp = warp_dot<scalar_t, VEC>(dc, vb + s * a.Dv, a.Dv, lane);
    if (g.grad_weights != nullptr) dp += static_cast<A>(g.grad_weights[row * a.S + s]);
    if (lane == 0) {
      P[s] = score;
      dS[s] = dp;
    }
    m = dmax(m, score);
  }
  m = block_max(m, red);
  A l = 0;
  for (int64_t s = tid; s < L; s += kThreads) {
    const A p = dev_exp(P[s] - m);
    P[s] = p;
    l += p;
  }
  l = block_sum(l, red);
  const A inv_l = l > A(0) ? A(1) / l : A(0);
  A delta = 0;
  for (int64_t s = tid; s < L; s += kThreads) {
    const A p = P[s] * inv_l;
    P[s] = p;
    delta += p * dS[s];
  }
  delta = block_sum(delta, red);
  for (int64_t s = tid; s < a.S; s += kThreads) {
    if (s < L) {
      dS[s] = P[s] * (dS[s] - delta) * a.scale;  // dot: the scale of both dQ and dK; additive: 1
    } else {
      P[s] = 0;
      dS[s] = 0;
    }
  }
  if constexpr (ADDITIVE) {
    __syncthreads();  // dS complete
    // dQP[a] = v[a] sum_s dS[s] (1 - tanh(qp[a] + KP[s, a])^2), threads over a (coalesced).
    for (int64_t c = tid; c < a.D; c += kThreads) {
      const A qc = static_cast<A>(q[c]);
      A acc = 0;
      for (int64_t s = 0; s < L; ++s) {
        const A h = dev_tanh(qc + static_cast<A>(kb[s * a.D + c]));
        acc += dS[s] * (A(1) - h * h);
      }
      g.d_query[row * a.D + c] = acc * static_cast<A>(a.vec[c]);
    }
  }
}

// dKP[b, s, :] and this position's share of dv, summed over the R rows that read source row b:
//   dKP[b, s, a] = v[a] sum_r dS[r, s] (1 - h^2),  dv_part[b, s, a] = sum_r dS[r, s] h,
// h = tanh(qp[r, a] + KP[b, s, a]). One block per (b, s) = blockIdx.x, threads over a.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    additive_backward_keys_kernel(const AttnArgs<scalar_t> a, const acc_t<scalar_t>* dS,
                                  acc_t<scalar_t>* d_keys, acc_t<scalar_t>* dv_part) {
  using A = acc_t<scalar_t>;
  const int64_t bs = blockIdx.x;
  const int64_t b = bs / a.S, s = bs % a.S;
  const scalar_t* kp = a.keys + bs * a.D;
  for (int64_t c = threadIdx.x; c < a.D; c += kThreads) {
    const A kc = static_cast<A>(kp[c]);
    A acc_k = 0, acc_v = 0;
    for (int64_t r = b * a.R; r < (b + 1) * a.R; ++r) {
      const A ds = dS[r * a.S + s];  // the same for every thread: no divergence
      if (ds == A(0)) continue;      // past the length, or no gradient
      const A h = dev_tanh(static_cast<A>(a.query[r * a.D + c]) + kc);
      acc_k += ds * (A(1) - h * h);
      acc_v += ds * h;
    }
    d_keys[bs * a.D + c] = acc_k * static_cast<A>(a.vec[c]);
    dv_part[bs * a.D + c] = acc_v;
  }
}

// P, dS (rows, S) float scratch and, for additive attention, dQP; see the top of this file.
struct RowGrads {
  at::Tensor P, dS, d_query;
};

template <bool ADDITIVE>
RowGrads backward_rows(const char* op, const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& vc, const at::Tensor& v,
                       const std::optional<at::Tensor>& len, const at::Tensor& dc,
                       const at::Tensor& gw, const AttentionGeometry& g, double scale) {
  const auto acc = q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t rows = g.N * g.T;
  RowGrads out;
  out.P = at::empty({rows, g.S}, q.options().dtype(acc));
  out.dS = at::empty({rows, g.S}, q.options().dtype(acc));
  out.d_query = ADDITIVE ? at::empty({rows, g.Dq}, q.options().dtype(acc)) : at::Tensor();
  if (rows == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "attention_bwd", [&] {
    using A = acc_t<scalar_t>;
    const auto a = make_args<scalar_t>(q, k, vc, v, len, g, scale);
    BackwardArgs<scalar_t> bg{dc.const_data_ptr<scalar_t>(),
                              gw.defined() ? gw.const_data_ptr<scalar_t>() : nullptr,
                              out.P.mutable_data_ptr<A>(), out.dS.mutable_data_ptr<A>(),
                              ADDITIVE ? out.d_query.mutable_data_ptr<A>() : nullptr};
    const auto stream = at::cuda::getCurrentCUDAStream();
    const auto kernel = use_vec16<scalar_t>(g, {&q, &k, &v, &vc, &dc})
                            ? &attention_backward_rows_kernel<scalar_t, kVec16<scalar_t>, ADDITIVE>
                            : &attention_backward_rows_kernel<scalar_t, 1, ADDITIVE>;
    FAST_S2S_LAUNCH(kernel, rows, kThreads, stream)(a, bg);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// Checked, contiguous gradients of the outputs (grad_weights undefined when absent).
std::pair<at::Tensor, at::Tensor> output_grads(const char* op, const at::Tensor& grad_context,
                                               const std::optional<at::Tensor>& grad_weights,
                                               const AttentionGeometry& g,
                                               const at::Tensor& query) {
  check_output_grad(op, "grad_context", grad_context, g, g.Dv, query);
  at::Tensor gw;
  if (grad_weights.has_value()) {
    check_output_grad(op, "grad_weights", *grad_weights, g, g.S, query);
    gw = grad_weights->to(query.scalar_type()).contiguous();
  }
  return {grad_context.to(query.scalar_type()).contiguous(), gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dot_attention_backward_cuda(
    const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_weights,
    const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
    const at::Tensor& weights, const std::optional<at::Tensor>& lengths, double scale) {
  const char* op = "dot_attention_backward";
  (void)weights;  // recomputed in float32 from query and keys: may be empty (need_weights)
  const AttentionGeometry g =
      check_attention_inputs(op, query, "query", keys, "keys", values, lengths);
  const c10::cuda::CUDAGuard guard(query.device());
  const at::Tensor q = query.contiguous(), k = keys.contiguous(), v = values.contiguous();
  const auto len = device_lengths(op, lengths, g, query);
  const auto [dc, gw] = output_grads(op, grad_context, grad_weights, g, query);
  const RowGrads r = backward_rows<false>(op, q, k, at::Tensor(), v, len, dc, gw, g, scale);
  // The sums over rows and positions are batched products on the (B, R, .) views.
  const auto acc = r.P.scalar_type();
  const int64_t R = g.beam * g.T;
  const at::Tensor P = r.P.view({g.B, R, g.S}), dS = r.dS.view({g.B, R, g.S});
  const at::Tensor qa = q.to(acc).view({g.B, R, g.Dq}), ka = k.to(acc), va = v.to(acc);
  const at::Tensor dca = dc.to(acc).view({g.B, R, g.Dv});
  at::Tensor d_query = at::bmm(dS, ka).to(q.scalar_type()).view(query.sizes());
  at::Tensor d_keys = at::bmm(dS.transpose(1, 2), qa).to(q.scalar_type());
  at::Tensor d_values = at::bmm(P.transpose(1, 2), dca).to(q.scalar_type());
  return {d_query, d_keys, d_values};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> additive_attention_backward_cuda(
    const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_weights,
    const at::Tensor& query_proj, const at::Tensor& keys_proj, const at::Tensor& v,
    const at::Tensor& values, const at::Tensor& weights, const std::optional<at::Tensor>& lengths) {
  const char* op = "additive_attention_backward";
  (void)weights;  // recomputed in float32: may be empty (need_weights)
  const AttentionGeometry g =
      check_attention_inputs(op, query_proj, "query_proj", keys_proj, "keys_proj", values, lengths);
  TORCH_CHECK(v.dim() == 1 && v.size(0) == g.Dq && v.scalar_type() == query_proj.scalar_type() &&
                  v.device() == query_proj.device(),
              op, ": v must be (A,) = (", g.Dq, ",) with the dtype and device of query_proj");
  const c10::cuda::CUDAGuard guard(query_proj.device());
  const at::Tensor q = query_proj.contiguous(), k = keys_proj.contiguous();
  const at::Tensor vc = v.contiguous(), vals = values.contiguous();
  const auto len = device_lengths(op, lengths, g, query_proj);
  const auto [dc, gw] = output_grads(op, grad_context, grad_weights, g, query_proj);
  const RowGrads r = backward_rows<true>(op, q, k, vc, vals, len, dc, gw, g, 1.0);
  const auto acc = r.P.scalar_type();
  const auto dtype = q.scalar_type();
  at::Tensor d_keys = at::empty({g.B, g.S, g.Dq}, q.options().dtype(acc));
  at::Tensor dv_part = at::empty({g.B * g.S, g.Dq}, q.options().dtype(acc));
  if (g.B * g.S > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "additive_keys_bwd", [&] {
      using A = acc_t<scalar_t>;
      const auto a = make_args<scalar_t>(q, k, vc, vals, len, g, 1.0);
      const auto kernel = &additive_backward_keys_kernel<scalar_t>;
      FAST_S2S_LAUNCH(kernel, g.B * g.S, kThreads, at::cuda::getCurrentCUDAStream())(
          a, r.dS.const_data_ptr<A>(), d_keys.mutable_data_ptr<A>(), dv_part.mutable_data_ptr<A>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  } else {
    dv_part.zero_();
  }
  const int64_t R = g.beam * g.T;
  const at::Tensor P = r.P.view({g.B, R, g.S});
  const at::Tensor dca = dc.to(acc).view({g.B, R, g.Dv});
  at::Tensor d_values = at::bmm(P.transpose(1, 2), dca).to(dtype);
  at::Tensor d_query = r.d_query.to(dtype).view(query_proj.sizes());
  at::Tensor d_v =
      (g.B * g.S > 0 ? dv_part.sum(0) : at::zeros({g.Dq}, dv_part.options())).to(dtype);
  return {d_query, d_keys.to(dtype), d_v, d_values};
}

}  // namespace

FAST_S2S_CUDA_LIBRARY_IMPL(m) {
  m.impl("dot_attention_backward", &dot_attention_backward_cuda);
  m.impl("additive_attention_backward", &additive_attention_backward_cuda);
}

}  // namespace fast_s2s::cuda
