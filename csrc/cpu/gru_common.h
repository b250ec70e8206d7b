// What the GRU cell and layer kernels share: argument checks, weights in the accumulation dtype,
// and the matrix product x W^T with the right kernel for the batch size.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <vector>

namespace fast_s2s::cpu {

// Weights as contiguous tensors of the accumulation dtype (float32 for float32/bfloat16, float64
// for float64): no copy for float32/64 inputs. Biases may be undefined (bias=False).
struct GruParams {
  at::Tensor w_ih, w_hh, b_ih, b_hh;
  int64_t input_size = 0, hidden = 0;
};

// Checks w_ih (3H, I), w_hh (3H, H), b_ih/b_hh (3H,) against x's dtype/device and I, H.
GruParams gru_params(const char* op, const at::Tensor& x, int64_t input_size, int64_t hidden,
                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                     const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh);

// The same checks, weights kept in their own dtype (contiguous): for the CUDA kernels, which read
// float16 / bfloat16 weights directly.
GruParams check_gru_params(const char* op, const at::Tensor& x, int64_t input_size,
                           int64_t hidden, const at::Tensor& w_ih, const at::Tensor& w_hh,
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

at::ScalarType gru_acc_dtype(at::ScalarType t);

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
