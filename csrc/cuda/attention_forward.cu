// Fused dot-product and additive attention on CUDA: the forward.
// Reference: fast_s2s/reference.py::dot_attention and ::additive_attention.
// Rows, lengths and what the backward shares: csrc/cuda/attention_common.cuh; the backward:
// csrc/cuda/attention_backward.cu.
//
// Forward: one block of kThreads per (row, split). A split is a chunk of at most kMaxChunk
// consecutive source positions; a row has several only when S is long or when there are too few
// rows to fill the GPU (flash-decoding). In a block:
//   1. each warp takes keys s = first + warp, + kWarps, ...: score = scale * q . K[b, s] (dot) or
//      sum_a v[a] tanh(qp[a] + KP[b, s, a]) (additive), lanes striding D in 16-byte loads and a
//      shuffle reduction; scores go to shared memory;
//   2. m = max score, p[s] = exp(score - m), l = sum p (block reductions);
//   3. ctx = sum_s p[s] V[b, s, :], threads over 16-byte column packs of V (coalesced), and over
//      groups of positions when Dv is narrow, summed in shared memory at the end.
// One split writes context = ctx / l and weights = p / l (zeros past L) straight away. Several
// splits write (m, l, unnormalised ctx) per split and p per position to float scratch, and
// attention_combine_kernel merges them: M = max m_j, context = sum_j exp(m_j - M) ctx_j / sum_j
// exp(m_j - M) l_j, and likewise for the weights. With need_weights=False no weights (and no
// per-position scratch) are written at all: the backward recomputes them.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "common/attention_checks.h"
#include "cuda/attention_common.cuh"
#include "cuda/cuda_utils.cuh"

