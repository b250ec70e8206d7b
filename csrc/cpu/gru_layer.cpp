// Fused GRU layer on the CPU: one layer, one direction, the whole sequence in one op, forward
// and backward through time. Reference: fast_s2s/reference.py::gru_layer.
//
// Forward: the input projection is one matrix product per chunk of steps (InputProjection); the
// recurrence runs in this C++ loop, one parallel region per step: each thread multiplies h
// by its block of W_hh's rows (prepared once per call, packed for MKL) and runs the gates of its
// units on the result while it is in cache (gru_blocks.h). Per step and row it saves
// [r, z, n, hn, h_prev] (the (T, B, 5H) workspace) for the backward.
// lengths: steps t >= lengths[b] leave row b's state unchanged and output zeros (packed-sequence
// semantics of torch.nn.GRU); with reverse the steps run from T-1 down to 0, so each row starts at
// its own last valid step. Steps past the longest row are skipped outright.
// Backward runs the steps in the opposite order, one parallel region per step too: each thread
// finishes its units of dh = dgh_(t+1) W_hh + dh' z, adds doutput[t] and runs the gate backward
// of its units. Afterwards dx, dW_ih, dW_hh are one matrix product each over all steps, and the
// bias gradients column sums. Which GEMM runs each product is measured (gemm.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/gru_blocks.h"
#include "cpu/gru_common.h"
#include "cpu/gru_gates.h"
#include "cpu/prepared_cache.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "gru_layer";

template <typename A>
const A* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<A>() : nullptr;
}

using gemm::Backend;
constexpr Backend kStepBackends[] = {Backend::kMklPacked, Backend::kBlas, Backend::kInHouse,
                                     Backend::kPanel};

// Inside fast_s2s.frozen_weights() (an encoder serving one sentence after another), a layer's
// W_ih prepared for its input projection (packed for MKL, or into panels) is kept across calls,
// as the runtimes keep their weights packed per session: otherwise MKL's sgemm packs W_ih again
// for every product, which at a sentence's 25 rows took as long as the product itself (half of
// the MKL time of a T = 25, H = 256 encoder, one thread). One entry per weight and chunk height
// (MKL packs for a given number of rows); never destroyed (see gru_cell.cpp's cell_cache).
template <typename A>
PreparedCache<gemm::NtWeight<A>>& input_cache() {
  static auto* cache = new PreparedCache<gemm::NtWeight<A>>(32);
  return *cache;
}

// x_t W_ih^T for the steps in order, computed a chunk of steps at a time (one product of at least
// kChunkRows rows) into a buffer that each thread keeps across calls: the projection goes from
// the product to the gates through cache, and a call allocates no (T*B, 3H) tensor, whose fresh
// pages cost more than the product on a VM (a page fault per 4 KiB). `given_w_ih` is the
// caller's tensor, which a prepared W_ih is kept for (w_ih may be a per-call copy of it).
template <typename A>
class InputProjection {
 public:
  static constexpr int64_t kChunkRows = 256;

  InputProjection(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& given_w_ih,
                  bool reverse, int64_t max_len)
      : x_(x),
        w_ih_(w_ih),
        given_w_ih_(given_w_ih),
        reverse_(reverse),
        max_len_(max_len),
        B_(x.size(1)),
        N_(w_ih.size(0)),
        chunk_(std::max<int64_t>(
            1, std::min<int64_t>(x.size(0), kChunkRows / std::max<int64_t>(1, x.size(1))))) {
    buffer().resize(chunk_ * B_ * N_);
  }

