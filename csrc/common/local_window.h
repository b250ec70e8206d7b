// The window of Luong local attention, written once for the CPU and the CUDA kernels
// (csrc/cpu/local_attention.cpp, csrc/cuda/local_attention.cu). Reference:
// fast_s2s/reference.py::local_attention.
//
// A query row with centre p (in the accumulation type A) reads the positions s with
// |A(s) - p| <= D and s < L. That predicate is evaluated exactly as the reference evaluates it:
// the window's ends come from floor / ceil with a margin of one, then are trimmed by the
// predicate itself, so a centre on a boundary selects the same positions on every backend. The
// predicate is monotone in s (rounding is monotone), so the selected set is one run [lo, hi).
// A non-finite or far-away centre selects nothing before any float-to-int conversion, which
// would be undefined behaviour for it.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace fast_s2s {

struct LocalWindow {
  int64_t lo = 0, hi = 0;  // positions [lo, hi); empty when lo == hi
  FAST_S2S_HOST_DEVICE int64_t size() const { return hi - lo; }
};

template <typename A>
FAST_S2S_HOST_DEVICE inline bool in_local_window(int64_t s, A p, int64_t D) {
  const A offset = static_cast<A>(s) - p;
  return (offset < 0 ? -offset : offset) <= static_cast<A>(D);
}

template <typename A>
FAST_S2S_HOST_DEVICE inline LocalWindow local_window(A p, int64_t D, int64_t L) {
  LocalWindow w;
  if (L <= 0 || !(p == p) || p - p != A(0)) return w;  // NaN or infinite centre: nothing
  const A first = std::floor(p - static_cast<A>(D)) - A(1);
  const A last = std::ceil(p + static_cast<A>(D)) + A(1);
  if (last < A(0) || first > static_cast<A>(L - 1)) return w;
  w.lo = first < A(0) ? 0 : static_cast<int64_t>(first);
  w.hi = last > static_cast<A>(L - 1) ? L : static_cast<int64_t>(last) + 1;
  while (w.lo < w.hi && !in_local_window(w.lo, p, D)) ++w.lo;
  while (w.hi > w.lo && !in_local_window(w.hi - 1, p, D)) --w.hi;
  return w;
}

// The Gaussian factor exp(-(s - p)^2 / (2 sigma^2)), sigma = D / 2, and its derivative in p
// divided by itself, (s - p) / sigma^2. D = 0 has no spread: the only position is s = p and the
// factor is 1 with no gradient.
template <typename A>
struct LocalGaussian {
  A inv_two_sigma2 = 0;  // 1 / (2 sigma^2) = 2 / D^2, 0 for D = 0
  FAST_S2S_HOST_DEVICE explicit LocalGaussian(int64_t D) {
    if (D > 0) {
      const double sigma = static_cast<double>(D) / 2.0;
      inv_two_sigma2 = static_cast<A>(1.0 / (2.0 * sigma * sigma));
    }
  }
  FAST_S2S_HOST_DEVICE A factor(int64_t s, A p) const {
    const A offset = static_cast<A>(s) - p;
    return std::exp(-offset * offset * inv_two_sigma2);
  }
  // d factor / dp = factor * (s - p) / sigma^2 = factor * (s - p) * 2 * inv_two_sigma2
  FAST_S2S_HOST_DEVICE A dlog_dp(int64_t s, A p) const {
    return (static_cast<A>(s) - p) * A(2) * inv_two_sigma2;
  }
};

}  // namespace fast_s2s
