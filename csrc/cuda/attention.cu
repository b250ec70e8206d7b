// Fused dot-product and additive attention on CUDA, forward and backward.
// Reference: fast_s2s/reference.py::dot_attention and ::additive_attention.
//
// Rows. The query (N, T, D) is read as rows r = n * T + t; row r reads source row
// b = r / (beam * T), so the beam * T rows of one source row are consecutive and share K[b], V[b]
// (no copies for beam search). L = lengths[b], clamped to [0, S]: positions s >= L get no weight.
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
// Softmax and every sum run in float32 (float64 for float64 inputs); keys and values are read
// once per (row, split) in their own dtype.
//
// Backward: attention_backward_rows_kernel, one block per row, recomputes the scores in float32
// (float16 / bfloat16 weights are too coarse to differentiate through) together with
// dP[s] = dC . V[b, s] + dW[s], then P = softmax, delta = sum_s P dP and dS = P (dP - delta), all
// to float scratch (rows, S). The sums over rows that need no tanh are then batched matrix
// products (cuBLAS) on the (B, beam * T, .) views: dot dQ = dS K, dK = dS^T Q (dS carries the
// scale), and
// dV = P^T dC for both kinds. Additive attention's dQP is summed by the row kernel itself
// (dQP[a] = v[a] sum_s dS[s] (1 - tanh^2)), and dKP and dv by additive_backward_keys_kernel, one
// block per source position, over the rows that read it (no atomics).
//
// lengths on the CPU are range-checked here (clear error); lengths already on the GPU are not
// read back on the host, which would stall the decoding loop: the kernels clamp them to [0, S].
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>

#include "common/attention_checks.h"
#include "cuda/cuda_utils.cuh"

namespace fast_s2s::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
// Positions per split: their scores live in shared memory (8 KiB in float32).
constexpr int64_t kMaxChunk = 2048;
// Fewest positions worth a split of their own when splitting only to fill the GPU.
constexpr int64_t kMinSplitChunk = 128;
constexpr int64_t kMaxSplits = 65535;  // gridDim.y

// Everything a kernel needs about one call. Pointers to inputs are contiguous.
template <typename scalar_t>
struct AttnArgs {
  const scalar_t* query;   // (rows, D): query or query_proj
  const scalar_t* keys;    // (B, S, D): keys or keys_proj
  const scalar_t* vec;     // (D,): v of additive attention, nullptr for dot
  const scalar_t* values;  // (B, S, Dv)
  const int64_t* lengths;  // (B,) or nullptr
  acc_t<scalar_t> scale;   // dot only
  int64_t R, S, D, Dv;     // R = beam * T rows per source row
};

template <typename scalar_t>
__device__ __forceinline__ int64_t valid_length(const AttnArgs<scalar_t>& a, int64_t b) {
  if (a.lengths == nullptr) return a.S;
  const int64_t len = a.lengths[b];
  return len < 0 ? 0 : (len > a.S ? a.S : len);
}

// score of query row q against key row k, computed by one warp; every lane gets it.
template <typename scalar_t, int VEC, bool ADDITIVE>
__device__ __forceinline__ acc_t<scalar_t> warp_score(const AttnArgs<scalar_t>& a,
                                                      const scalar_t* q, const scalar_t* k,
                                                      int lane) {
  using A = acc_t<scalar_t>;
  A part = 0;
  for (int64_t i = static_cast<int64_t>(lane) * VEC; i < a.D; i += kWarpSize * VEC) {
    A qv[VEC], kv[VEC];
    load_pack<A, scalar_t, VEC>(q + i, qv);
    load_pack<A, scalar_t, VEC>(k + i, kv);
    if constexpr (ADDITIVE) {
      A vv[VEC];
      load_pack<A, scalar_t, VEC>(a.vec + i, vv);
#pragma unroll
      for (int e = 0; e < VEC; ++e) part += vv[e] * dev_tanh(qv[e] + kv[e]);
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) part += qv[e] * kv[e];
    }
  }
  part = warp_sum(part);
  return ADDITIVE ? part : part * a.scale;
}

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

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

// lengths as int64 on the query's device; range-checked first when they come from the host.
std::optional<at::Tensor> device_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                                         const AttentionGeometry& g, const at::Tensor& like) {
  if (!lengths.has_value()) return std::nullopt;
  if (!lengths->is_cuda()) read_lengths(op, lengths, g.B, g.S);
  return lengths->to(like.device(), at::kLong).contiguous();
}

template <typename scalar_t>
AttnArgs<scalar_t> make_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& vec,
                             const at::Tensor& v, const std::optional<at::Tensor>& len,
                             const AttentionGeometry& g, double scale) {
  AttnArgs<scalar_t> a;
  a.query = q.const_data_ptr<scalar_t>();
  a.keys = k.const_data_ptr<scalar_t>();
  a.vec = vec.defined() ? vec.const_data_ptr<scalar_t>() : nullptr;
  a.values = v.const_data_ptr<scalar_t>();
  a.lengths = len.has_value() ? len->const_data_ptr<int64_t>() : nullptr;
  a.scale = static_cast<acc_t<scalar_t>>(scale);
  a.R = g.beam * g.T;
  a.S = g.S;
  a.D = g.Dq;
  a.Dv = g.Dv;
  return a;
}

// 16-byte loads when every row of every operand starts on a 16-byte boundary.
template <typename scalar_t>
bool use_vec16(const AttentionGeometry& g, std::initializer_list<const at::Tensor*> tensors) {
  constexpr int V = kVec16<scalar_t>;
  return g.Dq % V == 0 && g.Dv % V == 0 && aligned16(tensors);
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

// P, dS (rows, S) float scratch and, for additive attention, dQP; see the top of the file.
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
  m.impl("dot_attention", &dot_attention_cuda);
  m.impl("dot_attention_backward", &dot_attention_backward_cuda);
  m.impl("additive_attention", &additive_attention_cuda);
  m.impl("additive_attention_backward", &additive_attention_backward_cuda);
}

}  // namespace fast_s2s::cuda
