// The native decoder ops on the CPU: one decoder step (decoder_step), the whole search in one
// call (decode_beam: beam search, greedy decoding being its beam 1), and the encoder, the search
// and the assembly of its hypotheses in one call (search, what the searches run) with the rules of
// fast_s2s/models/decoding/ (python_loop.py is the reference the tests hold it to token for
// token): per sentence the beam best extensions by total log-prob (ties: the lower candidate
// index); those ending in eos finish, ranked by score / finish_lp[t]; a sentence is done when no
// live hypothesis could still outrank its n_best-th finished one (a live score s reaches at most
// s / reach_lp[t]), when none is live, or at max_len (or its own limit, max_lens[b], where eos is
// forced when the options bound outputs by their sources). The length penalty arrives as those
// tables (rules.LengthTables: it is defined once, in Python), and the op returns the search's Trace
// (result.py assembles the hypotheses of every engine). No Python per token: the per-token work
// is the step (decoder_model.cpp), a pass over the log-probs and moving the small state.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/repeat_interleave.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <tuple>
#include <vector>

#include "cpu/assemble_trace.h"
#include "cpu/decoder_model.h"
#include "cpu/native_encoder.h"

namespace fast_s2s::cpu {
namespace {

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Outputs decoder_step_cpu(const DecoderWeights& params, const DecoderConfig& config,
                         const DecoderKinds& kinds, const std::optional<at::Tensor>& keys,
                         const std::optional<at::Tensor>& values,
                         const std::optional<at::Tensor>& context, const at::Tensor& src_lengths,
                         const at::Tensor& hidden, const std::optional<at::Tensor>& feed,
                         const at::Tensor& prev, int64_t beam, bool force_eos, bool block_eos,
                         int64_t step) {
  const char* op = "decoder_step";
  const DecoderParams p = parse_decoder(op, params, config, kinds);
  const DecoderMemory m = check_memory(op, p, keys, values, context, src_lengths);
  TORCH_CHECK(beam >= 1, op, ": beam must be >= 1, got ", beam);
  TORCH_CHECK(step >= 0, op, ": step must be >= 0 (the decoder steps taken so far), got ", step);
  const int64_t N = m.B * beam;
  TORCH_CHECK(!p.spec.input_feeding || (feed.has_value() && feed->defined()), op,
              ": feed (N, H) is required with input feeding");
  check_state(op, p, N, hidden, feed);
  TORCH_CHECK(prev.dim() == 1 && prev.size(0) == N && prev.scalar_type() == at::kLong &&
                  prev.device().is_cpu(),
              op, ": prev must be a (N,) = (", N, ",) int64 CPU tensor (N = B * beam), got ",
              prev.sizes(), " ", prev.scalar_type());
  const at::Tensor tokens = prev.contiguous();
  const int64_t* tp = tokens.const_data_ptr<int64_t>();
  for (int64_t n = 0; n < N; ++n) {
    TORCH_CHECK(tp[n] >= 0 && tp[n] < p.spec.V, op,
                ": prev must hold token ids in [0, V = ", p.spec.V, "), got ", tp[n], " at row ",
                n);
  }
  Outputs out;
  AT_DISPATCH_FLOATING_TYPES(p.embedding.scalar_type(), "decoder_step_cpu", [&] {
    using A = scalar_t;
    DecoderStepper<A> st(p, m, N, beam);
    st.hidden().copy_(hidden);
    if (p.spec.input_feeding) st.feed().copy_(*feed);
    st.step(tp, step);
    at::Tensor lp = st.log_probs().clone();
    A* rows = lp.mutable_data_ptr<A>();
    for (int64_t n = 0; n < N; ++n)
      apply_search_rules<A>(rows + n * p.spec.V, p.spec, force_eos, block_eos);
    at::Tensor f = p.spec.input_feeding ? st.feed().clone() : at::empty({0}, lp.options());
    out = {lp, st.hidden().clone(), f, st.weights().clone()};
  });
  return out;
}

// The search's limits and length-penalty tables.
struct SearchLimits {
  int64_t beam, max_len, min_len, n_best;
  const double *finish_lp, *reach_lp;  // (max_len + 1,) each
  // (B,) each sentence's own limit in [min_len, max_len] (eos forced there), or null: max_len
  const int64_t* max_lens;
};

// The top `count` of the K * V candidates base[k] + row_k[v] of one sentence into (top_s,
// top_i), best first, the lower index first among equal scores (insertion after every score >=
// the new one).
template <typename A>
void top_candidates(const A* rows, const A* base, int64_t K, int64_t V, A* top_s, int64_t* top_i) {
  int64_t count = 0;
  for (int64_t k = 0; k < K; ++k) {
    const A* row = rows + k * V;
    for (int64_t v = 0; v < V; ++v) {
      const A c = base[k] + row[v];
      if (count == K && !(c > top_s[K - 1])) continue;
      int64_t pos = count < K ? count : K - 1;
      while (pos > 0 && c > top_s[pos - 1]) {
        top_s[pos] = top_s[pos - 1];
        top_i[pos] = top_i[pos - 1];
        --pos;
      }
      top_s[pos] = c;
      top_i[pos] = k * V + v;
      if (count < K) ++count;
    }
  }
}

template <typename A>
Outputs beam_loop(const DecoderParams& p, const DecoderMemory& m, const at::Tensor& hidden,
                  const SearchLimits& lim) {
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  const DecoderSpec& s = p.spec;
  const int64_t B = m.B, V = s.V, S = m.S, K = lim.beam, N = B * K, T = lim.max_len + 1;
  DecoderStepper<A> st(p, m, N, K);
  // each sentence's state repeated over its beam rows (Seq2Seq.initial_state's)
  st.hidden().copy_(K == 1 ? hidden : hidden.repeat_interleave(K, 1));
  std::vector<A> beam_scores(N, kNegInf), next_scores(N), top_s(K);
  for (int64_t b = 0; b < B; ++b) beam_scores[b * K] = 0;  // all beams equal at first: expand one
  std::vector<int64_t> prev(N, s.bos), next_tok(N), parent_row(N), top_i(K);
  // The trace, step-major, for up to T steps (every entry of a step that runs is written):
  // (T, B, K) tokens, parents and finish scores; (T, N, S) attention.
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor tok_t = at::empty({T, B, K}, i64), par_t = at::empty({T, B, K}, i64);
  at::Tensor fin_t = at::empty({T, B, K}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor att_t = at::empty({T, N, S}, at::TensorOptions().dtype(at::kFloat));
  int64_t* tokens = tok_t.mutable_data_ptr<int64_t>();
  int64_t* parents = par_t.mutable_data_ptr<int64_t>();
  double* finish = fin_t.mutable_data_ptr<double>();
  float* attention = att_t.mutable_data_ptr<float>();
  constexpr double kNotFinished = -std::numeric_limits<double>::infinity();
  // per sentence the ranking scores of its n_best best finished hypotheses, best first
  std::vector<std::vector<double>> best_finished(
      B, std::vector<double>(lim.n_best, -std::numeric_limits<double>::infinity()));
  std::vector<char> done(B, 0);
  int64_t n_done = 0, steps = 0;

  for (int64_t t = 0; t < T; ++t) {
    st.step(prev.data(), t);
    steps = t + 1;
    A* lp = st.log_probs().template mutable_data_ptr<A>();
    const A* w = st.weights().template const_data_ptr<A>();
    for (int64_t i = 0; i < N * S; ++i) attention[t * N * S + i] = static_cast<float>(w[i]);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r0 = b * K, at = t * N + r0;  // this sentence's rows / trace entries
      if (done[b]) {  // a done sentence's rows are dead; keep them on a valid token
        for (int64_t j = 0; j < K; ++j) {
          next_scores[r0 + j] = kNegInf;
          parent_row[r0 + j] = r0 + j;
          next_tok[r0 + j] = tokens[at + j] = s.eos;
          parents[at + j] = j;
          finish[at + j] = kNotFinished;
        }
        continue;
      }
      const bool force = t == (lim.max_lens ? lim.max_lens[b] : lim.max_len);
      for (int64_t k = 0; k < K; ++k)
        apply_search_rules<A>(lp + (r0 + k) * V, s, force, t < lim.min_len);
      top_candidates<A>(lp + r0 * V, beam_scores.data() + r0, K, V, top_s.data(), top_i.data());
      A best_live = kNegInf;
      std::vector<double>& best = best_finished[b];
      for (int64_t j = 0; j < K; ++j) {
        const int64_t kb = top_i[j] / V, tok = top_i[j] % V;
        const bool alive = std::isfinite(top_s[j]);
        tokens[at + j] = tok;
        parents[at + j] = kb;
        finish[at + j] = kNotFinished;
        if (alive && tok == s.eos) {
          finish[at + j] = static_cast<double>(top_s[j]);
          const double rank = finish[at + j] / lim.finish_lp[t];
          // into the sorted top n_best (after every equal one: the earlier finished first)
          auto pos = std::upper_bound(best.begin(), best.end(), rank, std::greater<double>());
          if (pos != best.end()) {
            best.insert(pos, rank);
            best.pop_back();
          }
        }
        const bool live = alive && tok != s.eos;
        next_scores[r0 + j] = live ? top_s[j] : kNegInf;
        parent_row[r0 + j] = r0 + kb;
        next_tok[r0 + j] = tok;
        if (live && top_s[j] > best_live) best_live = top_s[j];
      }
      const bool can_win = static_cast<double>(best_live) / lim.reach_lp[t] > best.back();
      if (t < lim.max_len && !(std::isfinite(best_live) && can_win)) {
        done[b] = 1;
        ++n_done;
      }
    }
    if (t == lim.max_len || n_done == B) break;
    beam_scores.swap(next_scores);
    st.reorder(parent_row.data());
    prev = next_tok;
  }

  return {tok_t.narrow(0, 0, steps), par_t.narrow(0, 0, steps), fin_t.narrow(0, 0, steps),
          att_t.narrow(0, 0, steps)};
}

at::Tensor check_table(const char* op, const char* name, const at::Tensor& table, int64_t T) {
  TORCH_CHECK(table.dim() == 1 && table.size(0) == T && table.scalar_type() == at::kDouble &&
                  table.device().is_cpu(),
              op, ": ", name, " must be a (max_len + 1,) = (", T,
              ",) float64 CPU tensor (rules.LengthTables), got ", table.sizes(), " ",
              table.scalar_type());
  const at::Tensor c = table.contiguous();
  const double* v = c.const_data_ptr<double>();
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(std::isfinite(v[t]) && v[t] > 0, op, ": ", name,
                " must hold finite positive length penalties, got ", v[t], " at step ", t);
  }
  return c;
}

// The per-sentence limits (SearchOptions.sentence_max_lens), checked; undefined when absent.
at::Tensor check_max_lens(const char* op, const std::optional<at::Tensor>& max_lens, int64_t B,
                          int64_t min_len, int64_t max_len) {
  if (!max_lens.has_value() || !max_lens->defined()) return {};
  const at::Tensor& t = *max_lens;
  TORCH_CHECK(t.dim() == 1 && t.size(0) == B && t.scalar_type() == at::kLong && t.device().is_cpu(),
              op, ": max_lens must be a (B,) = (", B, ",) int64 CPU tensor, got ", t.sizes(), " ",
              t.scalar_type(), " on ", t.device());
  const at::Tensor c = t.contiguous();
  const int64_t* v = c.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(v[b] >= min_len && v[b] <= max_len, op,
                ": max_lens must lie in [min_len = ", min_len, ", max_len = ", max_len, "], got ",
                v[b], " at sentence ", b);
  }
  return c;
}

