// Fused GRU cell and GRU layer on CUDA, forward and backward (torch.nn.GRUCell / torch.nn.GRU
// semantics, gate order r, z, n). Reference: fast_s2s/reference.py::gru_cell and ::gru_layer.
// The gate formulas are those of the CPU kernels, written once in csrc/common/gru_gates.h:
//   r = sigmoid(gi_r + b_ir + gh_r + b_hr),  z = sigmoid(gi_z + b_iz + gh_z + b_hz),
//   hn = gh_n + b_hn,  n = tanh(gi_n + b_in + r hn),  h' = n + z (h - n),
// and so are the workspaces: gates (B, 4H) = [r, z, n, hn] for the cell, work (T, B, 5H) =
// [r, z, n, hn, h_prev] per step for the layer, both float32 (float64 for float64 inputs).
//
// Forward, small batch (B <= kSmallBatch): gru_small_batch_kernel, one launch per step. One warp
// owns hidden unit j for up to kBatchTile rows: it streams the three weight rows of j (W_ih and
// W_hh for the cell; W_hh only for the layer, whose input projection is precomputed) in 16-byte
// loads, keeps r, z, n pre-activations for every row of its tile in registers, reduces them with
// shuffles and applies the gates in its epilogue. The weights are read once per step (once per
// tile of 8 rows), so the step is bounded by weight bandwidth, and no (B, 3H) product is ever
// written: torch.nn.GRUCell runs two cuBLAS products and about ten elementwise kernels.
// Forward, larger batch: cuBLAS products in the input dtype, then gru_gates_kernel, one thread per
// (row, unit), applies biases and gates (two launches per step instead of about a dozen).
// gru_layer computes the input projection of all T steps as one product first and keeps the
// running state in float32 between steps; steps past the longest row are skipped.
// Not done here: a persistent kernel keeping W_hh on chip across steps (Diamos et al. 2016).
//
// Backward: gru_gates_backward_kernel gives dgi, dgh and the direct part dh' z per step, and
// cuBLAS the products: dh = dgh W_hh + dh' z per step; dx, dW_ih, dW_hh once over all steps.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <vector>

#include "common/gru_checks.h"
#include "common/gru_gates.h"
#include "cuda/cuda_utils.cuh"

namespace fast_s2s::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int64_t kSmallBatch = 16;  // up to this batch: the fused matrix-vector kernel
constexpr int kBatchTile = 8;        // rows per warp in it (registers: 4 accumulators per row)

template <typename scalar_t>
struct GruWeights {
  const scalar_t* w_ih;  // (3H, I)
  const scalar_t* w_hh;  // (3H, H)
  const scalar_t* b_ih;  // (3H,) or nullptr
  const scalar_t* b_hh;  // (3H,) or nullptr
  int64_t I, H;
};

// One step's operands. The cell uses x / h_in and writes h_new / gates; the layer uses gi /
// h_acc / lengths / t and writes out_t / work_t / h_next (/ h_next_st).
template <typename scalar_t>
struct GruStep {
  using A = acc_t<scalar_t>;
  const scalar_t* x = nullptr;     // cell, small batch: (B, I)
  const scalar_t* gi = nullptr;    // (B, 3H) x W_ih^T without bias (layer; cell at large batch)
  const scalar_t* gh = nullptr;    // (B, 3H) h W_hh^T without bias (large batch)
  const scalar_t* h_in = nullptr;  // cell: (B, H)
  const A* h_acc = nullptr;        // layer: (B, H) running state
  const int64_t* lengths = nullptr;
  int64_t t = 0;
  int64_t B = 0;
  scalar_t* h_new = nullptr;      // cell: (B, H)
  A* gates = nullptr;             // cell: (B, 4H)
  scalar_t* out_t = nullptr;      // layer: output[t] (B, H)
  A* work_t = nullptr;            // layer: work[t] (B, 5H)
  A* h_next = nullptr;            // layer: (B, H)
  scalar_t* h_next_st = nullptr;  // layer, large batch: h_next in the input dtype, for cuBLAS
};

