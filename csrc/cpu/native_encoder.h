// The native encoder (native_encoder.cpp) as a C++ function, for the ops that encode and search
// in one call (native_search.cpp's "search").
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <optional>

namespace fast_s2s::cpu {

// What Seq2Seq.encode returns for a batch: states (B, S, H), hidden (L_dec, B, H), final (B, H)
// [h_fwd_final; h_bwd_final] of the top layer, and the attention's keys (projected, or the
// states).
struct EncodedSource {
  at::Tensor states, hidden, final, keys;
};

// The "encode" op's work (its params, config and checks: native_encoder.cpp).
EncodedSource encode_source(const c10::List<std::optional<at::Tensor>>& params,
                            at::IntArrayRef config, const at::Tensor& src,
                            const at::Tensor& src_lengths);

}  // namespace fast_s2s::cpu
