// CPU primitives of the fused contrastive loss (see contrastive.h): blocks of rows in parallel
// (at::parallel_for, OpenMP), each walking the columns in tiles of kCols. A tile of logits is one
// BLAS call (at::mm into a reused buffer), then shifted, exponentiated and reduced in cache by ATen's
// vectorised kernels. Memory: one kRows x kCols tile per thread (plus, for the column-side results,
// one Mc-long vector or Mc x D matrix per block of rows). Deterministic in the thread count: the
// column-side results are partial sums per block of rows (not per thread), added in block order.
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "contrastive.h"

namespace ssl_bench {
namespace {

using at::Tensor;
constexpr int64_t kRows = 128;   // rows per block (the parallel unit)
constexpr int64_t kCols = 1024;  // columns per tile

// Detached: worker threads of at::parallel_for (OpenMP) do not inherit the caller's dispatch state, so the
// tensors they touch must not require grad.
Tensor as_acc(const Tensor& t) {
  return t.detach().to(t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat).contiguous();
}

// e = exp((R_blk C_tile^T - 1) * inv_tau), the entries global column == global row + diag zeroed when masked.
void exp_tile(Tensor& e, const Tensor& rb, const Tensor& cb, int64_t r0, int64_t c0, double inv_tau, bool mask_diag,
              int64_t diag) {
  at::mm_out(e, rb, cb.t());
  e.sub_(1.0).mul_(inv_tau);
  if (mask_diag) {
    const int64_t off = r0 - c0 + diag;  // element (i, i + off) has global column == global row + diag
    if (off > -e.size(0) && off < e.size(1)) e.diagonal(off).fill_(-std::numeric_limits<double>::infinity());
  }
  e.exp_();
}

int64_t row_blocks(int64_t mr) { return (mr + kRows - 1) / kRows; }

// Calls body(block, r0, r1) for each block of rows, in parallel.
template <typename F>
void for_row_blocks(int64_t mr, F body) {
  at::parallel_for(0, row_blocks(mr), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) body(b, b * kRows, std::min(mr, (b + 1) * kRows));
  });
}

// The per-block partial sums added in block order (the same bits for any number of threads).
Tensor sum_blocks(const Tensor& partial) {
  Tensor out = partial[0].clone();
  for (int64_t b = 1; b < partial.size(0); ++b) out.add_(partial[b]);
  return out;
}

}  // namespace

std::tuple<Tensor, Tensor> contrastive_sums_cpu(const Tensor& R_, const Tensor& C_, double inv_tau, bool mask_diag,
                                                int64_t diag, bool want_cols) {
  Tensor R = as_acc(R_), C = as_acc(C_);
  const int64_t mr = R.size(0), mc = C.size(0);
  const int64_t blocks = std::max<int64_t>(1, row_blocks(mr));
  Tensor rows = at::zeros({mr}, R.options());
  Tensor cols = want_cols ? at::zeros({blocks, mc}, R.options()) : at::empty({0}, R.options());
  if (mc > 0) {
    for_row_blocks(mr, [&](int64_t block, int64_t r0, int64_t r1) {
      Tensor rb = R.narrow(0, r0, r1 - r0);
      Tensor rs = rows.narrow(0, r0, r1 - r0);
      Tensor e = at::empty({r1 - r0, std::min(kCols, mc)}, R.options());
      for (int64_t c0 = 0; c0 < mc; c0 += kCols) {
        const int64_t w = std::min(kCols, mc - c0);
        Tensor et = e.narrow(1, 0, w);
        if (w != e.size(1)) et = at::empty({r1 - r0, w}, R.options());
        exp_tile(et, rb, C.narrow(0, c0, w), r0, c0, inv_tau, mask_diag, diag);
        rs.add_(et.sum(1));
        if (want_cols) cols[block].narrow(0, c0, w).add_(et.sum(0));
      }
    });
  }
  return {rows, want_cols ? sum_blocks(cols) : cols};
}

std::tuple<Tensor, Tensor> contrastive_grads_cpu(const Tensor& R_, const Tensor& C_, const std::optional<Tensor>& a_,
                                                 const std::optional<Tensor>& b_, double inv_tau, bool mask_diag,
                                                 int64_t diag, bool want_cols) {
  Tensor R = as_acc(R_), C = as_acc(C_);
  const int64_t mr = R.size(0), mc = C.size(0), d = R.size(1);
  const int64_t blocks = std::max<int64_t>(1, row_blocks(mr));
  std::optional<Tensor> a, b;
  if (a_) a = a_->detach().to(R.scalar_type()).contiguous();
  if (b_) b = b_->detach().to(R.scalar_type()).contiguous();
  Tensor dr = at::zeros({mr, d}, R.options());
  Tensor dc = want_cols ? at::zeros({blocks, mc, d}, R.options()) : at::empty({0}, R.options());
  if (mc > 0) {
    for_row_blocks(mr, [&](int64_t block, int64_t r0, int64_t r1) {
      Tensor rb = R.narrow(0, r0, r1 - r0);
      Tensor drb = dr.narrow(0, r0, r1 - r0);
      Tensor ab = a ? a->narrow(0, r0, r1 - r0).unsqueeze(1) : Tensor();
      Tensor e = at::empty({r1 - r0, std::min(kCols, mc)}, R.options());
      for (int64_t c0 = 0; c0 < mc; c0 += kCols) {
        const int64_t w = std::min(kCols, mc - c0);
        Tensor cb = C.narrow(0, c0, w);
        Tensor et = e.narrow(1, 0, w);
        if (w != e.size(1)) et = at::empty({r1 - r0, w}, R.options());
        exp_tile(et, rb, cb, r0, c0, inv_tau, mask_diag, diag);
        if (a && b) {
          et.mul_(ab + b->narrow(0, c0, w).unsqueeze(0));
        } else if (a) {
          et.mul_(ab);
        } else if (b) {
          et.mul_(b->narrow(0, c0, w).unsqueeze(0));
        } else {
          et.zero_();
        }
        drb.addmm_(et, cb);
        if (want_cols) dc[block].narrow(0, c0, w).addmm_(et.t(), rb);
      }
    });
  }
  return {dr, want_cols ? sum_blocks(dc) : dc};
}

}  // namespace ssl_bench
