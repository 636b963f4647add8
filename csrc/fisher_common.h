// Shared by the CPU and CUDA Fisher kernels: argument checks and the chunked driver.
//
// Both ops reduce to  acc[O, K] = sum_n (A_n @ B_n)^2  with A_n = [O, P] and B_n = [P, K]. The driver walks
// the batch in chunks of samples small enough that the chunk's [b, P, K] patches and [b, O, K] per-sample
// products stay under a budget of elements (kChunkElems*) (never [N, O, K] at once): fill the patches (conv: a backend
// im2col kernel; linear: the input itself), one batched matrix product (BLAS / cuBLAS), then a backend
// kernel adds the squares summed over the chunk's samples into acc.
#pragma once

#include <string>
#include <ATen/ATen.h>

#include <algorithm>
#include <functional>

namespace ssl_bench {
namespace fisher {

// Elements of patches + per-sample products held at once: CPU 8 M (32 MB in fp32), CUDA 64 M (fewer, larger
// batched products; 256 MB in fp32).
constexpr int64_t kChunkElemsCPU = int64_t(1) << 23;
constexpr int64_t kChunkElemsCUDA = int64_t(1) << 26;

struct ConvGeom {
  int64_t N, C, H, W, O, Ho, Wo, kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t P() const { return Ho * Wo; }
  int64_t K() const { return C * kh * kw; }
};

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

inline ConvGeom conv_geom(const at::Tensor& grad_out, const at::Tensor& input, at::IntArrayRef ks,
                          at::IntArrayRef st, at::IntArrayRef pad, at::IntArrayRef dil) {
  TORCH_CHECK(grad_out.dim() == 4 && input.dim() == 4, "fisher_conv2d: grad_out and input must be 4-d");
  TORCH_CHECK(ks.size() == 2 && st.size() == 2 && pad.size() == 2 && dil.size() == 2,
              "fisher_conv2d: kernel_size, stride, padding and dilation need 2 entries each");
  TORCH_CHECK(grad_out.device() == input.device(), "fisher_conv2d: grad_out and input on different devices");
  ConvGeom g{input.size(0), input.size(1), input.size(2), input.size(3), grad_out.size(1), grad_out.size(2),
             grad_out.size(3), ks[0], ks[1], st[0], st[1], pad[0], pad[1], dil[0], dil[1]};
  TORCH_CHECK(grad_out.size(0) == g.N, "fisher_conv2d: grad_out and input have different batch sizes");
  TORCH_CHECK(g.kh > 0 && g.kw > 0 && g.sh > 0 && g.sw > 0 && g.dh > 0 && g.dw > 0 && g.ph >= 0 && g.pw >= 0,
              "fisher_conv2d: kernel_size, stride, dilation must be positive and padding non-negative");
  int64_t ho = (g.H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  int64_t wo = (g.W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(ho == g.Ho && wo == g.Wo, "fisher_conv2d: grad_out spatial size " + std::to_string(g.Ho) + "x" + std::to_string(g.Wo) +
                  " does not match the convolution's output size " + std::to_string(ho) + "x" + std::to_string(wo));
  return g;
}

// acc += sum over the b samples of prod[b, O, K]^2
using SquareAcc = std::function<void(const at::Tensor& prod, at::Tensor& acc)>;
// cols[b, P, K] = patches of input[b]
using Im2col = std::function<void(const at::Tensor& input, at::Tensor& cols, const ConvGeom& g)>;

inline int64_t chunk_size(int64_t n, int64_t per_sample, int64_t budget) {
  return std::max<int64_t>(1, std::min<int64_t>(n, budget / std::max<int64_t>(1, per_sample)));
}

inline at::Tensor linear(const at::Tensor& grad_out_in, const at::Tensor& input_in, const SquareAcc& square_acc,
                         int64_t budget) {
  TORCH_CHECK(grad_out_in.dim() == input_in.dim() && (input_in.dim() == 2 || input_in.dim() == 3),
              "fisher_linear: grad_out and input must both be [N, *] or both [N, L, *]");
  TORCH_CHECK(grad_out_in.size(0) == input_in.size(0), "fisher_linear: different batch sizes");
  TORCH_CHECK(grad_out_in.device() == input_in.device(), "fisher_linear: grad_out and input on different devices");
  TORCH_CHECK(at::isFloatingType(input_in.scalar_type()) && input_in.scalar_type() == grad_out_in.scalar_type(),
              "fisher_linear: grad_out and input must be floating point of the same dtype");
  auto dt = acc_dtype(input_in.scalar_type());
  at::Tensor grad_out = grad_out_in.to(dt).contiguous(), input = input_in.to(dt).contiguous();
  if (input.dim() == 2) return at::mm(grad_out.square().t(), input.square());
  TORCH_CHECK(grad_out.size(1) == input.size(1), "fisher_linear: grad_out and input have different lengths L");
  const int64_t N = input.size(0), O = grad_out.size(2), F = input.size(2);
  at::Tensor acc = at::zeros({O, F}, input.options());
  const int64_t B = chunk_size(N, O * F, budget);
  at::Tensor prod = at::empty({B, O, F}, input.options());
  for (int64_t s = 0; s < N; s += B) {
    const int64_t b = std::min(B, N - s);
    at::Tensor pb = prod.narrow(0, 0, b);
    at::bmm_out(pb, grad_out.narrow(0, s, b).transpose(1, 2), input.narrow(0, s, b));
    square_acc(pb, acc);
  }
  return acc;
}

inline at::Tensor conv2d(const at::Tensor& grad_out_in, const at::Tensor& input_in, at::IntArrayRef ks,
                         at::IntArrayRef st, at::IntArrayRef pad, at::IntArrayRef dil, const Im2col& im2col,
                         const SquareAcc& square_acc, int64_t budget) {
  const ConvGeom g = conv_geom(grad_out_in, input_in, ks, st, pad, dil);
  TORCH_CHECK(at::isFloatingType(input_in.scalar_type()) && input_in.scalar_type() == grad_out_in.scalar_type(),
              "fisher_conv2d: grad_out and input must be floating point of the same dtype");
  auto dt = acc_dtype(input_in.scalar_type());
  at::Tensor grad_out = grad_out_in.to(dt).contiguous(), input = input_in.to(dt).contiguous();
  const int64_t P = g.P(), K = g.K();
  at::Tensor acc = at::zeros({g.O, K}, input.options());
  const int64_t B = chunk_size(g.N, g.O * K + P * K, budget);
  at::Tensor cols = at::empty({B, P, K}, input.options());
  at::Tensor prod = at::empty({B, g.O, K}, input.options());
  for (int64_t s = 0; s < g.N; s += B) {
    const int64_t b = std::min(B, g.N - s);
    at::Tensor cb = cols.narrow(0, 0, b), pb = prod.narrow(0, 0, b);
    im2col(input.narrow(0, s, b), cb, g);
    at::bmm_out(pb, grad_out.narrow(0, s, b).view({b, g.O, P}), cb);
    square_acc(pb, acc);
  }
  return acc;
}

}  // namespace fisher
}  // namespace ssl_bench