namespace fast_s2s::cuda {
namespace {

// Positions per split: their scores live in shared memory (8 KiB in float32).
constexpr int64_t kMaxChunk = 2048;
// Fewest positions worth a split of their own when splitting only to fill the GPU.
constexpr int64_t kMinSplitChunk = 128;
constexpr int64_t kMaxSplits = 65535;  // gridDim.y

template <typename A, int VEC>
struct ForwardSmem {
  A p[kMaxChunk];         // scores, then exp(score - m), of this split's positions
  A red[kWarps];          // block reductions
  A ctx[kThreads * VEC];  // per-group partial contexts when Dv is narrow
};

// Output pointers of the forward. One split: context / weights. Several: the float scratch.
template <typename scalar_t>
struct ForwardOut {
  scalar_t* context;          // (rows, Dv)
  scalar_t* weights;          // (rows, S), or nullptr: not asked for
  acc_t<scalar_t>* part_m;    // (rows, splits)
  acc_t<scalar_t>* part_l;    // (rows, splits)
  acc_t<scalar_t>* part_ctx;  // (rows, splits, Dv)
  acc_t<scalar_t>* probs;     // (rows, S): exp(score - m_split); only with weights
  int64_t chunk;              // positions per split
};

template <typename scalar_t, int VEC, bool ADDITIVE>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(const AttnArgs<scalar_t> a, const ForwardOut<scalar_t> o) {
  using A = acc_t<scalar_t>;
  __shared__ ForwardSmem<A, VEC> sm;
  const int64_t row = blockIdx.x;
  const int64_t split = blockIdx.y, n_splits = gridDim.y;
  const int tid = threadIdx.x, lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int64_t b = row / a.R;
  const int64_t L = valid_length(a, b);
  const int64_t first = split * o.chunk;
  const int64_t last = dmin(first + o.chunk, L);  // may be <= first: an empty split
  const int64_t n = dmax<int64_t>(last - first, 0);
  const scalar_t* q = a.query + row * a.D;
  const scalar_t* kb = a.keys + b * a.S * a.D;
  const scalar_t* vb = a.values + b * a.S * a.Dv;

  // 1. scores
  A m = -infinity<A>();
  for (int64_t i = warp; i < n; i += kWarps) {
    const A s = warp_score<scalar_t, VEC, ADDITIVE>(a, q, kb + (first + i) * a.D, lane);
    if (lane == 0) sm.p[i] = s;
    m = dmax(m, s);
  }
  m = block_max(m, sm.red);  // also makes the scores visible to every thread

  // 2. p = exp(score - m), l = sum p
  A l = 0;
  for (int64_t i = tid; i < n; i += kThreads) {
    const A p = dev_exp(sm.p[i] - m);
    sm.p[i] = p;
    l += p;
  }
  l = block_sum(l, sm.red);  // the __syncthreads inside publishes sm.p too

  // 3. ctx = sum_s p[s] V[b, s, :]. n_packs column packs of VEC values; `groups` groups of
  // `width` threads split the positions between them when Dv is narrow.
  const int64_t n_packs = a.Dv / VEC;
  const int width = static_cast<int>(dmin<int64_t>(n_packs, kThreads));
  const int groups = width > 0 ? kThreads / width : 1;
  const int group = width > 0 ? tid / width : 0, col = width > 0 ? tid % width : 0;
  const bool single = n_splits == 1;
  const A inv_l = l > A(0) ? A(1) / l : A(0);  // l = 0 only for an empty row or split
  for (int64_t pk = col; pk < n_packs && group < groups; pk += width) {
    A acc[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[e] = 0;
#pragma unroll 4
    for (int64_t i = group; i < n; i += groups) {
      A vv[VEC];
      load_pack<A, scalar_t, VEC>(vb + (first + i) * a.Dv + pk * VEC, vv);
      const A p = sm.p[i];
#pragma unroll
      for (int e = 0; e < VEC; ++e) acc[e] += p * vv[e];
    }
    if (groups > 1) {  // one pack per thread (width == n_packs): park it for the group sum
#pragma unroll
      for (int e = 0; e < VEC; ++e) sm.ctx[(group * width + col) * VEC + e] = acc[e];
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        const int64_t c = pk * VEC + e;
        if (single) {
          o.context[row * a.Dv + c] = static_cast<scalar_t>(acc[e] * inv_l);
        } else {
          o.part_ctx[(row * n_splits + split) * a.Dv + c] = acc[e];
        }
      }
    }
  }
  if (groups > 1) {
    __syncthreads();
    for (int64_t c = tid; c < a.Dv; c += kThreads) {
      A total = 0;
      for (int g = 0; g < groups; ++g) total += sm.ctx[g * width * VEC + c];
      if (single) {
        o.context[row * a.Dv + c] = static_cast<scalar_t>(total * inv_l);
      } else {
        o.part_ctx[(row * n_splits + split) * a.Dv + c] = total;
      }
    }
  }

  // 4. weights (one split) or per-split partials (several)
  if (single) {
    if (o.weights != nullptr) {
      scalar_t* w = o.weights + row * a.S;
      for (int64_t s = tid; s < a.S; s += kThreads) {
        w[s] = static_cast<scalar_t>(s < n ? sm.p[s] * inv_l : A(0));
      }
    }
  } else {
    if (o.weights != nullptr) {
      for (int64_t i = tid; i < n; i += kThreads) o.probs[row * a.S + first + i] = sm.p[i];
    }
    if (tid == 0) {
      o.part_m[row * n_splits + split] = m;
      o.part_l[row * n_splits + split] = l;
    }
  }
}

// Merges the splits of one row (blockIdx.x) by log-sum-exp into context and weights.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    attention_combine_kernel(const AttnArgs<scalar_t> a, const ForwardOut<scalar_t> o,
                             int64_t n_splits) {
  using A = acc_t<scalar_t>;
  const int64_t row = blockIdx.x;
  const int64_t L = valid_length(a, row / a.R);
  const A* pm = o.part_m + row * n_splits;
  const A* pl = o.part_l + row * n_splits;
  // Every thread computes M and the total itself: n_splits is small and this avoids a barrier.
  A M = -infinity<A>();
  for (int64_t j = 0; j < n_splits; ++j) M = dmax(M, pm[j]);
  A total = 0;
  for (int64_t j = 0; j < n_splits; ++j) {
    if (pl[j] > A(0)) total += pl[j] * dev_exp(pm[j] - M);
  }
  const A inv = total > A(0) ? A(1) / total : A(0);  // 0: a row of length 0
  auto factor = [&](int64_t j) { return pl[j] > A(0) ? dev_exp(pm[j] - M) * inv : A(0); };
  for (int64_t c = threadIdx.x; c < a.Dv; c += kThreads) {
    A acc = 0;
    for (int64_t j = 0; j < n_splits; ++j) {
      acc += o.part_ctx[(row * n_splits + j) * a.Dv + c] * factor(j);
    }
    o.context[row * a.Dv + c] = static_cast<scalar_t>(acc);
  }
  if (o.weights == nullptr) return;
  for (int64_t s = threadIdx.x; s < a.S; s += kThreads) {
    const A w = s < L ? o.probs[row * a.S + s] * factor(s / o.chunk) : A(0);
    o.weights[row * a.S + s] = static_cast<scalar_t>(w);
  }
}

// Splits per row: enough that a split's scores fit in shared memory, and, when there are fewer
// rows than twice the SM count, enough blocks to fill the GPU as long as each split keeps at
// least kMinSplitChunk positions (a split costs a combine pass). kMinSplitChunk and the 2 x SM
// target are estimates from the kernel's costs, not measured optima: time long rows at small
// batch on the target GPU (fast-s2s bench --device cuda) before relying on them.
int64_t choose_splits(int64_t rows, int64_t S) {
  int64_t splits = ceil_div(std::max<int64_t>(S, 1), kMaxChunk);
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  if (rows < 2 * sms) {
    const int64_t fill = ceil_div(2 * sms, std::max<int64_t>(rows, 1));
    splits = std::max(splits, std::min(fill, S / kMinSplitChunk));
  }
  TORCH_CHECK(splits <= kMaxSplits, "attention: S = ", S,
              " is too long for the CUDA kernel (at most ", kMaxSplits * kMaxChunk, " positions)");
  return splits;
}

template <typename scalar_t, bool ADDITIVE>
void launch_forward(const AttnArgs<scalar_t>& a, int64_t rows, bool vec16, at::Tensor& context,
                    at::Tensor& weights) {
  using A = acc_t<scalar_t>;
  const int64_t splits = choose_splits(rows, a.S);
  const int64_t chunk = splits == 1 ? kMaxChunk : ceil_div(a.S, splits);
  const auto opts = context.options().dtype(c10::CppTypeToScalarType<A>::value);
  at::Tensor part_m, part_l, part_ctx, probs;
  const bool need_weights = weights.numel() > 0;
  ForwardOut<scalar_t> o{context.mutable_data_ptr<scalar_t>(),
                         need_weights ? weights.mutable_data_ptr<scalar_t>() : nullptr,
                         nullptr,
                         nullptr,
                         nullptr,
                         nullptr,
                         chunk};
  if (splits > 1) {
    part_m = at::empty({rows, splits}, opts);
    part_l = at::empty({rows, splits}, opts);
    part_ctx = at::empty({rows, splits, a.Dv}, opts);
    o.part_m = part_m.mutable_data_ptr<A>();
    o.part_l = part_l.mutable_data_ptr<A>();
    o.part_ctx = part_ctx.mutable_data_ptr<A>();
    if (need_weights) {
      probs = at::empty({rows, a.S}, opts);
      o.probs = probs.mutable_data_ptr<A>();
    }
  }
  const auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(splits));
  const auto forward = vec16 ? &attention_forward_kernel<scalar_t, kVec16<scalar_t>, ADDITIVE>
                             : &attention_forward_kernel<scalar_t, 1, ADDITIVE>;
  FAST_S2S_LAUNCH(forward, grid, kThreads, stream)(a, o);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (splits > 1) {
    const auto combine = &attention_combine_kernel<scalar_t>;
    FAST_S2S_LAUNCH(combine, rows, kThreads, stream)(a, o, splits);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// Shared by both kinds: checks, contiguous operands, output allocation, dispatch.
template <bool ADDITIVE>
std::tuple<at::Tensor, at::Tensor> attention_forward_cuda(const char* op, const at::Tensor& query,
                                                          const at::Tensor& keys,
                                                          const at::Tensor& vec,
                                                          const at::Tensor& values,
                                                          const std::optional<at::Tensor>& lengths,
                                                          double scale, bool need_weights) {
  const AttentionGeometry g =
      check_attention_inputs(op, query, ADDITIVE ? "query_proj" : "query", keys,
                             ADDITIVE ? "keys_proj" : "keys", values, lengths);
  const c10::cuda::CUDAGuard guard(query.device());
  const at::Tensor q = query.contiguous(), k = keys.contiguous(), v = values.contiguous();
  const at::Tensor vc = vec.defined() ? vec.contiguous() : vec;
  const auto len = device_lengths(op, lengths, g, query);
  at::Tensor context = at::empty({g.N, g.T, g.Dv}, query.options());
  // Not asked for: an empty tensor, and the kernels skip every weights write.
  at::Tensor weights =
      need_weights ? at::empty({g.N, g.T, g.S}, query.options()) : at::empty({0}, query.options());
  const int64_t rows = g.N * g.T;
  if (rows > 0) {
    const auto dtype = q.scalar_type();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "attention_forward", [&] {
      const auto a = make_args<scalar_t>(q, k, vc, v, len, g, scale);
      const bool vec16 = use_vec16<scalar_t>(g, {&q, &k, &v, &vc});
      launch_forward<scalar_t, ADDITIVE>(a, rows, vec16, context, weights);
    });
  }
  if (!need_weights) return {g.query_2d ? context.view({g.N, g.Dv}) : context, weights};
  if (g.query_2d) return {context.view({g.N, g.Dv}), weights.view({g.N, g.S})};
  return {context, weights};
}

std::tuple<at::Tensor, at::Tensor> dot_attention_cuda(const at::Tensor& query,
                                                      const at::Tensor& keys,
                                                      const at::Tensor& values,
                                                      const std::optional<at::Tensor>& lengths,
                                                      double scale, bool need_weights) {
  return attention_forward_cuda<false>("dot_attention", query, keys, at::Tensor(), values, lengths,
                                       scale, need_weights);
}

std::tuple<at::Tensor, at::Tensor> additive_attention_cuda(
    const at::Tensor& query_proj, const at::Tensor& keys_proj, const at::Tensor& v,
    const at::Tensor& values, const std::optional<at::Tensor>& lengths, bool need_weights) {
  const char* op = "additive_attention";
  TORCH_CHECK(v.dim() == 1 && v.size(0) == query_proj.size(-1), op, ": v must have shape (A,) = (",
              query_proj.size(-1), ",), got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == query_proj.scalar_type() && v.device() == query_proj.device(), op,
              ": v must have the dtype and device of query_proj (", query_proj.scalar_type(), ", ",
              query_proj.device(), "), got ", v.scalar_type(), ", ", v.device());
  return attention_forward_cuda<true>(op, query_proj, keys_proj, v, values, lengths, 1.0,
                                      need_weights);
}

}  // namespace

FAST_S2S_CUDA_LIBRARY_IMPL(m) {
  m.impl("dot_attention", &dot_attention_cuda);
  m.impl("additive_attention", &additive_attention_cuda);
}

}  // namespace fast_s2s::cuda
