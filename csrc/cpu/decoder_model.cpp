// The native decoder step (decoder_model.h; its arguments are read in decoder_params.cpp), as
// the Python decoders compute it (fast_s2s/models/bahdanau.py, luong.py, classic.py, decoder.py):
//   Bahdanau: c, a = attend(s_top);  s = GRU([e; c], s);  t = tanh(W_r [s_top; c; e] + b_r)
//   classic:  c = context[b];        s = GRU([e; c], s);  t = tanh(W_r [s_top; c; e] + b_r)
//   Luong:    s = GRU(e or [e; feed], s);  c, a = attend(s_top);  t = tanh(W_c [c; s_top])
//             post_gru: u = GRU_post(t, u), projected in t's place (u: the last state row)
//   logits = W_o (tie_proj t or t) + b_o;  log_probs = log_softmax(logits)
// Matrix products go through matmul_nt_out (the GEMM layer the fused GRU ops use; plain
// matrix-vector loops at a few rows, see kMinParallelRows), the GRU gates
// through gru_gates_forward, the attention rows through attend_row (the attention ops' own loops).
#include "cpu/decoder_model.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "cpu/attention_rows.h"
#include "cpu/gru_common.h"
#include "cpu/gru_gates.h"
#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {
namespace {

// Below this many rows a step runs on the calling thread only, its products as matrix-vector
// loops (dot_rows): a batch-1 step (~0.2 MFLOP, ~10 us) costs less than the fork/join of the ~8
// parallel regions matmul_nt_out would open, and on a loaded machine a parallel region waits
// for a descheduled thread (a 31-step batch-1 loop with both cores busy: 0.6 ms vs 740 ms).
constexpr int64_t kMinParallelRows = 8;

// out (M, N) = x (M, K) w^T (N, K), every row of x against every row of w with dot_rows (four
// weight rows per pass): the single-thread product for a few rows (see kMinParallelRows).
template <typename A>
void matvec_rows(const at::Tensor& x, const at::Tensor& w, at::Tensor& out) {
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const A* xp = x.const_data_ptr<A>();
  const A* wp = w.const_data_ptr<A>();
  A* op = out.mutable_data_ptr<A>();
  for (int64_t m = 0; m < M; ++m) {
    dot_rows<A>(xp + m * x.stride(0), wp, w.stride(0), N, K, op + m * out.stride(0));
  }
}

// From kMinPackedRows to kMaxPackedRows rows the products run on weights packed once per search
// (panel_gemm.h): one pass over the weights per step for all rows (a single row gains nothing
// from packing). Against matmul_nt_out on the bench model, one thread: a 31-step greedy loop at
// batch 8 1.9 vs 2.5 ms, at batch 32 10.9 vs 13.4 ms. Up to 1,024 rows (a batch of 64 sources at
// beam 16): 64 random sources of 20 positions at beam 5 (320 rows) and 8 (512 rows), Luong
// general, V = 2,000, H = 256 and 512, AMD EPYC Zen 4: 10-13% faster than matmul_nt_out on one
// thread, 1.25-1.50x on two at AVX-512 (matmul_nt_out prepares the weight again at every step);
// 6-9% faster on one and two threads as an AVX2 machine.
constexpr int64_t kMinPackedRows = 2;
constexpr int64_t kMaxPackedRows = 1024;

// Rows per parallel task of a row loop doing `work` multiply-adds per row: enough (~16K) to pay
// for a thread hand-off, so batch-1 steps stay on one thread.
int64_t grain_for(int64_t work) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work)); }

// at::parallel_for over the N rows, on this thread alone below kMinParallelRows.
template <typename F>
void for_rows(int64_t N, int64_t work, const F& f) {
  at::parallel_for(0, N, N < kMinParallelRows ? N : grain_for(work), f);
}

}  // namespace

template <typename A>
void apply_search_rules(A* lp, const DecoderSpec& s, bool force_eos, bool block_eos) {
  constexpr A kNegInf = -std::numeric_limits<A>::infinity();
  if (force_eos) {
    const A eos = lp[s.eos];
    std::fill(lp, lp + s.V, kNegInf);
    lp[s.eos] = eos;
    return;
  }
  lp[s.pad] = kNegInf;
  lp[s.bos] = kNegInf;
  if (block_eos) lp[s.eos] = kNegInf;
}

