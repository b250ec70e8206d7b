// What the dot-product and additive attention kernels on CUDA share: the block size, the
// arguments of one call (AttnArgs), the clamped length, the warp's score of one position, and the
// host helpers that fill AttnArgs. The forward is csrc/cuda/attention_forward.cu, the backward
// csrc/cuda/attention_backward.cu.
// Reference: fast_s2s/reference.py::dot_attention and ::additive_attention.
//
// Rows. The query (N, T, D) is read as rows r = n * T + t; row r reads source row
// b = r / (beam * T), so the beam * T rows of one source row are consecutive and share K[b], V[b]
// (no copies for beam search). L = lengths[b], clamped to [0, S]: positions s >= L get no weight.
//
// Softmax and every sum run in float32 (float64 for float64 inputs); keys and values are read
// once per (row, split) in their own dtype.
//
// lengths on the CPU are range-checked here (clear error); lengths already on the GPU are not
// read back on the host, which would stall the decoding loop: the kernels clamp them to [0, S].
#pragma once

#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <optional>

#include "common/attention_checks.h"
#include "cuda/cuda_utils.cuh"

namespace fast_s2s::cuda {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;

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

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

// lengths as int64 on the query's device; range-checked first when they come from the host.
inline std::optional<at::Tensor> device_lengths(const char* op,
                                                const std::optional<at::Tensor>& lengths,
                                                const AttentionGeometry& g,
                                                const at::Tensor& like) {
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

}  // namespace fast_s2s::cuda
