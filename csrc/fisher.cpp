// Per-sample Fisher diagonal ops (issue 7, op 2): schemas and shape-only (Meta) kernels.
//
//   fisher_linear(grad_out, input) -> [O, F]:  sum_n (G_n^T X_n)^2, G_n = grad_out[n] ([O] or [L, O]),
//                                             X_n = input[n] ([F] or [L, F]).
//   fisher_conv2d(grad_out, input, kernel_size, stride, padding, dilation) -> [O, C*kh*kw]:
//                                             sum_n (G_n U_n)^2, G_n = grad_out[n] as [O, Ho*Wo],
//                                             U_n = the unfolded patches of input[n] as [Ho*Wo, C*kh*kw]
//                                             (groups = 1; the Python side splits grouped convs).
// The backend kernels are in csrc/cpu/fisher_cpu.cpp and csrc/cuda/fisher.cu. No autograd: these
// are statistics of gradients, not differentiated further.
#include <torch/library.h>
#include <ATen/ATen.h>

namespace ssl_bench {
namespace {

at::ScalarType fisher_out_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

at::Tensor fisher_linear_meta(const at::Tensor& grad_out, const at::Tensor& input) {
  TORCH_CHECK(grad_out.dim() == input.dim() && (input.dim() == 2 || input.dim() == 3),
              "fisher_linear: grad_out and input must both be [N, *] or both [N, L, *]");
  return at::empty({grad_out.size(-1), input.size(-1)},
                   input.options().dtype(fisher_out_dtype(input.scalar_type())));
}

at::Tensor fisher_conv2d_meta(const at::Tensor& grad_out, const at::Tensor& input, at::IntArrayRef kernel_size,
                              at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(grad_out.dim() == 4 && input.dim() == 4, "fisher_conv2d: grad_out and input must be 4-d");
  TORCH_CHECK(kernel_size.size() == 2, "fisher_conv2d: kernel_size must have 2 entries");
  return at::empty({grad_out.size(1), input.size(1) * kernel_size[0] * kernel_size[1]},
                   input.options().dtype(fisher_out_dtype(input.scalar_type())));
}

}  // namespace
}  // namespace ssl_bench

TORCH_LIBRARY_FRAGMENT(ssl_bench, m) {
  m.def("fisher_linear(Tensor grad_out, Tensor input) -> Tensor");
  m.def("fisher_conv2d(Tensor grad_out, Tensor input, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation) -> Tensor");
}

TORCH_LIBRARY_IMPL(ssl_bench, Meta, m) {
  m.impl("fisher_linear", &ssl_bench::fisher_linear_meta);
  m.impl("fisher_conv2d", &ssl_bench::fisher_conv2d_meta);
}