namespace {

// In place: x = x - max - log(sum(exp(x - max))), the order of torch.log_softmax.
template <typename A>
void log_softmax_row(A* x, int64_t n) {
  constexpr int64_t W = Vec<A>::size();
  A m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  Vec<A> acc(A(0));
  const Vec<A> mv(m);
  int64_t i = 0;
  for (; i + W <= n; i += W) acc = acc + (Vec<A>::loadu(x + i) - mv).exp();
  A sum = reduce_add(acc);
  for (; i < n; ++i) sum += std::exp(x[i] - m);
  const A log_sum = std::log(sum);
  for (i = 0; i < n; ++i) x[i] = (x[i] - m) - log_sum;
}

// out[0:n] += b, then tanh if asked (vectorised, Sleef's tanh: torch.tanh's accuracy).
template <typename A>
void bias_tanh_row(A* out, const A* b, int64_t n, bool tanh) {
  constexpr int64_t W = Vec<A>::size();
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    Vec<A> x = Vec<A>::loadu(out + i);
    if (b != nullptr) x = x + Vec<A>::loadu(b + i);
    if (tanh) x = x.tanh();
    x.store(out + i);
  }
  for (; i < n; ++i) {
    A x = out[i] + (b != nullptr ? b[i] : A(0));
    out[i] = tanh ? std::tanh(x) : x;
  }
}

template <typename A>
void copy_cols(A* dst, int64_t ld_dst, const A* src, int64_t ld_src, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) std::memcpy(dst + r * ld_dst, src + r * ld_src, n * sizeof(A));
}

}  // namespace

template <typename A>
DecoderStepper<A>::DecoderStepper(const DecoderParams& p, const DecoderMemory& m, int64_t rows,
                                  int64_t beam)
    : p_(p), m_(m), N_(rows), beam_(beam) {
  const DecoderSpec& s = p.spec;
  const auto opts = p.embedding.options();
  const int64_t H = s.H, E = s.E, N = rows;
  const int64_t rows_of_state = s.state_rows();
  hidden_ = at::zeros({rows_of_state, N, H}, opts);
  spare_hidden_ = at::empty({rows_of_state, N, H}, opts);
  for (int64_t l = 0; l < rows_of_state; ++l) layer_h_.push_back(hidden_.select(0, l));
  if (s.input_feeding) {
    feed_ = at::zeros({N, H}, opts);
    spare_feed_ = at::empty({N, H}, opts);
  }
  emb_ = at::empty({N, E}, opts);
  x0_ = at::empty({N, p.w_ih[0].size(1)}, opts);
  gi_ = at::empty({N, 3 * H}, opts);
  gh_ = at::empty({N, 3 * H}, opts);
  gates_ = at::empty({N, 4 * H}, opts);
  if (s.Dq > 0) q_ = at::empty({N, s.Dq}, opts);
  if (s.local == kLocalP) pos_ = at::empty({N, s.P}, opts);
  ctx_ = at::zeros({N, H}, opts);
  cat_ = at::empty({N, s.wiring == kLuong ? 2 * H : 2 * H + E}, opts);
  pre_ = at::empty({N, H}, opts);
  if (s.tie_proj) tied_ = at::empty({N, E}, opts);
  log_probs_ = at::empty({N, s.V}, opts);
  weights_ = at::zeros({N, m.S}, opts);
  if (N >= kMinPackedRows && N <= kMaxPackedRows) {
    auto pack = [&](const at::Tensor& w) {
      if (w.defined()) {
        packed_.emplace(w.const_data_ptr(),
                        PackedWeight<A>(w.const_data_ptr<A>(), w.size(0), w.size(1), w.stride(0)));
      }
    };
    for (int64_t l = 0; l < rows_of_state; ++l) {
      pack(p.w_ih[l]);
      pack(p.w_hh[l]);
    }
    for (const at::Tensor* w :
         {&p.query_proj, &p.position_proj, &p.readout_w, &p.combine_w, &p.tie_proj, &p.out_w})
      pack(*w);
  }
}

template <typename A>
void DecoderStepper<A>::product(const at::Tensor& x, const at::Tensor& w, at::Tensor& out) {
  const auto it = packed_.find(w.const_data_ptr());
  if (it != packed_.end()) {
    return packed_matmul<A>(x.const_data_ptr<A>(), N_, x.stride(0), it->second,
                            out.mutable_data_ptr<A>(), out.stride(0), N_ >= kMinParallelRows);
  }
  if (N_ < kMinParallelRows) return matvec_rows<A>(x, w, out);
  matmul_nt_out(x, w, out);
}

template <typename A>
void DecoderStepper<A>::linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                               at::Tensor& out, bool tanh) {
  product(x, w, out);
  if (!b.defined() && !tanh) return;
  const int64_t n = out.size(1);
  A* o = out.mutable_data_ptr<A>();
  const A* bp = b.defined() ? b.const_data_ptr<A>() : nullptr;
  for_rows(N_, 4 * n, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) bias_tanh_row<A>(o + r * n, bp, n, tanh);
  });
}