// Biases, gates and the state update of row b, unit j, from the bias-free pre-activations
// pre_r = gi_r + gh_r, pre_z = gi_z + gh_z, gi_n and gh_n.
template <typename scalar_t, bool CELL>
__device__ __forceinline__ void gru_epilogue(const GruWeights<scalar_t>& w,
                                             const GruStep<scalar_t>& st, int64_t b, int64_t j,
                                             acc_t<scalar_t> pre_r, acc_t<scalar_t> pre_z,
                                             acc_t<scalar_t> gi_n, acc_t<scalar_t> gh_n) {
  using A = acc_t<scalar_t>;
  const int64_t H = w.H;
  auto bias = [](const scalar_t* p, int64_t k) {
    return p != nullptr ? static_cast<A>(p[k]) : A(0);
  };
  const A hp = CELL ? static_cast<A>(st.h_in[b * H + j]) : st.h_acc[b * H + j];
  const bool valid = CELL || st.lengths == nullptr || st.t < st.lengths[b];
  A r = 0, z = 0, n = 0, hn = 0, h = hp;
  if (valid) {
    const GruUnit<A> u = gru_unit_forward<A>(
        pre_r + bias(w.b_ih, j) + bias(w.b_hh, j),
        pre_z + bias(w.b_ih, H + j) + bias(w.b_hh, H + j), gi_n + bias(w.b_ih, 2 * H + j), gh_n,
        bias(w.b_hh, 2 * H + j), hp, [](A x) { return dev_sigmoid(x); },
        [](A x) { return dev_tanh(x); });
    r = u.r;
    z = u.z;
    n = u.n;
    hn = u.hn;
    h = u.h;
  }
  if constexpr (CELL) {
    st.h_new[b * H + j] = static_cast<scalar_t>(h);
    A* g = st.gates + b * 4 * H;
    g[j] = r;
    g[H + j] = z;
    g[2 * H + j] = n;
    g[3 * H + j] = hn;
  } else {
    A* wk = st.work_t + b * 5 * H;
    wk[j] = r;  // zeros past the row's end: no gradient flows there
    wk[H + j] = z;
    wk[2 * H + j] = n;
    wk[3 * H + j] = hn;
    wk[4 * H + j] = hp;
    st.h_next[b * H + j] = h;  // unchanged past the row's end
    st.out_t[b * H + j] = static_cast<scalar_t>(valid ? h : A(0));
    if (st.h_next_st != nullptr) st.h_next_st[b * H + j] = static_cast<scalar_t>(h);
  }
}

// One warp's share of the three products of unit j for rows b0 .. b0 + nb - 1 of v (n_cols
// wide): r[bb] += W[j] . v[b], z[bb] += W[H + j] . v[b], n[bb] += W[2H + j] . v[b], lanes striding
// the columns in VEC-wide loads (sums per lane; the caller reduces over the warp).
template <typename scalar_t, typename VT, int VEC>
__device__ __forceinline__ void accumulate_gate_rows(const scalar_t* weight, int64_t n_cols,
                                                     int64_t H, int64_t j, const VT* v, int64_t b0,
                                                     int nb, int lane,
                                                     acc_t<scalar_t> (&r)[kBatchTile],
                                                     acc_t<scalar_t> (&z)[kBatchTile],
                                                     acc_t<scalar_t> (&n)[kBatchTile]) {
  using A = acc_t<scalar_t>;
  const scalar_t* wr = weight + j * n_cols;
  const scalar_t* wz = wr + H * n_cols;
  const scalar_t* wn = wz + H * n_cols;
  for (int64_t i = static_cast<int64_t>(lane) * VEC; i < n_cols; i += kWarpSize * VEC) {
    A wrv[VEC], wzv[VEC], wnv[VEC];
    load_pack<A, scalar_t, VEC>(wr + i, wrv);
    load_pack<A, scalar_t, VEC>(wz + i, wzv);
    load_pack<A, scalar_t, VEC>(wn + i, wnv);
#pragma unroll
    for (int bb = 0; bb < kBatchTile; ++bb) {
      if (bb < nb) {
        A vv[VEC];
        load_pack<A, VT, VEC>(v + (b0 + bb) * n_cols + i, vv);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          r[bb] += wrv[e] * vv[e];
          z[bb] += wzv[e] * vv[e];
          n[bb] += wnv[e] * vv[e];
        }
      }
    }
  }
}

