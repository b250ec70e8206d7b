// What the CPU GRU cell and layer kernels share: weights in the accumulation dtype and the matrix
// product x W^T. The argument checks, which the CUDA
// kernels share too, are in common/gru_checks.h.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "common/gru_checks.h"

namespace fast_s2s::cpu {

// check_gru_params (common/gru_checks.h), then the weights converted to the accumulation dtype
// (float32 for float32/bfloat16, float64 for float64): no copy for float32/64 inputs.
// keep_weights: w_ih and w_hh stay in their own dtype (contiguous), for a layer whose products
// may run on bfloat16 products (gemm::matmul_nt_bf16); the biases are converted all the same.
GruParams gru_params(const char* op, const at::Tensor& x, int64_t input_size, int64_t hidden,
                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                     const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                     bool keep_weights = false);

// The gru_layer op's CPU forward (gru_layer.cpp): one layer, one direction, output (T, B, H),
// h_n (B, H) and the (T, B, 5H) workspace of the backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_forward(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& lengths, bool reverse);

// Where gru_layer_forward_into puts its results. output: a (T, B, H) view with unit feature
// stride to write into (a direction's half of a bidirectional layer's (T, B, 2H) output), or
// undefined for a new tensor; h_n likewise, a contiguous (B, H) view (a row of the stack's
// (layers * directions, B, H) h_n). keep_work: false for inference (no backward will read the
// workspace): the running state and one step's gate scratch then live in buffers the thread
// keeps across calls, and the returned workspace is undefined.
struct LayerTarget {
  at::Tensor output;
  at::Tensor h_n;
  bool keep_work = true;
};

// t in `dtype`, contiguous: t itself, without a dispatch, when it already is.
inline at::Tensor contiguous_as(const at::Tensor& t, at::ScalarType dtype) {
  return (t.scalar_type() == dtype ? t : t.to(dtype)).contiguous();
}
std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_forward_into(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& lengths, bool reverse, const LayerTarget& target);

// The gru_stack op (gru_stack.cpp): fast_s2s.nn.GRU's inference forward in one call, x (T, B, I),
// h0 (layers * directions, B, H) -> output (T, B, directions * H), h_n.
std::tuple<at::Tensor, at::Tensor> gru_stack(const at::Tensor& x, const at::Tensor& h0,
                                             const c10::List<std::optional<at::Tensor>>& weights,
                                             const std::optional<at::Tensor>& lengths,
                                             int64_t num_layers, bool bidirectional);

// out (M, N) = a (M, K) w^T (w: N x K), in the accumulation dtype; out with unit column stride.
// A one-shot product through the GEMM layer (gemm.h), which measures the backend per shape.
void matmul_nt_out(const at::Tensor& a, const at::Tensor& w, at::Tensor& out);

}  // namespace fast_s2s::cpu
