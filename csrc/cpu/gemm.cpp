#include "cpu/gemm.h"

#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <tuple>

#include "cpu/gemm_nt.h"
#include "cpu/mkl_cblas.h"
#include "cpu/panel_gemm.h"

namespace fast_s2s::cpu::gemm {
namespace {

using mkl::kBMatrix, mkl::kNoTrans, mkl::kPacked, mkl::kRowMajor, mkl::kTrans;

bool mkl_packed_linked() {
  return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr &&
         cblas_sgemm_compute != nullptr && at::hasMKL();
}

std::optional<Backend> forced_from_env() {
  const char* text = std::getenv("FAST_S2S_GEMM");
  if (text == nullptr || *text == '\0' || std::string(text) == "auto") return std::nullopt;
  const std::optional<Backend> backend = parse(text);
  TORCH_CHECK(backend.has_value(),
              "FAST_S2S_GEMM must be auto, mkl_packed, blas, inhouse, panel or mkl_bf16, got '",
              text, "'");
  return backend;
}

struct Choice {
  Backend backend;  // the fastest product (choose_amortized: the fastest over many uses)
  bool forced;
  std::vector<std::pair<Backend, double>> best_us;  // what was measured
  // Each candidate's preparation, in best_us's order; empty where nothing is prepared (choose).
  std::vector<double> prepare_us;
};

// op, rows (a power of two), columns, depth, dtype, threads, and whether the choice was forced
// by torch.use_deterministic_algorithms (kept apart: switching it off measures again).
using Key = std::tuple<std::string, int64_t, int64_t, int64_t, int, int, bool>;

struct State {
  std::mutex mutex;
  bool env_read = false;
  std::optional<Backend> forced;
  std::map<Key, Choice> choices;
  std::set<Key> bf16_sites;  // the products mm_bf16 ran (gemm_bf16.cpp)
};

State& state() {
  static State s;
  return s;
}

int64_t pow2_at_least(int64_t m) {
  int64_t p = 1;
  while (p < m) p *= 2;
  return p;
}

// Best wall time of `run` in microseconds: one untimed warm-up (page faults, caches), then
// repeats until ~2 ms are spent (at least 3, at most 15). The minimum, not the median: a thread
// descheduled by other work on the machine adds milliseconds to a sample, never removes any, so
// the minimum is the one statistic that ranks the candidates the same on a busy machine.
double best_us(const std::function<void()>& run) {
  using clock = std::chrono::steady_clock;
  run();
  double best = 0;
  int repeats = 0;
  const auto start = clock::now();
  while (repeats < 3 || (repeats < 15 && clock::now() - start < std::chrono::milliseconds(2))) {
    const auto t0 = clock::now();
    run();
    const double us = std::chrono::duration<double, std::micro>(clock::now() - t0).count();
    best = repeats++ == 0 ? us : std::min(best, us);
  }
  return best;
}

// Packed weights are made per call (a GRU layer packs W_hh once per call): freshly mapped
// buffers would cost a page fault per 4 KiB, more than the packing, so each thread keeps the
// buffers it freed for reuse, up to kPoolBytes.
class PackPool {
 public:
  static constexpr size_t kPoolBytes = size_t(64) << 20;

  float* acquire(size_t bytes) {
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->first >= bytes) {
        float* p = it->second;
        held_ -= it->first;
        sizes_[p] = it->first;
        free_.erase(it);
        return p;
      }
    }
    const size_t rounded = (bytes + 63) / 64 * 64;  // aligned_alloc wants a multiple
    float* p = static_cast<float*>(std::aligned_alloc(64, rounded));
    TORCH_CHECK(p != nullptr, "gemm: out of memory packing a weight (", bytes, " bytes)");
    sizes_[p] = rounded;
    return p;
  }

  void release(float* p) {
    auto it = sizes_.find(p);
    if (it == sizes_.end()) return std::free(p);  // freed on another thread than it was made
    const size_t bytes = it->second;
    sizes_.erase(it);
    if (held_ + bytes > kPoolBytes) return std::free(p);
    held_ += bytes;
    free_.emplace(bytes, p);
  }

  ~PackPool() {
    for (auto& [bytes, p] : free_) std::free(p);
  }

 private:
  std::multimap<size_t, float*> free_;  // by size, smallest first
  std::map<float*, size_t> sizes_;      // buffers handed out by this thread
  size_t held_ = 0;
};

PackPool& pack_pool() {
  thread_local PackPool pool;
  return pool;
}

