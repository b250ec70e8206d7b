// A stacked, optionally bidirectional GRU for inference in one op call: the forward of
// fast_s2s.nn.GRU when no gradient is needed (decoding, evaluation). Reference: the module's
// own per-layer loop over fast_s2s.ops.gru_layer (fast_s2s/nn/gru.py), which it matches to float
// rounding.
//
// Why an op of its own: at the sizes of one sentence (T ~ 25, B = 1, H = 64) a gru_layer call is
// ~50 us of kernel and as much again of Python around it (argument checks, autograd dispatch,
// the module's loop); serving decodes one sentence at a time, so that overhead is the encoder's
// cost. And the two directions of a layer are independent: with two or more threads they run
// at the same time, one per thread (each direction's steps then run serially inside it), which
// saves a fork and join per step and direction and, at small batch, keeps each thread on one
// direction's weights.
#include <ATen/Parallel.h>
#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>

#include "cpu/gru_common.h"
#include "cpu/prepared_cache.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "gru_stack";

}  // namespace

std::tuple<at::Tensor, at::Tensor> gru_stack(const at::Tensor& x, const at::Tensor& h0,
                                             const c10::List<std::optional<at::Tensor>>& weights,
                                             const std::optional<at::Tensor>& lengths,
                                             int64_t num_layers, bool bidirectional) {
  const int64_t dirs = bidirectional ? 2 : 1;
  TORCH_CHECK(num_layers >= 1, kOp, ": num_layers must be at least 1, got ", num_layers);
  TORCH_CHECK(static_cast<int64_t>(weights.size()) == 4 * num_layers * dirs, kOp,
              ": weights must hold [w_ih, w_hh, b_ih, b_hh] per layer and direction, ",
              4 * num_layers * dirs, " tensors, got ", weights.size());
  TORCH_CHECK(x.dim() == 3, kOp, ": x must be 3-D (T, B, I), got shape ", x.sizes());
  TORCH_CHECK(h0.dim() == 3 && h0.size(0) == num_layers * dirs && h0.size(1) == x.size(1), kOp,
              ": h0 must have shape (layers * directions, B, H) = (", num_layers * dirs, ", ",
              x.size(1), ", H), got ", h0.sizes());
  at::Tensor h_n = at::empty(h0.sizes(), x.options());
  const bool frozen = weights_frozen();  // this thread's scope, for the directions' threads
  at::Tensor input = x;
  const int64_t H = h0.size(2);
  for (int64_t layer = 0; layer < num_layers; ++layer) {
    // Each direction writes its half of the layer's output in place (no concatenation) and
    // keeps no workspace (no backward reads it).
    at::Tensor output = at::empty({x.size(0), x.size(1), dirs * H}, x.options());
    auto run = [&](int64_t d) {
      // Grad mode is per thread, and a pool thread's is on: the layer's products must not see
      // weights that require grad as inputs to record (this op is inference only).
      const at::NoGradGuard no_grad;
      const FrozenScopeOf frozen_scope(frozen);  // the caller's, as for grad mode
      const int64_t index = layer * dirs + d;
      const auto w = [&](int64_t i) { return weights.get(4 * index + i); };
      TORCH_CHECK(w(0).has_value() && w(1).has_value(), kOp, ": w_ih and w_hh of layer ", layer,
                  " direction ", d, " must be tensors");
      const LayerTarget target{output.narrow(2, d * H, H), h_n[index], /*keep_work=*/false};
      gru_layer_forward_into(input, h0[index], *w(0), *w(1), w(2), w(3), lengths, d == 1, target);
    };
    if (dirs == 2 && at::get_num_threads() > 1 && !at::in_parallel_region()) {
      at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
        for (int64_t d = begin; d < end; ++d) run(d);
      });
    } else {
      for (int64_t d = 0; d < dirs; ++d) run(d);
    }
    input = output;
  }
  return {input, h_n};
}

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) { m.impl("gru_stack", &gru_stack); }

}  // namespace fast_s2s::cpu
