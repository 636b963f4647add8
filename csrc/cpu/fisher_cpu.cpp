// CPU kernels of the Fisher ops: im2col of a chunk of samples and the square-accumulate, parallel with
// at::parallel_for (OpenMP); the per-sample products go through the BLAS (at::bmm_out). See fisher_common.h.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include "fisher_common.h"

namespace ssl_bench {
namespace {

using fisher::ConvGeom;

void im2col_cpu(const at::Tensor& input, at::Tensor& cols, const ConvGeom& g) {
  const int64_t b = input.size(0), P = g.P(), K = g.K(), khw = g.kh * g.kw;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "fisher_im2col_cpu", [&] {
    const scalar_t* in = input.const_data_ptr<scalar_t>();
    scalar_t* out = cols.data_ptr<scalar_t>();
    at::parallel_for(0, b * P, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / P, p = row % P, oh = p / g.Wo, ow = p % g.Wo;
        const scalar_t* src = in + n * g.C * g.H * g.W;
        scalar_t* dst = out + row * K;
        for (int64_t c = 0; c < g.C; ++c) {
          for (int64_t i = 0; i < g.kh; ++i) {
            const int64_t ih = oh * g.sh - g.ph + i * g.dh;
            scalar_t* d = dst + c * khw + i * g.kw;
            if (ih < 0 || ih >= g.H) {
              for (int64_t j = 0; j < g.kw; ++j) d[j] = scalar_t(0);
              continue;
            }
            const scalar_t* s = src + (c * g.H + ih) * g.W;
            for (int64_t j = 0; j < g.kw; ++j) {
              const int64_t iw = ow * g.sw - g.pw + j * g.dw;
              d[j] = (iw >= 0 && iw < g.W) ? s[iw] : scalar_t(0);
            }
          }
        }
      }
    });
  });
}

void square_acc_cpu(const at::Tensor& prod, at::Tensor& acc) {
  const int64_t b = prod.size(0), E = acc.numel();
  AT_DISPATCH_FLOATING_TYPES(prod.scalar_type(), "fisher_square_acc_cpu", [&] {
    const scalar_t* x = prod.const_data_ptr<scalar_t>();
    scalar_t* a = acc.data_ptr<scalar_t>();
    at::parallel_for(0, E, 2048, [&](int64_t begin, int64_t end) {
      for (int64_t n = 0; n < b; ++n) {
        const scalar_t* xn = x + n * E;
        for (int64_t e = begin; e < end; ++e) a[e] += xn[e] * xn[e];
      }
    });
  });
}

at::Tensor fisher_linear_cpu(const at::Tensor& grad_out, const at::Tensor& input) {
  return fisher::linear(grad_out, input, square_acc_cpu, fisher::kChunkElemsCPU);
}

at::Tensor fisher_conv2d_cpu(const at::Tensor& grad_out, const at::Tensor& input, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  return fisher::conv2d(grad_out, input, kernel_size, stride, padding, dilation, im2col_cpu, square_acc_cpu,
                        fisher::kChunkElemsCPU);
}

}  // namespace
}  // namespace ssl_bench

TORCH_LIBRARY_IMPL(ssl_bench, CPU, m) {
  m.impl("fisher_linear", &ssl_bench::fisher_linear_cpu);
  m.impl("fisher_conv2d", &ssl_bench::fisher_conv2d_cpu);
}
