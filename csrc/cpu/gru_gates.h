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

// Where one row's gate vectors lie: gate g (r, z, n) of unit j at p[g * stride + j]. A fused
// step hands each task a block of units, so its products (B x 3 block) and the full rows
// (3H) of gi, the biases and the saved gates differ in stride.
template <typename P>
struct Gated {
  P p;
  int64_t stride;
  P gate(int g) const { return p == nullptr ? nullptr : p + g * stride; }
};

// n units of one row. gi, gh: the products (without biases); bih, bhh: biases or null; gates:
// output [r, z, n, hn] (stride: gate offset). h_new may alias h_prev.
template <typename A>
inline void gru_gates_forward(Gated<const A*> gi, Gated<const A*> gh, Gated<const A*> bih,
                              Gated<const A*> bhh, const A* h_prev, A* h_new, Gated<A*> gates,
                              int64_t n) {
  constexpr int64_t W = Vec<A>::size();
  auto bias = [](const A* b, int64_t j) { return b ? Vec<A>::loadu(b + j) : Vec<A>(A(0)); };
  auto bias_s = [](const A* b, int64_t j) { return b ? b[j] : A(0); };
  const A *gir = gi.gate(0), *giz = gi.gate(1), *gin = gi.gate(2);
  const A *ghr = gh.gate(0), *ghz = gh.gate(1), *ghn = gh.gate(2);
  const A *bir = bih.gate(0), *biz = bih.gate(1), *bin = bih.gate(2);
  const A *bhr = bhh.gate(0), *bhz = bhh.gate(1), *bhn = bhh.gate(2);
  A *gr = gates.gate(0), *gz = gates.gate(1), *gn = gates.gate(2),
    *ghn_out = gates.p + 3 * gates.stride;
  int64_t j = 0;
  // gru_unit_forward written out in vectors, with fused multiply-adds for r hn and z (h - n).
  for (; j + W <= n; j += W) {
    const Vec<A> r = sigmoid_vec<A>(Vec<A>::loadu(gir + j) + bias(bir, j) + Vec<A>::loadu(ghr + j) +
                                    bias(bhr, j));
    const Vec<A> z = sigmoid_vec<A>(Vec<A>::loadu(giz + j) + bias(biz, j) + Vec<A>::loadu(ghz + j) +
                                    bias(bhz, j));
    const Vec<A> hn = Vec<A>::loadu(ghn + j) + bias(bhn, j);
    const Vec<A> nv = fast_tanh(at::vec::fmadd(r, hn, Vec<A>::loadu(gin + j) + bias(bin, j)));
    const Vec<A> hp = Vec<A>::loadu(h_prev + j);
    r.store(gr + j);
    z.store(gz + j);
    nv.store(gn + j);
    hn.store(ghn_out + j);
    at::vec::fmadd(z, hp - nv, nv).store(h_new + j);
  }
  for (; j < n; ++j) {
    const GruUnit<A> u = gru_unit_forward<A>(
        gir[j] + bias_s(bir, j) + ghr[j] + bias_s(bhr, j),
        giz[j] + bias_s(biz, j) + ghz[j] + bias_s(bhz, j), gin[j] + bias_s(bin, j), ghn[j],
        bias_s(bhn, j), h_prev[j], [](A x) { return sigmoid_scalar<A>(x); },
        [](A x) { return fast_tanh(x); });
    gr[j] = u.r;
    gz[j] = u.z;
    gn[j] = u.n;
    ghn_out[j] = u.hn;
    h_new[j] = u.h;
  }
}

// n units of one row. dh: gradient of h'; gates: the saved [r, z, n, hn]. Writes dgi, dgh (three
// gates each) and dh_prev = the direct part dh' z.
template <typename A>
inline void gru_gates_backward(const A* dh, Gated<const A*> gates, const A* h_prev, Gated<A*> dgi,
                               Gated<A*> dgh, A* dh_prev, int64_t n) {
  constexpr int64_t W = Vec<A>::size();
  const A *gr = gates.gate(0), *gz = gates.gate(1), *gn = gates.gate(2),
          *ghn = gates.p + 3 * gates.stride;
  A *dir = dgi.gate(0), *diz = dgi.gate(1), *din = dgi.gate(2);
  A *dhr = dgh.gate(0), *dhz = dgh.gate(1), *dhn = dgh.gate(2);
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    const GruUnitGrad<Vec<A>> d = gru_unit_backward<Vec<A>>(
        Vec<A>::loadu(dh + j), Vec<A>::loadu(gr + j), Vec<A>::loadu(gz + j), Vec<A>::loadu(gn + j),
        Vec<A>::loadu(ghn + j), Vec<A>::loadu(h_prev + j));
    d.dr_pre.store(dir + j);
    d.dz_pre.store(diz + j);
    d.dn_pre.store(din + j);
    d.dr_pre.store(dhr + j);
    d.dz_pre.store(dhz + j);
    d.dgh_n.store(dhn + j);
    d.dh_direct.store(dh_prev + j);
  }
  for (; j < n; ++j) {
    const GruUnitGrad<A> d = gru_unit_backward<A>(dh[j], gr[j], gz[j], gn[j], ghn[j], h_prev[j]);
    dir[j] = d.dr_pre;
    diz[j] = d.dz_pre;
    din[j] = d.dn_pre;
    dhr[j] = d.dr_pre;
    dhz[j] = d.dz_pre;
    dhn[j] = d.dgh_n;
    dh_prev[j] = d.dh_direct;
  }
}

}  // namespace fast_s2s::cpu
