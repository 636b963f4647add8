// Argument checks shared by the CPU and CUDA penalty kernels.
#pragma once
#include <ATen/ATen.h>
#include <string>

namespace ssl_bench {
namespace penalty {

inline void check(at::TensorList params, at::TensorList grads, at::TensorList anchors, at::TensorList imps) {
  const size_t n = params.size();
  TORCH_CHECK(n > 0, "quadratic_penalty_: empty parameter list");
  TORCH_CHECK(grads.size() == n && anchors.size() == n && imps.size() == n,
              "quadratic_penalty_: params, grads, anchors and importances must have the same length");
  const auto dtype = params[0].scalar_type();
  const auto device = params[0].device();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "quadratic_penalty_: float32 or float64 tensors only");
  for (size_t i = 0; i < n; ++i) {
    for (const at::Tensor* t : {&params[i], &grads[i], &anchors[i], &imps[i]}) {
      TORCH_CHECK(t->scalar_type() == dtype && t->device() == device,
                  "quadratic_penalty_: all tensors must share one dtype and device (tensor " + std::to_string(i) + ")");
      TORCH_CHECK(t->is_contiguous(), "quadratic_penalty_: tensor " + std::to_string(i) + " is not contiguous");
      TORCH_CHECK(t->numel() == params[i].numel(), "quadratic_penalty_: tensor " + std::to_string(i) + " sizes differ");
    }
  }
}

}  // namespace penalty
}  // namespace ssl_bench