// One warp per (unit j, tile of kBatchTile rows); see the top of the file. HT is the type of the
// state read: the input dtype for the cell, float32/64 for the layer's running state.
template <typename scalar_t, typename HT, int VEC, bool CELL>
__global__ void __launch_bounds__(kThreads)
    gru_small_batch_kernel(const GruWeights<scalar_t> w, const GruStep<scalar_t> st) {
  using A = acc_t<scalar_t>;
  const int lane = threadIdx.x % kWarpSize;
  const int64_t task = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpSize;
  const int64_t H = w.H;
  const int64_t n_tiles = ceil_div(st.B, kBatchTile);
  if (task >= H * n_tiles) return;  // whole warps only: no block-wide barrier below
  const int64_t j = task % H, b0 = (task / H) * kBatchTile;
  const int nb = static_cast<int>(dmin<int64_t>(kBatchTile, st.B - b0));
  A pre_r[kBatchTile], pre_z[kBatchTile], gi_n[kBatchTile], gh_n[kBatchTile];
#pragma unroll
  for (int bb = 0; bb < kBatchTile; ++bb) pre_r[bb] = pre_z[bb] = gi_n[bb] = gh_n[bb] = 0;

  if constexpr (CELL) {  // input part: W_ih rows j, H + j, 2H + j against x (gi_n apart)
    accumulate_gate_rows<scalar_t, scalar_t, VEC>(w.w_ih, w.I, H, j, st.x, b0, nb, lane, pre_r,
                                                  pre_z, gi_n);
  }
  // hidden part: W_hh rows j, H + j, 2H + j against the state (gh_n apart)
  const HT* state =
      CELL ? reinterpret_cast<const HT*>(st.h_in) : reinterpret_cast<const HT*>(st.h_acc);
  accumulate_gate_rows<scalar_t, HT, VEC>(w.w_hh, H, H, j, state, b0, nb, lane, pre_r, pre_z, gh_n);
#pragma unroll
  for (int bb = 0; bb < kBatchTile; ++bb) {
    if (bb < nb) {  // nb is the same for the whole warp
      pre_r[bb] = warp_sum(pre_r[bb]);
      pre_z[bb] = warp_sum(pre_z[bb]);
      gi_n[bb] = warp_sum(gi_n[bb]);
      gh_n[bb] = warp_sum(gh_n[bb]);
    }
  }
  // Lane bb finishes row b0 + bb (constant register indices: no local-memory arrays).
#pragma unroll
  for (int bb = 0; bb < kBatchTile; ++bb) {
    if (bb < nb && lane == bb) {
      const int64_t b = b0 + bb;
      A r = pre_r[bb], z = pre_z[bb], gn = gi_n[bb];
      if constexpr (!CELL) {  // the input projection was computed for all steps at once
        const scalar_t* gi = st.gi + b * 3 * H;
        r += static_cast<A>(gi[j]);
        z += static_cast<A>(gi[H + j]);
        gn = static_cast<A>(gi[2 * H + j]);
      }
      gru_epilogue<scalar_t, CELL>(w, st, b, j, r, z, gn, gh_n[bb]);
    }
  }
}

// Gates after cuBLAS products gi, gh (B, 3H): one thread per (row, unit).
template <typename scalar_t, bool CELL>
__global__ void __launch_bounds__(kThreads)
    gru_gates_kernel(const GruWeights<scalar_t> w, const GruStep<scalar_t> st) {
  using A = acc_t<scalar_t>;
  const int64_t H = w.H;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= st.B * H) return;
  const int64_t b = idx / H, j = idx % H;
  const scalar_t* gi = st.gi + b * 3 * H;
  const scalar_t* gh = st.gh + b * 3 * H;
  gru_epilogue<scalar_t, CELL>(w, st, b, j, static_cast<A>(gi[j]) + static_cast<A>(gh[j]),
                               static_cast<A>(gi[H + j]) + static_cast<A>(gh[H + j]),
                               static_cast<A>(gi[2 * H + j]), static_cast<A>(gh[2 * H + j]));
}

template <typename scalar_t>
struct GruBackStep {
  using A = acc_t<scalar_t>;
  const A* dh;             // (B, H) gradient of h' from later steps (or grad_h_new)
  const scalar_t* go;      // (B, H) grad_output[t], or nullptr (cell)
  const A* gates;          // row b at gates + b * gstride: [r, z, n, hn]
  int64_t gstride;         // 4H (cell) or 5H (layer)
  const A* h_prev;         // row b at h_prev + b * hstride
  int64_t hstride;         // H (cell) or 5H (layer)
  const int64_t* lengths;  // layer: (B,) or nullptr
  int64_t t;               // the step, for lengths
  A* dgi;                  // (B, 3H)
  A* dgh;                  // (B, 3H)
  A* dh_direct;            // (B, H): dh' z, or dh itself for a row that did not step
  int64_t B, H;
};

