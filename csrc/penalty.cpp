// EWC / MAS quadratic penalty (issue 7, op 3): schema and Meta kernel.
//
//   quadratic_penalty_(params, grads, anchors, importances, lam) -> Tensor
//     grads[i] += lam * importances[i] * (params[i] - anchors[i])      (in place, every i)
//     returns 0.5 * lam * sum_i sum(importances[i] * (params[i] - anchors[i])^2)   (0-dim, on the device)
// All tensors contiguous, one dtype and device; one pass over every tensor (csrc/cpu/penalty_cpu.cpp,
// csrc/cuda/penalty.cu: a single launch over all tensors through a chunk table).
#include <torch/library.h>
#include <ATen/ATen.h>

namespace ssl_bench {
namespace {

at::Tensor quadratic_penalty_meta(at::TensorList params, at::TensorList grads, at::TensorList anchors,
                                  at::TensorList importances, double lam) {
  TORCH_CHECK(!params.empty(), "quadratic_penalty_: empty parameter list");
  return at::empty({}, params[0].options());
}

}  // namespace
}  // namespace ssl_bench

TORCH_LIBRARY_FRAGMENT(ssl_bench, m) {
  m.def("quadratic_penalty_(Tensor[] params, Tensor(a!)[] grads, Tensor[] anchors, Tensor[] importances, "
        "float lam) -> Tensor");
}

TORCH_LIBRARY_IMPL(ssl_bench, Meta, m) { m.impl("quadratic_penalty_", &ssl_bench::quadratic_penalty_meta); }
