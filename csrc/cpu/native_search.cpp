// The native decoder ops on the CPU: one decoder step (decoder_step), and the whole greedy
// (decode_greedy) and beam (decode_beam) search as one call each, with the semantics of
// fast_s2s/models/search.py, the reference the tests hold them to token for token:
//   - pad and bos are never generated; eos not before min_len tokens, forced at step max_len;
//   - greedy: the most probable token per row, rows stop at eos, score = sum of its log-probs;
//   - beam: per sentence the beam best extensions by total log-prob; those ending in eos are
//     finished, ranked by score / lp(len + 1) (power L^alpha or GNMT ((5 + L) / 6)^alpha); a
//     sentence stops when no live hypothesis could still outrank its n_best-th finished one
//     (a live score s reaches at most s / max(lp(L_min), lp(max_len + 1))), when none is live,
//     or at max_len. Ties in the top-k go to the lower candidate index.
// The loop runs here, without Python per token: the only per-token work is the step
// (decoder_model.cpp) and a pass over the log-probs. Beam search keeps back-pointers and the
// per-step attention rows, so following the beams moves only the small decoder state, and a
// finished hypothesis's tokens and attention are read back once, when it finishes.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "cpu/decoder_model.h"

namespace fast_s2s::cpu {
namespace {

using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Copies the (layers, B, H) encoder-side hidden into the stepper's (layers, B * beam, H) rows,
// each sentence's repeated over its beam (Seq2Seq.initial_state's repeat_interleave).
template <typename A>
void load_hidden(DecoderStepper<A>& st, const at::Tensor& hidden, int64_t beam) {
  const at::Tensor h = hidden.contiguous();
  const int64_t L = h.size(0), B = h.size(1), H = h.size(2);
  const A* src = h.const_data_ptr<A>();
  A* dst = st.hidden().template mutable_data_ptr<A>();
  for (int64_t l = 0; l < L; ++l)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < beam; ++k)
        std::memcpy(dst + ((l * B + b) * beam + k) * H, src + (l * B + b) * H, H * sizeof(A));
}

void check_limits(const char* op, int64_t max_len, int64_t min_len) {
  TORCH_CHECK(max_len >= 0, op, ": max_len must be >= 0, got ", max_len);
  TORCH_CHECK(min_len >= 0 && min_len <= max_len, op,
              ": min_len must lie in [0, max_len = ", max_len, "], got ", min_len);
}

Outputs decoder_step_cpu(at::TensorList params, at::IntArrayRef config,
                         const std::optional<at::Tensor>& keys,
                         const std::optional<at::Tensor>& values,
                         const std::optional<at::Tensor>& context, const at::Tensor& src_lengths,
                         const at::Tensor& hidden, const std::optional<at::Tensor>& feed,
                         const at::Tensor& prev, int64_t beam, bool force_eos, bool block_eos,
                         int64_t step) {
  const char* op = "decoder_step";
  const DecoderParams p = parse_decoder(op, params, config);
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

template <typename A>
Outputs greedy_loop(const DecoderParams& p, const DecoderMemory& m, const at::Tensor& hidden,
                    int64_t max_len, int64_t min_len) {
  const DecoderSpec& s = p.spec;
  const int64_t B = m.B, V = s.V, S = m.S, T = max_len + 1;
  DecoderStepper<A> st(p, m, B, 1);
  load_hidden<A>(st, hidden, 1);
  std::vector<int64_t> prev(B, s.bos), length(B, -1), tokens(T * B, s.pad);
  std::vector<A> score(B, A(0));
  std::vector<float> attention(B * T * S, 0.0f);
  int64_t finished = 0, steps = 0;
  for (int64_t t = 0; t < T && finished < B; ++t) {
    st.step(prev.data(), t);
    A* lp = st.log_probs().template mutable_data_ptr<A>();
    const A* w = st.weights().template const_data_ptr<A>();
    for (int64_t n = 0; n < B; ++n) {
      A* row = lp + n * V;
      apply_search_rules<A>(row, s, t == max_len, t < min_len);
      const int64_t best = std::max_element(row, row + V) - row;  // the first of equal maxima
      tokens[t * B + n] = best;
      prev[n] = best;
      if (length[n] >= 0) continue;  // finished rows keep their score (the reference's where)
      score[n] += row[best];
      for (int64_t j = 0; j < S; ++j)
        attention[(n * T + t) * S + j] = static_cast<float>(w[n * S + j]);
      if (best == s.eos) {
        length[n] = t;
        ++finished;
      }
    }
    steps = t + 1;
  }
  const auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor tok = at::empty({B, steps}, i64), len = at::empty({B}, i64);
  at::Tensor sc = at::empty({B}, p.embedding.options());
  at::Tensor att = at::empty({B, steps, S}, at::TensorOptions().dtype(at::kFloat));
  int64_t* tk = tok.mutable_data_ptr<int64_t>();
  float* ap = att.mutable_data_ptr<float>();
  for (int64_t n = 0; n < B; ++n) {
    for (int64_t t = 0; t < steps; ++t) tk[n * steps + t] = tokens[t * B + n];
    std::memcpy(ap + n * steps * S, attention.data() + n * T * S, steps * S * sizeof(float));
  }
  std::memcpy(len.mutable_data_ptr<int64_t>(), length.data(), B * sizeof(int64_t));
  std::memcpy(sc.mutable_data_ptr<A>(), score.data(), B * sizeof(A));
  return {tok, len, sc, att};
}

Outputs decode_greedy_cpu(at::TensorList params, at::IntArrayRef config,
                          const std::optional<at::Tensor>& keys,
                          const std::optional<at::Tensor>& values,
                          const std::optional<at::Tensor>& context, const at::Tensor& src_lengths,
                          const at::Tensor& hidden, int64_t max_len, int64_t min_len) {
  const char* op = "decode_greedy";
  const DecoderParams p = parse_decoder(op, params, config);
  const DecoderMemory m = check_memory(op, p, keys, values, context, src_lengths);
  check_limits(op, max_len, min_len);
  check_state(op, p, m.B, hidden, std::nullopt);
  Outputs out;
  AT_DISPATCH_FLOATING_TYPES(p.embedding.scalar_type(), "decode_greedy_cpu",
                             [&] { out = greedy_loop<scalar_t>(p, m, hidden, max_len, min_len); });
  return out;
}

// lp(length) of search.length_penalty_factor, in double as the reference computes it.
double length_penalty(int64_t length, double alpha, bool gnmt) {
  const double L = static_cast<double>(std::max<int64_t>(length, 1));
  return gnmt ? std::pow((5.0 + L) / 6.0, alpha) : std::pow(L, alpha);
}

struct Finished {
  double normalized, score;
  std::vector<int64_t> tokens;
  std::vector<float> attention;  // (len + 1, S)
};

template <typename A>
Outputs beam_loop(const DecoderParams& p, const DecoderMemory& m, const at::Tensor& hidden,
                  int64_t K, int64_t max_len, int64_t min_len, double alpha, bool gnmt,
                  int64_t keep) {
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  const DecoderSpec& s = p.spec;
  const int64_t B = m.B, V = s.V, S = m.S, N = B * K, T = max_len + 1;
  DecoderStepper<A> st(p, m, N, K);
  load_hidden<A>(st, hidden, K);
  std::vector<A> beam_scores(N, kNegInf), top_s(K), next_scores(N);
  for (int64_t b = 0; b < B; ++b) beam_scores[b * K] = 0;  // all beams equal at first: expand one
  std::vector<int64_t> prev(N, s.bos), top_i(K), parent(N), next_tok(N);
  // Back-pointers: row n at step t continues row parent_hist[t][n] of step t - 1 with token
  // tok_hist[t][n]; w_hist[t][n] is the attention row n computed at step t.
  std::vector<int64_t> tok_hist(T * N, 0), parent_hist(T * N, 0);
  std::vector<float> w_hist(T * N * S, 0.0f);
  std::vector<std::vector<Finished>> finished(B);
  std::vector<double> kth_best(B, -std::numeric_limits<double>::infinity());
  std::vector<char> done(B, 0);
  int64_t n_done = 0;

  for (int64_t t = 0; t < T; ++t) {
    st.step(prev.data(), t);
    A* lp = st.log_probs().template mutable_data_ptr<A>();
    const A* w = st.weights().template const_data_ptr<A>();
    for (int64_t i = 0; i < N * S; ++i) w_hist[t * N * S + i] = static_cast<float>(w[i]);
    // The best a live hypothesis of t + 1 tokens can still reach divides its score by this.
    const double largest_lp = std::max(length_penalty(std::max(t + 2, min_len + 1), alpha, gnmt),
                                       length_penalty(max_len + 1, alpha, gnmt));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t r0 = b * K;
      if (done[b]) {  // a finished sentence's rows are dead; keep them on a valid token
        for (int64_t j = 0; j < K; ++j) {
          next_scores[r0 + j] = kNegInf;
          parent[r0 + j] = r0 + j;
          next_tok[r0 + j] = s.eos;
        }
        continue;
      }
      // top K of the K * V candidates beam_scores[k] + log_probs[k, v], best first, the lower
      // index first among equal scores (insertion after every score >= the new one)
      int64_t count = 0;
      for (int64_t k = 0; k < K; ++k) {
        A* row = lp + (r0 + k) * V;
        apply_search_rules<A>(row, s, t == max_len, t < min_len);
        const A base = beam_scores[r0 + k];
        for (int64_t v = 0; v < V; ++v) {
          const A c = base + row[v];
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
      A best_live = kNegInf;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t kb = top_i[j] / V, tok = top_i[j] % V, row = r0 + kb;
        const bool alive = std::isfinite(top_s[j]);
        if (alive && tok == s.eos) {
          Finished f;
          f.score = static_cast<double>(top_s[j]);
          f.tokens.resize(t);
          f.attention.resize((t + 1) * S);
          for (int64_t u = t, r = row; u >= 0; --u) {
            std::memcpy(f.attention.data() + u * S, w_hist.data() + (u * N + r) * S,
                        S * sizeof(float));
            if (u > 0) {
              f.tokens[u - 1] = tok_hist[u * N + r];
              r = parent_hist[u * N + r];
            }
          }
          f.normalized = f.score / length_penalty(t + 1, alpha, gnmt);
          finished[b].push_back(std::move(f));
          if (static_cast<int64_t>(finished[b].size()) >= keep) {
            std::vector<double> ranked;
            for (const Finished& g : finished[b]) ranked.push_back(g.normalized);
            std::sort(ranked.begin(), ranked.end(), std::greater<double>());
            kth_best[b] = ranked[keep - 1];
          }
        }
        const bool live = alive && tok != s.eos;
        next_scores[r0 + j] = live ? top_s[j] : kNegInf;
        parent[r0 + j] = row;
        next_tok[r0 + j] = tok;
        if (live && top_s[j] > best_live) best_live = top_s[j];
      }
      const bool can_win = static_cast<double>(best_live) / largest_lp > kth_best[b];
      if (t < max_len && !(std::isfinite(best_live) && can_win)) {
        done[b] = 1;
        ++n_done;
      }
    }
    if (t == max_len || n_done == B) break;
    for (int64_t n = 0; n < N; ++n) {
      tok_hist[(t + 1) * N + n] = next_tok[n];
      parent_hist[(t + 1) * N + n] = parent[n];
    }
    beam_scores.swap(next_scores);
    st.reorder(parent.data());
    prev = next_tok;
  }

  const auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor tok = at::full({B, keep, std::max<int64_t>(max_len, 1)}, -1, i64);
  at::Tensor len = at::full({B, keep}, -1, i64);
  at::Tensor sc = at::zeros({B, keep}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor att = at::zeros({B, keep, T, S}, at::TensorOptions().dtype(at::kFloat));
  int64_t* tk = tok.mutable_data_ptr<int64_t>();
  int64_t* ln = len.mutable_data_ptr<int64_t>();
  double* sp = sc.mutable_data_ptr<double>();
  float* ap = att.mutable_data_ptr<float>();
  const int64_t Lmax = tok.size(2);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<Finished>& f = finished[b];
    // stable: of equal ranking scores, the earlier finished first (the reference's sorted)
    std::stable_sort(f.begin(), f.end(), [](const Finished& x, const Finished& y) {
      return x.normalized > y.normalized;
    });
    for (int64_t r = 0; r < std::min<int64_t>(keep, f.size()); ++r) {
      const int64_t n = f[r].tokens.size();
      const int64_t slot = b * keep + r;
      ln[slot] = n;
      sp[slot] = f[r].score;
      std::copy(f[r].tokens.begin(), f[r].tokens.end(), tk + slot * Lmax);
      std::copy(f[r].attention.begin(), f[r].attention.end(), ap + slot * T * S);
    }
  }
  return {tok, len, sc, att};
}

Outputs decode_beam_cpu(at::TensorList params, at::IntArrayRef config,
                        const std::optional<at::Tensor>& keys,
                        const std::optional<at::Tensor>& values,
                        const std::optional<at::Tensor>& context, const at::Tensor& src_lengths,
                        const at::Tensor& hidden, int64_t beam, int64_t max_len, int64_t min_len,
                        double length_penalty_alpha, c10::string_view penalty, int64_t n_best) {
  const char* op = "decode_beam";
  const DecoderParams p = parse_decoder(op, params, config);
  const DecoderMemory m = check_memory(op, p, keys, values, context, src_lengths);
  check_limits(op, max_len, min_len);
  TORCH_CHECK(beam >= 1, op, ": beam must be >= 1, got ", beam);
  TORCH_CHECK(n_best >= 1 && n_best <= beam, op, ": n_best must lie in [1, beam = ", beam,
              "], got ", n_best);
  TORCH_CHECK(std::isfinite(length_penalty_alpha), op, ": length_penalty must be finite, got ",
              length_penalty_alpha);
  TORCH_CHECK(penalty == "power" || penalty == "gnmt", op,
              ": penalty must be 'power' or 'gnmt', got '", std::string(penalty), "'");
  check_state(op, p, m.B, hidden, std::nullopt);
  Outputs out;
  AT_DISPATCH_FLOATING_TYPES(p.embedding.scalar_type(), "decode_beam_cpu", [&] {
    out = beam_loop<scalar_t>(p, m, hidden, beam, max_len, min_len, length_penalty_alpha,
                              penalty == "gnmt", n_best);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("decoder_step", &decoder_step_cpu);
  m.impl("decode_greedy", &decode_greedy_cpu);
  m.impl("decode_beam", &decode_beam_cpu);
}

}  // namespace fast_s2s::cpu
