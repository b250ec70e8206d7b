// The native loop's encoder (op "encode", and the first part of op "search"): Seq2Seq.encode for
// a CPU model in one call, so that a native search has no Python per module. The reference is
// Seq2Seq.encode itself (fast_s2s/models/seq2seq.py, encoder.py, Attention.precompute), which this
// matches exactly: the same ATen ops in the same order, and the recurrence is gru_stack's
// (gru_stack.cpp). At one sentence (S ~ 25, H = 128) the modules' Python (argument checks, module
// calls, an op dispatch each) costs more than the GRU itself: 220-260 us through the modules,
// 160-170 us as this op.
//
// params (fast_s2s/models/native_encoder.py packs them; None where a model has no such tensor):
//   [embedding (V, E) | frame_proj weight (E, F), frame_proj bias (E) | None,
//    (w_ih, w_hh, b_ih, b_hh) per layer and direction (forward first),
//    bridge weight (L_dec * H, H), bridge bias, key_proj weight (A, H) | None, key_proj bias]
// config: [frames (0: src holds token ids, 1: frames), encoder layers, decoder layers]
// src (B, S) int64 ids or (B, S, F) frames; src_lengths (B,) int64.
// Returns states (B, S, H) (a view of the time-major GRU output, as the module returns),
// hidden (L_dec, B, H), final (B, H) [h_fwd_final; h_bwd_final] of the top layer, and keys:
// the projected keys (B, S, A) for the additive / concat scores, else the states.
#include "cpu/native_encoder.h"

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/embedding.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/tanh.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu/gru_common.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "encode";

}  // namespace

EncodedSource encode_source(const c10::List<std::optional<at::Tensor>>& params,
                            at::IntArrayRef config, const at::Tensor& src,
                            const at::Tensor& src_lengths) {
  TORCH_CHECK(config.size() == 3, kOp, ": config must be [frames, encoder layers, decoder layers]",
              ", got ", config.size(), " values");
  const bool frames = config[0] != 0;
  const int64_t layers = config[1], decoder_layers = config[2];
  TORCH_CHECK(layers >= 1 && decoder_layers >= 1, kOp, ": the layer counts must be positive");
  const int64_t gru_tensors = 4 * layers * 2;
  TORCH_CHECK(static_cast<int64_t>(params.size()) == 2 + gru_tensors + 4, kOp,
              ": params must hold ", 2 + gru_tensors + 4, " tensors (or None) for ", layers,
              " layer(s), got ", params.size());
  const auto get = [&](int64_t i) -> std::optional<at::Tensor> { return params.get(i); };
  const auto need = [&](int64_t i, const char* what) -> at::Tensor {
    const std::optional<at::Tensor> t = get(i);
    TORCH_CHECK(t.has_value(), kOp, ": params[", i, "] (", what, ") must be a tensor");
    return *t;
  };
  TORCH_CHECK(src.dim() == (frames ? 3 : 2), kOp, ": src must be ",
              frames ? "(B, S, F) frames" : "(B, S) token ids", ", got shape ", src.sizes());
  const at::NoGradGuard no_grad;  // inference only, like the search that calls it

  // The input layer (Encoder.embed; dropout is the identity in eval mode).
  const at::Tensor input_w = need(0, frames ? "frame_proj weight" : "embedding");
  const at::Tensor embedded = frames ? at::linear(src.to(input_w.scalar_type()), input_w, get(1))
                                     : at::embedding(input_w, src);
  const int64_t B = embedded.size(0);

  // The bidirectional GRU over the time-major view (fast_s2s.nn.GRU with batch_first).
  c10::List<std::optional<at::Tensor>> gru_weights;
  gru_weights.reserve(gru_tensors);
  for (int64_t i = 0; i < gru_tensors; ++i) gru_weights.push_back(get(2 + i));
  const at::Tensor w_hh = need(3, "the first layer's weight_hh");
  const int64_t half = w_hh.size(1);
  const at::Tensor h0 = at::zeros({2 * layers, B, half}, embedded.options());
  auto [output, h_n] =
      gru_stack(embedded.transpose(0, 1), h0, gru_weights, src_lengths, layers, true);
  const at::Tensor states = output.transpose(0, 1);  // (B, S, H)

  // The bridge to the decoder: tanh(W [h_fwd_final; h_bwd_final] + b), a slice per layer.
  const at::Tensor final = at::cat({h_n[2 * layers - 2], h_n[2 * layers - 1]}, -1);  // (B, H)
  const int64_t base = 2 + gru_tensors;
  const at::Tensor bridge_w = need(base, "bridge weight");
  TORCH_CHECK(
      bridge_w.dim() == 2 && bridge_w.size(0) == decoder_layers * 2 * half, kOp, ": params[", base,
      "] (bridge weight) must have decoder layers * H = ", decoder_layers, " * ", 2 * half,
      " rows for config's ", decoder_layers, " decoder layers, got shape ", bridge_w.sizes());
  const at::Tensor bridged = at::tanh(at::linear(final, bridge_w, get(base + 1)));
  const at::Tensor hidden =
      bridged.view({B, decoder_layers, 2 * half}).transpose(0, 1).contiguous();

  // Attention.precompute: the additive / concat scores project the keys once per batch.
  const std::optional<at::Tensor> key_w = get(base + 2);
  const at::Tensor keys = key_w.has_value() ? at::linear(states, *key_w, get(base + 3)) : states;
  return {states, hidden, final, keys};
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> encode_cpu(
    const c10::List<std::optional<at::Tensor>>& params, at::IntArrayRef config,
    const at::Tensor& src, const at::Tensor& src_lengths) {
  EncodedSource e = encode_source(params, config, src, src_lengths);
  return {e.states, e.hidden, e.final, e.keys};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) { m.impl("encode", &encode_cpu); }

}  // namespace fast_s2s::cpu