void release_packed(float* p) { pack_pool().release(p); }

}  // namespace

const char* name(Backend backend) {
  switch (backend) {
    case Backend::kMklPacked: return "mkl_packed";
    case Backend::kBlas: return "blas";
    case Backend::kInHouse: return "inhouse";
    case Backend::kPanel: return "panel";
    case Backend::kMklBf16: return "mkl_bf16";
  }
  return "?";
}

std::optional<Backend> parse(const std::string& text) {
  for (Backend b : kAllBackends) {
    if (text == name(b)) return b;
  }
  if (text == name(Backend::kMklBf16)) return Backend::kMklBf16;
  return std::nullopt;
}

bool available(Backend backend, at::ScalarType dtype) {
  if (dtype == at::kBFloat16) {
    return backend == Backend::kMklBf16 ? bf16_native() : available(backend, at::kFloat);
  }
  if (backend == Backend::kMklBf16) return false;
  if (dtype != at::kFloat && dtype != at::kDouble) return false;
  if (backend == Backend::kMklPacked) return dtype == at::kFloat && mkl_packed_linked();
  return true;
}

std::vector<Backend> candidates(at::ScalarType dtype) {
  std::vector<Backend> out;
  for (Backend b : kAllBackends) {
    if (available(b, dtype)) out.push_back(b);
  }
  return out;
}

std::string mkl_version() {
  if (MKL_Get_Version_String == nullptr || !at::hasMKL()) return "";
  char buffer[256] = {0};
  MKL_Get_Version_String(buffer, sizeof(buffer) - 1);
  return buffer;
}

void set_forced(std::optional<Backend> backend) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.env_read = true;  // an explicit choice overrides the environment
  s.forced = backend;
  s.choices.clear();
  s.bf16_sites.clear();
}

std::optional<Backend> pinned() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  if (!s.env_read) {
    s.forced = forced_from_env();
    s.env_read = true;
  }
  return s.forced;
}

std::optional<Backend> forced() {
  if (std::optional<Backend> p = pinned()) return p;
  if (at::globalContext().deterministicAlgorithms()) return Backend::kBlas;
  return std::nullopt;
}

namespace {

std::vector<Backend> offered_options(const Site& site, const std::vector<Backend>& offered) {
  std::vector<Backend> options;
  for (Backend b : offered) {
    if (available(b, site.dtype)) options.push_back(b);
  }
  TORCH_CHECK(!options.empty(), site.op, ": no matrix product backend for dtype ", site.dtype);
  return options;
}

// Inside a parallel region (a direction of gru_stack on its own thread) the product runs on
// the calling thread alone, whatever the pool's size: keyed as one thread.
Key key_of(const Site& site) {
  const int threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const bool deterministic = !pinned() && at::globalContext().deterministicAlgorithms();
  return Key{site.op, pow2_at_least(site.m), site.n, site.k, static_cast<int>(site.dtype),
             threads, deterministic};
}

// A pinned backend the site does not offer (mkl_packed for a one-shot product, float64) runs as
// blas: still one fixed implementation per site, so results are deterministic.
Choice pinned_choice(Backend pinned, const std::vector<Backend>& options) {
  const bool offered_here = std::find(options.begin(), options.end(), pinned) != options.end();
  return Choice{offered_here ? pinned : Backend::kBlas, true, {}, {}};
}

// select(the cached choice of `key`, or the one `measure` makes), under the lock, which
// set_forced's clear also takes. Measured outside the lock: two threads measuring the same
// site at once is harmless; the first to finish is kept.
template <typename Measure, typename Select>
Backend cached_choice(const Key& key, const Measure& measure, const Select& select) {
  State& s = state();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    auto it = s.choices.find(key);
    if (it != s.choices.end()) return select(it->second);
  }
  Choice choice = measure();
  std::lock_guard<std::mutex> lock(s.mutex);
  return select(s.choices.emplace(key, std::move(choice)).first->second);
}

}  // namespace

Backend choose(Site site, const std::vector<Backend>& offered,
               const std::function<std::function<void()>(Backend)>& trial) {
  // A product with nothing to prepare: the fastest product, whatever the number of uses.
  return choose_amortized(site, offered, 1,
                          [&](Backend b) { return AmortizedTrial{nullptr, trial(b)}; });
}

