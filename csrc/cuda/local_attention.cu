// Luong local attention on CUDA, forward and backward.
// Reference: fast_s2s/reference.py::local_attention (the definition of correct).
//
// Rows. The query (N, T, D) is read as rows r = n * T + t; row r reads source row
// b = r / (beam * T), so beam rows share K[b], V[b] (no copies). L = lengths[b] clamped to [0, S].
//
// Window. p = centers[r], read in float32 (float64 for float64 inputs): the host casts centers to
// that dtype. The window [lo, hi) and the Gaussian come from common/local_window.h, shared with
// the CPU kernel: the positions s < L with |float(s) - p| <= D, evaluated exactly as the
// reference does (so every backend agrees at a boundary); a huge or non-finite p gives an empty
// window before any cast to an integer. Only those at most 2 D + 1 rows of K and V are read:
// O(D) per row, whatever S is; positions past L (which may hold NaN) never are.
//
// Forward: one block of kThreads per row. Warps take the positions (lanes stride the features,
// a shuffle reduction gives score = scale * q . K[b, s]); block reductions give the softmax over
// the window; w_s = align_s exp(-(s - p)^2 / (2 sigma^2)), sigma = D / 2 (1 for D = 0); threads
// over the Dv columns sum ctx = sum_s w_s V[b, s] (coalesced). The per-position numbers live in
// a (rows, W) float scratch, W = min(2 D + 1, S), rather than shared memory, so no window is too
// wide. need_weights=False writes no (N, T, S) weights at all; with it, the host zero-fills them
// and the kernel writes the window's entries.
//
// Backward: one block per row recomputes scores and align from q, K and p (no saved weights),
// and dw_s = dctx . V_s + dW_s, then dscore_s = align_s (dw_s g_s - sum align dw g),
// dq = scale sum_s dscore_s K_s and dp = sum_s dw_s w_s (s - p) / sigma^2, which belong to the
// row. dK[b, s] += scale dscore_s q and dV[b, s] += w_s dctx get contributions from every row
// whose window covers s (the beam rows, neighbouring steps): atomicAdd into float32 (float64)
// buffers, cast to the inputs' dtype at the end. Atomics rather than one block per source
// position, which would have to scan all beam * T rows of its source row for the few whose window
// covers it (O(R S) instead of O(R D)); the price is a run-to-run summation order in the last
// bits. (float64 atomicAdd needs sm_60, below every target here.)
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "common/attention_checks.h"
#include "common/local_window.h"
#include "cuda/cuda_utils.cuh"

