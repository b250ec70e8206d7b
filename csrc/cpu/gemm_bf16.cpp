// bfloat16 products on the CPU's bfloat16 instructions (MKL's cblas_gemm_bf16bf16f32): exact
// products, float32 sums. The float32 backends and their measured choices are in gemm.cpp;
// docs/DESIGN.md, "bfloat16 on bfloat16 instructions".
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/ops/add.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <limits>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "cpu/gemm.h"
#include "cpu/mkl_cblas.h"

namespace fast_s2s::cpu::gemm {
namespace {

using mkl::kNoTrans, mkl::kRowMajor, mkl::kTrans;

// AVX512-BF16 (CPUID leaf 7, subleaf 1, EAX bit 5) or AMX-BF16 (leaf 7, subleaf 0, EDX bit 22).
bool cpu_has_bf16_instructions() {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) return true;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22));
#else
  return false;
#endif
}

}  // namespace

bool bf16_native_available() {
#if defined(CPU_CAPABILITY_AVX512)
  static const bool usable =
      cblas_gemm_bf16bf16f32 != nullptr && at::hasMKL() && cpu_has_bf16_instructions();
  return usable;
#else
  return false;
#endif
}

bool bf16_native() {
  const std::optional<Backend> pinned = forced();
  return bf16_native_available() && (!pinned || *pinned == Backend::kMklBf16);
}

namespace {

// A bfloat16 operand's CBLAS form (row-major storage): rows with unit stride (kNoTrans), or the
// transpose of such a matrix (kTrans, e.g. a .t() view); false for any other layout.
bool cblas_form(const at::Tensor& t, int& trans, int64_t& ld) {
  if (t.stride(1) == 1 && t.stride(0) >= std::max<int64_t>(1, t.size(1))) {
    trans = kNoTrans;
    ld = t.stride(0);
    return true;
  }
  if (t.stride(0) == 1 && t.stride(1) >= std::max<int64_t>(1, t.size(0))) {
    trans = kTrans;
    ld = t.stride(1);
    return true;
  }
  return false;
}

}  // namespace

void mm_bf16(const char* op, const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  TORCH_CHECK(bf16_native(), op, ": bfloat16 products need bf16_native()");
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2 && a.size(1) == b.size(0) &&
                  out.size(0) == a.size(0) && out.size(1) == b.size(1),
              op, ": mm_bf16 takes a (M, K), b (K, N) and out (M, N)");
  TORCH_CHECK(a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16 &&
                  out.scalar_type() == at::kFloat && out.stride(1) == 1,
              op, ": mm_bf16 takes bfloat16 a and b and a float32 out with contiguous rows");
  const int64_t m = a.size(0), n = b.size(1), k = a.size(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    out.zero_();
    return;
  }
  int trans_a = kNoTrans, trans_b = kNoTrans;
  int64_t lda = 0, ldb = 0;
  const at::Tensor ac = cblas_form(a, trans_a, lda) ? a : a.contiguous();
  const at::Tensor bc = cblas_form(b, trans_b, ldb) ? b : b.contiguous();
  if (!ac.is_same(a)) cblas_form(ac, trans_a, lda);
  if (!bc.is_same(b)) cblas_form(bc, trans_b, ldb);
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();  // MKL's LP64 integers
  TORCH_CHECK(std::max({m, n, k, lda, ldb, out.stride(0)}) <= kIntMax, op,
              ": mm_bf16 sizes and strides must fit a 32-bit int");
  record_bf16_site({op, m, n, k, at::kBFloat16});
  cblas_gemm_bf16bf16f32(
      kRowMajor, trans_a, trans_b, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k),
      1.0f, reinterpret_cast<const uint16_t*>(ac.const_data_ptr<at::BFloat16>()),
      static_cast<int>(lda), reinterpret_cast<const uint16_t*>(bc.const_data_ptr<at::BFloat16>()),
      static_cast<int>(ldb), 0.0f, out.mutable_data_ptr<float>(), static_cast<int>(out.stride(0)));
}

void split_bf16(const float* a, int64_t m, int64_t k, int64_t lda, at::BFloat16* parts) {
  at::BFloat16* lo = parts + m * k;
  at::parallel_for(0, m, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, k)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t i = begin; i < end; ++i) {
                       for (int64_t j = 0; j < k; ++j) {
                         const float v = a[i * lda + j];
                         const at::BFloat16 hi(v);  // round to nearest even
                         parts[i * k + j] = hi;
                         // v - hi is exact in float32; its rounding is the only loss
                         lo[i * k + j] = at::BFloat16(v - static_cast<float>(hi));
                       }
                     }
                   });
}

at::Tensor split_products_bf16(const char* op, const at::Tensor& d, const at::Tensor& w,
                               const at::Tensor& in, at::Tensor& grad_in) {
  const int64_t M = d.size(0), N = d.size(1), K = w.size(1);
  TORCH_CHECK(d.is_contiguous() && d.scalar_type() == at::kFloat, op,
              ": split_products_bf16 takes a contiguous float32 d");
  at::Tensor parts = at::empty({2 * M, N}, w.options());
  split_bf16(d.const_data_ptr<float>(), M, N, N, parts.mutable_data_ptr<at::BFloat16>());
  at::Tensor halves = at::empty({2 * M, K}, grad_in.options());
  mm_bf16(op, parts, w, halves);
  at::add_out(grad_in, halves.narrow(0, 0, M), halves.narrow(0, M, M));
  return at::mm(parts.t(), at::cat({in, in}));
}

}  // namespace fast_s2s::cpu::gemm