// The search of `p` over the memory `m` from the decoder state `hidden` (B, H per layer), its
// options checked first: decode_beam's work, and search's after the encoder.
Outputs checked_beam_loop(const char* op, const DecoderParams& p, const DecoderMemory& m,
                          const at::Tensor& hidden, int64_t beam, int64_t max_len, int64_t min_len,
                          int64_t n_best, const at::Tensor& finish_lp, const at::Tensor& reach_lp,
                          const std::optional<at::Tensor>& max_lens) {
  // the trace holds (max_len + 1) x B x beam entries: refuse sizes it cannot index
  constexpr int64_t kMaxEntries = int64_t{1} << 40;
  TORCH_CHECK(max_len >= 0 && max_len < kMaxEntries, op, ": max_len must lie in [0, 2^40), got ",
              max_len);
  TORCH_CHECK(min_len >= 0 && min_len <= max_len, op,
              ": min_len must lie in [0, max_len = ", max_len, "], got ", min_len);
  TORCH_CHECK(beam >= 1, op, ": beam must be >= 1, got ", beam);
  TORCH_CHECK(beam <= kMaxEntries / std::max<int64_t>(m.B, 1) / (max_len + 1), op,
              ": beam * batch * (max_len + 1) must be at most 2^40, got beam ", beam, ", batch ",
              m.B, ", max_len ", max_len);
  TORCH_CHECK(n_best >= 1 && n_best <= beam, op, ": n_best must lie in [1, beam = ", beam,
              "], got ", n_best);
  const at::Tensor finish = check_table(op, "finish_lp", finish_lp, max_len + 1);
  const at::Tensor reach = check_table(op, "reach_lp", reach_lp, max_len + 1);
  check_state(op, p, m.B, hidden, std::nullopt);
  const at::Tensor limits = check_max_lens(op, max_lens, m.B, min_len, max_len);
  const SearchLimits lim{beam,
                         max_len,
                         min_len,
                         n_best,
                         finish.const_data_ptr<double>(),
                         reach.const_data_ptr<double>(),
                         limits.defined() ? limits.const_data_ptr<int64_t>() : nullptr};
  Outputs out;
  AT_DISPATCH_FLOATING_TYPES(p.embedding.scalar_type(), "beam_loop",
                             [&] { out = beam_loop<scalar_t>(p, m, hidden, lim); });
  return out;
}