Backend choose_amortized(Site site, const std::vector<Backend>& offered, int64_t uses,
                         const std::function<AmortizedTrial(Backend)>& trial) {
  const std::vector<Backend> options = offered_options(site, offered);
  const std::optional<Backend> pinned = forced();
  auto measure = [&] {
    if (pinned) return pinned_choice(*pinned, options);
    Choice c{options.front(), false, {}, {}};
    double best = 0;
    for (Backend b : options) {
      const AmortizedTrial candidate = trial(b);
      if (candidate.prepare) c.prepare_us.push_back(best_us(candidate.prepare));
      const double product = best_us(candidate.product);
      c.best_us.emplace_back(b, product);
      if (c.best_us.size() == 1 || product < best) {
        best = product;
        c.backend = b;
      }
    }
    return c;
  };
  auto least_for_uses = [uses](const Choice& choice) {
    if (choice.forced || choice.prepare_us.empty()) return choice.backend;
    Backend least = choice.backend;
    double least_us = -1;
    for (size_t i = 0; i < choice.best_us.size(); ++i) {
      const double us = choice.prepare_us[i] + static_cast<double>(uses) * choice.best_us[i].second;
      if (least_us < 0 || us < least_us) {
        least_us = us;
        least = choice.best_us[i].first;
      }
    }
    return least;
  };
  return cached_choice(key_of(site), measure, least_for_uses);
}

void record_bf16_site(const Site& site) {
  const Key key = key_of(site);  // before the lock: key_of reads the pinned backend under it
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.bf16_sites.insert(key);
}

std::vector<std::string> report() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  std::vector<std::string> lines;
  for (const auto& [key, choice] : s.choices) {
    std::ostringstream line;
    line << std::get<0>(key) << " m<=" << std::get<1>(key) << " n=" << std::get<2>(key)
         << " k=" << std::get<3>(key) << " " << c10::toString(c10::ScalarType(std::get<4>(key)))
         << " threads=" << std::get<5>(key) << ": " << name(choice.backend);
    if (choice.forced) {
      line << (std::get<6>(key) ? " (deterministic algorithms)" : " (forced)");
    } else {
      line << " (best us:";
      for (const auto& [b, us] : choice.best_us) line << " " << name(b) << " " << us;
      if (!choice.prepare_us.empty()) {
        line << "; prepare us:";
        for (size_t i = 0; i < choice.prepare_us.size(); ++i) {
          line << " " << name(choice.best_us[i].first) << " " << choice.prepare_us[i];
        }
        line << "; per call the least prepare + uses x product";
      }
      line << ")";
    }
    lines.push_back(line.str());
  }
  for (const Key& key : s.bf16_sites) {
    std::ostringstream line;
    line << std::get<0>(key) << " m<=" << std::get<1>(key) << " n=" << std::get<2>(key)
         << " k=" << std::get<3>(key) << " BFloat16 threads=" << std::get<5>(key)
         << ": mkl_bf16 (native bfloat16 products, float32 sums)";
    lines.push_back(line.str());
  }
  return lines;
}

namespace {

constexpr int64_t panel_count(int64_t n, int64_t cols) { return (n + cols - 1) / cols; }

}  // namespace

template <typename A>
NtWeight<A>::NtWeight(Backend backend, const A* w, int64_t n, int64_t k, int64_t ldw, int64_t m)
    : backend_(backend), w_(w), n_(n), k_(k), ldw_(ldw), m_(m) {
  if (backend_ == Backend::kPanel) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    const size_t bytes =
        sizeof(A) * panel_count(n, PackedWeight<A>::kCols) * k * PackedWeight<A>::kCols;
    A* buffer = reinterpret_cast<A*>(pack_pool().acquire(bytes));
    packed_ =
        std::unique_ptr<float, void (*)(float*)>(reinterpret_cast<float*>(buffer), release_packed);
    pack_panels(w, n, k, ldw, buffer, PackedWeight<A>::kCols);
    return;
  }
  if (backend_ != Backend::kMklPacked) return;
  if constexpr (std::is_same_v<A, float>) {
    TORCH_CHECK(mkl_packed_linked(), "gemm: mkl_packed is not available in this torch build");
    if (m <= 0 || n <= 0 || k <= 0) return;
    const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, m, n, k);
    float* buffer = pack_pool().acquire(bytes);  // 64-byte aligned, as MKL asks
    packed_ = std::unique_ptr<float, void (*)(float*)>(buffer, release_packed);
    cblas_sgemm_pack(kRowMajor, kBMatrix, kTrans, m, n, k, 1.0f, w, ldw, buffer);
  } else {
    TORCH_CHECK(false, "gemm: mkl_packed multiplies float32 only");
  }
}

