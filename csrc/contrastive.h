// Fused contrastive (InfoNCE / NT-Xent) loss: the two tiled primitives every form is built from.
//
// For rows R (Mr x D) and columns C (Mc x D), both L2-normalised, write s_ij = r_i . c_j and
// e_ij = exp((s_ij - 1) * inv_tau): the logit s_ij / tau shifted by its upper bound 1 / tau, so every
// e_ij lies in (0, 1] and needs one exponential and no running maximum (the bound holds because the
// inputs are unit vectors; inv_tau <= kMaxInvTau keeps exp(-2 * inv_tau) a normal float).
// With mask_diag the entries j == i + diag are left out (diag 0: R and C are the same matrix; under
// torch.distributed R is this rank's rows and C every rank's, with diag the offset of this rank's block).
//
//   sums:  row_i = sum_j e_ij, and (want_cols) col_j = sum_i e_ij
//   grads: W_ij = e_ij * (a_i + b_j)   (a or b may be absent: read as 0)
//          dR_i = sum_j W_ij c_j, and (want_cols) dC_j = sum_i W_ij r_i
//
// Both walk the similarity matrix in tiles and never hold more than a few tiles of it, so memory is
// O((Mr + Mc) * D) plus a constant. Results are float (double for double inputs).
#pragma once

#include <ATen/ATen.h>
#include <optional>
#include <tuple>

namespace ssl_bench {

constexpr double kMaxInvTau = 40.0;  // temperature >= 0.025

struct ContrastivePrims {
  std::tuple<at::Tensor, at::Tensor> (*sums)(const at::Tensor& R, const at::Tensor& C, double inv_tau, bool mask_diag,
                                             int64_t diag, bool want_cols);
  std::tuple<at::Tensor, at::Tensor> (*grads)(const at::Tensor& R, const at::Tensor& C,
                                              const std::optional<at::Tensor>& a, const std::optional<at::Tensor>& b,
                                              double inv_tau, bool mask_diag, int64_t diag, bool want_cols);
};

std::tuple<at::Tensor, at::Tensor> contrastive_sums_cpu(const at::Tensor& R, const at::Tensor& C, double inv_tau,
                                                        bool mask_diag, int64_t diag, bool want_cols);
std::tuple<at::Tensor, at::Tensor> contrastive_grads_cpu(const at::Tensor& R, const at::Tensor& C,
                                                         const std::optional<at::Tensor>& a,
                                                         const std::optional<at::Tensor>& b, double inv_tau,
                                                         bool mask_diag, int64_t diag, bool want_cols);
#ifdef SSL_BENCH_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> contrastive_sums_cuda(const at::Tensor& R, const at::Tensor& C, double inv_tau,
                                                         bool mask_diag, int64_t diag, bool want_cols);
std::tuple<at::Tensor, at::Tensor> contrastive_grads_cuda(const at::Tensor& R, const at::Tensor& C,
                                                          const std::optional<at::Tensor>& a,
                                                          const std::optional<at::Tensor>& b, double inv_tau,
                                                          bool mask_diag, int64_t diag, bool want_cols);
#endif

}  // namespace ssl_bench