template <typename A>
void DecoderStepper<A>::attend(const at::Tensor& query, int64_t t) {
  const DecoderSpec& s = p_.spec;
  const int64_t H = s.H, Dq = s.Dq, S = m_.S;
  const bool additive = s.score == kAdditive;
  // dot attention reads the query as it is (scale 1: the model's "dot" is unscaled)
  const at::Tensor& q = s.score == kDot ? query : q_;
  if (s.score != kDot) product(query, p_.query_proj, q_);
  if (s.local != kGlobal) return attend_local(query, q, t);
  const A* qp = q.const_data_ptr<A>();
  const int64_t ldq = q.stride(0);
  const A* vp = additive ? p_.v.const_data_ptr<A>() : nullptr;
  const A* keys = m_.keys.const_data_ptr<A>();
  const A* values = m_.values.const_data_ptr<A>();
  A* w = weights_.mutable_data_ptr<A>();
  A* c = ctx_.mutable_data_ptr<A>();
  const int64_t work = S * ((additive ? 4 : 1) * Dq + H);
  for_rows(N_, work, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / beam_;
      attend_row<A>(additive, qp + n * ldq, vp, keys + b * S * Dq, Dq, values + b * S * H, H,
                    m_.lengths[b], S, w + n * S, c + n * H);
    }
  });
}

// Local attention (fast_s2s.nn.Attention's local kinds over the local_attention op, scale 1):
// per row its centre (local-m: the step t; local-p: L_b sigmoid(v_p . tanh(W_p h)), from the
// unprojected query h as Attention.centers), then the op's own row weights over the window.
template <typename A>
void DecoderStepper<A>::attend_local(const at::Tensor& query, const at::Tensor& scored, int64_t t) {
  const DecoderSpec& s = p_.spec;
  const int64_t H = s.H, Dq = s.Dq, S = m_.S, P = s.P;
  if (s.local == kLocalP) product(query, p_.position_proj, pos_);
  const A* qp = scored.const_data_ptr<A>();
  const int64_t ldq = scored.stride(0);
  const A* keys = m_.keys.const_data_ptr<A>();
  const A* values = m_.values.const_data_ptr<A>();
  const A* pos = s.local == kLocalP ? pos_.const_data_ptr<A>() : nullptr;
  const A* vp = s.local == kLocalP ? p_.position_v.const_data_ptr<A>() : nullptr;
  A* w = weights_.mutable_data_ptr<A>();
  A* c = ctx_.mutable_data_ptr<A>();
  const LocalGaussian<A> gauss(s.window);
  const int64_t width = std::max<int64_t>(1, std::min<int64_t>(2 * std::min(s.window, S) + 1, S));
  for_rows(N_, width * (Dq + H) + S, [&](int64_t begin, int64_t end) {
    std::vector<A> a(width), wv(width);
    for (int64_t n = begin; n < end; ++n) {
      const int64_t b = n / beam_, L = m_.lengths[b];
      A p = static_cast<A>(t);
      if (s.local == kLocalP) {
        A predicted = 0;
        for (int64_t j = 0; j < P; ++j) predicted += vp[j] * std::tanh(pos[n * P + j]);
        p = static_cast<A>(L) * (A(1) / (A(1) + std::exp(-predicted)));
      }
      const LocalWindow win = local_window<A>(p, s.window, L);
      local_window_weights<A>(qp + n * ldq, keys + b * S * Dq, Dq, win, p, gauss, a.data(),
                              wv.data());
      A* wr = w + n * S;
      std::fill(wr, wr + S, A(0));
      std::copy(wv.begin(), wv.begin() + win.size(), wr + win.lo);
      weighted_row_sum_stream<A>(wv.data(), values + (b * S + win.lo) * H, H, win.size(), H,
                                 c + n * H);
    }
  });
}

template <typename A>
void DecoderStepper<A>::gru_update(const at::Tensor& x, int64_t row) {
  const int64_t H = p_.spec.H, N = N_;
  product(x, p_.w_ih[row], gi_);
  product(layer_h_[row], p_.w_hh[row], gh_);
  const A *gi = gi_.const_data_ptr<A>(), *gh = gh_.const_data_ptr<A>();
  const A *bih = p_.b_ih[row].const_data_ptr<A>(), *bhh = p_.b_hh[row].const_data_ptr<A>();
  A* h = layer_h_[row].mutable_data_ptr<A>();
  A* gates = gates_.mutable_data_ptr<A>();
  for_rows(N, 16 * H, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      // h' overwrites h in place: gh = W_hh h was taken before (gru_gates_forward allows it)
      gru_gates_forward<A>({gi + n * 3 * H, H}, {gh + n * 3 * H, H}, {bih, H}, {bhh, H}, h + n * H,
                           h + n * H, {gates + n * 4 * H, H}, H);
    }
  });
}

