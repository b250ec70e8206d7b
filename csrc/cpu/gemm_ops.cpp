// torch.ops.fast_s2s.set_gemm_backend / gemm_report: the Python side of the GEMM layer's choice
// (gemm.h), for fast_s2s.set_gemm_backend, `fast-s2s verify` and `fast-s2s bench`.
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <sstream>
#include <string>

#include "cpu/gemm.h"

namespace fast_s2s::cpu {
namespace {

void set_gemm_backend(std::string name) {
  if (name == "auto") {
    gemm::set_forced(std::nullopt);
    return;
  }
  const std::optional<gemm::Backend> backend = gemm::parse(name);
  TORCH_CHECK(backend.has_value(),
              "set_gemm_backend: name must be 'auto', 'mkl_packed', 'blas', 'inhouse', 'panel' "
              "or 'mkl_bf16', got '",
              name, "'");
  if (*backend == gemm::Backend::kMklBf16) {
    TORCH_CHECK(gemm::bf16_native_available(),
                "set_gemm_backend: 'mkl_bf16' needs a CPU with AVX512-BF16 or AMX-BF16, the "
                "kernels built for AVX-512 and torch linked with MKL");
  } else {
    TORCH_CHECK(gemm::available(*backend, at::kFloat), "set_gemm_backend: '", name,
                "' is not available in this torch build (MKL's packed GEMM needs torch linked "
                "with MKL, as its x86 builds are)");
  }
  gemm::set_forced(backend);
}

// Line 1: "forced: NAME" or "forced: auto"; line 2: "available: NAME ..." (float32); line 3:
// "mkl: VERSION" (empty when torch has no MKL); line 4: "bf16_native: 1" or "0"
// (gemm::bf16_native); then one line per choice (gemm::report).
std::string gemm_report() {
  std::ostringstream out;
  const std::optional<gemm::Backend> pinned = gemm::pinned();
  out << "forced: " << (pinned ? gemm::name(*pinned) : "auto") << "\navailable:";
  for (gemm::Backend b : gemm::candidates(at::kFloat)) out << " " << gemm::name(b);
  out << "\nmkl: " << gemm::mkl_version();
  out << "\nbf16_native: " << (gemm::bf16_native() ? 1 : 0);
  for (const std::string& line : gemm::report()) out << "\n" << line;
  return out.str();
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fast_s2s, m) {
  m.def("set_gemm_backend(str name) -> ()", &set_gemm_backend);
  m.def("gemm_report() -> str", &gemm_report);
}

}  // namespace fast_s2s::cpu
