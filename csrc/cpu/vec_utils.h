// Small SIMD building blocks shared by the CPU kernels, on top of ATen's at::vec.
//
// Every kernel computes in the "accumulation type" acc_t<scalar_t>: float for float and
// bfloat16 inputs, double for double. Rows of keys/values are read in their storage type and
// widened on load, so bfloat16 inputs are never copied to float32 as whole tensors.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace fast_s2s::cpu {

template <typename scalar_t>
using acc_t = at::opmath_type<scalar_t>;

template <typename T>
using Vec = at::vec::Vectorized<T>;

// Load Vec<acc_t>::size() elements of storage type scalar_t as a vector of acc_t.
inline Vec<float> load_acc(const float* p) { return Vec<float>::loadu(p); }
inline Vec<double> load_acc(const double* p) { return Vec<double>::loadu(p); }
inline Vec<float> load_acc(const c10::BFloat16* p) {
  Vec<float> out;
  at::vec::load_to_float<c10::BFloat16>(p, out);
  return out;
}

template <typename T>
inline T reduce_add(const Vec<T>& v) {
  return at::vec::vec_reduce_all<T>([](Vec<T>& a, Vec<T>& b) { return a + b; }, v);
}

// Copy n values of storage type src_t into acc_t (or back): the one place rows change type.
template <typename dst_t, typename src_t>
inline void convert_row(const src_t* src, dst_t* dst, int64_t n) {
  if constexpr (std::is_same_v<src_t, dst_t>) {
    std::copy(src, src + n, dst);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<dst_t>(src[i]);
  }
}

// Four dot products at once, q . k0 .. q . k3, sharing the loads of q: 4 independent FMA chains
// hide the FMA latency and cut the load count per FMA from 2 to 1.25.
template <typename scalar_t>
inline void dot4(const acc_t<scalar_t>* q, const scalar_t* k0, const scalar_t* k1,
                 const scalar_t* k2, const scalar_t* k3, int64_t n, acc_t<scalar_t>* out) {
  using A = acc_t<scalar_t>;
  constexpr int64_t W = Vec<A>::size();
  Vec<A> a0(A(0)), a1(A(0)), a2(A(0)), a3(A(0));
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const Vec<A> qv = Vec<A>::loadu(q + i);
    a0 = at::vec::fmadd(qv, load_acc(k0 + i), a0);
    a1 = at::vec::fmadd(qv, load_acc(k1 + i), a1);
    a2 = at::vec::fmadd(qv, load_acc(k2 + i), a2);
    a3 = at::vec::fmadd(qv, load_acc(k3 + i), a3);
  }
  A s0 = reduce_add(a0), s1 = reduce_add(a1), s2 = reduce_add(a2), s3 = reduce_add(a3);
  for (; i < n; ++i) {
    s0 += q[i] * static_cast<A>(k0[i]);
    s1 += q[i] * static_cast<A>(k1[i]);
    s2 += q[i] * static_cast<A>(k2[i]);
    s3 += q[i] * static_cast<A>(k3[i]);
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

template <typename scalar_t>
inline acc_t<scalar_t> dot1(const acc_t<scalar_t>* q, const scalar_t* k, int64_t n) {
  using A = acc_t<scalar_t>;
  constexpr int64_t W = Vec<A>::size();
  Vec<A> a0(A(0)), a1(A(0));
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    a0 = at::vec::fmadd(Vec<A>::loadu(q + i), load_acc(k + i), a0);
    a1 = at::vec::fmadd(Vec<A>::loadu(q + i + W), load_acc(k + i + W), a1);
  }
  for (; i + W <= n; i += W) a0 = at::vec::fmadd(Vec<A>::loadu(q + i), load_acc(k + i), a0);
  A s = reduce_add(a0 + a1);
  for (; i < n; ++i) s += q[i] * static_cast<A>(k[i]);
  return s;
}

// out[s] = q . rows[s] for s < count, where row s starts at rows + s * stride.
template <typename scalar_t>
inline void dot_rows(const acc_t<scalar_t>* q, const scalar_t* rows, int64_t stride, int64_t count,
                     int64_t n, acc_t<scalar_t>* out) {
  int64_t s = 0;
  for (; s + 4 <= count; s += 4) {
    const scalar_t* r = rows + s * stride;
    dot4<scalar_t>(q, r, r + stride, r + 2 * stride, r + 3 * stride, n, out + s);
  }
  for (; s < count; ++s) out[s] = dot1<scalar_t>(q, rows + s * stride, n);
}

