// CUDA kernels of the Fisher ops: im2col of a chunk of samples and the square-accumulate; the per-sample
// products of a chunk are one cuBLAS batched GEMM (at::bmm_out, fp32 unless TF32 is enabled by the user).
// See fisher_common.h for the chunked driver.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include "fisher_common.h"

namespace ssl_bench {
namespace {

using fisher::ConvGeom;

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  int64_t b = (n + kThreads - 1) / kThreads;
  return int(std::min<int64_t>(b, int64_t(65535) * 8));
}

// One thread per patch element cols[n, p, k]; k fastest so that writes are coalesced.
template <typename T>
__global__ void im2col_kernel(const T* __restrict__ in, T* __restrict__ cols, int64_t total, ConvGeom g) {
  const int64_t P = g.Ho * g.Wo, K = g.C * g.kh * g.kw, khw = g.kh * g.kw;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = idx % K;
    const int64_t row = idx / K;
    const int64_t p = row % P, n = row / P;
    const int64_t c = k / khw, r = k % khw, i = r / g.kw, j = r % g.kw;
    const int64_t ih = (p / g.Wo) * g.sh - g.ph + i * g.dh;
    const int64_t iw = (p % g.Wo) * g.sw - g.pw + j * g.dw;
    T v = T(0);
    if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) v = in[((n * g.C + c) * g.H + ih) * g.W + iw];
    cols[idx] = v;
  }
}

// acc[e] += sum_n prod[n, e]^2: one thread per output entry, coalesced over e.
template <typename T>
__global__ void square_acc_kernel(const T* __restrict__ prod, T* __restrict__ acc, int64_t b, int64_t E) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < E; e += int64_t(gridDim.x) * blockDim.x) {
    T s = acc[e];
    for (int64_t n = 0; n < b; ++n) {
      const T x = prod[n * E + e];
      s += x * x;
    }
    acc[e] = s;
  }
}

void im2col_cuda(const at::Tensor& input, at::Tensor& cols, const ConvGeom& g) {
  const int64_t total = cols.numel();
  if (total == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fisher_im2col_cuda", [&] {
    im2col_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(input.const_data_ptr<scalar_t>(),
                                                                         cols.data_ptr<scalar_t>(), total, g);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void square_acc_cuda(const at::Tensor& prod, at::Tensor& acc) {
  const int64_t E = acc.numel();
  if (E == 0) return;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(prod.scalar_type(), "fisher_square_acc_cuda", [&] {
    square_acc_kernel<scalar_t><<<blocks_for(E), kThreads, 0, stream>>>(prod.const_data_ptr<scalar_t>(),
                                                                         acc.data_ptr<scalar_t>(), prod.size(0), E);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor fisher_linear_cuda(const at::Tensor& grad_out, const at::Tensor& input) {
  c10::cuda::CUDAGuard guard(input.device());
  return fisher::linear(grad_out, input, square_acc_cuda, fisher::kChunkElemsCUDA);
}

at::Tensor fisher_conv2d_cuda(const at::Tensor& grad_out, const at::Tensor& input, at::IntArrayRef kernel_size,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  c10::cuda::CUDAGuard guard(input.device());
  return fisher::conv2d(grad_out, input, kernel_size, stride, padding, dilation, im2col_cuda, square_acc_cuda,
                        fisher::kChunkElemsCUDA);
}

}  // namespace
}  // namespace ssl_bench

TORCH_LIBRARY_IMPL(ssl_bench, CUDA, m) {
  m.impl("fisher_linear", &ssl_bench::fisher_linear_cuda);
  m.impl("fisher_conv2d", &ssl_bench::fisher_conv2d_cuda);
}
