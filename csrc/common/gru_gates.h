// The GRU gate formulas of one hidden unit, forward and backward, written once for the CPU
// kernels (csrc/cpu/gru_gates.h) and the CUDA kernels (csrc/cuda/gru.cu).
// torch.nn.GRU semantics, gate order r, z, n (reference: fast_s2s/reference.py::gru_cell):
//   r  = sigmoid(gi_r + b_ir + gh_r + b_hr)
//   z  = sigmoid(gi_z + b_iz + gh_z + b_hz)
//   hn = gh_n + b_hn
//   n  = tanh(gi_n + b_in + r * hn)
//   h' = (1 - z) * n + z * h  =  n + z * (h - n)
// gi = W_ih x and gh = W_hh h come from the matrix products, without biases: the kernels add the
// biases themselves, so no (B, 3H) bias-broadcast tensor is ever written.
// The forward saves [r, z, n, hn] per unit (the "gates" workspace) for the backward:
//   dn = dh' (1 - z);  dz = dh' (h - n);  dh (direct) = dh' z
//   dn_pre = dn (1 - n^2);  dz_pre = dz z (1 - z);  dr_pre = dn_pre hn r (1 - r)
//   dgi = [dr_pre, dz_pre, dn_pre];  dgh = [dr_pre, dz_pre, dn_pre r]
//
// T is the arithmetic type: float or double, or (CPU backward) a SIMD vector of them, whose
// operators are elementwise. The forward takes sigmoid and tanh from the caller: the CPU kernels
// use their vectorised rational tanh (csrc/cpu/vec_utils.h), the CUDA kernels the accurate libm
// functions; the two differ in the last bits, and each kernel keeps its own.
#pragma once

#include "common/host_device.h"

namespace fast_s2s {

template <typename T>
struct GruUnit {
  T r, z, n, hn;  // the saved gates
  T h;            // h', the new state
};

// r_pre, z_pre: the full pre-activations, products and biases; n_in = gi_n + b_in; gh_n, b_hn:
// W_hn h and its bias; h_prev: the state h.
template <typename T, typename Sigmoid, typename Tanh>
FAST_S2S_HOST_DEVICE inline GruUnit<T> gru_unit_forward(T r_pre, T z_pre, T n_in, T gh_n, T b_hn,
                                                        T h_prev, Sigmoid sigmoid, Tanh tanh) {
  const T r = sigmoid(r_pre);
  const T z = sigmoid(z_pre);
  const T hn = gh_n + b_hn;
  const T n = tanh(n_in + r * hn);
  return {r, z, n, hn, n + z * (h_prev - n)};
}

template <typename T>
struct GruUnitGrad {
  T dr_pre, dz_pre, dn_pre;  // dgi = [dr_pre, dz_pre, dn_pre]
  T dgh_n;                   // dgh = [dr_pre, dz_pre, dgh_n], dgh_n = dn_pre r
  T dh_direct;               // dh' z: the part of dh that does not go through W_hh
};

// dh_new: the gradient of h'; r, z, n, hn: the saved gates; h_prev: the state h.
template <typename T>
FAST_S2S_HOST_DEVICE inline GruUnitGrad<T> gru_unit_backward(T dh_new, T r, T z, T n, T hn,
                                                             T h_prev) {
  const T one(1);
  const T dn_pre = dh_new * (one - z) * (one - n * n);
  const T dz_pre = dh_new * (h_prev - n) * z * (one - z);
  const T dr_pre = dn_pre * hn * r * (one - r);
  return {dr_pre, dz_pre, dn_pre, dn_pre * r, dh_new * z};
}

}  // namespace fast_s2s
