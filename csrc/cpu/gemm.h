// The one place every CPU matrix product of fast_s2s goes through. Design: docs/DESIGN.md,
// "Matrix products on the CPU".
//
// The implementations ("backends") of out = a w^T:
//   mkl_packed  MKL's packed GEMM (cblas_sgemm_pack / cblas_sgemm_compute, exported by torch's
//               CPU library on x86 builds that link MKL): w is packed once into MKL's internal
//               panel layout and reused by every product (every step of a GRU layer, every call
//               of a GRU cell with the same weights). float32 only.
//   blas        at::mm: whatever BLAS torch was built with (MKL, OpenBLAS, Accelerate, ACL).
//   inhouse     the register-tiled dot-product kernel of gemm_nt.h: no packing, no cache blocking;
//               wins only where the machine's BLAS is weak on the shape (small M on some CPUs).
//   panel       w packed once into column panels of w^T (panel_gemm.h), then broadcast-FMA
//               tiles of 4-6 rows: no horizontal sums, so it is the fast form for the few-row
//               products of a GRU layer at small batch (B = 1..16, serving and the encoder of a
//               sentence), on any ISA; its packing costs one pass over w per call. For the
//               one-shot out = a b (matmul_out, bmm_out) b's rows are read in place as the
//               panels, nothing packed (the cell backward's dx = dgi W_ih, the attention
//               products whose depth is the source length).
//   mkl_bf16    bfloat16 weights multiplied as they are on the CPU's bfloat16 instructions
//               (matmul_nt_bf16 below); offered only at bfloat16 sites, where the others
//               multiply float32 copies of the weights.
// Which one runs is measured, not guessed: the first call of a site (op, shape class, dtype,
// thread count) times every available candidate for a few milliseconds and caches the fastest
// for the process (choose()). FAST_S2S_GEMM=mkl_packed|blas|inhouse|panel|mkl_bf16 or
// set_forced() pins one; report() lists what was chosen, for `fast-s2s verify` and `fast-s2s
// bench`.
//
// Products run serially when called inside a parallel region (each task of a fused GRU step
// multiplies its own block of weight rows): MKL and OpenBLAS run single-threaded in a nested
// OpenMP region, at::parallel_for runs inline, and the in-house kernel is called serially.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace fast_s2s::cpu::gemm {

// kMklBf16: a product of bfloat16 weights on the CPU's bfloat16 instructions (matmul_nt_bf16
// below), offered only at bfloat16 sites (Site::dtype kBFloat16: the other backends multiply
// float32 copies of the weights there); not in kAllBackends, so it cannot be pinned.
enum class Backend : int { kMklPacked = 0, kBlas = 1, kInHouse = 2, kPanel = 3, kMklBf16 = 4 };
inline constexpr Backend kAllBackends[] = {Backend::kMklPacked, Backend::kBlas, Backend::kInHouse,
                                           Backend::kPanel};

const char* name(Backend backend);
// "mkl_packed" | "blas" | "inhouse" | "panel" -> the backend; anything else: nullopt.
std::optional<Backend> parse(const std::string& text);
// Whether `backend` can multiply matrices of `dtype` (float32 or float64; at a bfloat16 site,
// kMklBf16 where bf16_native(), the others on float32 copies) in this process.
bool available(Backend backend, at::ScalarType dtype);
// The backends available for dtype, in kAllBackends order.
std::vector<Backend> candidates(at::ScalarType dtype);
// The MKL version string when torch links MKL ("" otherwise).
std::string mkl_version();

// nullopt: measure (the default; FAST_S2S_GEMM is read once at the first product).
void set_forced(std::optional<Backend> backend);
// The backend pinned by set_forced or FAST_S2S_GEMM, or nullopt ("auto").
std::optional<Backend> pinned();
// The backend every product takes without measuring: the pinned one, else blas while
// torch.use_deterministic_algorithms(True) is on (a measured choice can differ from one run to
// the next: the candidates round differently, and their timings are close at small shapes),
// else nullopt: measure.
std::optional<Backend> forced();

// A product site and shape class: the cache key of a measured choice. m is the number of rows
// of a, rounded up to a power of two; n, k exact.
struct Site {
  std::string op;  // e.g. "gru_layer.recurrent"
  int64_t m = 0, n = 0, k = 0;
  at::ScalarType dtype = at::kFloat;
};

// The backend for `site` among those it offers (and this process has for the dtype): the forced
// one (blas where the site does not offer it), else the cached choice, else the fastest of
// `trial` over the candidates. trial(backend) prepares the candidate (untimed) and returns the
// callable to time: one real product of the site into scratch or into the caller's output,
// which the caller then computes again with the chosen backend.
Backend choose(Site site, const std::vector<Backend>& offered,
               const std::function<std::function<void()>(Backend)>& trial);

// For a weight prepared once per call and then multiplied `uses` times (the steps of a GRU
// layer): the backend with the least prepare + uses x product time. Packing pays off only over
// enough products: at batch 1, H = 64 the panels save ~0.25 us per product and cost ~1.5 us per
// gate's weight to pack, so a sentence of a few steps runs faster unpacked. trial(backend)
// returns the candidate's preparation and one product, each timed on its own once per site
// (the product after a preparation; a null prepare: nothing to prepare, as in choose); a
// pinned backend is used whatever `uses` is.
struct AmortizedTrial {
  std::function<void()> prepare, product;
};
Backend choose_amortized(Site site, const std::vector<Backend>& offered, int64_t uses,
                         const std::function<AmortizedTrial(Backend)>& trial);

