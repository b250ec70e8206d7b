// The native decoder: one step of fast_s2s.models' GRU decoders (Bahdanau, Luong with or without
// input feeding, the classic no-attention decoder) for N = B * beam rows, run without Python or
// per-op dispatch, and the search rules (fast_s2s/models/decoding/rules.py) on its log-probs.
// Reference: Seq2Seq.decode_step and the Python engine's step (fast_s2s/models/decoding/
// python_loop.py), which the tests hold this to token for token.
//
// The weights and the wiring arrive by name, as three dicts (fast_s2s/models/decoding/
// native_params.py builds them; decoder_params.cpp reads them into DecoderParams):
//   kinds  {wiring: bahdanau | luong | classic, score: none | additive | concat | dot | general,
//           local: none | m | p (Luong local-m / local-p, with a dot or general score)}
//   config {window (their D), input_feeding (0 / 1), layers, post_gru (0 / 1), tie_proj (0 / 1),
//           pad, bos, eos}
//   params {embedding (V, E),
//           w_ih_l<l> (3H, I_l), w_hh_l<l> (3H, H), b_ih_l<l> (3H), b_hh_l<l> (3H)  l < layers,
//           w_ih_post, w_hh_post (3H, H), b_ih_post, b_hh_post (3H)  post_gru (luong): the GRU
//                                   over h~ whose state is the last hidden row and is projected,
//           query_proj (Dq, H)      score additive / concat (Dq = A) or general (Dq = H),
//           v (A)                   score additive / concat,
//           position_proj (P, H), position_v (P)   local-p (W_p, v_p),
//           readout_w (H, 2H + E), readout_b (H)   wiring bahdanau / classic,
//           combine_w (H, 2H)                      wiring luong,
//           tie_proj (E, H)         tie_proj,
//           out_w (V, H or E), out_b (V)}
// The encoder memory: keys (B, S, Dq) (projected keys for additive, raw states for dot /
// general), values (B, S, H), or (classic) context (B, H); src_lengths (B,). Decoder row n reads
// source row n / beam: the memory is never copied per beam.
#pragma once

#include <ATen/core/Dict.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cpu/panel_gemm.h"

namespace fast_s2s::cpu {

enum Wiring : int64_t { kBahdanau = 0, kLuong = 1, kClassic = 2 };
// Luong concat is kAdditive (v^T tanh(W_q q + W_k k)), Bahdanau's score too.
enum Score : int64_t { kNoScore = 0, kAdditive = 1, kDot = 2, kGeneral = 3 };
// Luong local attention: the window's centre p = t (monotonic) or L_b sigmoid(v_p tanh(W_p h))
// (predictive), the window |s - p| <= D, the Gaussian of local_attention (common/local_window.h).
enum Local : int64_t { kGlobal = 0, kLocalM = 1, kLocalP = 2 };

struct DecoderSpec {
  int64_t wiring = kBahdanau, score = kAdditive;
  bool input_feeding = false, tie_proj = false, post_gru = false;
  int64_t layers = 1, pad = 0, bos = 1, eos = 2;
  // The rows of the decoder state: the stacked GRU's layers, then the post-attention GRU's.
  int64_t state_rows() const { return layers + (post_gru ? 1 : 0); }
  int64_t local = kGlobal, window = 0;
  int64_t V = 0, E = 0, H = 0, Dq = 0;  // Dq: the query / key width of the score (0: none)
  int64_t P = 0;                        // local-p: the rows of W_p
};

struct DecoderParams {
  DecoderSpec spec;
  at::Tensor embedding;
  std::vector<at::Tensor> w_ih, w_hh, b_ih, b_hh;  // per state row: layers, then post_gru's
  at::Tensor query_proj, v, position_proj, position_v, readout_w, readout_b, combine_w, tie_proj,
      out_w, out_b;
};

// The encoder side, B source rows.
struct DecoderMemory {
  at::Tensor keys, values, context;  // undefined where the wiring reads none
  std::vector<int64_t> lengths;
  int64_t B = 0, S = 0;
};

using DecoderWeights = c10::Dict<std::string, at::Tensor>;
using DecoderConfig = c10::Dict<std::string, int64_t>;
using DecoderKinds = c10::Dict<std::string, std::string>;

// Reads and checks params, config and kinds: every failure names the entry and what was
// expected.
DecoderParams parse_decoder(const char* op, const DecoderWeights& params,
                            const DecoderConfig& config, const DecoderKinds& kinds);

DecoderMemory check_memory(const char* op, const DecoderParams& p,
                           const std::optional<at::Tensor>& keys,
                           const std::optional<at::Tensor>& values,
                           const std::optional<at::Tensor>& context, const at::Tensor& src_lengths);

// hidden (state rows, N, H) and, with input feeding, feed (N, H) when given: the state of N rows.
void check_state(const char* op, const DecoderParams& p, int64_t rows, const at::Tensor& hidden,
                 const std::optional<at::Tensor>& feed);

// The search rules (rules.mask_log_probs) on one row of log-probs: pad and bos never; eos only when
// force_eos; no eos when block_eos.
template <typename A>
void apply_search_rules(A* log_probs, const DecoderSpec& s, bool force_eos, bool block_eos);

// Runs decoder steps for a fixed number of rows, with every buffer allocated once: a step costs
// the products and the row loops, no allocation and no dispatch.
template <typename A>
class DecoderStepper {
 public:
  DecoderStepper(const DecoderParams& p, const DecoderMemory& m, int64_t rows, int64_t beam);

  // The state: hidden() (state rows, N, H), feed() (N, H) with input feeding (else undefined).
  at::Tensor& hidden() { return hidden_; }
  at::Tensor& feed() { return feed_; }
  // After step(): log-probs (N, V) and the attention weights (N, S) (zeros without attention).
  const at::Tensor& log_probs() const { return log_probs_; }
  const at::Tensor& weights() const { return weights_; }

  // One step from the previous tokens prev (N,) (each in [0, V)), the step's index t (0 for the
  // first token: local-m's window centre): updates the state in place.
  void step(const int64_t* prev, int64_t t);

  // The state of row n becomes the state of row parent[n] (beam search following its beams).
  void reorder(const int64_t* parent);

 private:
  void attend(const at::Tensor& query, int64_t t);    // writes ctx_ and weights_ (N rows)
  void gru_update(const at::Tensor& x, int64_t row);  // state row `row` = GRU(x, row)
  void attend_local(const at::Tensor& query, const at::Tensor& scored, int64_t t);
  void product(const at::Tensor& x, const at::Tensor& w, at::Tensor& out);  // out = x w^T
  void linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, at::Tensor& out,
              bool tanh);

  const DecoderParams& p_;
  const DecoderMemory& m_;
  int64_t N_, beam_;
  at::Tensor hidden_, feed_, spare_hidden_, spare_feed_;
  std::vector<at::Tensor> layer_h_;                          // hidden_[row] views
  std::unordered_map<const void*, PackedWeight<A>> packed_;  // by weight data pointer
  at::Tensor emb_, x0_, gi_, gh_, gates_, q_, pos_, ctx_, cat_, pre_, tied_, log_probs_, weights_;
};

}  // namespace fast_s2s::cpu
