// Argument checks of the GRU ops, shared by the CPU and the CUDA kernels: shapes, dtypes and
// devices of the inputs and weights, lengths, and the accumulation dtype of the workspaces.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace fast_s2s {

// The checked weights and sizes of one call. Biases may be undefined (bias=False).
struct GruParams {
  at::Tensor w_ih, w_hh, b_ih, b_hh;
  int64_t input_size = 0, hidden = 0;
};

// Checks w_ih (3H, I), w_hh (3H, H), b_ih/b_hh (3H,) against x's dtype/device and I, H. The
// weights are kept in their own dtype (contiguous): the CUDA kernels read float16 / bfloat16
// weights directly; the CPU kernels convert them (cpu::gru_params).
GruParams check_gru_params(const char* op, const at::Tensor& x, int64_t input_size, int64_t hidden,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const std::optional<at::Tensor>& b_ih,
                           const std::optional<at::Tensor>& b_hh);

// x (B, I) and h (B, H) of a GRU cell: ranks, batch, dtype and device agree.
void check_cell_inputs(const char* op, const at::Tensor& x, const at::Tensor& h);

// x (T, B, I) and h0 (B, H) of a GRU layer.
void check_layer_inputs(const char* op, const at::Tensor& x, const at::Tensor& h0);

// lengths (B,) int32/int64 with 0 <= lengths[b] <= T, read to the host (T for every row when
// absent).
std::vector<int64_t> layer_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                                   int64_t B, int64_t T);

// The dtype the gates and the workspaces are computed in: float64 for float64 inputs, float32
// otherwise.
at::ScalarType gru_acc_dtype(at::ScalarType t);

}  // namespace fast_s2s