template <typename A>
NtWeight<A>::~NtWeight() = default;

template <typename A>
void NtWeight<A>::multiply(const A* a, int64_t lda, A* c, int64_t ldc) const {
  if (m_ == 0 || n_ == 0) return;
  switch (backend_) {
    case Backend::kMklPacked:
      if constexpr (std::is_same_v<A, float>) {
        if (k_ == 0) {
          for (int64_t i = 0; i < m_; ++i) std::fill(c + i * ldc, c + i * ldc + n_, 0.0f);
          return;
        }
        cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, m_, n_, k_, a, lda, packed_.get(), k_,
                            0.0f, c, ldc);
      }
      return;
    case Backend::kBlas: {
      const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value);
      const at::Tensor at_ = at::from_blob(const_cast<A*>(a), {m_, k_}, {lda, 1}, options);
      const at::Tensor wt = at::from_blob(const_cast<A*>(w_), {n_, k_}, {ldw_, 1}, options);
      at::Tensor ct = at::from_blob(c, {m_, n_}, {ldc, 1}, options);
      at::mm_out(ct, at_, wt.t());
      return;
    }
    case Backend::kInHouse:
      nt_column_block(NtProduct<A>{a, m_, lda, w_, n_, ldw_, k_, c, ldc}, 0, n_);
      return;
    case Backend::kPanel: {
      if (k_ == 0) {
        for (int64_t i = 0; i < m_; ++i) std::fill(c + i * ldc, c + i * ldc + n_, A(0));
        return;
      }
      constexpr int64_t C = PackedWeight<A>::kCols;
      const A* panels = reinterpret_cast<const A*>(packed_.get());
      const int64_t n_panels = panel_count(n_, C);
      if (m_ == 1) {  // one row: four panels at a time, for independent FMA chains
        panel_row_all<A>(a, panels, n_, k_, c);
        return;
      }
      for (int64_t p = 0; p < n_panels; ++p) {
        panel_rows<A>(a, lda, m_, panels + p * k_ * C, k_, c + p * C, ldc, std::min(C, n_ - p * C));
      }
      return;
    }
  }
}

template class NtWeight<float>;
template class NtWeight<double>;

namespace {

// out = a w^T with the in-house kernel, parallel over blocks of weight rows, in chunks of 64
// rows of a so a chunk stays in L2 while the weights stream past. a, w contiguous rows.
template <typename A>
void inhouse_nt_out(const at::Tensor& a, const at::Tensor& w, at::Tensor& out) {
  constexpr int64_t kRowChunk = 64;
  const int64_t M = a.size(0), K = a.size(1), N = w.size(0);
  for (int64_t m0 = 0; m0 < M; m0 += kRowChunk) {
    gemm_nt_wide<A>(
        {NtProduct<A>{a.const_data_ptr<A>() + m0 * a.stride(0), std::min(kRowChunk, M - m0),
                      a.stride(0), w.const_data_ptr<A>(), N, w.stride(0), K,
                      out.mutable_data_ptr<A>() + m0 * out.stride(0), out.stride(0)}});
  }
}

// out (M, N) = a (M, K) b (K, N) with b's rows read in place as column panels (gemm_nn_panels),
// parallel over (panel, 12-row block). a, b with unit column stride; accumulation dtype.
template <typename A>
void nn_panels_out(const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  constexpr int64_t C = PackedWeight<A>::kCols, kBlock = 12;
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  const int64_t full = N / C, tail = N - full * C, panels = full + (tail > 0);
  const A *ap = a.const_data_ptr<A>(), *bp = b.const_data_ptr<A>();
  const int64_t lda = a.stride(0), ldb = b.stride(0), ldo = out.stride(0);
  A* op = out.mutable_data_ptr<A>();
  std::vector<A> last(tail > 0 ? K * C : 0, A(0));  // the partial panel, zero-padded
  for (int64_t k = 0; tail > 0 && k < K; ++k) {
    std::copy(bp + k * ldb + full * C, bp + k * ldb + N, last.data() + k * C);
  }
  const int64_t blocks = (M + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, kBlock * C * K));
  at::parallel_for(0, panels * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t p = item / blocks, m = (item % blocks) * kBlock;
      const bool partial = p == full;
      panel_rows<A>(ap + m * lda, lda, std::min(kBlock, M - m), partial ? last.data() : bp + p * C,
                    K, op + m * ldo + p * C, ldo, partial ? tail : C, partial ? C : ldb);
    }
  });
}

