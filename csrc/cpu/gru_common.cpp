#include "cpu/gru_common.h"

#include "cpu/gemm.h"

namespace fast_s2s::cpu {

GruParams gru_params(const char* op, const at::Tensor& x, int64_t input_size, int64_t hidden,
                     const at::Tensor& w_ih, const at::Tensor& w_hh,
                     const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
                     bool keep_weights) {
  GruParams p = check_gru_params(op, x, input_size, hidden, w_ih, w_hh, b_ih, b_hh);
  const auto acc = gru_acc_dtype(x.scalar_type());
  p.w_ih = keep_weights ? p.w_ih.contiguous() : contiguous_as(p.w_ih, acc);
  p.w_hh = keep_weights ? p.w_hh.contiguous() : contiguous_as(p.w_hh, acc);
  if (p.b_ih.defined()) p.b_ih = contiguous_as(p.b_ih, acc);
  if (p.b_hh.defined()) p.b_hh = contiguous_as(p.b_hh, acc);
  return p;
}

void matmul_nt_out(const at::Tensor& a, const at::Tensor& w, at::Tensor& out) {
  gemm::matmul_out("matmul_nt", a, w.t(), out);
}

}  // namespace fast_s2s::cpu
