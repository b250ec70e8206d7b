// Fused GRU layer on the CPU: one layer, one direction, the whole sequence in one op, forward
// and backward through time. Reference: fast_s2s/reference.py::gru_layer.
//
// Forward: the input projection of all T steps is one matrix product (T*B, I) x (I, 3H); then
// the recurrence runs in this C++ loop: per step one product h W_hh^T and one fused gate pass
// (gru_gates.h), with no Python and no per-gate tensors. Per step and row it saves
// [r, z, n, hn, h_prev] (the (T, B, 5H) workspace) for the backward.
// lengths: steps t >= lengths[b] leave row b's state unchanged and output zeros (packed-sequence
// semantics of torch.nn.GRU); with reverse the steps run from T-1 down to 0, so each row starts at
// its own last valid step. Steps past the longest row are skipped outright.
// Backward runs the steps in the opposite order: dh += doutput[t], one fused pass for dgi, dgh,
// then dh = dgh W_hh + dh' z; afterwards dx, dW_ih, dW_hh are one matrix product each over all
// steps, and the bias gradients column sums. Every product runs our A B^T kernel (gemm_nt.h,
// with transposed copies where needed), which beat at::mm on these shapes (gru_common.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu/gru_common.h"
#include "cpu/gru_gates.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "gru_layer";

// Row-parallel grain: enough gate work per task to pay for a thread hand-off.
int64_t gate_grain(int64_t H) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, H)); }

