// Fused GRU cell on the CPU, forward and backward (torch.nn.GRUCell semantics).
// Reference: fast_s2s/reference.py::gru_cell.
//
// Forward, in one parallel region: each thread computes its block of units' gi = x W_ih^T and
// gh = h W_hh^T (its rows of both weights, gru_blocks.h) and runs their gates and h' while the
// products are in cache (gru_gates.h), saving [r, z, n, W_hn h + b_hn] (B, 4H) for the backward.
// torch.nn.GRUCell runs two products and then about ten separate elementwise ops over (B, 3H)
// and (B, H) tensors. Which GEMM runs is measured per shape (gemm.h). Inside
// fast_s2s.frozen_weights() the weights' preparation (MKL packing, panels) is kept across calls
// with the same weights (prepared_cache.h), so a decoder loop packs once, where GRUCell's BLAS
// call copies the weights into its panels every time; outside it every call prepares them.
// Backward: one pass per row gives dgi, dgh; then dx = dgi W_ih, dh = dgh W_hh + dh' z,
// dW_ih = dgi^T x, dW_hh = dgh^T h, db = column sums.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/gru_blocks.h"
#include "cpu/gru_common.h"
#include "cpu/gru_gates.h"
#include "cpu/prepared_cache.h"

namespace fast_s2s::cpu {
namespace {

constexpr const char* kOp = "gru_cell";

template <typename A>
const A* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<A>() : nullptr;
}

using gemm::Backend;

// The two products of a cell call: gi = x W_ih^T and gh = h W_hh^T, by block of units.
template <typename A>
struct CellProducts {
  StepProducts<A> gi, gh;
};

// A decoder loop calls the cell with the same weights at every step; a few models' worth of
// (weights, batch) preparations are kept (each the size of its weights, for mkl_packed and panel).
// Never destroyed: at exit its packed buffers would go back to thread-local pools that are gone.
template <typename A>
PreparedCache<CellProducts<A>>& cell_cache() {
  static auto* cache = new PreparedCache<CellProducts<A>>(8);
  return *cache;
}

// bfloat16 inputs on a CPU with bfloat16 instructions (gemm::bf16_native): gi and gh as two
// whole-batch MKL products on the bfloat16 x, h and weights as given (no conversion, no
// preparation to keep), then the gates row by row in float32, as the float32 path computes them.
std::tuple<at::Tensor, at::Tensor> gru_cell_bf16_native(const at::Tensor& x, const at::Tensor& h,
                                                        const GruParams& p) {
  const int64_t B = x.size(0), H = h.size(1);
  const at::Tensor xb = x.contiguous(), hb = h.contiguous();
  const auto f32 = xb.options().dtype(at::kFloat);
  at::Tensor gi = at::empty({B, 3 * H}, f32), gh = at::empty({B, 3 * H}, f32);
  gemm::matmul_nt_bf16(kOp, xb, p.w_ih.contiguous(), gi);
  gemm::matmul_nt_bf16(kOp, hb, p.w_hh.contiguous(), gh);
  const at::Tensor hf = hb.to(at::kFloat);
  const at::Tensor bih = p.b_ih.defined() ? p.b_ih.to(at::kFloat).contiguous() : at::Tensor();
  const at::Tensor bhh = p.b_hh.defined() ? p.b_hh.to(at::kFloat).contiguous() : at::Tensor();
  at::Tensor gates = at::empty({B, 4 * H}, f32);
  at::Tensor h_new = at::empty({B, H}, x.options());
  const float *gip = gi.const_data_ptr<float>(), *ghp = gh.const_data_ptr<float>();
  const float *bi = ptr_or_null<float>(bih), *bh = ptr_or_null<float>(bhh);
  const float* hp = hf.const_data_ptr<float>();
  float* gp = gates.mutable_data_ptr<float>();
  at::BFloat16* out = h_new.mutable_data_ptr<at::BFloat16>();
  at::parallel_for(0, B, std::max<int64_t>(1, 4096 / H), [&](int64_t begin, int64_t end) {
    std::vector<float> row(H);  // h' in float32
    for (int64_t b = begin; b < end; ++b) {
      gru_gates_forward<float>({gip + b * 3 * H, H}, {ghp + b * 3 * H, H}, {bi, H}, {bh, H},
                               hp + b * H, row.data(), {gp + b * 4 * H, H}, H);
      convert_row(row.data(), out + b * H, H);
    }
  });
  return {h_new, gates};
}

std::tuple<at::Tensor, at::Tensor> gru_cell_cpu(const at::Tensor& x, const at::Tensor& h,
                                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                const std::optional<at::Tensor>& b_ih,
                                                const std::optional<at::Tensor>& b_hh) {
  check_cell_inputs(kOp, x, h);
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  if (x.scalar_type() == at::kBFloat16 && B > 0 && H > 0 && gemm::bf16_native()) {
    return gru_cell_bf16_native(x, h, check_gru_params(kOp, x, I, H, w_ih, w_hh, b_ih, b_hh));
  }
  const GruParams p = gru_params(kOp, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const auto acc = gru_acc_dtype(x.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous(), ha = h.to(acc).contiguous();
  at::Tensor gates = at::empty({B, 4 * H}, xa.options());
  at::Tensor h_new = at::empty({B, H}, x.options());
  if (B == 0 || H == 0) return {h_new, gates};
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "gru_cell_cpu", [&] {
    using A = acc_t<scalar_t>;
    const A *bih = ptr_or_null<A>(p.b_ih), *bhh = ptr_or_null<A>(p.b_hh);
    const A *xp = xa.const_data_ptr<A>(), *hp = ha.const_data_ptr<A>();
    const UnitBlocks blocks = unit_blocks(H);
    auto prepare = [&](Backend b) {
      return std::make_unique<CellProducts<A>>(CellProducts<A>{
          StepProducts<A>(b, p.w_ih, 3, blocks, B), StepProducts<A>(b, p.w_hh, 3, blocks, B)});
    };
    auto run_products = [&](CellProducts<A>& products) {
      products.gi.before_blocks(xp, I);
      products.gh.before_blocks(hp, H);
      for_each_block(blocks, [&](int64_t k) {
        products.gi.block(k, xp, I);
        products.gh.block(k, hp, H);
      });
    };
    // In a frozen-weights scope, weights the cache can track keep their preparation across
    // calls (prepared_cache.h), so the candidates are timed without it; otherwise every call
    // prepares them, and that is timed.
    const std::vector<at::Tensor> weights{p.w_ih, p.w_hh};
    std::optional<std::vector<WeightIdentity>> ids = frozen_identities(weights, {w_ih, w_hh});
    const bool cached = ids.has_value();
    const Backend backend =
        gemm::choose({cached ? "gru_cell.frozen" : kOp, B, 3 * H, I, acc},
                     {Backend::kMklPacked, Backend::kBlas, Backend::kInHouse, Backend::kPanel},
                     [&](Backend b) -> std::function<void()> {
                       if (cached) {
                         std::shared_ptr<CellProducts<A>> candidate = prepare(b);
                         return [&, candidate] { run_products(*candidate); };
                       }
                       return [&, b] { run_products(*prepare(b)); };
                     });
    const std::vector<int64_t> key{static_cast<int64_t>(backend), B, I, H, blocks.size};
    std::unique_ptr<CellProducts<A>> products;
    if (cached) products = cell_cache<A>().take(weights, key);
    if (!products) products = prepare(backend);
    A* gp = gates.mutable_data_ptr<A>();
    scalar_t* out = h_new.mutable_data_ptr<scalar_t>();
    products->gi.before_blocks(xp, I);
    products->gh.before_blocks(hp, H);
    for_each_block(blocks, [&](int64_t k) {
      const int64_t j0 = blocks.begin(k), len = blocks.len(k);
      products->gi.block(k, xp, I);
      products->gh.block(k, hp, H);
      std::vector<A> row(len);  // h' in the accumulation dtype
      for (int64_t b = 0; b < B; ++b) {
        gru_gates_forward<A>(products->gi.row(k, b), products->gh.row(k, b),
                             {bih ? bih + j0 : nullptr, H}, {bhh ? bhh + j0 : nullptr, H},
                             hp + b * H + j0, row.data(), {gp + b * 4 * H + j0, H}, len);
        convert_row(row.data(), out + b * H + j0, len);
      }
    });
    // blas holds the weight itself (its product is not prepared): not worth keeping it alive.
    if (cached && backend != Backend::kBlas) {
      cell_cache<A>().put(std::move(*ids), key, std::move(products));
    }
  });
  return {h_new, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_cell_backward_cpu(const at::Tensor& grad_h_new, const at::Tensor& x, const at::Tensor& h,
                      const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& gates) {
  const char* op = "gru_cell_backward";
  check_cell_inputs(op, x, h);
  const int64_t B = x.size(0), H = h.size(1);
  const auto dtype = x.scalar_type();
  // bfloat16 on a CPU with bfloat16 instructions: the weights stay bfloat16
  // (gemm::split_products_bf16).
  const bool bf16 = dtype == at::kBFloat16 && gemm::bf16_native();
  const GruParams p = gru_params(op, x, x.size(1), H, w_ih, w_hh, std::nullopt, std::nullopt, bf16);
  const auto acc = gru_acc_dtype(dtype);
  TORCH_CHECK(grad_h_new.sizes() == h.sizes(), op, ": grad_h_new must have shape ", h.sizes(),
              ", got ", grad_h_new.sizes());
  TORCH_CHECK(gates.dim() == 2 && gates.size(0) == B && gates.size(1) == 4 * H &&
                  gates.scalar_type() == acc,
              op, ": gates must be the workspace the forward returned, (B, 4H) = (", B, ", ", 4 * H,
              ") ", acc, ", got ", gates.sizes(), " ", gates.scalar_type());
  const at::Tensor xa = x.to(acc).contiguous(), ha = h.to(acc).contiguous();
  const at::Tensor dh = grad_h_new.to(acc).contiguous(), g = gates.contiguous();
  at::Tensor dgi = at::empty({B, 3 * H}, xa.options());
  at::Tensor dgh = at::empty({B, 3 * H}, xa.options());
  at::Tensor dh_direct = at::empty({B, H}, xa.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "gru_cell_backward_cpu", [&] {
    using A = scalar_t;
    const A *dhp = dh.const_data_ptr<A>(), *gp = g.const_data_ptr<A>(),
            *hp = ha.const_data_ptr<A>();
    A *dgip = dgi.mutable_data_ptr<A>(), *dghp = dgh.mutable_data_ptr<A>(),
      *ddp = dh_direct.mutable_data_ptr<A>();
    at::parallel_for(0, B, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, H)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t b = begin; b < end; ++b) {
                         gru_gates_backward<A>(dhp + b * H, {gp + b * 4 * H, H}, hp + b * H,
                                               {dgip + b * 3 * H, H}, {dghp + b * 3 * H, H},
                                               ddp + b * H, H);
                       }
                     });
  });
  at::Tensor grad_x = at::empty({B, x.size(1)}, xa.options());
  at::Tensor grad_h = at::empty({B, H}, xa.options());
  at::Tensor grad_w_ih, grad_w_hh;
  if (bf16) {
    grad_w_ih = gemm::split_products_bf16("gru_cell.grad_x", dgi, p.w_ih, x.contiguous(), grad_x);
    grad_w_hh = gemm::split_products_bf16("gru_cell.grad_h", dgh, p.w_hh, h.contiguous(), grad_h);
  } else {
    grad_w_ih = at::empty({3 * H, x.size(1)}, xa.options());
    grad_w_hh = at::empty({3 * H, H}, xa.options());
    gemm::matmul_out("gru_cell.grad_x", dgi, p.w_ih, grad_x);
    gemm::matmul_out("gru_cell.grad_h", dgh, p.w_hh, grad_h);
    gemm::matmul_out("gru_cell.grad_w_ih", dgi.t(), xa, grad_w_ih);
    gemm::matmul_out("gru_cell.grad_w_hh", dgh.t(), ha, grad_w_hh);
  }
  grad_h.add_(dh_direct);
  grad_x = grad_x.to(dtype);
  grad_h = grad_h.to(dtype);
  grad_w_ih = grad_w_ih.to(dtype);
  grad_w_hh = grad_w_hh.to(dtype);
  at::Tensor grad_b_ih = dgi.sum(0).to(dtype);
  at::Tensor grad_b_hh = dgh.sum(0).to(dtype);
  return {grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CPU, m) {
  m.impl("gru_cell", &gru_cell_cpu);
  m.impl("gru_cell_backward", &gru_cell_backward_cpu);
}

}  // namespace fast_s2s::cpu
