// Fused GRU cell on the CPU, forward and backward (torch.nn.GRUCell semantics).
// Reference: fast_s2s/reference.py::gru_cell.
//
// Forward: gi = x W_ih^T and gh = h W_hh^T (matrix-vector kernel at small batch, BLAS above),
// then one vectorised pass per row adds the biases and computes every gate and h' (gru_gates.h),
// saving [r, z, n, W_hn h + b_hn] (B, 4H) for the backward. torch.nn.GRUCell runs about ten
// separate elementwise ops over (B, 3H) and (B, H) tensors after its two products.
// Backward: one pass per row gives dgi, dgh; then dx = dgi W_ih, dh = dgh W_hh + dh' z,
// dW_ih = dgi^T x, dW_hh = dgh^T h, db = column sums.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <vector>

#include "cpu/gru_common.h"
#include "cpu/gru_gates.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "gru_cell";

template <typename A>
const A* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<A>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor> gru_cell_cpu(const at::Tensor& x, const at::Tensor& h,
                                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                const std::optional<at::Tensor>& b_ih,
                                                const std::optional<at::Tensor>& b_hh) {
  check_cell_inputs(kOp, x, h);
  const int64_t B = x.size(0), H = h.size(1);
  const GruParams p = gru_params(kOp, x, x.size(1), H, w_ih, w_hh, b_ih, b_hh);
  const auto acc = gru_acc_dtype(x.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous(), ha = h.to(acc).contiguous();
  at::Tensor gi = at::empty({B, 3 * H}, xa.options());
  at::Tensor gh = at::empty({B, 3 * H}, xa.options());
  matmul_nt_pair_out(xa, p.w_ih, gi, ha, p.w_hh, gh);
  at::Tensor gates = at::empty({B, 4 * H}, xa.options());
  at::Tensor h_new = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "gru_cell_cpu", [&] {
    using A = acc_t<scalar_t>;
    const A *gip = gi.const_data_ptr<A>(), *ghp = gh.const_data_ptr<A>();
    const A *bih = ptr_or_null<A>(p.b_ih), *bhh = ptr_or_null<A>(p.b_hh);
    const A* hp = ha.const_data_ptr<A>();
    A* gp = gates.mutable_data_ptr<A>();
    scalar_t* out = h_new.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, H)),
                     [&](int64_t begin, int64_t end) {
                       std::vector<A> row(H);
                       for (int64_t b = begin; b < end; ++b) {
                         gru_gates_forward<A>(gip + b * 3 * H, ghp + b * 3 * H, bih, bhh,
                                              hp + b * H, row.data(), gp + b * 4 * H, H);
                         convert_row(row.data(), out + b * H, H);
                       }
                     });
  });
  return {h_new, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_cell_backward_cpu(const at::Tensor& grad_h_new, const at::Tensor& x, const at::Tensor& h,
                      const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& gates) {
  const char* op = "gru_cell_backward";
  check_cell_inputs(op, x, h);
  const int64_t B = x.size(0), H = h.size(1);
  const GruParams p = gru_params(op, x, x.size(1), H, w_ih, w_hh, std::nullopt, std::nullopt);
  const auto dtype = x.scalar_type();
  const auto acc = gru_acc_dtype(dtype);
  TORCH_CHECK(grad_h_new.sizes() == h.sizes(), op, ": grad_h_new must have shape ", h.sizes(),
              ", got ", grad_h_new.sizes());
  TORCH_CHECK(gates.dim() == 2 && gates.size(0) == B && gates.size(1) == 4 * H &&
                  gates.scalar_type() == acc,
              op, ": gates must be the workspace the forward returned, (B, 4H) = (", B, ", ", 4 * H,
              ") ", acc, ", got ", gates.sizes(), " ", gates.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous(), ha = h.to(acc).contiguous();
  const at::Tensor dh = grad_h_new.to(acc).contiguous(), g = gates.contiguous();
  at::Tensor dgi = at::empty({B, 3 * H}, xa.options());
  at::Tensor dgh = at::empty({B, 3 * H}, xa.options());
  at::Tensor dh_direct = at::empty({B, H}, xa.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "gru_cell_backward_cpu", [&] {
    using A = scalar_t;
    const A *dhp = dh.const_data_ptr<A>(), *gp = g.const_data_ptr<A>(),
            *hp = ha.const_data_ptr<A>();
    A *dgip = dgi.mutable_data_ptr<A>(), *dghp = dgh.mutable_data_ptr<A>(),
      *ddp = dh_direct.mutable_data_ptr<A>();
    at::parallel_for(0, B, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, H)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t b = begin; b < end; ++b) {
                         gru_gates_backward<A>(dhp + b * H, gp + b * 4 * H, hp + b * H,
                                               dgip + b * 3 * H, dghp + b * 3 * H, ddp + b * H, H);
                       }
                     });
  });
  at::Tensor grad_x = at::mm(dgi, p.w_ih).to(dtype);
  at::Tensor grad_h = at::addmm(dh_direct, dgh, p.w_hh).to(dtype);
  at::Tensor grad_w_ih = at::mm(dgi.t(), xa).to(dtype);
  at::Tensor grad_w_hh = at::mm(dgh.t(), ha).to(dtype);
  at::Tensor grad_b_ih = dgi.sum(0).to(dtype);
  at::Tensor grad_b_hh = dgh.sum(0).to(dtype);
  return {grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("gru_cell", &gru_cell_cpu);
  m.impl("gru_cell_backward", &gru_cell_backward_cpu);
}

}  // namespace fast_s2s::cpu
