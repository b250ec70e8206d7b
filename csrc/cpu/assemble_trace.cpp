// assemble_trace: a search's Trace -> its ranked hypotheses, for every engine (the engines
// record the trace; fast_s2s/models/decoding/result.py calls this on the host copy). Reference:
// result.assemble_reference, which the tests hold this to; the rule is written there.
//
// Per sentence b, its candidates that finished (finish_scores[t, b, j] finite), in the order
// they finished (by step t, then candidate j), ranked by score / finish_lp[t], stably (of equal
// rankings the earlier finished first); the first n_best are returned. A hypothesis finishing
// at step t has t tokens before eos, found by following parents back from step t; its
// attention rows are those of the beam row that computed each of its t + 1 steps.
// In C++ because at batch 1 the whole search is a few hundred microseconds and a Python
// assembly (a dozen numpy / torch calls, cold after the search) was a tenth of it.
#include "cpu/assemble_trace.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

namespace fast_s2s::cpu {
namespace {

void check_trace(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == dtype && t.dim() == dim,
              "assemble_trace: ", name, " must be a ", dim, "-D ", dtype, " CPU tensor, got ",
              t.sizes(), " ", t.scalar_type(), " on ", t.device());
}

}  // namespace

// Returns, for the C hypotheses kept (sentence-major, best first): sentence (C,), length (C,)
// (tokens before eos), score (C,) float64, tokens (C, L) int64 padded with -1, attention
// (C, L + 1, S) float32 padded with 0 (L: the longest).
Hypotheses assemble_trace(const at::Tensor& tokens_in, const at::Tensor& parents_in,
                          const at::Tensor& finish_in, const at::Tensor& attention_in,
                          const at::Tensor& finish_lp_in, int64_t n_best) {
  check_trace(tokens_in, "tokens", at::kLong, 3);
  check_trace(parents_in, "parents", at::kLong, 3);
  check_trace(finish_in, "finish_scores", at::kDouble, 3);
  check_trace(attention_in, "attention", at::kFloat, 3);
  check_trace(finish_lp_in, "finish_lp", at::kDouble, 1);
  const int64_t T = tokens_in.size(0), B = tokens_in.size(1), K = tokens_in.size(2);
  const int64_t S = attention_in.size(2);
  TORCH_CHECK(parents_in.sizes() == tokens_in.sizes() && finish_in.sizes() == tokens_in.sizes(),
              "assemble_trace: parents and finish_scores must have the shape of tokens ",
              tokens_in.sizes());
  TORCH_CHECK(attention_in.size(0) == T && attention_in.size(1) == B * K,
              "assemble_trace: attention must be (T, B * K, S) = (", T, ", ", B * K, ", S), got ",
              attention_in.sizes());
  TORCH_CHECK(finish_lp_in.size(0) >= T, "assemble_trace: finish_lp must have at least T = ", T,
              " entries, got ", finish_lp_in.size(0));
  TORCH_CHECK(n_best >= 1 && n_best <= K, "assemble_trace: n_best must lie in [1, K = ", K,
              "], got ", n_best);
  const at::Tensor tok_c = tokens_in.contiguous(), par_c = parents_in.contiguous();
  const at::Tensor fin_c = finish_in.contiguous(), att_c = attention_in.contiguous();
  const at::Tensor lp_c = finish_lp_in.contiguous();
  const int64_t* tok = tok_c.const_data_ptr<int64_t>();
  const int64_t* par = par_c.const_data_ptr<int64_t>();
  const double* fin = fin_c.const_data_ptr<double>();
  const double* lp = lp_c.const_data_ptr<double>();

  struct Finished {
    double rank, score;
    int64_t t, j;
  };
  std::vector<std::vector<Finished>> kept(B);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < K; ++j) {
        const double score = fin[(t * B + b) * K + j];
        if (std::isfinite(score)) kept[b].push_back({score / lp[t], score, t, j});
      }
    }
  }
  int64_t C = 0, longest = 0;
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK_VALUE(!kept[b].empty(), "no hypothesis of sentence ", b,
                      " has a finite log-probability (the model gives NaN or -inf log-probs: "
                      "check its weights)");
    std::stable_sort(kept[b].begin(), kept[b].end(),
                     [](const Finished& x, const Finished& y) { return x.rank > y.rank; });
    if (static_cast<int64_t>(kept[b].size()) > n_best) kept[b].resize(n_best);
    C += static_cast<int64_t>(kept[b].size());
    for (const Finished& f : kept[b]) longest = std::max(longest, f.t);
  }

  const auto i64 = at::TensorOptions().dtype(at::kLong);
  at::Tensor sentence = at::empty({C}, i64), length = at::empty({C}, i64);
  at::Tensor score = at::empty({C}, at::TensorOptions().dtype(at::kDouble));
  at::Tensor out_tok = at::full({C, longest}, -1, i64);
  at::Tensor out_att = at::zeros({C, longest + 1, S}, at::TensorOptions().dtype(at::kFloat));
  const float* att = att_c.const_data_ptr<float>();
  int64_t* sentence_p = sentence.mutable_data_ptr<int64_t>();
  int64_t* length_p = length.mutable_data_ptr<int64_t>();
  double* score_p = score.mutable_data_ptr<double>();
  int64_t c = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (const Finished& f : kept[b]) {
      sentence_p[c] = b;
      length_p[c] = f.t;
      score_p[c] = f.score;
      int64_t* row_tok = out_tok.mutable_data_ptr<int64_t>() + c * longest;
      float* row_att = out_att.mutable_data_ptr<float>() + c * (longest + 1) * S;
      // Step t's attention is the row that computed it, the parent of the candidate; earlier
      // steps follow the parents back.
      int64_t row = par[(f.t * B + b) * K + f.j];
      std::memcpy(row_att + f.t * S, att + (f.t * B * K + b * K + row) * S, S * sizeof(float));
      for (int64_t s = f.t - 1; s >= 0; --s) {
        const int64_t i = (s * B + b) * K + row;
        row_tok[s] = tok[i];
        row = par[i];
        std::memcpy(row_att + s * S, att + (s * B * K + b * K + row) * S, S * sizeof(float));
      }
      ++c;
    }
  }
  return {sentence, length, score, out_tok, out_att};
}

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) { m.impl("assemble_trace", &assemble_trace); }

}  // namespace fast_s2s::cpu
