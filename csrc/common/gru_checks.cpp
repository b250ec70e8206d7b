#include "common/gru_checks.h"

#include <c10/util/Exception.h>

#include "common/attention_checks.h"

namespace fast_s2s {

void check_cell_inputs(const char* op, const at::Tensor& x, const at::Tensor& h) {
  TORCH_CHECK(x.dim() == 2, op, ": x must be 2-D (B, I), got shape ", x.sizes());
  TORCH_CHECK(h.dim() == 2 && h.size(0) == x.size(0), op,
              ": h must have shape (B, H) with B = ", x.size(0), ", got ", h.sizes());
  TORCH_CHECK(h.scalar_type() == x.scalar_type(), op, ": h must have the dtype of x (",
              x.scalar_type(), "), got ", h.scalar_type());
  TORCH_CHECK(h.device() == x.device(), op, ": h must be on the device of x (", x.device(),
              "), got ", h.device());
}

void check_layer_inputs(const char* op, const at::Tensor& x, const at::Tensor& h0) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D (T, B, I), got shape ", x.sizes());
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == x.size(1), op,
              ": h0 must have shape (B, H) with B = ", x.size(1), " (x is (T, B, I)), got ",
              h0.sizes());
  TORCH_CHECK(h0.scalar_type() == x.scalar_type(), op, ": h0 must have the dtype of x (",
              x.scalar_type(), "), got ", h0.scalar_type());
  TORCH_CHECK(h0.device() == x.device(), op, ": h0 must be on the device of x (", x.device(),
              "), got ", h0.device());
}

std::vector<int64_t> layer_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                                   int64_t B, int64_t T) {
  if (lengths.has_value()) {
    TORCH_CHECK(lengths->dim() == 1 && lengths->size(0) == B, op,
                ": lengths must have shape (B,) = (", B, ",), got ", lengths->sizes());
    TORCH_CHECK(lengths->scalar_type() == at::kInt || lengths->scalar_type() == at::kLong, op,
                ": lengths must be int32 or int64, got ", lengths->scalar_type());
  }
  return read_lengths(op, lengths, B, T, "T");  // checks 0 <= lengths[b] <= T
}

at::ScalarType gru_acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

namespace {

at::Tensor checked_weight(const char* op, const char* name, const at::Tensor& w, int64_t rows,
                          int64_t cols, const at::Tensor& x) {
  TORCH_CHECK(w.scalar_type() == x.scalar_type(), op, ": ", name, " must have the dtype of x (",
              x.scalar_type(), "), got ", w.scalar_type());
  TORCH_CHECK(w.device() == x.device(), op, ": ", name, " must be on the device of x (", x.device(),
              "), got ", w.device());
  const bool ok = cols < 0 ? (w.dim() == 1 && w.size(0) == rows)
                           : (w.dim() == 2 && w.size(0) == rows && w.size(1) == cols);
  if (cols < 0) {
    TORCH_CHECK(ok, op, ": ", name, " must have shape (3H,) = (", rows, ",), got ", w.sizes());
  } else {
    TORCH_CHECK(ok, op, ": ", name, " must have shape (", rows, ", ", cols, "), got ", w.sizes());
  }
  return w.contiguous();
}

}  // namespace

GruParams check_gru_params(const char* op, const at::Tensor& x, int64_t input_size, int64_t hidden,
                           const at::Tensor& w_ih, const at::Tensor& w_hh,
                           const std::optional<at::Tensor>& b_ih,
                           const std::optional<at::Tensor>& b_hh) {
  check_float_dtype(op, "x", x);
  GruParams p;
  p.input_size = input_size;
  p.hidden = hidden;
  p.w_ih = checked_weight(op, "w_ih", w_ih, 3 * hidden, input_size, x);
  p.w_hh = checked_weight(op, "w_hh", w_hh, 3 * hidden, hidden, x);
  if (b_ih.has_value()) p.b_ih = checked_weight(op, "b_ih", *b_ih, 3 * hidden, -1, x);
  if (b_hh.has_value()) p.b_hh = checked_weight(op, "b_hh", *b_hh, 3 * hidden, -1, x);
  return p;
}

}  // namespace fast_s2s