  // Row block (B, 3H) of step t; steps are asked for in the layer's order.
  const A* step(int64_t t) {
    if (t < lo_ || t >= hi_) {
      // The chunk of steps that starts at t in the layer's direction, within [0, max_len).
      lo_ = reverse_ ? std::max<int64_t>(0, t + 1 - chunk_) : t;
      hi_ = reverse_ ? t + 1 : std::min(max_len_, t + chunk_);
      const int64_t rows = (hi_ - lo_) * B_;
      at::Tensor out = at::from_blob(buffer().data(), {rows, N_},
                                     x_.options().dtype(c10::CppTypeToScalarType<A>::value));
      const at::Tensor xs = x_.narrow(0, lo_, hi_ - lo_).view({rows, x_.size(2)});
      if (x_.scalar_type() == at::kBFloat16) {  // bfloat16 x and w_ih: gemm::bf16_native
        gemm::matmul_nt_bf16("gru_layer.input", xs, w_ih_, out);
      } else if (!multiply_prepared(xs, out)) {
        gemm::matmul_out("gru_layer.input", xs, w_ih_.t(), out);
      }
    }
    return buffer().data() + (t - lo_) * B_ * N_;
  }

 private:
  // out = xs W_ih^T with W_ih prepared (NtWeight) where that is the way; false where the
  // one-shot product (matmul_out) is, having done nothing. In a frozen-weights scope where
  // W_ih can be tracked, the four backends are measured on their products alone (as the
  // recurrent product's are there) and a packed W_ih (mkl_packed, panel) is kept in
  // input_cache. Outside one, only a pinned mkl_packed or panel prepares W_ih, per call: so a
  // pinned backend computes the same in a frozen scope and out of it, bit for bit.
  bool multiply_prepared(const at::Tensor& xs, at::Tensor& out) {
    using gemm::Backend;
    const std::optional<Backend> pinned = gemm::forced();
    const bool packs = pinned && gemm::keeps_own_copy(*pinned);
    std::optional<std::vector<WeightIdentity>> ids;
    if (!pinned || packs) ids = frozen_identities({w_ih_}, {given_w_ih_});
    const int64_t rows = xs.size(0), K = xs.size(1);
    if (K == 0) return false;  // matmul_out writes the zeros
    if (!pinned && !ids) return multiply_per_call(xs, out);
    if (!ids && !packs) return false;
    const A *a = xs.const_data_ptr<A>(), *w = w_ih_.const_data_ptr<A>();
    A* c = out.mutable_data_ptr<A>();
    std::unique_ptr<gemm::NtWeight<A>> trial;
    const Backend backend = gemm::choose(
        {ids ? "gru_layer.input.frozen" : "gru_layer.input", rows, N_, K, w_ih_.scalar_type()},
        {Backend::kMklPacked, Backend::kBlas, Backend::kInHouse, Backend::kPanel},
        [&](Backend b) -> std::function<void()> {
          trial = std::make_unique<gemm::NtWeight<A>>(b, w, N_, K, K, rows);
          return [&] { trial->multiply(a, K, c, N_); };
        });
    const bool keepable = ids && gemm::keeps_own_copy(backend);
    const std::vector<int64_t> key{static_cast<int64_t>(backend), rows, N_, K};
    std::unique_ptr<gemm::NtWeight<A>> kept;
    if (keepable) kept = input_cache<A>().take({w_ih_}, key);
    if (!kept) kept = std::make_unique<gemm::NtWeight<A>>(backend, w, N_, K, K, rows);
    kept->multiply(a, K, c, N_);
    if (keepable) input_cache<A>().put(std::move(*ids), key, std::move(kept));
    return true;
  }

