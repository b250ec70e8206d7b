// The GRU gate arithmetic of one row, forward and backward, in one vectorised pass each.
// torch.nn.GRU semantics, gate order r, z, n (reference: fast_s2s/reference.py::gru_cell):
//   r  = sigmoid(gi_r + b_ir + gh_r + b_hr)
//   z  = sigmoid(gi_z + b_iz + gh_z + b_hz)
//   hn = gh_n + b_hn
//   n  = tanh(gi_n + b_in + r * hn)
//   h' = (1 - z) * n + z * h  =  n + z * (h - n)
// gi = W_ih x and gh = W_hh h come from the matrix products, without biases: the biases are
// added here, so no (B, 3H) bias-broadcast tensor is ever written.
// The forward saves [r, z, n, hn] (4H per row, the "gates" workspace) for the backward:
//   dn = dh' (1 - z);  dz = dh' (h - n);  dh (direct) = dh' z
//   dn_pre = dn (1 - n^2);  dz_pre = dz z (1 - z);  dr_pre = dn_pre hn r (1 - r)
//   dgi = [dr_pre, dz_pre, dn_pre];  dgh = [dr_pre, dz_pre, dn_pre r]
#pragma once

#include "cpu/vec_utils.h"

namespace fast_s2s::cpu {

template <typename A>
inline Vec<A> sigmoid_vec(const Vec<A>& x) {
  // sigmoid(x) = (1 + tanh(x / 2)) / 2: one tanh, no exp overflow for large |x|.
  const Vec<A> half(A(0.5));
  return at::vec::fmadd(half, fast_tanh(x * half), half);
}

template <typename A>
inline A sigmoid_scalar(A x) {
  return A(0.5) + A(0.5) * fast_tanh(x * A(0.5));
}

// bih, bhh: 3H biases or nullptr. gates: 4H output [r, z, n, hn]. h_new may alias h_prev.
template <typename A>
inline void gru_gates_forward(const A* gi, const A* gh, const A* bih, const A* bhh,
                              const A* h_prev, A* h_new, A* gates, int64_t H) {
  constexpr int64_t W = Vec<A>::size();
  auto bias = [](const A* b, int64_t off) { return b ? Vec<A>::loadu(b + off) : Vec<A>(A(0)); };
  auto bias_s = [](const A* b, int64_t off) { return b ? b[off] : A(0); };
  int64_t j = 0;
  for (; j + W <= H; j += W) {
    const Vec<A> r = sigmoid_vec<A>(Vec<A>::loadu(gi + j) + bias(bih, j) + Vec<A>::loadu(gh + j) +
                                    bias(bhh, j));
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
    const A r = sigmoid_scalar<A>(gi[j] + bias_s(bih, j) + gh[j] + bias_s(bhh, j));
    const A z = sigmoid_scalar<A>(gi[H + j] + bias_s(bih, H + j) + gh[H + j] + bias_s(bhh, H + j));
    const A hn = gh[2 * H + j] + bias_s(bhh, 2 * H + j);
    const A n = fast_tanh(gi[2 * H + j] + bias_s(bih, 2 * H + j) + r * hn);
    const A hp = h_prev[j];
    gates[j] = r;
    gates[H + j] = z;
    gates[2 * H + j] = n;
    gates[3 * H + j] = hn;
    h_new[j] = n + z * (hp - n);
  }
}

// dh: gradient of h' (H). Writes dgi, dgh (3H each) and dh_prev (H) = the direct part dh' z.
template <typename A>
inline void gru_gates_backward(const A* dh, const A* gates, const A* h_prev, A* dgi, A* dgh,
                               A* dh_prev, int64_t H) {
  constexpr int64_t W = Vec<A>::size();
  const Vec<A> one(A(1));
  int64_t j = 0;
  for (; j + W <= H; j += W) {
    const Vec<A> d = Vec<A>::loadu(dh + j);
    const Vec<A> r = Vec<A>::loadu(gates + j), z = Vec<A>::loadu(gates + H + j);
    const Vec<A> n = Vec<A>::loadu(gates + 2 * H + j), hn = Vec<A>::loadu(gates + 3 * H + j);
    const Vec<A> hp = Vec<A>::loadu(h_prev + j);
    const Vec<A> dn_pre = d * (one - z) * (one - n * n);
    const Vec<A> dz_pre = d * (hp - n) * z * (one - z);
    const Vec<A> dr_pre = dn_pre * hn * r * (one - r);
    dr_pre.store(dgi + j);
    dz_pre.store(dgi + H + j);
    dn_pre.store(dgi + 2 * H + j);
    dr_pre.store(dgh + j);
    dz_pre.store(dgh + H + j);
    (dn_pre * r).store(dgh + 2 * H + j);
    (d * z).store(dh_prev + j);
  }
  for (; j < H; ++j) {
    const A d = dh[j], r = gates[j], z = gates[H + j], n = gates[2 * H + j];
    const A hn = gates[3 * H + j], hp = h_prev[j];
    const A dn_pre = d * (A(1) - z) * (A(1) - n * n);
    const A dz_pre = d * (hp - n) * z * (A(1) - z);
    const A dr_pre = dn_pre * hn * r * (A(1) - r);
    dgi[j] = dr_pre;
    dgi[H + j] = dz_pre;
    dgi[2 * H + j] = dn_pre;
    dgh[j] = dr_pre;
    dgh[H + j] = dz_pre;
    dgh[2 * H + j] = dn_pre * r;
    dh_prev[j] = d * z;
  }
}

}  // namespace fast_s2s::cpu