// out[0:n] (+)= sum_{s < count} w[s] * rows[s][0:n]. The output is walked in register-sized
// chunks with the sum over s innermost, so each output vector is loaded and stored once.
template <typename scalar_t>
inline void weighted_row_sum(const acc_t<scalar_t>* w, const scalar_t* rows, int64_t stride,
                             int64_t count, int64_t n, acc_t<scalar_t>* out, bool accumulate) {
  using A = acc_t<scalar_t>;
  constexpr int64_t W = Vec<A>::size();
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    Vec<A> c0(A(0)), c1(A(0)), c2(A(0)), c3(A(0));
    if (accumulate) {
      c0 = Vec<A>::loadu(out + i);
      c1 = Vec<A>::loadu(out + i + W);
      c2 = Vec<A>::loadu(out + i + 2 * W);
      c3 = Vec<A>::loadu(out + i + 3 * W);
    }
    for (int64_t s = 0; s < count; ++s) {
      const Vec<A> ws(w[s]);
      const scalar_t* r = rows + s * stride + i;
      c0 = at::vec::fmadd(ws, load_acc(r), c0);
      c1 = at::vec::fmadd(ws, load_acc(r + W), c1);
      c2 = at::vec::fmadd(ws, load_acc(r + 2 * W), c2);
      c3 = at::vec::fmadd(ws, load_acc(r + 3 * W), c3);
    }
    c0.store(out + i);
    c1.store(out + i + W);
    c2.store(out + i + 2 * W);
    c3.store(out + i + 3 * W);
  }
  for (; i + W <= n; i += W) {
    Vec<A> c = accumulate ? Vec<A>::loadu(out + i) : Vec<A>(A(0));
    for (int64_t s = 0; s < count; ++s) {
      c = at::vec::fmadd(Vec<A>(w[s]), load_acc(rows + s * stride + i), c);
    }
    c.store(out + i);
  }
  for (; i < n; ++i) {
    A c = accumulate ? out[i] : A(0);
    for (int64_t s = 0; s < count; ++s) c += w[s] * static_cast<A>(rows[s * stride + i]);
    out[i] = c;
  }
}

// out[0:n] += a * x[0:n]
template <typename scalar_t>
inline void axpy(acc_t<scalar_t> a, const scalar_t* x, int64_t n, acc_t<scalar_t>* out) {
  using A = acc_t<scalar_t>;
  constexpr int64_t W = Vec<A>::size();
  const Vec<A> av(a);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    at::vec::fmadd(av, load_acc(x + i), Vec<A>::loadu(out + i)).store(out + i);
  }
  for (; i < n; ++i) out[i] += a * static_cast<A>(x[i]);
}

// out[0:n] = sum_{s < count} w[s] * rows[s][0:n], walking the rows in memory order (two at a
// time, so out is loaded and stored once per two rows): one sequential stream through the rows,
// which the hardware prefetcher follows, for the memory-bound single-query decode step.
template <typename scalar_t>
inline void weighted_row_sum_stream(const acc_t<scalar_t>* w, const scalar_t* rows, int64_t stride,
                                    int64_t count, int64_t n, acc_t<scalar_t>* out) {
  using A = acc_t<scalar_t>;
  constexpr int64_t W = Vec<A>::size();
  std::fill(out, out + n, A(0));
  int64_t s = 0;
  for (; s + 2 <= count; s += 2) {
    const scalar_t* r0 = rows + s * stride;
    const scalar_t* r1 = r0 + stride;
    const Vec<A> w0(w[s]), w1(w[s + 1]);
    int64_t i = 0;
    for (; i + W <= n; i += W) {
      Vec<A> c = at::vec::fmadd(w0, load_acc(r0 + i), Vec<A>::loadu(out + i));
      at::vec::fmadd(w1, load_acc(r1 + i), c).store(out + i);
    }
    for (; i < n; ++i) out[i] += w[s] * static_cast<A>(r0[i]) + w[s + 1] * static_cast<A>(r1[i]);
  }
  if (s < count) axpy<scalar_t>(w[s], rows + s * stride, n, out);
}