  // Outside a frozen scope, on auto, where the product has one thread (a direction of a
  // bidirectional layer runs on its own, or the process has one): W_ih prepared once for this
  // call's full chunks where that pays over them (gemm::choose_amortized: one preparation, then
  // a product per full chunk), else multiplied as it is. A batch of 16 sentences of 50 steps is
  // three chunks of 256 rows: panels packed once for the three ran faster than the one-shot
  // product (docs/results.md); a batch-1 sentence is one chunk, where packing does not pay.
  // With several threads free the one-shot product runs on all of them, which a prepared
  // weight's product (serial) would not. A shorter last chunk takes the one-shot product (an
  // MKL packing is made for its number of rows).
  bool multiply_per_call(const at::Tensor& xs, at::Tensor& out) {
    using gemm::Backend;
    const int64_t rows = xs.size(0), K = xs.size(1);
    const bool one_thread = at::in_parallel_region() || at::get_num_threads() == 1;
    if (rows != chunk_ * B_ || !one_thread) return false;
    const A *a = xs.const_data_ptr<A>(), *w = w_ih_.const_data_ptr<A>();
    A* c = out.mutable_data_ptr<A>();
    if (!per_call_) {
      std::unique_ptr<gemm::NtWeight<A>> trial;
      const Backend backend = gemm::choose_amortized(
          {"gru_layer.input.call", rows, N_, K, w_ih_.scalar_type()},
          {Backend::kMklPacked, Backend::kBlas, Backend::kInHouse, Backend::kPanel},
          max_len_ / chunk_, [&](Backend b) -> gemm::AmortizedTrial {
            return {[&, b] { trial = std::make_unique<gemm::NtWeight<A>>(b, w, N_, K, K, rows); },
                    [&] { trial->multiply(a, K, c, N_); }};
          });
      per_call_ = std::make_unique<gemm::NtWeight<A>>(backend, w, N_, K, K, rows);
    }
    per_call_->multiply(a, K, c, N_);
    return true;
  }

  static std::vector<A>& buffer() {
    thread_local std::vector<A> storage;
    return storage;
  }
  std::unique_ptr<gemm::NtWeight<A>> per_call_;  // multiply_per_call's W_ih, for this call
  const at::Tensor& x_;
  const at::Tensor& w_ih_;
  const at::Tensor& given_w_ih_;
  bool reverse_;
  int64_t max_len_, B_, N_, chunk_;
  int64_t lo_ = 0, hi_ = 0;
};

// At least n elements of a buffer the calling thread keeps across calls (a layer's running
// state and step scratch): a few KiB per call whose fresh allocation and zeroing showed in a
// one-sentence encoder's profile. Not reentrant: a thread runs one layer at a time.
template <typename A>
A* layer_scratch(int64_t n) {
  thread_local std::vector<A> storage;
  if (static_cast<int64_t>(storage.size()) < n) storage.resize(n);
  return storage.data();
}

