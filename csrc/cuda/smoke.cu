// A one-line kernel (x + 1) that proves the CUDA half of the extension loads and launches on this
// machine before anything else runs: `fast-s2s verify --device cuda` calls it first, so a broken
// driver or an architecture the build did not target shows up as one clear failure.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace fast_s2s {
namespace {

__global__ void add_one_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = x[i] + 1.0f;
}

at::Tensor cuda_smoke(const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), "cuda_smoke: x must be a CUDA tensor, got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat, "cuda_smoke: x must be float32, got ",
              x.scalar_type());
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty_like(xc);
  const int64_t n = xc.numel();
  if (n == 0) return y;
  const int threads = 256;
  const int64_t blocks = (n + threads - 1) / threads;
  add_one_kernel<<<blocks, threads, 0, at::cuda::getCurrentCUDAStream()>>>(xc.data_ptr<float>(),
                                                                           y.data_ptr<float>(), n);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fast_s2s, CUDA, m) { m.impl("cuda_smoke", &cuda_smoke); }

}  // namespace fast_s2s