// In-place softmax over the first `valid` entries of p; entries [valid, total) become 0.
// A row with valid == 0 is all zeros (zero weights, hence zero context), never NaN.
// Scores are max-subtracted, so scores of 1e4 or more are exact, not inf.
template <typename A>
inline void masked_softmax_inplace(A* p, int64_t valid, int64_t total) {
  if (valid > 0) {
    A m = p[0];
    for (int64_t s = 1; s < valid; ++s) m = p[s] > m ? p[s] : m;
    A sum = 0;
    for (int64_t s = 0; s < valid; ++s) {
      p[s] = std::exp(p[s] - m);
      sum += p[s];
    }
    const A inv = A(1) / sum;
    for (int64_t s = 0; s < valid; ++s) p[s] *= inv;
  }
  for (int64_t s = valid; s < total; ++s) p[s] = A(0);
}

// The tail every attention forward row shares: scores p (first L of S valid) become the
// weights, the context is their sum over the source row's values (values_b: S x Dv), and both
// are written in the storage dtype. c is an acc_t scratch row of Dv.
template <typename scalar_t>
inline void softmax_and_read(acc_t<scalar_t>* p, int64_t L, int64_t S, const scalar_t* values_b,
                             int64_t Dv, acc_t<scalar_t>* c, scalar_t* ctx_row, scalar_t* w_row) {
  masked_softmax_inplace<acc_t<scalar_t>>(p, L, S);
  weighted_row_sum_stream<scalar_t>(p, values_b, Dv, L, Dv, c);
  convert_row(c, ctx_row, Dv);
  convert_row(p, w_row, S);
}

// clang-format off: fast_tanh's polynomial keeps one coefficient per line.
// tanh for the additive-attention score. float: the rational approximation Eigen and XLA use
// (odd degree-13 / even degree-6 polynomials on a clamped input, a few ulp from std::tanh,
// no exp and one division, several times faster than a libm-accurate tanh); double: Sleef's.
inline Vec<float> fast_tanh(const Vec<float>& a_x) {
  const Vec<float> x = at::vec::minimum(at::vec::maximum(a_x, Vec<float>(-7.90531110763549805f)),
                                        Vec<float>(7.90531110763549805f));
  const Vec<float> x2 = x * x;
  Vec<float> p = at::vec::fmadd(x2, Vec<float>(-2.76076847742355e-16f), Vec<float>(2.00018790482477e-13f));
  p = at::vec::fmadd(x2, p, Vec<float>(-8.60467152213735e-11f));
  p = at::vec::fmadd(x2, p, Vec<float>(5.12229709037114e-08f));
  p = at::vec::fmadd(x2, p, Vec<float>(1.48572235717979e-05f));
  p = at::vec::fmadd(x2, p, Vec<float>(6.37261928875436e-04f));
  p = at::vec::fmadd(x2, p, Vec<float>(4.89352455891786e-03f));
  p = p * x;
  Vec<float> q = at::vec::fmadd(x2, Vec<float>(1.19825839466702e-06f), Vec<float>(1.18534705686654e-04f));
  q = at::vec::fmadd(x2, q, Vec<float>(2.26843463243900e-03f));
  q = at::vec::fmadd(x2, q, Vec<float>(4.89352518554385e-03f));
  // Below 4e-4 tanh(x) == x to float precision; returning x keeps tiny inputs exact.
  const Vec<float> tiny_mask = a_x.abs() < Vec<float>(0.0004f);
  const Vec<float> r = Vec<float>::blendv(p / q, a_x, tiny_mask);
  // From |x| = 9.0108 on, float32 tanh is exactly +-1 (the reference's torch.tanh too), while the
  // clamped rational stops just short of it: return +-1 there, so that the derivatives 1 - t^2
  // and, through sigmoid(x) = (1 + tanh(x / 2)) / 2, z (1 - z) are exactly 0 where the
  // reference's are, and a saturated gate times a huge input gives 0, not a spurious gradient.
  const Vec<float> one(1.0f);
  const Vec<float> saturated = Vec<float>::blendv(r, one, a_x >= Vec<float>(9.01084041595459f));
  return Vec<float>::blendv(saturated, -one, a_x <= Vec<float>(-9.01084041595459f));
}
inline Vec<double> fast_tanh(const Vec<double>& x) { return x.tanh(); }
inline float fast_tanh(float x) {
  float out[Vec<float>::size()];
  fast_tanh(Vec<float>(x)).store(out);
  return out[0];
}
inline double fast_tanh(double x) { return std::tanh(x); }
// clang-format on

}  // namespace fast_s2s::cpu