template <typename A>
const A* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<A>() : nullptr;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_cpu(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& lengths, bool reverse) {
  check_layer_inputs(kOp, x, h0);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const GruParams p = gru_params(kOp, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const std::vector<int64_t> lens = layer_lengths(kOp, lengths, B, T);
  const int64_t max_len = B == 0 ? 0 : *std::max_element(lens.begin(), lens.end());
  const auto acc = gru_acc_dtype(x.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous();
  at::Tensor gi = at::empty({T * B, 3 * H}, xa.options());
  matmul_nt_out(xa.view({T * B, I}), p.w_ih, gi);  // every step's input projection at once
  at::Tensor h = h0.to(acc).contiguous().clone();  // the running state, float32/64
  at::Tensor gh = at::empty({B, 3 * H}, xa.options());
  at::Tensor work = at::empty({T, B, 5 * H}, xa.options());
  at::Tensor output = at::empty({T, B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "gru_layer_cpu", [&] {
    using A = acc_t<scalar_t>;
    const A *bih = ptr_or_null<A>(p.b_ih), *bhh = ptr_or_null<A>(p.b_hh);
    A* hp = h.mutable_data_ptr<A>();
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    for (int64_t step = 0; step < T; ++step) {
      const int64_t t = reverse ? T - 1 - step : step;
      A* wt = work.mutable_data_ptr<A>() + t * B * 5 * H;
      if (t >= max_len) {  // no row is running at this step: zeros, no product
        std::fill(out + t * B * H, out + (t + 1) * B * H, scalar_t(0));
        std::fill(wt, wt + B * 5 * H, A(0));
        continue;
      }
      matmul_nt_out(h, p.w_hh, gh);
      const A* gip = gi.const_data_ptr<A>() + t * B * 3 * H;
      const A* ghp = gh.const_data_ptr<A>();
      at::parallel_for(0, B, gate_grain(H), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          A* hb = hp + b * H;
          A* wb = wt + b * 5 * H;
          scalar_t* ob = out + (t * B + b) * H;
          std::copy(hb, hb + H, wb + 4 * H);  // h_prev, for the backward
          if (t < lens[b]) {
            gru_gates_forward<A>(gip + b * 3 * H, ghp + b * 3 * H, bih, bhh, hb, hb, wb, H);
            convert_row(hb, ob, H);
          } else {  // past this row's end: state kept, output zero, no gradient
            std::fill(wb, wb + 4 * H, A(0));
            std::fill(ob, ob + H, scalar_t(0));
          }
        }
      });
    }
  });
  return {output, h.to(x.scalar_type()), work};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                       const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const at::Tensor& work,
                       const std::optional<at::Tensor>& lengths, bool reverse) {
  const char* op = "gru_layer_backward";
  check_layer_inputs(op, x, h0);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const GruParams p = gru_params(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  const std::vector<int64_t> lens = layer_lengths(op, lengths, B, T);
  const auto dtype = x.scalar_type();
  const auto acc = gru_acc_dtype(dtype);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == T && grad_output.size(1) == B &&
                  grad_output.size(2) == H,
              op, ": grad_output must have shape (T, B, H) = (", T, ", ", B, ", ", H, "), got ",
              grad_output.sizes());
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes(), op, ": grad_h_n must have shape ", h0.sizes(),
              ", got ", grad_h_n.sizes());
  TORCH_CHECK(work.dim() == 3 && work.size(0) == T && work.size(1) == B && work.size(2) == 5 * H &&
                  work.scalar_type() == acc,
              op, ": work must be the workspace the forward returned, (T, B, 5H) ", acc, ", got ",
              work.sizes(), " ", work.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous(), wk = work.contiguous();
  const at::Tensor gout = grad_output.to(acc).contiguous();
  at::Tensor dh = grad_h_n.to(acc).contiguous().clone();
  at::Tensor dgi = at::zeros({T, B, 3 * H}, xa.options());
  at::Tensor dgh = at::zeros({T, B, 3 * H}, xa.options());
  at::Tensor dh_direct = at::empty({B, H}, xa.options());
  // Transposed copies so every product below is of the A B^T form our kernel runs (gemm_nt.h).
  const at::Tensor w_hh_t = p.w_hh.t().contiguous();  // (H, 3H)
  AT_DISPATCH_FLOATING_TYPES(acc, "gru_layer_backward_cpu", [&] {
    using A = scalar_t;
    A* dhp = dh.mutable_data_ptr<A>();
    A* ddp = dh_direct.mutable_data_ptr<A>();
    for (int64_t step = T - 1; step >= 0; --step) {
      const int64_t t = reverse ? T - 1 - step : step;
      const A* wt = wk.const_data_ptr<A>() + t * B * 5 * H;
      const A* go = gout.const_data_ptr<A>() + t * B * H;
      A* dgit = dgi.mutable_data_ptr<A>() + t * B * 3 * H;
      A* dght = dgh.mutable_data_ptr<A>() + t * B * 3 * H;
      bool any_valid = false;
      for (int64_t b = 0; b < B; ++b) any_valid |= t < lens[b];
      if (!any_valid) continue;  // dh passes through unchanged; dgi, dgh stay zero
      at::parallel_for(0, B, gate_grain(H), [&](int64_t begin, int64_t end) {
        for (int64_t b = begin; b < end; ++b) {
          A* dhb = dhp + b * H;
          if (t < lens[b]) {
            for (int64_t j = 0; j < H; ++j) dhb[j] += go[b * H + j];
            const A* wb = wt + b * 5 * H;
            gru_gates_backward<A>(dhb, wb, wb + 4 * H, dgit + b * 3 * H, dght + b * 3 * H,
                                  ddp + b * H, H);
          } else {  // the state was carried unchanged: its gradient too
            std::copy(dhb, dhb + H, ddp + b * H);
          }
        }
      });
      // dh = dgh_t W_hh + (dh' z, or dh for rows that did not step)
      matmul_nt_out(dgh.select(0, t), w_hh_t, dh);
      const A* dd = dh_direct.const_data_ptr<A>();
      at::parallel_for(0, B * H, 16384, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) dhp[i] += dd[i];
      });
    }
  });
  const at::Tensor dgi2 = dgi.view({T * B, 3 * H}), dgh2 = dgh.view({T * B, 3 * H});
  const at::Tensor h_prev = wk.view({T * B, 5 * H}).narrow(1, 4 * H, H);
  at::Tensor grad_x = at::empty({T * B, I}, xa.options());
  matmul_nt_out(dgi2, p.w_ih.t().contiguous(), grad_x);
  at::Tensor grad_w_ih = at::empty({3 * H, I}, xa.options());
  matmul_nt_out(dgi2.t().contiguous(), xa.view({T * B, I}).t().contiguous(), grad_w_ih);
  at::Tensor grad_w_hh = at::empty({3 * H, H}, xa.options());
  matmul_nt_out(dgh2.t().contiguous(), h_prev.t().contiguous(), grad_w_hh);
  grad_x = grad_x.view({T, B, I}).to(dtype);
  grad_w_ih = grad_w_ih.to(dtype);
  grad_w_hh = grad_w_hh.to(dtype);
  at::Tensor grad_b_ih = dgi2.sum(0).to(dtype);
  at::Tensor grad_b_hh = dgh2.sum(0).to(dtype);
  return {grad_x, dh.to(dtype), grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("gru_layer", &gru_layer_cpu);
  m.impl("gru_layer_backward", &gru_layer_backward_cpu);
}

}  // namespace fast_s2s::cpu