// bfloat16 products on the CPU's own bfloat16 instructions: MKL's cblas_gemm_bf16bf16f32
// (AVX512-BF16 dot products or AMX tiles), which multiplies bfloat16 matrices exactly and
// accumulates in float32, the same arithmetic as converting both to float32 for an sgemm (only
// the order of the sums differs) without the conversion. Available where the CPU has the
// instructions, the kernels are built for AVX-512 (an avx2 build stands for an AVX2 machine)
// and torch links MKL; used there unless another backend is pinned (FAST_S2S_GEMM,
// set_forced: bfloat16 then runs in float32, as on other CPUs; pinning mkl_bf16 makes every
// bfloat16 site take it and runs float32 sites on blas). On the 512-unit cell at B = 64 (two
// threads) it is ~4x the float32 path, whose per-call conversion of the weights alone reads
// 3 MB and writes 6 MB; docs/results.md.
bool bf16_native_available();
bool bf16_native();
// out (M x N float32, unit column stride) = a (M x K) b (K x N), torch.mm semantics for
// bfloat16 a and b (any layout; rows or columns with unit stride, e.g. a .t() view, are read in
// place); `op` names the site in report(). Only where bf16_native().
void mm_bf16(const char* op, const at::Tensor& a, const at::Tensor& b, at::Tensor& out);
// out = a w^T (w: N x K), the products of a layer or cell with its weights.
inline void matmul_nt_bf16(const char* op, const at::Tensor& a, const at::Tensor& w,
                           at::Tensor& out) {
  mm_bf16(op, a, w.t(), out);
}
// A float32 operand for bfloat16 products at float32's precision: a (m x k, row stride lda)
// into parts (2m x k, contiguous) = [hi; lo], hi = a rounded to bfloat16, lo = a - hi rounded,
// so a = hi + lo + r with |r| <= 2^-17 |a|. Then a b = (hi + lo) b: two exact products summed in
// float32 (stack them as 2m rows, or as 2m columns of the depth for a^T b).
void split_bf16(const float* a, int64_t m, int64_t k, int64_t lda, at::BFloat16* parts);
// A backward's two products of one weight at bfloat16, float32's precision without converting
// the weight: grad_in (M x K float32, written) = d w and the returned grad_w (N x K bfloat16) =
// d^T in, for d (M x N float32, contiguous) split in two bfloat16 parts (split_bf16), w (N x K)
// and in (M x K) bfloat16 with contiguous rows. The parts stack as 2M rows against w (mm_bf16,
// the two float32 halves added) and as a depth of 2M against [in; in] in torch's bfloat16 mm
// (oneDNN's kernels, float32 sums, rounded once to bfloat16): faster than MKL's bf16 GEMM there
// and no float32 N x K buffer to write and convert. Only where bf16_native().
at::Tensor split_products_bf16(const char* op, const at::Tensor& d, const at::Tensor& w,
                               const at::Tensor& in, at::Tensor& grad_in);

// One line per measured or forced choice: "op m<=M n=N k=K dtype threads=T: backend
// (best time of each candidate in us)", "...: backend (forced)" or, under
// torch.use_deterministic_algorithms, "...: blas (deterministic algorithms)". Empty before the
// first product.
std::vector<std::string> report();
// Notes a bfloat16 product mm_bf16 ran, for report(), keyed like the measured choices.
void record_bf16_site(const Site& site);

// Whether `backend` keeps its own packed copy of a prepared weight (mkl_packed, panel): what a
// cache of preparations can hold once the weight's call has returned.
inline bool keeps_own_copy(Backend backend) {
  return backend == Backend::kMklPacked || backend == Backend::kPanel;
}

// A weight w (N x K, rows contiguous, row stride ldw) prepared for many products out = a w^T
// with a of exactly m rows (MKL packs for a given m), in the accumulation dtype A (float or
// double). The weight's memory must outlive the NtWeight for the blas and inhouse backends;
// mkl_packed and panel keep their own packed copy.
template <typename A>
class NtWeight {
 public:
  NtWeight(Backend backend, const A* w, int64_t n, int64_t k, int64_t ldw, int64_t m);
  NtWeight(NtWeight&&) noexcept = default;
  NtWeight& operator=(NtWeight&&) noexcept = default;
  ~NtWeight();

  // c (m x n, row stride ldc) = a (m x k, row stride lda) w^T. Serial inside a parallel region.
  void multiply(const A* a, int64_t lda, A* c, int64_t ldc) const;

 private:
  Backend backend_;
  const A* w_;
  int64_t n_, k_, ldw_, m_;
  // mkl_packed: MKL's buffer; panel: the column panels of w^T (in A, from the same pool).
  std::unique_ptr<float, void (*)(float*)> packed_{nullptr, [](float*) {}};
};

// out (M x N) = a (M x K) b (K x N), torch.mm semantics (any strides of a and b; out with unit
// column stride), for the one-shot products (a layer's input projection, a backward's dx and dW
// over all steps): blas, inhouse (with transposed contiguous copies where its A B^T form needs
// them) or, where b's rows are contiguous, panel; measured per site. a, b, out in the
// accumulation dtype.
void matmul_out(const char* op, const at::Tensor& a, const at::Tensor& b, at::Tensor& out);

// out (G x M x N) = a (G x M x K) b (G x K x N), torch.bmm semantics (out contiguous), blas,
// inhouse (on contiguous copies of a and b^T) or panel (b's rows in place), measured per site.
// Accumulation dtype.
void bmm_out(const char* op, const at::Tensor& a, const at::Tensor& b, at::Tensor& out);

}  // namespace fast_s2s::cpu::gemm
