// Argument checks of the attention ops, shared by the CPU and the CUDA kernels: every failure
// names the argument, what was seen and what was expected (TORCH_CHECK raises a Python
// RuntimeError/ValueError).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace fast_s2s {

// Sizes of one attention call. A 2-D query (N, D) is treated as (N, 1, D): T = 1.
struct AttentionGeometry {
  int64_t N = 0;     // query rows = B * beam
  int64_t T = 1;     // query steps per row
  int64_t B = 0;     // source rows
  int64_t S = 0;     // source length
  int64_t Dq = 0;    // query / key feature size (D for dot, A for additive)
  int64_t Dv = 0;    // value feature size
  int64_t beam = 1;  // query row n reads source row n / beam
  bool query_2d = false;
};

// The floating dtypes a kernel takes: float32, float64 and bfloat16 on the CPU, also float16 on
// CUDA.
void check_float_dtype(const char* op, const char* name, const at::Tensor& t);

AttentionGeometry check_attention_inputs(const char* op, const at::Tensor& query,
                                         const char* query_name, const at::Tensor& keys,
                                         const char* keys_name, const at::Tensor& values,
                                         const std::optional<at::Tensor>& lengths);

// local_attention's centers (N, T) for a 3-D query, (N,) for a 2-D one, floating, on the query's
// device; window >= 0.
void check_local_inputs(const char* op, const at::Tensor& centers, int64_t window,
                        const at::Tensor& query);

// lengths as int64 on the host (limit for every row when absent), each checked to lie in
// [0, limit]; limit_name says what the limit is in the message ("S" for attention, "T" for GRU).
std::vector<int64_t> read_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                                  int64_t B, int64_t limit, const char* limit_name = "S");

// A gradient of an output must match that output's shape (N,T,X) or, for a 2-D query, (N,X).
void check_output_grad(const char* op, const char* name, const at::Tensor& grad,
                       const AttentionGeometry& g, int64_t last, const at::Tensor& like);

}  // namespace fast_s2s
