#include "cpu/gru_common.h"

#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "cpu/gemm_nt.h"

namespace fast_s2s::cpu {

GruParams gru_params(const char* op, const at::Tensor& x, int64_t input_size, int64_t hidden,
                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                     const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh) {
  GruParams p = check_gru_params(op, x, input_size, hidden, w_ih, w_hh, b_ih, b_hh);
  const auto acc = gru_acc_dtype(x.scalar_type());
  p.w_ih = p.w_ih.to(acc);
  p.w_hh = p.w_hh.to(acc);
  if (p.b_ih.defined()) p.b_ih = p.b_ih.to(acc);
  if (p.b_hh.defined()) p.b_hh = p.b_hh.to(acc);
  return p;
}

void matmul_nt_out(const at::Tensor& a, const at::Tensor& w, at::Tensor& out) {
  const int64_t M = a.size(0), K = a.size(1), N = w.size(0);
  if (M == 0 || N == 0) return;
  auto unit_columns = [](const at::Tensor& t) { return t.size(1) <= 1 || t.stride(1) == 1; };
  TORCH_CHECK(unit_columns(a) && unit_columns(w) && unit_columns(out),
              "matmul_nt_out: operands need unit column stride");
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "matmul_nt_out", [&] {
    for (int64_t m0 = 0; m0 < M; m0 += kRowChunk) {
      gemm_nt_wide<scalar_t>({NtProduct<scalar_t>{
          a.const_data_ptr<scalar_t>() + m0 * a.stride(0), std::min(kRowChunk, M - m0), a.stride(0),
          w.const_data_ptr<scalar_t>(), N, w.stride(0), K,
          out.mutable_data_ptr<scalar_t>() + m0 * out.stride(0), out.stride(0)}});
    }
  });
}

void matmul_nt_pair_out(const at::Tensor& a1, const at::Tensor& w1, at::Tensor& out1,
                        const at::Tensor& a2, const at::Tensor& w2, at::Tensor& out2) {
  const bool small = a1.size(0) <= kRowChunk && a2.size(0) <= kRowChunk;
  auto plain = [](const at::Tensor& t) { return t.is_contiguous() && t.numel() > 0; };
  if (!small || !plain(a1) || !plain(w1) || !plain(a2) || !plain(w2) || !out1.is_contiguous() ||
      !out2.is_contiguous()) {
    matmul_nt_out(a1, w1, out1);
    matmul_nt_out(a2, w2, out2);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(a1.scalar_type(), "matmul_nt_pair_out", [&] {
    auto product = [](const at::Tensor& a, const at::Tensor& w, at::Tensor& out) {
      return NtProduct<scalar_t>{a.const_data_ptr<scalar_t>(),
                                 a.size(0),
                                 a.size(1),
                                 w.const_data_ptr<scalar_t>(),
                                 w.size(0),
                                 w.size(1),
                                 a.size(1),
                                 out.mutable_data_ptr<scalar_t>(),
                                 out.size(1)};
    };
    gemm_nt_wide<scalar_t>({product(a1, w1, out1), product(a2, w2, out2)});
  });
}

}  // namespace fast_s2s::cpu
