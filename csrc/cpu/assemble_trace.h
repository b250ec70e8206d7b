// A search's trace -> its ranked hypotheses (assemble_trace.cpp), as a C++ function for the op
// that encodes, searches and assembles in one call (native_search.cpp's "search").
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace fast_s2s::cpu {

// sentence (C,), length (C,), score (C,) float64, tokens (C, L) int64 (-1 padded), attention
// (C, L + 1, S) float32 (0 padded).
using Hypotheses = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// tokens, parents (T, B, K) int64; finish_scores (T, B, K) float64; attention (T, B * K, S)
// float32; finish_lp (>= T,) float64; every argument checked, on the host.
Hypotheses assemble_trace(const at::Tensor& tokens, const at::Tensor& parents,
                          const at::Tensor& finish_scores, const at::Tensor& attention,
                          const at::Tensor& finish_lp, int64_t n_best);

}  // namespace fast_s2s::cpu