Outputs decode_beam_cpu(const DecoderWeights& params, const DecoderConfig& config,
                        const DecoderKinds& kinds, const std::optional<at::Tensor>& keys,
                        const std::optional<at::Tensor>& values,
                        const std::optional<at::Tensor>& context, const at::Tensor& src_lengths,
                        const at::Tensor& hidden, int64_t beam, int64_t max_len, int64_t min_len,
                        int64_t n_best, const at::Tensor& finish_lp, const at::Tensor& reach_lp,
                        const std::optional<at::Tensor>& max_lens) {
  const char* op = "decode_beam";
  const DecoderParams p = parse_decoder(op, params, config, kinds);
  const DecoderMemory m = check_memory(op, p, keys, values, context, src_lengths);
  return checked_beam_loop(op, p, m, hidden, beam, max_len, min_len, n_best, finish_lp, reach_lp,
                           max_lens);
}

// The encoder (native_encoder.cpp), decode_beam and assemble_trace in one call: at batch 1 the
// Python between three op calls (the encoder state's objects, the trace's host copies, three
// argument conversions) ran cold after the search and cost more than a tenth of it.
Hypotheses search_cpu(const c10::List<std::optional<at::Tensor>>& encoder_params,
                      at::IntArrayRef encoder_config, const at::Tensor& src,
                      const at::Tensor& src_lengths, const DecoderWeights& params,
                      const DecoderConfig& config, const DecoderKinds& kinds, int64_t beam,
                      int64_t max_len, int64_t min_len, int64_t n_best, const at::Tensor& finish_lp,
                      const at::Tensor& reach_lp, const std::optional<at::Tensor>& max_lens) {
  const char* op = "search";
  const DecoderParams p = parse_decoder(op, params, config, kinds);
  const EncodedSource e = encode_source(encoder_params, encoder_config, src, src_lengths);
  // the memory native_params.memory hands decode_beam: the classic decoder reads the fixed
  // context (its values only give S), the others the keys and the states
  const bool classic = p.spec.wiring == kClassic;
  const DecoderMemory m =
      check_memory(op, p, classic ? std::nullopt : std::optional<at::Tensor>(e.keys), e.states,
                   classic ? std::optional<at::Tensor>(e.final) : std::nullopt, src_lengths);
  const auto [tokens, parents, finish, attention] = checked_beam_loop(
      op, p, m, e.hidden, beam, max_len, min_len, n_best, finish_lp, reach_lp, max_lens);
  return assemble_trace(tokens, parents, finish, attention, finish_lp, n_best);
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("decoder_step", &decoder_step_cpu);
  m.impl("decode_beam", &decode_beam_cpu);
  m.impl("search", &search_cpu);
}

}  // namespace fast_s2s::cpu