// A one-shot product: blas, inhouse or (where given) panel, whichever choose() measured fastest
// for the site (or the pinned one). mkl_packed is not offered: a single product would not reuse
// the packing.
void run_fastest(const Site& site, const std::function<void()>& run_blas,
                 const std::function<void()>& run_inhouse,
                 const std::function<void()>& run_panel = nullptr) {
  std::vector<Backend> offered{Backend::kBlas, Backend::kInHouse};
  if (run_panel) offered.push_back(Backend::kPanel);
  auto runner = [&](Backend b) -> const std::function<void()>& {
    return b == Backend::kInHouse ? run_inhouse : b == Backend::kPanel ? run_panel : run_blas;
  };
  const Backend backend =
      choose(site, offered, [&](Backend candidate) { return runner(candidate); });
  runner(backend)();
}

}  // namespace

void matmul_out(const char* op, const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  TORCH_CHECK(
      b.size(0) == K && out.size(0) == M && out.size(1) == N && (N <= 1 || out.stride(1) == 1), op,
      ": matmul_out shapes ", a.sizes(), " x ", b.sizes(), " -> ", out.sizes());
  if (M == 0 || N == 0) return;
  if (K == 0) {
    out.zero_();
    return;
  }
  auto run_blas = [&] { at::mm_out(out, a, b); };
  auto run_inhouse = [&] {
    const at::Tensor ac = a.stride(1) == 1 ? a : a.contiguous();
    const at::Tensor wt = b.t().stride(1) == 1 ? b.t() : b.t().contiguous();
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "matmul_out",
                               [&] { inhouse_nt_out<scalar_t>(ac, wt, out); });
  };
  // b read in place (a's rows made contiguous if need be): the broadcast-FMA form without
  // packing, offered where b's rows are contiguous (dx = dgi W, the attention backward).
  auto run_panel = [&] {
    const at::Tensor ac = a.stride(1) == 1 ? a : a.contiguous();
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "matmul_out_panel",
                               [&] { nn_panels_out<scalar_t>(ac, b, out); });
  };
  run_fastest(Site{op, M, N, K, a.scalar_type()}, run_blas, run_inhouse,
              N <= 1 || b.stride(1) == 1 ? std::function<void()>(run_panel) : nullptr);
}

void bmm_out(const char* op, const at::Tensor& a, const at::Tensor& b, at::Tensor& out) {
  const int64_t G = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  TORCH_CHECK(b.size(0) == G && b.size(1) == K && out.size(0) == G && out.size(1) == M &&
                  out.size(2) == N && out.is_contiguous(),
              op, ": bmm_out shapes ", a.sizes(), " x ", b.sizes(), " -> ", out.sizes());
  if (G == 0 || M == 0 || N == 0) return;
  if (K == 0) {
    out.zero_();
    return;
  }
  auto run_blas = [&] { at::bmm_out(out, a, b); };
  auto run_inhouse = [&] {
    const at::Tensor ac = a.contiguous(), bt = b.transpose(1, 2).contiguous();
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "bmm_out", [&] {
      batched_gemm_nt<scalar_t>(ac.const_data_ptr<scalar_t>(), bt.const_data_ptr<scalar_t>(),
                                out.mutable_data_ptr<scalar_t>(), G, M, N, K,
                                [N](int64_t) { return N; });
    });
  };
  // Each batch's b read in place (gemm_nn_panels), one batch per task.
  auto run_panel = [&] {
    const at::Tensor ac = a.stride(2) == 1 ? a : a.contiguous();
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "bmm_out_panel", [&] {
      using A = scalar_t;
      const A *ap = ac.const_data_ptr<A>(), *bp = b.const_data_ptr<A>();
      A* op = out.mutable_data_ptr<A>();
      at::parallel_for(0, G, 1, [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; ++g) {
          gemm_nn_panels<A>(ap + g * ac.stride(0), ac.stride(1), M, bp + g * b.stride(0),
                            b.stride(1), K, N, op + g * M * N, N);
        }
      });
    });
  };
  // The shape class folds the batch into m: G x M rows against per-batch K x N.
  run_fastest(Site{op, G * M, N, K, a.scalar_type()}, run_blas, run_inhouse,
              N <= 1 || b.stride(2) == 1 ? std::function<void()>(run_panel) : nullptr);
}

}  // namespace fast_s2s::cpu::gemm