namespace fast_s2s::cuda {
namespace {

constexpr int kThreads = 128;  // a window is tens of positions: four warps are plenty
constexpr int kWarps = kThreads / kWarpSize;

template <typename scalar_t>
struct LocalArgs {
  const scalar_t* query;           // (rows, D)
  const scalar_t* keys;            // (B, S, D)
  const scalar_t* values;          // (B, S, Dv)
  const acc_t<scalar_t>* centers;  // (rows,), in the accumulation dtype
  const int64_t* lengths;          // (B,) or nullptr
  acc_t<scalar_t> scale;
  LocalGaussian<acc_t<scalar_t>> gauss{0};  // g_s and d log g_s / dp (D = 0: 1 and 0)
  int64_t R, S, D, Dv;                      // R = beam * T rows per source row
  int64_t window;
  int64_t W;  // scratch slots per row: at least the window's size
};

template <typename scalar_t>
__device__ __forceinline__ LocalWindow row_window(const LocalArgs<scalar_t>& a, int64_t b,
                                                  acc_t<scalar_t> p) {
  int64_t L = a.lengths == nullptr ? a.S : a.lengths[b];
  L = L < 0 ? 0 : (L > a.S ? a.S : L);  // lengths on the GPU are not range-checked
  return local_window(p, a.window, L);
}

// x . y over n elements by one warp (lanes stride the elements); every lane gets it.
template <typename scalar_t>
__device__ __forceinline__ acc_t<scalar_t> warp_dot(const scalar_t* x, const scalar_t* y, int64_t n,
                                                    int lane) {
  acc_t<scalar_t> part = 0;
  for (int64_t i = lane; i < n; i += kWarpSize) {
    part += static_cast<acc_t<scalar_t>>(x[i]) * static_cast<acc_t<scalar_t>>(y[i]);
  }
  return warp_sum(part);
}

// Softmax over the window of the scores, in place: sc[i] = align of position lo + i. Every
// thread must reach it. With DW, also dw[i] = dC . V_s + dW_s. The results are visible to every
// thread on return.
template <typename scalar_t, bool DW>
__device__ void window_softmax(const LocalArgs<scalar_t>& a, int64_t row, int64_t b,
                               const LocalWindow& c, acc_t<scalar_t> p, acc_t<scalar_t>* sc,
                               acc_t<scalar_t>* dw, const scalar_t* dc, const scalar_t* gw,
                               acc_t<scalar_t>* red) {
  using A = acc_t<scalar_t>;
  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const scalar_t* q = a.query + row * a.D;
  A m = -infinity<A>();
  for (int64_t i = warp; i < c.size(); i += kWarps) {
    const int64_t s = c.lo + i;
    const A score = warp_dot(q, a.keys + (b * a.S + s) * a.D, a.D, lane) * a.scale;
    if constexpr (DW) {
      A d = warp_dot(dc, a.values + (b * a.S + s) * a.Dv, a.Dv, lane);
      if (gw != nullptr) d += static_cast<A>(gw[row * a.S + s]);
      if (lane == 0) dw[i] = d;
    }
    if (lane == 0) sc[i] = score;
    m = dmax(m, score);
  }
  m = block_max(m, red);  // also publishes sc and dw
  A l = 0;
  for (int64_t i = tid; i < c.size(); i += kThreads) {
    const A e = dev_exp(sc[i] - m);
    sc[i] = e;
    l += e;
  }
  l = block_sum(l, red);
  const A inv_l = l > A(0) ? A(1) / l : A(0);
  for (int64_t i = tid; i < c.size(); i += kThreads) sc[i] *= inv_l;
  __syncthreads();
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    local_forward_kernel(const LocalArgs<scalar_t> a, scalar_t* context, scalar_t* weights,
                         acc_t<scalar_t>* work) {
  using A = acc_t<scalar_t>;
  __shared__ A red[kWarps];
  const int64_t row = blockIdx.x, b = row / a.R;
  const int tid = threadIdx.x;
  const A p = a.centers[row];
  const LocalWindow c = row_window(a, b, p);
  A* sc = work + row * a.W;
  window_softmax<scalar_t, false>(a, row, b, c, p, sc, nullptr, nullptr, nullptr, red);
  for (int64_t i = tid; i < c.size(); i += kThreads) {
    const int64_t s = c.lo + i;
    const A w = sc[i] * a.gauss.factor(s, p);
    sc[i] = w;
    if (weights != nullptr) weights[row * a.S + s] = static_cast<scalar_t>(w);
  }
  __syncthreads();
  const scalar_t* vb = a.values + (b * a.S + c.lo) * a.Dv;
  for (int64_t col = tid; col < a.Dv; col += kThreads) {
    A acc = 0;
    for (int64_t i = 0; i < c.size(); ++i) acc += sc[i] * static_cast<A>(vb[i * a.Dv + col]);
    context[row * a.Dv + col] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
struct LocalGrads {
  const scalar_t* grad_context;  // (rows, Dv)
  const scalar_t* grad_weights;  // (rows, S) or nullptr
  acc_t<scalar_t>* work;         // (rows, 2 W) scratch
  scalar_t* d_query;             // (rows, D)
  acc_t<scalar_t>* d_keys;       // (B, S, D), zeroed, atomic adds
  acc_t<scalar_t>* d_values;     // (B, S, Dv), zeroed, atomic adds
  acc_t<scalar_t>* d_centers;    // (rows,)
};

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    local_backward_kernel(const LocalArgs<scalar_t> a, const LocalGrads<scalar_t> g) {
  using A = acc_t<scalar_t>;
  __shared__ A red[kWarps];
  const int64_t row = blockIdx.x, b = row / a.R;
  const int tid = threadIdx.x;
  const A p = a.centers[row];
  const LocalWindow c = row_window(a, b, p);
  const scalar_t* q = a.query + row * a.D;
  const scalar_t* dc = g.grad_context + row * a.Dv;
  A* sc = g.work + row * 2 * a.W;  // align, then w
  A* dw = sc + a.W;                // dw, then scale * dscore
  window_softmax<scalar_t, true>(a, row, b, c, p, sc, dw, dc, g.grad_weights, red);

  // delta = sum_s align dalign (dalign = dw g); dp = sum_s dw w d log g / dp
  A delta = 0, dp = 0;
  for (int64_t i = tid; i < c.size(); i += kThreads) {
    const int64_t s = c.lo + i;
    const A w = sc[i] * a.gauss.factor(s, p);
    delta += w * dw[i];
    dp += dw[i] * w * a.gauss.dlog_dp(s, p);
  }
  delta = block_sum(delta, red);
  dp = block_sum(dp, red);
  for (int64_t i = tid; i < c.size(); i += kThreads) {
    const A gs = a.gauss.factor(c.lo + i, p);
    const A align = sc[i];
    dw[i] = align * (dw[i] * gs - delta) * a.scale;
    sc[i] = align * gs;
  }
  __syncthreads();
  if (tid == 0) g.d_centers[row] = dp;

  const scalar_t* kb = a.keys + (b * a.S + c.lo) * a.D;
  for (int64_t col = tid; col < a.D; col += kThreads) {
    A acc = 0;
    for (int64_t i = 0; i < c.size(); ++i) acc += dw[i] * static_cast<A>(kb[i * a.D + col]);
    g.d_query[row * a.D + col] = static_cast<scalar_t>(acc);
  }
  // Shared positions: consecutive threads take consecutive columns (coalesced atomics).
  A* dk = g.d_keys + (b * a.S + c.lo) * a.D;
  for (int64_t idx = tid; idx < c.size() * a.D; idx += kThreads) {
    const A ds = dw[idx / a.D];
    if (ds != A(0)) atomicAdd(dk + idx, ds * static_cast<A>(q[idx % a.D]));
  }
  A* dv = g.d_values + (b * a.S + c.lo) * a.Dv;
  for (int64_t idx = tid; idx < c.size() * a.Dv; idx += kThreads) {
    const A w = sc[idx / a.Dv];
    if (w != A(0)) atomicAdd(dv + idx, w * static_cast<A>(dc[idx % a.Dv]));
  }
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

struct LocalInputs {
  AttentionGeometry g;
  at::Tensor q, k, v, centers;  // contiguous; centers in the accumulation dtype
  std::optional<at::Tensor> lengths;
};

LocalInputs prepare(const char* op, const at::Tensor& query, const at::Tensor& keys,
                    const at::Tensor& values, const at::Tensor& centers, int64_t window,
                    const std::optional<at::Tensor>& lengths) {
  LocalInputs in;
  in.g = check_attention_inputs(op, query, "query", keys, "keys", values, lengths);
  check_local_inputs(op, centers, window, query);
  const auto acc = query.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  in.q = query.contiguous();
  in.k = keys.contiguous();
  in.v = values.contiguous();
  in.centers = centers.to(acc).contiguous();
  if (lengths.has_value()) {
    // lengths on the CPU are range-checked (clear error); on the GPU they are not read back
    // (that would stall a decoding loop): the kernels clamp them to [0, S].
    if (!lengths->is_cuda()) read_lengths(op, lengths, in.g.B, in.g.S);
    in.lengths = lengths->to(query.device(), at::kLong).contiguous();
  }
  return in;
}

template <typename scalar_t>
LocalArgs<scalar_t> make_args(const LocalInputs& in, int64_t window, double scale) {
  using A = acc_t<scalar_t>;
  LocalArgs<scalar_t> a;
  a.query = in.q.const_data_ptr<scalar_t>();
  a.keys = in.k.const_data_ptr<scalar_t>();
  a.values = in.v.const_data_ptr<scalar_t>();
  a.centers = in.centers.const_data_ptr<A>();
  a.lengths = in.lengths.has_value() ? in.lengths->const_data_ptr<int64_t>() : nullptr;
  a.scale = static_cast<A>(scale);
  a.gauss = LocalGaussian<A>(window);
  a.R = in.g.beam * in.g.T;
  a.S = in.g.S;
  a.D = in.g.Dq;
  a.Dv = in.g.Dv;
  a.window = window;
  // The window lies in [0, L): never more than S positions (and no overflow for a huge D).
  a.W = std::max<int64_t>(std::min<int64_t>(2 * std::min<int64_t>(window, a.S) + 1, a.S), 1);
  return a;
}

std::tuple<at::Tensor, at::Tensor> local_attention_cuda(const at::Tensor& query,
                                                        const at::Tensor& keys,
                                                        const at::Tensor& values,
                                                        const at::Tensor& centers, int64_t window,
                                                        const std::optional<at::Tensor>& lengths,
                                                        double scale, bool need_weights) {
  const char* op = "local_attention";
  const c10::cuda::CUDAGuard guard(query.device());
  const LocalInputs in = prepare(op, query, keys, values, centers, window, lengths);
  const AttentionGeometry& g = in.g;
  const auto lead = query.sizes().slice(0, query.dim() - 1).vec();
  auto shape = [&](int64_t last) {
    auto s = lead;
    s.push_back(last);
    return s;
  };
  at::Tensor context = at::empty(shape(g.Dv), query.options());
  // Zeros outside the window; not asked for: an empty tensor and no weights write at all.
  at::Tensor weights =
      need_weights ? at::zeros(shape(g.S), query.options()) : at::empty({0}, query.options());
  const int64_t rows = g.N * g.T;
  if (rows == 0) return {context, weights};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, in.q.scalar_type(), "local_attention_cuda", [&] {
        using A = acc_t<scalar_t>;
        const auto a = make_args<scalar_t>(in, window, scale);
        at::Tensor work = at::empty({rows, a.W}, in.centers.options());
        const auto kernel = &local_forward_kernel<scalar_t>;
        FAST_S2S_LAUNCH(kernel, rows, kThreads, at::cuda::getCurrentCUDAStream())(
            a, context.mutable_data_ptr<scalar_t>(),
            need_weights ? weights.mutable_data_ptr<scalar_t>() : nullptr,
            work.mutable_data_ptr<A>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {context, weights};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> local_attention_backward_cuda(
    const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_weights,
    const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
    const at::Tensor& centers, int64_t window, const std::optional<at::Tensor>& lengths,
    double scale) {
  const char* op = "local_attention_backward";
  const c10::cuda::CUDAGuard guard(query.device());
  const LocalInputs in = prepare(op, query, keys, values, centers, window, lengths);
  const AttentionGeometry& g = in.g;
  check_output_grad(op, "grad_context", grad_context, g, g.Dv, query);
  const at::Tensor dc = grad_context.to(query.scalar_type()).contiguous();
  at::Tensor gw;
  if (grad_weights.has_value()) {
    check_output_grad(op, "grad_weights", *grad_weights, g, g.S, query);
    gw = grad_weights->to(query.scalar_type()).contiguous();
  }
  const auto acc_opts = in.centers.options();
  at::Tensor d_query = at::empty(query.sizes(), query.options());
  at::Tensor d_keys = at::zeros(keys.sizes(), acc_opts);  // atomic adds
  at::Tensor d_values = at::zeros(values.sizes(), acc_opts);
  at::Tensor d_centers = at::empty(centers.sizes(), acc_opts);
  const int64_t rows = g.N * g.T;
  if (rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, in.q.scalar_type(), "local_attention_cuda", [&] {
          using A = acc_t<scalar_t>;
          const auto a = make_args<scalar_t>(in, window, scale);
          at::Tensor work = at::empty({rows, 2 * a.W}, acc_opts);
          const LocalGrads<scalar_t> lg{dc.const_data_ptr<scalar_t>(),
                                        gw.defined() ? gw.const_data_ptr<scalar_t>() : nullptr,
                                        work.mutable_data_ptr<A>(),
                                        d_query.mutable_data_ptr<scalar_t>(),
                                        d_keys.mutable_data_ptr<A>(),
                                        d_values.mutable_data_ptr<A>(),
                                        d_centers.mutable_data_ptr<A>()};
          const auto kernel = &local_backward_kernel<scalar_t>;
          FAST_S2S_LAUNCH(kernel, rows, kThreads, at::cuda::getCurrentCUDAStream())(a, lg);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return {d_query, d_keys.to(keys.scalar_type()), d_values.to(values.scalar_type()),
          d_centers.to(centers.scalar_type())};
}

}  // namespace

FAST_S2S_CUDA_LIBRARY_IMPL(m) {
  m.impl("local_attention", &local_attention_cuda);
  m.impl("local_attention_backward", &local_attention_backward_cuda);
}

}  // namespace fast_s2s::cuda