// The backward of gru_epilogue (gru_unit_backward, csrc/common/gru_gates.h), one thread per
// (row, unit).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    gru_gates_backward_kernel(const GruBackStep<scalar_t> p) {
  using A = acc_t<scalar_t>;
  const int64_t H = p.H;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= p.B * H) return;
  const int64_t b = idx / H, j = idx % H;
  A* dgi = p.dgi + b * 3 * H;
  A* dgh = p.dgh + b * 3 * H;
  if (p.lengths != nullptr && p.t >= p.lengths[b]) {  // state carried: so is its gradient
    dgi[j] = dgi[H + j] = dgi[2 * H + j] = 0;
    dgh[j] = dgh[H + j] = dgh[2 * H + j] = 0;
    p.dh_direct[idx] = p.dh[idx];
    return;
  }
  const A d = p.dh[idx] + (p.go != nullptr ? static_cast<A>(p.go[idx]) : A(0));
  const A* g = p.gates + b * p.gstride;
  const GruUnitGrad<A> u = gru_unit_backward<A>(d, g[j], g[H + j], g[2 * H + j], g[3 * H + j],
                                                p.h_prev[b * p.hstride + j]);
  dgi[j] = u.dr_pre;
  dgi[H + j] = u.dz_pre;
  dgi[2 * H + j] = u.dn_pre;
  dgh[j] = u.dr_pre;
  dgh[H + j] = u.dz_pre;
  dgh[2 * H + j] = u.dgh_n;
  p.dh_direct[idx] = u.dh_direct;
}

// ---------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t>
GruWeights<scalar_t> weights_of(const GruParams& p) {
  return {p.w_ih.const_data_ptr<scalar_t>(),
          p.w_hh.const_data_ptr<scalar_t>(),
          ptr_or_null<scalar_t>(p.b_ih),
          ptr_or_null<scalar_t>(p.b_hh),
          p.input_size,
          p.hidden};
}

int64_t blocks_for(int64_t n) { return std::max<int64_t>(1, ceil_div(n, kThreads)); }

