// What the CPU GRU cell and layer kernels share: weights in the accumulation dtype and the matrix
// product x W^T with the right kernel for the batch size. The argument checks, which the CUDA
// kernels share too, are in common/gru_checks.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "common/gru_checks.h"

namespace fast_s2s::cpu {

// check_gru_params (common/gru_checks.h), then the weights converted to the accumulation dtype
// (float32 for float32/bfloat16, float64 for float64): no copy for float32/64 inputs.
GruParams gru_params(const char* op, const at::Tensor& x, int64_t input_size, int64_t hidden,
                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                     const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh);

// out (M, N) = a (M, K) w^T (w: N x K); a and w with contiguous rows, of the accumulation dtype;
// out may be a row-strided view with unit column stride. Runs our register-tiled kernel
// (gemm_nt.h), parallel over blocks of weight rows, in chunks of kRowChunk rows of a so the
// chunk stays in L2 while the weights stream past. Measured on the 2-core AVX-512 EPYC against
// at::mm (MKL/oneDNN) for the GRU shapes (H = I = 512): batch 1 step 55 vs 96 us, batch 64 step
// 545 vs 1130 us, the (800 x 512) x (512 x 1536) input projection about 2x faster.
constexpr int64_t kRowChunk = 64;
void matmul_nt_out(const at::Tensor& a, const at::Tensor& w, at::Tensor& out);

// out1 = a1 w1^T and out2 = a2 w2^T in one parallel region (a GRU cell's two products), for at
// most kRowChunk rows each; falls back to two matmul_nt_out calls for larger batches.
void matmul_nt_pair_out(const at::Tensor& a1, const at::Tensor& w1, at::Tensor& out1,
                        const at::Tensor& a2, const at::Tensor& w2, at::Tensor& out2);

}  // namespace fast_s2s::cpu
