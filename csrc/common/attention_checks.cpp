#include "common/attention_checks.h"

#include <c10/util/Exception.h>

namespace fast_s2s {

namespace {

void check_dtype_device(const char* op, const char* name, const at::Tensor& t,
                        const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the dtype of ",
              like_name, " (", like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " must be on the device of ", like_name,
              " (", like.device(), "), got ", t.device());
}

}  // namespace

void check_float_dtype(const char* op, const char* name, const at::Tensor& t) {
  const auto dtype = t.scalar_type();
  const bool common = dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16;
#ifdef FAST_S2S_EMULATE_CUDA
  const bool cuda_rules = true;  // the CPU emulation of the CUDA kernels (csrc/cuda/emulate.h)
#else
  const bool cuda_rules = t.is_cuda();
#endif
  if (cuda_rules) {
    TORCH_CHECK(common || dtype == at::kHalf, op, ": ", name,
                " must be float32, float64, float16 or bfloat16 on CUDA, got ", dtype);
  } else {
    TORCH_CHECK(common, op, ": ", name, " must be float32, float64 or bfloat16 on the CPU, got ",
                dtype);
  }
}

AttentionGeometry check_attention_inputs(const char* op, const at::Tensor& query,
                                         const char* query_name, const at::Tensor& keys,
                                         const char* keys_name, const at::Tensor& values,
                                         const std::optional<at::Tensor>& lengths) {
  TORCH_CHECK(query.dim() == 2 || query.dim() == 3, op, ": ", query_name,
              " must be 3-D (N, T, D) or 2-D (N, D), got shape ", query.sizes());
  TORCH_CHECK(keys.dim() == 3, op, ": ", keys_name, " must be 3-D (B, S, D), got shape ",
              keys.sizes());
  TORCH_CHECK(values.dim() == 3, op, ": values must be 3-D (B, S, Dv), got shape ", values.sizes());
  check_float_dtype(op, query_name, query);
  check_dtype_device(op, keys_name, keys, query, query_name);
  check_dtype_device(op, "values", values, query, query_name);

  AttentionGeometry g;
  g.query_2d = query.dim() == 2;
  g.N = query.size(0);
  g.T = g.query_2d ? 1 : query.size(1);
  g.Dq = query.size(-1);
  g.B = keys.size(0);
  g.S = keys.size(1);
  g.Dv = values.size(2);
  TORCH_CHECK(keys.size(2) == g.Dq, op, ": ", keys_name, " feature size must equal the ",
              query_name, " feature size ", g.Dq, ", got ", keys_name, " of shape ", keys.sizes());
  TORCH_CHECK(values.size(0) == g.B && values.size(1) == g.S, op,
              ": values must have shape (B, S, Dv) = (", g.B, ", ", g.S, ", Dv) like ", keys_name,
              ", got ", values.sizes());
  if (g.B == 0) {
    TORCH_CHECK(g.N == 0, op, ": ", keys_name, " has no source rows (B = 0) but ", query_name,
                " has ", g.N, " rows");
  } else {
    TORCH_CHECK(g.N % g.B == 0, op, ": the number of ", query_name, " rows (", g.N,
                ") must be a multiple of the number of source rows B = ", g.B,
                " (N = B * beam; row n reads source row n // beam)");
    g.beam = g.N / g.B;
  }
  if (lengths.has_value()) {
    const at::Tensor& len = *lengths;
    TORCH_CHECK(len.dim() == 1 && len.size(0) == g.B, op, ": lengths must have shape (B,) = (", g.B,
                ",), got ", len.sizes());
    TORCH_CHECK(len.scalar_type() == at::kInt || len.scalar_type() == at::kLong, op,
                ": lengths must be int32 or int64, got ", len.scalar_type());
  }
  return g;
}

void check_local_inputs(const char* op, const at::Tensor& centers, int64_t window,
                        const at::Tensor& query) {
  check_float_dtype(op, "centers", centers);
  TORCH_CHECK(centers.device() == query.device(), op, ": centers must be on the device of query (",
              query.device(), "), got ", centers.device());
  const auto rows = query.sizes().slice(0, query.dim() - 1);
  TORCH_CHECK(centers.sizes() == rows, op, ": centers must have shape ",
              query.dim() == 3 ? "(N, T) = " : "(N,) = ", rows, " like the rows of query, got ",
              centers.sizes());
  TORCH_CHECK(window >= 0, op, ": window must be a non-negative int, got ", window);
}

std::vector<int64_t> read_lengths(const char* op, const std::optional<at::Tensor>& lengths,
                                  int64_t B, int64_t limit, const char* limit_name) {
  std::vector<int64_t> out(static_cast<size_t>(B), limit);
  if (!lengths.has_value()) return out;
  const at::Tensor len = lengths->to(at::kCPU, at::kLong).contiguous();
  const int64_t* p = len.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] <= limit, op, ": lengths[", b, "] = ", p[b],
                " is out of range; every length must lie in [0, ", limit_name, "] = [0, ", limit,
                "]");
    out[b] = p[b];
  }
  return out;
}

void check_output_grad(const char* op, const char* name, const at::Tensor& grad,
                       const AttentionGeometry& g, int64_t last, const at::Tensor& like) {
  const bool ok = g.query_2d ? (grad.dim() == 2 && grad.size(0) == g.N && grad.size(1) == last)
                             : (grad.dim() == 3 && grad.size(0) == g.N && grad.size(1) == g.T &&
                                grad.size(2) == last);
  TORCH_CHECK(ok, op, ": ", name, " must match the output shape (N=", g.N, ", T=", g.T, ", ", last,
              "), got ", grad.sizes());
  TORCH_CHECK(grad.device() == like.device(), op, ": ", name, " must be on ", like.device(),
              ", got ", grad.device());
}

}  // namespace fast_s2s