// One step of the small-batch kernel, 16-byte loads when every row allows them.
template <typename scalar_t, typename HT, bool CELL>
void launch_small_batch(const GruWeights<scalar_t>& w, const GruStep<scalar_t>& st, bool vec16) {
  const int64_t tasks = w.H * ceil_div(st.B, kBatchTile);
  const auto grid = static_cast<unsigned>(ceil_div(tasks, kWarps));
  const auto stream = at::cuda::getCurrentCUDAStream();
  const auto kernel = vec16 ? &gru_small_batch_kernel<scalar_t, HT, kVec16<scalar_t>, CELL>
                            : &gru_small_batch_kernel<scalar_t, HT, 1, CELL>;
  FAST_S2S_LAUNCH(kernel, grid, kThreads, stream)(w, st);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> gru_cell_cuda(const at::Tensor& x, const at::Tensor& h,
                                                 const at::Tensor& w_ih, const at::Tensor& w_hh,
                                                 const std::optional<at::Tensor>& b_ih,
                                                 const std::optional<at::Tensor>& b_hh) {
  const char* op = "gru_cell";
  check_cell_inputs(op, x, h);
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  const GruParams p = check_gru_params(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto acc = gru_acc_dtype(x.scalar_type());
  const at::Tensor xc = x.contiguous(), hc = h.contiguous();
  at::Tensor h_new = at::empty({B, H}, x.options());
  at::Tensor gates = at::empty({B, 4 * H}, x.options().dtype(acc));
  if (B == 0 || H == 0) return {h_new, gates};
  at::Tensor gi, gh;
  const bool small = B <= kSmallBatch;
  if (!small) {  // cuBLAS products in the input dtype, then one gate kernel
    gi = at::mm(xc, p.w_ih.t());
    gh = at::mm(hc, p.w_hh.t());
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gru_cell_cuda", [&] {
    using A = acc_t<scalar_t>;
    const GruWeights<scalar_t> w = weights_of<scalar_t>(p);
    GruStep<scalar_t> st;
    st.B = B;
    st.x = xc.const_data_ptr<scalar_t>();
    st.h_in = hc.const_data_ptr<scalar_t>();
    st.h_new = h_new.mutable_data_ptr<scalar_t>();
    st.gates = gates.mutable_data_ptr<A>();
    if (small) {
      constexpr int V = kVec16<scalar_t>;
      const bool vec16 = I % V == 0 && H % V == 0 && aligned16({&xc, &hc, &p.w_ih, &p.w_hh});
      launch_small_batch<scalar_t, scalar_t, true>(w, st, vec16);
    } else {
      st.gi = gi.const_data_ptr<scalar_t>();
      st.gh = gh.const_data_ptr<scalar_t>();
      const auto kernel = &gru_gates_kernel<scalar_t, true>;
      FAST_S2S_LAUNCH(kernel, blocks_for(B * H), kThreads, at::cuda::getCurrentCUDAStream())(w, st);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {h_new, gates};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_cell_backward_cuda(const at::Tensor& grad_h_new, const at::Tensor& x, const at::Tensor& h,
                       const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& gates) {
  const char* op = "gru_cell_backward";
  check_cell_inputs(op, x, h);
  const int64_t B = x.size(0), I = x.size(1), H = h.size(1);
  const GruParams p = check_gru_params(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  const auto dtype = x.scalar_type();
  const auto acc = gru_acc_dtype(dtype);
  TORCH_CHECK(grad_h_new.sizes() == h.sizes() && grad_h_new.device() == h.device(), op,
              ": grad_h_new must have shape ", h.sizes(), " on ", h.device(), ", got ",
              grad_h_new.sizes(), " on ", grad_h_new.device());
  TORCH_CHECK(gates.dim() == 2 && gates.size(0) == B && gates.size(1) == 4 * H &&
                  gates.scalar_type() == acc && gates.device() == x.device(),
              op, ": gates must be the workspace the forward returned, (B, 4H) = (", B, ", ", 4 * H,
              ") ", acc, ", got ", gates.sizes(), " ", gates.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xa = x.to(acc).contiguous(), ha = h.to(acc).contiguous();
  const at::Tensor dh = grad_h_new.to(acc).contiguous(), g = gates.contiguous();
  at::Tensor dgi = at::empty({B, 3 * H}, xa.options());
  at::Tensor dgh = at::empty({B, 3 * H}, xa.options());
  at::Tensor dh_direct = at::empty({B, H}, xa.options());
  if (B * H > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "gru_cell_backward_cuda", [&] {
      using A = acc_t<scalar_t>;
      const GruBackStep<scalar_t> s{dh.const_data_ptr<A>(),
                                    nullptr,
                                    g.const_data_ptr<A>(),
                                    4 * H,
                                    ha.const_data_ptr<A>(),
                                    H,
                                    nullptr,
                                    0,
                                    dgi.mutable_data_ptr<A>(),
                                    dgh.mutable_data_ptr<A>(),
                                    dh_direct.mutable_data_ptr<A>(),
                                    B,
                                    H};
      const auto kernel = &gru_gates_backward_kernel<scalar_t>;
      FAST_S2S_LAUNCH(kernel, blocks_for(B * H), kThreads, at::cuda::getCurrentCUDAStream())(s);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const at::Tensor w_ih_a = p.w_ih.to(acc), w_hh_a = p.w_hh.to(acc);
  at::Tensor grad_x = at::mm(dgi, w_ih_a).to(dtype);
  at::Tensor grad_h = at::addmm(dh_direct, dgh, w_hh_a).to(dtype);
  at::Tensor grad_w_ih = at::mm(dgi.t(), xa).to(dtype);
  at::Tensor grad_w_hh = at::mm(dgh.t(), ha).to(dtype);
  at::Tensor grad_b_ih = dgi.sum(0).to(dtype);
  at::Tensor grad_b_hh = dgh.sum(0).to(dtype);
  return {grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh};
}

// The longest row (from a checked host copy: 0 <= len <= T; one device-to-host copy per layer
// call, as for torch.nn.utils.rnn.pack_padded_sequence) and the lengths as int64 on the device.
struct LayerLengths {
  int64_t max_len = 0;
  std::optional<at::Tensor> device;
};

LayerLengths device_layer_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                                  int64_t B, int64_t T, const at::Tensor& like) {
  const std::vector<int64_t> host = layer_lengths(op, lengths, B, T);
  LayerLengths out;
  out.max_len = B == 0 ? 0 : *std::max_element(host.begin(), host.end());
  if (lengths.has_value()) out.device = lengths->to(like.device(), at::kLong).contiguous();
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gru_layer_cuda(
    const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_ih, const std::optional<at::Tensor>& b_hh,
    const std::optional<at::Tensor>& lengths, bool reverse) {
  const char* op = "gru_layer";
  check_layer_inputs(op, x, h0);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const GruParams p = check_gru_params(op, x, I, H, w_ih, w_hh, b_ih, b_hh);
  const c10::cuda::CUDAGuard guard(x.device());
  const LayerLengths lens = device_layer_lengths(op, lengths, B, T, x);
  const auto acc = gru_acc_dtype(x.scalar_type());
  at::Tensor output = at::empty({T, B, H}, x.options());
  at::Tensor work = at::empty({T, B, 5 * H}, x.options().dtype(acc));
  // Steps no row reaches (t >= max_len) output zeros and are never run.
  if (lens.max_len < T) {
    output.narrow(0, lens.max_len, T - lens.max_len).zero_();
    work.narrow(0, lens.max_len, T - lens.max_len).zero_();
  }
  at::Tensor h_acc[2] = {h0.to(acc).contiguous().clone(), at::empty({B, H}, work.options())};
  int cur = 0;
  if (B * H > 0 && lens.max_len > 0) {
    // Every step's input projection at once, in the input dtype (bias added in the gate pass).
    const at::Tensor gi = at::mm(x.contiguous().view({T * B, I}), p.w_ih.t());
    const bool small = B <= kSmallBatch;
    at::Tensor h_st[2], gh;
    if (!small) {
      h_st[0] = h0.contiguous().clone();
      h_st[1] = at::empty({B, H}, x.options());
      gh = at::empty({B, 3 * H}, x.options());
    }
    const auto dtype = x.scalar_type();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "gru_layer_cuda", [&] {
      using A = acc_t<scalar_t>;
      const GruWeights<scalar_t> w = weights_of<scalar_t>(p);
      constexpr int V = kVec16<scalar_t>;
      const bool vec16 = H % V == 0 && aligned16({&p.w_hh});
      const auto stream = at::cuda::getCurrentCUDAStream();
      GruStep<scalar_t> st;
      st.B = B;
      st.lengths = lens.device.has_value() ? lens.device->const_data_ptr<int64_t>() : nullptr;
      for (int64_t step = 0; step < T; ++step) {
        const int64_t t = reverse ? T - 1 - step : step;
        if (t >= lens.max_len) continue;
        st.t = t;
        st.gi = gi.const_data_ptr<scalar_t>() + t * B * 3 * H;
        st.h_acc = h_acc[cur].const_data_ptr<A>();
        st.h_next = h_acc[1 - cur].mutable_data_ptr<A>();
        st.out_t = output.mutable_data_ptr<scalar_t>() + t * B * H;
        st.work_t = work.mutable_data_ptr<A>() + t * B * 5 * H;
        if (small) {
          launch_small_batch<scalar_t, A, false>(w, st, vec16);
        } else {
          at::mm_out(gh, h_st[cur], p.w_hh.t());
          st.gh = gh.const_data_ptr<scalar_t>();
          st.h_next_st = h_st[1 - cur].mutable_data_ptr<scalar_t>();
          const auto kernel = &gru_gates_kernel<scalar_t, false>;
          FAST_S2S_LAUNCH(kernel, blocks_for(B * H), kThreads, stream)(w, st);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        cur = 1 - cur;
      }
    });
  }
  return {output, h_acc[cur].to(x.scalar_type()), work};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
gru_layer_backward_cuda(const at::Tensor& grad_output, const at::Tensor& grad_h_n,
                        const at::Tensor& x, const at::Tensor& h0, const at::Tensor& w_ih,
                        const at::Tensor& w_hh, const at::Tensor& work,
                        const std::optional<at::Tensor>& lengths, bool reverse) {
  const char* op = "gru_layer_backward";
  check_layer_inputs(op, x, h0);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = h0.size(1);
  const GruParams p = check_gru_params(op, x, I, H, w_ih, w_hh, std::nullopt, std::nullopt);
  const auto dtype = x.scalar_type();
  const auto acc = gru_acc_dtype(dtype);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == T && grad_output.size(1) == B &&
                  grad_output.size(2) == H && grad_output.device() == x.device(),
              op, ": grad_output must have shape (T, B, H) = (", T, ", ", B, ", ", H, ") on ",
              x.device(), ", got ", grad_output.sizes(), " on ", grad_output.device());
  TORCH_CHECK(grad_h_n.sizes() == h0.sizes() && grad_h_n.device() == x.device(), op,
              ": grad_h_n must have shape ", h0.sizes(), " on ", x.device(), ", got ",
              grad_h_n.sizes(), " on ", grad_h_n.device());
  TORCH_CHECK(work.dim() == 3 && work.size(0) == T && work.size(1) == B && work.size(2) == 5 * H &&
                  work.scalar_type() == acc && work.device() == x.device(),
              op, ": work must be the workspace the forward returned, (T, B, 5H) ", acc, ", got ",
              work.sizes(), " ", work.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  const LayerLengths lens = device_layer_lengths(op, lengths, B, T, x);
  const at::Tensor wk = work.contiguous();
  const at::Tensor gout = grad_output.to(dtype).contiguous();
  at::Tensor dh = grad_h_n.to(acc).contiguous().clone();
  at::Tensor dgi = at::zeros({T, B, 3 * H}, wk.options());
  at::Tensor dgh = at::zeros({T, B, 3 * H}, wk.options());
  at::Tensor dh_direct = at::empty({B, H}, wk.options());
  const at::Tensor w_hh_a = p.w_hh.to(acc);
  if (B * H > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "gru_layer_bwd", [&] {
      using A = acc_t<scalar_t>;
      const auto stream = at::cuda::getCurrentCUDAStream();
      for (int64_t step = T - 1; step >= 0; --step) {  // the forward's steps, last first
        const int64_t t = reverse ? T - 1 - step : step;
        if (t >= lens.max_len) continue;  // no row stepped: dh passes through, dgi = dgh = 0
        const A* wt = wk.const_data_ptr<A>() + t * B * 5 * H;
        const GruBackStep<scalar_t> s{
            dh.const_data_ptr<A>(),
            gout.const_data_ptr<scalar_t>() + t * B * H,
            wt,
            5 * H,
            wt + 4 * H,
            5 * H,
            lens.device.has_value() ? lens.device->const_data_ptr<int64_t>() : nullptr,
            t,
            dgi.mutable_data_ptr<A>() + t * B * 3 * H,
            dgh.mutable_data_ptr<A>() + t * B * 3 * H,
            dh_direct.mutable_data_ptr<A>(),
            B,
            H};
        const auto kernel = &gru_gates_backward_kernel<scalar_t>;
        FAST_S2S_LAUNCH(kernel, blocks_for(B * H), kThreads, stream)(s);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        at::addmm_out(dh, dh_direct, dgh.select(0, t), w_hh_a);  // dh = dh' z + dgh W_hh
      }
    });
  }
  const at::Tensor dgi2 = dgi.view({T * B, 3 * H}), dgh2 = dgh.view({T * B, 3 * H});
  const at::Tensor h_prev = wk.view({T * B, 5 * H}).narrow(1, 4 * H, H);
  const at::Tensor xa = x.to(acc).contiguous().view({T * B, I});
  return {at::mm(dgi2, p.w_ih.to(acc)).view({T, B, I}).to(dtype),
          dh.to(dtype),
          at::mm(dgi2.t(), xa).to(dtype),
          at::mm(dgh2.t(), h_prev).to(dtype),
          dgi2.sum(0).to(dtype),
          dgh2.sum(0).to(dtype)};
}

}  // namespace

FAST_S2S_CUDA_LIBRARY_IMPL(m) {
  m.impl("gru_cell", &gru_cell_cuda);
  m.impl("gru_cell_backward", &gru_cell_backward_cuda);
  m.impl("gru_layer", &gru_layer_cuda);
  m.impl("gru_layer_backward", &gru_layer_backward_cuda);
}

}  // namespace fast_s2s::cuda
