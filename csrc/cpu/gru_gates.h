// The GRU gate arithmetic of one row, forward and backward, in one vectorised pass each. The
// formulas and the workspace layout are in csrc/common/gru_gates.h; here they run over a row of H
// units, Vec<A>::size() at a time, with a scalar tail.
#pragma once

#include "common/gru_gates.h"
#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {

// sigmoid from e = exp(-|x|) <= 1 (no overflow): 1 / (1 + e) for x >= 0, e / (1 + e) below.
// Not (1 + tanh(x / 2)) / 2: near 0 that form keeps only the absolute precision of a number near
// 1 (multiples of 3e-8 in float32), while a gate z ~ 1e-8 times a state of 1e4 is a gradient of
// order 1 (the reference, torch.sigmoid, keeps z's relative precision); it also saturates at
// exactly 0 and 1 where torch.sigmoid does.
template <typename A>
inline Vec<A> sigmoid_vec(const Vec<A>& x) {
  const Vec<A> one(A(1));
  const Vec<A> e = (-x.abs()).exp();
  const Vec<A> positive = one / (one + e);
  return Vec<A>::blendv(e * positive, positive, x >= Vec<A>(A(0)));
}

template <typename A>
inline A sigmoid_scalar(A x) {
  const A e = std::exp(-std::abs(x));
  const A positive = A(1) / (A(1) + e);
  return x >= A(0) ? positive : e * positive;
}

// bih, bhh: 3H biases or nullptr. gates: 4H output [r, z, n, hn]. h_new may alias h_prev.
template <typename A>
inline void gru_gates_forward(const A* gi, const A* gh, const A* bih, const A* bhh, const A* h_prev,
                              A* h_new, A* gates, int64_t H) {
  constexpr int64_t W = Vec<A>::size();
  auto bias = [](const A* b, int64_t off) { return b ? Vec<A>::loadu(b + off) : Vec<A>(A(0)); };
  auto bias_s = [](const A* b, int64_t off) { return b ? b[off] : A(0); };
  int64_t j = 0;
  // gru_unit_forward written out in vectors, with fused multiply-adds for r hn and z (h - n).
  for (; j + W <= H; j += W) {
    const Vec<A> r =
        sigmoid_vec<A>(Vec<A>::loadu(gi + j) + bias(bih, j) + Vec<A>::loadu(gh + j) + bias(bhh, j));
    const Vec<A> z = sigmoid_vec<A>(Vec<A>::loadu(gi + H + j) + bias(bih, H + j) +
                                    Vec<A>::loadu(gh + H + j) + bias(bhh, H + j));
    const Vec<A> hn = Vec<A>::loadu(gh + 2 * H + j) + bias(bhh, 2 * H + j);
    const Vec<A> n =
        fast_tanh(at::vec::fmadd(r, hn, Vec<A>::loadu(gi + 2 * H + j) + bias(bih, 2 * H + j)));
    const Vec<A> hp = Vec<A>::loadu(h_prev + j);
    r.store(gates + j);
    z.store(gates + H + j);
    n.store(gates + 2 * H + j);
    hn.store(gates + 3 * H + j);
    at::vec::fmadd(z, hp - n, n).store(h_new + j);
  }
  for (; j < H; ++j) {
    const GruUnit<A> u = gru_unit_forward<A>(
        gi[j] + bias_s(bih, j) + gh[j] + bias_s(bhh, j),
        gi[H + j] + bias_s(bih, H + j) + gh[H + j] + bias_s(bhh, H + j),
        gi[2 * H + j] + bias_s(bih, 2 * H + j), gh[2 * H + j], bias_s(bhh, 2 * H + j), h_prev[j],
        [](A x) { return sigmoid_scalar<A>(x); }, [](A x) { return fast_tanh(x); });
    gates[j] = u.r;
    gates[H + j] = u.z;
    gates[2 * H + j] = u.n;
    gates[3 * H + j] = u.hn;
    h_new[j] = u.h;
  }
}

// dh: gradient of h' (H). Writes dgi, dgh (3H each) and dh_prev (H) = the direct part dh' z.
template <typename A>
inline void gru_gates_backward(const A* dh, const A* gates, const A* h_prev, A* dgi, A* dgh,
                               A* dh_prev, int64_t H) {
  constexpr int64_t W = Vec<A>::size();
  int64_t j = 0;
  for (; j + W <= H; j += W) {
    const GruUnitGrad<Vec<A>> d =
        gru_unit_backward<Vec<A>>(Vec<A>::loadu(dh + j), Vec<A>::loadu(gates + j),
                                  Vec<A>::loadu(gates + H + j), Vec<A>::loadu(gates + 2 * H + j),
                                  Vec<A>::loadu(gates + 3 * H + j), Vec<A>::loadu(h_prev + j));
    d.dr_pre.store(dgi + j);
    d.dz_pre.store(dgi + H + j);
    d.dn_pre.store(dgi + 2 * H + j);
    d.dr_pre.store(dgh + j);
    d.dz_pre.store(dgh + H + j);
    d.dgh_n.store(dgh + 2 * H + j);
    d.dh_direct.store(dh_prev + j);
  }
  for (; j < H; ++j) {
    const GruUnitGrad<A> d = gru_unit_backward<A>(dh[j], gates[j], gates[H + j], gates[2 * H + j],
                                                  gates[3 * H + j], h_prev[j]);
    dgi[j] = d.dr_pre;
    dgi[H + j] = d.dz_pre;
    dgi[2 * H + j] = d.dn_pre;
    dgh[j] = d.dr_pre;
    dgh[H + j] = d.dz_pre;
    dgh[2 * H + j] = d.dgh_n;
    dh_prev[j] = d.dh_direct;
  }
}

}  // namespace fast_s2s::cpu