template <typename A>
void DecoderStepper<A>::step(const int64_t* prev, int64_t t) {
  const DecoderSpec& s = p_.spec;
  const int64_t H = s.H, E = s.E, N = N_, L = s.layers;
  const A* table = p_.embedding.const_data_ptr<A>();
  A* emb = emb_.mutable_data_ptr<A>();
  for (int64_t n = 0; n < N; ++n) std::memcpy(emb + n * E, table + prev[n] * E, E * sizeof(A));

  // The GRU's input: [e; c] (Bahdanau: c attended from the previous top state; classic: the
  // fixed context), [e; feed] (Luong with input feeding) or e.
  const int64_t I0 = x0_.size(1);
  A* x0 = x0_.mutable_data_ptr<A>();
  const at::Tensor* gru_in = &x0_;
  if (s.wiring == kBahdanau) {
    attend(layer_h_[L - 1], t);
  } else if (s.wiring == kClassic) {
    const A* context = m_.context.const_data_ptr<A>();
    A* c = ctx_.mutable_data_ptr<A>();
    for (int64_t n = 0; n < N; ++n)
      std::memcpy(c + n * H, context + (n / beam_) * H, H * sizeof(A));
  }
  if (s.wiring == kLuong && !s.input_feeding) {
    gru_in = &emb_;
  } else {
    const A* second = s.wiring == kLuong ? feed_.const_data_ptr<A>() : ctx_.const_data_ptr<A>();
    copy_cols<A>(x0, I0, emb, E, N, E);
    copy_cols<A>(x0 + E, I0, second, H, N, H);
  }

  for (int64_t l = 0; l < L; ++l) gru_update(l == 0 ? *gru_in : layer_h_[l - 1], l);
  const at::Tensor& top = layer_h_[L - 1];
  const A* tp = top.const_data_ptr<A>();
  A* cat = cat_.mutable_data_ptr<A>();
  const int64_t C = cat_.size(1);
  if (s.wiring == kLuong) {
    attend(top, t);
    copy_cols<A>(cat, C, ctx_.const_data_ptr<A>(), H, N, H);
    copy_cols<A>(cat + H, C, tp, H, N, H);
    linear(cat_, p_.combine_w, at::Tensor(), pre_, true);
    if (s.input_feeding)
      std::memcpy(feed_.mutable_data_ptr<A>(), pre_.const_data_ptr<A>(), N * H * sizeof(A));
  } else {
    copy_cols<A>(cat, C, tp, H, N, H);
    copy_cols<A>(cat + H, C, ctx_.const_data_ptr<A>(), H, N, H);
    copy_cols<A>(cat + 2 * H, C, emb, E, N, E);
    linear(cat_, p_.readout_w, p_.readout_b, pre_, true);
  }
  const at::Tensor* pre = &pre_;
  if (s.post_gru) {
    gru_update(pre_, L);
    pre = &layer_h_[L];
  }
  if (s.tie_proj) {
    product(*pre, p_.tie_proj, tied_);
    pre = &tied_;
  }
  linear(*pre, p_.out_w, p_.out_b, log_probs_, false);
  A* lp = log_probs_.mutable_data_ptr<A>();
  const int64_t V = s.V;
  for_rows(N, 8 * V, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) log_softmax_row<A>(lp + n * V, V);
  });
}

template <typename A>
void DecoderStepper<A>::reorder(const int64_t* parent) {
  const DecoderSpec& s = p_.spec;
  const int64_t H = s.H, N = N_;
  A* spare = spare_hidden_.mutable_data_ptr<A>();
  A* h = hidden_.mutable_data_ptr<A>();
  const int64_t rows_of_state = s.state_rows();
  for (int64_t l = 0; l < rows_of_state; ++l) {
    for (int64_t n = 0; n < N; ++n) {
      std::memcpy(spare + (l * N + n) * H, h + (l * N + parent[n]) * H, H * sizeof(A));
    }
  }
  std::memcpy(h, spare, rows_of_state * N * H * sizeof(A));
  if (s.input_feeding) {
    A* f = feed_.mutable_data_ptr<A>();
    A* sf = spare_feed_.mutable_data_ptr<A>();
    for (int64_t n = 0; n < N; ++n) std::memcpy(sf + n * H, f + parent[n] * H, H * sizeof(A));
    std::memcpy(f, sf, N * H * sizeof(A));
  }
}

template void apply_search_rules<float>(float*, const DecoderSpec&, bool, bool);
template void apply_search_rules<double>(double*, const DecoderSpec&, bool, bool);
template class DecoderStepper<float>;
template class DecoderStepper<double>;

}  // namespace fast_s2s::cpu