// Inside fast_s2s.frozen_weights() (an encoder serving one sentence after another), a layer's
// prepared W_hh is kept across calls as gru_cell's weights are (prepared_cache.h): packing it
// into panels takes about as long as nine of its per-step products (2.4 us at H = 64, 41 us at
// H = 256, one thread). A few models' layers and directions are kept. Never destroyed (see
// gru_cell.cpp's cell_cache).
template <typename A>
PreparedCache<StepProducts<A>>& layer_cache() {
  static auto* cache = new PreparedCache<StepProducts<A>>(16);
  return *cache;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_forward(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& lengths, bool reverse) {
  return gru_layer_forward_into(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, LayerTarget{});
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_forward_into(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& lengths, bool reverse, const LayerTarget& target) {
  check_layer_inputs(kOp, x, h0);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  // On a CPU with bfloat16 instructions (gemm::bf16_native) a bfloat16 layer's input projection
  // multiplies x and w_ih as they are, and its recurrent product is measured against the
  // float32 backends as mkl_bf16 (the float32 state split in two bfloat16 parts, gru_blocks.h):
  // both weights stay bfloat16 here, W_hh converted only for a float32 backend.
  const bool bf16_input_products = x.scalar_type() == at::kBFloat16 && gemm::bf16_native();
  const GruParams p = gru_params(kOp, x, I, H, w_ih, w_hh, b_ih, b_hh, bf16_input_products);
  const std::vector<int64_t> lens = layer_lengths(kOp, lengths, B, T);
  const int64_t max_len = B == 0 ? 0 : *std::max_element(lens.begin(), lens.end());
  const auto acc = gru_acc_dtype(x.scalar_type());
  const at::Tensor xa = bf16_input_products ? x.contiguous() : contiguous_as(x, acc);
  const at::Tensor h0a = contiguous_as(h0, acc);
  at::Tensor output = target.output.defined() ? target.output : at::empty({T, B, H}, x.options());
  TORCH_CHECK(output.sizes() == at::IntArrayRef({T, B, H}) && output.stride(2) == 1 &&
                  output.scalar_type() == x.scalar_type(),
              kOp, ": the output view must be (T, B, H) with unit feature stride, got ",
              output.sizes());
  at::Tensor h_n = target.h_n.defined() ? target.h_n : at::empty({B, H}, x.options());
  TORCH_CHECK(h_n.sizes() == at::IntArrayRef({B, H}) && h_n.is_contiguous() &&
                  h_n.scalar_type() == x.scalar_type(),
              kOp, ": the h_n view must be a contiguous (B, H), got ", h_n.sizes());
  at::Tensor work =
      target.keep_work ? at::empty({T, B, 5 * H}, x.options().dtype(acc)) : at::Tensor();
  if (T == 0 || B == 0 || H == 0) {
    if (work.defined()) work.zero_();
    h_n.copy_(h0);
    return {output.zero_(), h_n, work};
  }
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "gru_layer_cpu", [&] {
    using A = acc_t<scalar_t>;
    const A *bih = ptr_or_null<A>(p.b_ih), *bhh = ptr_or_null<A>(p.b_hh);
    // The running state, two (B, H) rows swapped per step, and without a backward one step's
    // [r, z, n, hn, h_prev] scratch for the gates.
    A* scratch = layer_scratch<A>(2 * B * H + (target.keep_work ? 0 : B * 5 * H));
    A* hp = scratch;
    A* hq = scratch + B * H;
    A* work_base = target.keep_work ? work.mutable_data_ptr<A>() : scratch + 2 * B * H;
    std::copy(h0a.const_data_ptr<A>(), h0a.const_data_ptr<A>() + B * H, hp);
    const UnitBlocks blocks = unit_blocks(H);
    // The W_hh a backend multiplies: p.w_hh (bfloat16 for mkl_bf16), else its float32 copy,
    // made once per call when a bfloat16 layer needs it.
    at::Tensor w_hh_acc = bf16_input_products ? at::Tensor() : p.w_hh;
    auto recurrent_weight = [&](Backend b) -> const at::Tensor& {
      if (b == Backend::kMklBf16) return p.w_hh;
      if (!w_hh_acc.defined()) w_hh_acc = p.w_hh.to(acc).contiguous();
      return w_hh_acc;
    };
    std::map<Backend, std::unique_ptr<StepProducts<A>>> prepared;
    auto prepare = [&](Backend b) -> StepProducts<A>& {
      auto& slot = prepared[b];
      if (!slot) slot = std::make_unique<StepProducts<A>>(b, recurrent_weight(b), 3, blocks, B);
      return *slot;
    };
    // In a frozen-weights scope a W_hh the cache can track is prepared once for many calls, so
    // the candidates are timed on their products alone; otherwise W_hh is prepared once per
    // call (for a bfloat16 layer's float32 backends, its conversion included) and multiplied
    // at each of max_len steps.
    const std::vector<at::Tensor> weights{p.w_hh};
    std::optional<std::vector<WeightIdentity>> ids = frozen_identities(weights, {w_hh});
    const bool cached = ids.has_value();
    std::vector<Backend> offered{std::begin(kStepBackends), std::end(kStepBackends)};
    if (bf16_input_products) offered.push_back(Backend::kMklBf16);
    const auto site_dtype = bf16_input_products ? at::kBFloat16 : acc;
    const auto one_step = [&](Backend b) { return [&, b] { prepare(b).run_step(hp, H); }; };
    // A candidate's preparation as a call without a frozen scope pays it: for a bfloat16 layer's
    // float32 backends, the conversion of W_hh included.
    const auto prepare_once = [&](Backend b) {
      return [&, b] {
        const bool convert = bf16_input_products && b != Backend::kMklBf16;
        StepProducts<A>(b, convert ? p.w_hh.to(acc).contiguous() : p.w_hh, 3, blocks, B);
      };
    };
    Backend backend;
    if (cached) {
      backend = gemm::choose({"gru_layer.recurrent.frozen", B, 3 * H, H, site_dtype}, offered,
                             [&](Backend b) -> std::function<void()> { return one_step(b); });
    } else {
      backend = gemm::choose_amortized(
          {"gru_layer.recurrent", B, 3 * H, H, site_dtype}, offered, max_len,
          [&](Backend b) -> gemm::AmortizedTrial { return {prepare_once(b), one_step(b)}; });
    }
    const std::vector<int64_t> key{static_cast<int64_t>(backend), B, H, blocks.size};
    std::unique_ptr<StepProducts<A>> kept;
    if (cached) kept = layer_cache<A>().take(weights, key);
    if (!kept) kept = std::move(prepared[backend]);
    if (!kept) {
      kept = std::make_unique<StepProducts<A>>(backend, recurrent_weight(backend), 3, blocks, B);
    }
    StepProducts<A>& gh = *kept;
    scalar_t* out = output.mutable_data_ptr<scalar_t>();
    const int64_t out_t = output.stride(0), out_b = output.stride(1);
    InputProjection<A> projection(xa, p.w_ih, w_ih, reverse, max_len);
    for (int64_t step = 0; step < T; ++step) {
      const int64_t t = reverse ? T - 1 - step : step;
      A* wt = work_base + (target.keep_work ? t : 0) * B * 5 * H;
      if (t >= max_len) {  // no row is running at this step: zeros, no product
        for (int64_t b = 0; b < B; ++b) {
          std::fill(out + t * out_t + b * out_b, out + t * out_t + b * out_b + H, scalar_t(0));
        }
        if (target.keep_work) std::fill(wt, wt + B * 5 * H, A(0));
        continue;
      }
      const A* gip = projection.step(t);
      gh.before_blocks(hp, H);
      for_each_block(blocks, [&](int64_t k) {
        const int64_t j0 = blocks.begin(k), len = blocks.len(k);
        gh.block(k, hp, H);
        for (int64_t b = 0; b < B; ++b) {
          const A* h_b = hp + b * H + j0;
          A* h_new = hq + b * H + j0;
          A* wb = wt + b * 5 * H + j0;
          scalar_t* ob = out + t * out_t + b * out_b + j0;
          if (target.keep_work) std::copy(h_b, h_b + len, wb + 4 * H);  // h_prev, for backward
          if (t < lens[b]) {
            gru_gates_forward<A>({gip + b * 3 * H + j0, H}, gh.row(k, b),
                                 {bih ? bih + j0 : nullptr, H}, {bhh ? bhh + j0 : nullptr, H}, h_b,
                                 h_new, {wb, H}, len);
            convert_row(h_new, ob, len);
          } else {  // past this row's end: state kept, output zero, no gradient
            std::copy(h_b, h_b + len, h_new);
            if (target.keep_work) {
              for (int g = 0; g < 4; ++g) std::fill(wb + g * H, wb + g * H + len, A(0));
            }
            std::fill(ob, ob + len, scalar_t(0));
          }
        }
      });
      std::swap(hp, hq);
    }
    convert_row(hp, h_n.mutable_data_ptr<scalar_t>(), B * H);
    // blas and mkl_bf16 hold W_hh itself (nothing prepared): not worth keeping them alive. For
    // a bfloat16 layer in-house products would point into this call's float32 copy: kept only
    // where the backend keeps its own packed copy.
    const bool owns_copy = gemm::keeps_own_copy(backend);
    const bool keepable = bf16_input_products ? owns_copy : backend != Backend::kBlas;
    if (cached && keepable) layer_cache<A>().put(std::move(*ids), key, std::move(kept));
  });
  return {output, h_n, work};
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward_cpu(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                       const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const at::Tensor& work,
                       const std::optional<at::Tensor>& lengths, bool reverse) {
  const char* op = "gru_layer_backward";
  check_layer_inputs(op, x, h0);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const auto dtype = x.scalar_type();
  // bfloat16 on a CPU with bfloat16 instructions: the products with W_ih and x stay bfloat16
  // (gemm::split_products_bf16); the recurrent pass runs on a float32 copy of W_hh as before.
  const bool bf16 = dtype == at::kBFloat16 && gemm::bf16_native();
  const GruParams p = gru_params(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt, bf16);
  const std::vector<int64_t> lens = layer_lengths(op, lengths, B, T);
  const auto acc = gru_acc_dtype(dtype);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == T && grad_output.size(1) == B &&
                  grad_output.size(2) == H,
              op, ": grad_output must have shape (T, B, H) = (", T, ", ", B, ", ", H, "), got ",
              grad_output.sizes());
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes(), op, ": grad_h_n must have shape ", h0.sizes(),
              ", got ", grad_h_n.sizes());
  TORCH_CHECK(work.dim() == 3 && work.size(0) == T && work.size(1) == B && work.size(2) == 5 * H &&
                  work.scalar_type() == acc,
              op, ": work must be the workspace the forward returned, (T, B, 5H) ", acc, ", got ",
              work.sizes(), " ", work.scalar_type());
  const at::Tensor wk = work.contiguous();
  const at::Tensor gout = grad_output.to(acc).contiguous();
  const at::TensorOptions acc_options = wk.options();
  at::Tensor dh = grad_h_n.to(acc).contiguous().clone();
  // Every entry is written below (the gates' gradients, or zero at steps and rows past a
  // sequence's end): zero-filling them first cost a pass over 2 x T x B x 3H per call.
  at::Tensor dgi = at::empty({T, B, 3 * H}, acc_options);
  at::Tensor dgh = at::empty({T, B, 3 * H}, acc_options);
  at::Tensor dh_direct = at::empty({B, H}, acc_options);
  if (T > 0 && B > 0 && H > 0) {
    AT_DISPATCH_FLOATING_TYPES(acc, "gru_layer_backward_cpu", [&] {
      using A = scalar_t;
      const at::Tensor w_hh_t = p.w_hh.t().to(acc).contiguous();  // (H, 3H): rows per unit
      const UnitBlocks blocks = unit_blocks(H);
      std::map<Backend, std::unique_ptr<StepProducts<A>>> prepared;
      auto prepare = [&](Backend b) -> StepProducts<A>& {
        auto& slot = prepared[b];
        if (!slot) slot = std::make_unique<StepProducts<A>>(b, w_hh_t, 1, blocks, B);
        return *slot;
      };
      const A* dgh_last = dgh.const_data_ptr<A>() + (T - 1) * B * 3 * H;
      const int64_t steps = B == 0 ? 0 : *std::max_element(lens.begin(), lens.end());
      const Backend backend = gemm::choose_amortized(
          {"gru_layer.recurrent_backward", B, H, 3 * H, acc},
          {std::begin(kStepBackends), std::end(kStepBackends)}, steps,
          [&](Backend b) -> gemm::AmortizedTrial {
            return {[&, b] { StepProducts<A>(b, w_hh_t, 1, blocks, B); },
                    [&, b, dgh_last] { prepare(b).run_step(dgh_last, 3 * H); }};
          });
      StepProducts<A>& dgh_w = prepare(backend);
      A* dhp = dh.mutable_data_ptr<A>();
      A* ddp = dh_direct.mutable_data_ptr<A>();
      // dh[:, block k] = dgh[t_owed] W_hh[:, block k] + dh' z: the part of dh that the step
      // processed before (t_owed) passes back through W_hh. dgh_w.before_blocks came first.
      auto finish_dh = [&](int64_t k, int64_t t_owed) {
        const int64_t j0 = blocks.begin(k), len = blocks.len(k);
        dgh_w.block(k, dgh.const_data_ptr<A>() + t_owed * B * 3 * H, 3 * H);
        for (int64_t b = 0; b < B; ++b) {
          const A* c = dgh_w.row(k, b).p;
          for (int64_t j = 0; j < len; ++j) dhp[b * H + j0 + j] = c[j] + ddp[b * H + j0 + j];
        }
      };
      int64_t t_owed = -1;  // the step whose dgh has not yet gone back through W_hh
      for (int64_t step = T - 1; step >= 0; --step) {
        const int64_t t = reverse ? T - 1 - step : step;
        A* dgit = dgi.mutable_data_ptr<A>() + t * B * 3 * H;
        A* dght = dgh.mutable_data_ptr<A>() + t * B * 3 * H;
        bool any_valid = false;
        for (int64_t b = 0; b < B; ++b) {
          if (t < lens[b]) {
            any_valid = true;
          } else {  // past row b's end: no gate gradient at this step
            std::fill(dgit + b * 3 * H, dgit + (b + 1) * 3 * H, A(0));
            std::fill(dght + b * 3 * H, dght + (b + 1) * 3 * H, A(0));
          }
        }
        if (!any_valid) continue;  // dh passes through unchanged
        const A* wt = wk.const_data_ptr<A>() + t * B * 5 * H;
        const A* go = gout.const_data_ptr<A>() + t * B * H;
        if (t_owed >= 0) dgh_w.before_blocks(dgh.const_data_ptr<A>() + t_owed * B * 3 * H, 3 * H);
        for_each_block(blocks, [&](int64_t k) {
          const int64_t j0 = blocks.begin(k), len = blocks.len(k);
          if (t_owed >= 0) finish_dh(k, t_owed);
          for (int64_t b = 0; b < B; ++b) {
            A* dhb = dhp + b * H + j0;
            A* ddb = ddp + b * H + j0;
            if (t < lens[b]) {
              for (int64_t j = 0; j < len; ++j) dhb[j] += go[b * H + j0 + j];
              const A* wb = wt + b * 5 * H + j0;
              gru_gates_backward<A>(dhb, {wb, H}, wb + 4 * H, {dgit + b * 3 * H + j0, H},
                                    {dght + b * 3 * H + j0, H}, ddb, len);
            } else {  // the state was carried unchanged: its gradient too
              std::copy(dhb, dhb + len, ddb);
            }
          }
        });
        t_owed = t;
      }
      if (t_owed >= 0) {
        dgh_w.before_blocks(dgh.const_data_ptr<A>() + t_owed * B * 3 * H, 3 * H);
        for_each_block(blocks, [&](int64_t k) { finish_dh(k, t_owed); });
      }
    });
  }
  const at::Tensor dgi2 = dgi.view({T * B, 3 * H}), dgh2 = dgh.view({T * B, 3 * H});
  const at::Tensor h_prev = wk.view({T * B, 5 * H}).narrow(1, 4 * H, H);
  at::Tensor grad_x = at::empty({T * B, I}, acc_options);
  at::Tensor grad_w_ih;
  if (bf16) {
    const at::Tensor x2 = x.contiguous().view({T * B, I});
    grad_w_ih = gemm::split_products_bf16("gru_layer.grad_x", dgi2, p.w_ih, x2, grad_x);
  } else {
    gemm::matmul_out("gru_layer.grad_x", dgi2, p.w_ih, grad_x);
    grad_w_ih = at::empty({3 * H, I}, acc_options);
    const at::Tensor xa = x.to(acc).contiguous().view({T * B, I});
    gemm::matmul_out("gru_layer.grad_w_ih", dgi2.t(), xa, grad_w_ih);
  }
  at::Tensor grad_w_hh = at::empty({3 * H, H}, acc_options);
  gemm::matmul_out("gru_layer.grad_w_hh", dgh2.t(), h_prev, grad_w_hh);
  grad_x = grad_x.view({T, B, I}).to(dtype);
  grad_w_ih = grad_w_ih.to(dtype);
  grad_w_hh = grad_w_hh.to(dtype);
  at::Tensor grad_b_ih = dgi2.sum(0).to(dtype);
  at::Tensor grad_b_hh = dgh2.sum(0).to(dtype);
  return {grad_x, dh.to(dtype), grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("gru_layer", &gru_layer_forward);
  m.impl("gru_layer_backward", &gru_layer_backward_cpu);
}

}  // namespace fast_s2s::cpu
