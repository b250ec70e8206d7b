// The per-row score loops of the CPU attention kernels, shared by the attention ops
// (additive_attention.cpp) and the native decoder step (decoder_model.cpp), so that a decoder
// step run natively scores exactly as the op it replaces.
#pragma once

#include "common/local_window.h"
#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {

// score = sum_a v[a] tanh(q[a] + k[a]); if th != nullptr the tanh values are stored there.
template <typename scalar_t>
inline acc_t<scalar_t> additive_score(const acc_t<scalar_t>* q, const acc_t<scalar_t>* v,
                                      const scalar_t* k, int64_t n, acc_t<scalar_t>* th) {
  using A = acc_t<scalar_t>;
  constexpr int64_t W = Vec<A>::size();
  Vec<A> a0(A(0)), a1(A(0));
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const Vec<A> t0 = fast_tanh(Vec<A>::loadu(q + i) + load_acc(k + i));
    const Vec<A> t1 = fast_tanh(Vec<A>::loadu(q + i + W) + load_acc(k + i + W));
    a0 = at::vec::fmadd(Vec<A>::loadu(v + i), t0, a0);
    a1 = at::vec::fmadd(Vec<A>::loadu(v + i + W), t1, a1);
    if (th != nullptr) {
      t0.store(th + i);
      t1.store(th + i + W);
    }
  }
  for (; i + W <= n; i += W) {
    const Vec<A> t0 = fast_tanh(Vec<A>::loadu(q + i) + load_acc(k + i));
    a0 = at::vec::fmadd(Vec<A>::loadu(v + i), t0, a0);
    if (th != nullptr) t0.store(th + i);
  }
  A s = reduce_add(a0 + a1);
  for (; i < n; ++i) {
    const A t = fast_tanh(q[i] + static_cast<A>(k[i]));
    s += v[i] * t;
    if (th != nullptr) th[i] = t;
  }
  return s;
}

// One query row of attention over one source row (the forward of both ops for T = 1): scores
// of the first L of S positions into p, masked softmax (p becomes the weights, zeros from L on),
// context c (Dv) = sum_s p[s] values_b[s]. additive: score = sum_a v[a] tanh(q[a] + keys_b[s, a])
// (q = the projected query); else score = q . keys_b[s] (the scale folded into q by the caller).
template <typename A>
inline void attend_row(bool additive, const A* q, const A* v, const A* keys_b, int64_t Dq,
                       const A* values_b, int64_t Dv, int64_t L, int64_t S, A* p, A* c) {
  if (additive) {
    for (int64_t s = 0; s < L; ++s) p[s] = additive_score<A>(q, v, keys_b + s * Dq, Dq, nullptr);
  } else {
    dot_rows<A>(q, keys_b, Dq, L, Dq, p);
  }
  masked_softmax_inplace<A>(p, L, S);
  weighted_row_sum_stream<A>(p, values_b, Dv, L, Dv, c);
}

// Luong local attention's weights over one row's window (local_attention.cpp's forward and
// backward, and the native decoder's local step): a[0:n] = softmax of qs . keys_b[s] over the
// window [lo, hi) (qs: the query times the scale, in A), w[0:n] = a[i] g(lo + i), the Gaussian
// around the centre p. n = win.size() may be 0.
template <typename scalar_t>
inline void local_window_weights(const acc_t<scalar_t>* qs, const scalar_t* keys_b, int64_t Dk,
                                 const LocalWindow& win, acc_t<scalar_t> p,
                                 const LocalGaussian<acc_t<scalar_t>>& gauss, acc_t<scalar_t>* a,
                                 acc_t<scalar_t>* w) {
  const int64_t n = win.size();
  dot_rows<scalar_t>(qs, keys_b + win.lo * Dk, Dk, n, Dk, a);
  masked_softmax_inplace<acc_t<scalar_t>>(a, n, n);
  for (int64_t i = 0; i < n; ++i) w[i] = a[i] * gauss.factor(win.lo + i, p);
}

}  // namespace fast_s2s::cpu
