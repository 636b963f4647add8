// CUDA primitives of the fused contrastive loss (see contrastive.h).
//
// The similarity matrix is walked in tiles of at most tile x tile. Each tile of dot products comes
// from cuBLAS (at::mm, on the tensor cores for float16/bfloat16, accumulated and returned in float;
// float32 stays true float32 unless the user enables TF32), and one fused kernel of ours turns it
// into what the loss needs:
//   sums:  e = exp((s - 1) / tau) (the masked diagonal 0) is summed per row (exp_rows_kernel) or, when
//          the column sums are wanted too, per row and per column in one read of the tile
//          (exp_sums_kernel: per-block partial sums, reduced afterwards without atomics).
//   grads: weight_kernel writes W = e * (a_i + b_j) in the input dtype, then dR += W C and
//          dC += W^T R are two more tile products.
// Only one tile buffer (and W for half inputs) is alive, so memory is O((Mr + Mc) * D + tile^2),
// flat in N once N exceeds the tile; backward recomputes the tiles instead of storing them.
// Tiles are launched in order on the current stream, so the accumulators need no atomics, and
// nothing waits for the host.
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/ceil_div.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdlib>

#include "contrastive.h"

namespace ssl_bench {
namespace {

using at::Tensor;
// Tile edge: 4096 (64 MiB of float per tile: few, large GEMMs, a bounded buffer) unless
// SSL_BENCH_CONTRASTIVE_TILE says otherwise (smaller tiles stay in L2, larger ones launch less). Read at
// every call (nanoseconds next to the GEMMs), so tests and benchmarks can change it within one process.
int64_t tile_edge() {
  const char* v = std::getenv("SSL_BENCH_CONTRASTIVE_TILE");
  const int64_t t = v ? std::atoll(v) : 0;
  return t >= 64 ? t : int64_t(4096);
}
constexpr int kThreads = 256;

__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }

template <typename acc_t>
__device__ acc_t block_sum(acc_t v) {
  __shared__ acc_t warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : acc_t(0);
  if (threadIdx.x < 32)
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// One block per tile row r: e = exp((s - 1) * inv_tau), 0 where mask and c - r == diag.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) exp_rows_kernel(const acc_t* __restrict__ S, int64_t tc, acc_t inv_tau,
                                                            int64_t diag, bool mask, acc_t* __restrict__ row_sum) {
  const int64_t r = blockIdx.x;
  const acc_t* s = S + r * tc;
  acc_t sum = 0;
  for (int64_t c = threadIdx.x; c < tc; c += kThreads)
    sum += (mask && c - r == diag) ? acc_t(0) : ex((s[c] - acc_t(1)) * inv_tau);
  sum = block_sum(sum);
  if (threadIdx.x == 0) row_sum[r] += sum;
}

// Row and column sums of e in one read of the tile. Block (x, y) covers columns [x * kThreads, +kThreads)
// and rows [y * kRowsPerBlock, +kRowsPerBlock); it writes its partial sums to row_part[x][r] and
// col_part[y][c], which the caller reduces (deterministic: no atomics).
constexpr int kRowsPerBlock = 32;
template <typename acc_t>
__global__ void __launch_bounds__(kThreads) exp_sums_kernel(const acc_t* __restrict__ S, int64_t tr, int64_t tc,
                                                            acc_t inv_tau, int64_t diag, bool mask,
                                                            acc_t* __restrict__ row_part, acc_t* __restrict__ col_part) {
  __shared__ acc_t warp_rows[kThreads / 32][kRowsPerBlock];
  const int64_t c = int64_t(blockIdx.x) * kThreads + threadIdx.x, r0 = int64_t(blockIdx.y) * kRowsPerBlock;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  acc_t col = 0;
  for (int k = 0; k < kRowsPerBlock; ++k) {
    const int64_t r = r0 + k;
    acc_t e = (r < tr && c < tc && !(mask && c - r == diag)) ? ex((S[r * tc + c] - acc_t(1)) * inv_tau) : acc_t(0);
    col += e;
    for (int off = 16; off > 0; off >>= 1) e += __shfl_xor_sync(0xffffffffu, e, off);
    if (lane == 0) warp_rows[warp][k] = e;
  }
  if (c < tc) col_part[blockIdx.y * tc + c] = col;
  __syncthreads();
  if (threadIdx.x < kRowsPerBlock && r0 + threadIdx.x < tr) {
    acc_t sum = 0;
    for (int w = 0; w < kThreads / 32; ++w) sum += warp_rows[w][threadIdx.x];
    row_part[blockIdx.x * tr + r0 + threadIdx.x] = sum;
  }
}

// W_rc = exp((s_rc - 1) * inv_tau) * (a_r + b_c), 0 on the masked diagonal; W may alias S.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) weight_kernel(const acc_t* S, scalar_t* W, int64_t tr, int64_t tc,
                                                          const acc_t* __restrict__ a, const acc_t* __restrict__ b,
                                                          acc_t inv_tau, int64_t diag, bool mask) {
  const int64_t n = tr * tc;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const int64_t r = i / tc, c = i % tc;
    acc_t w = 0;
    if (!(mask && c - r == diag)) w = ex((S[i] - acc_t(1)) * inv_tau) * ((a ? a[r] : acc_t(0)) + (b ? b[c] : acc_t(0)));
    W[i] = static_cast<scalar_t>(w);
  }
}

at::ScalarType acc_of(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// x @ y^T (or x @ y) accumulated and returned in the accumulation type, written into out.
void product(Tensor& out, const Tensor& x, const Tensor& y) {
  if (x.scalar_type() == out.scalar_type())
    at::mm_out(out, x, y);
  else
    at::mm_out(out, x, y, out.scalar_type());  // float16/bfloat16 inputs, float result
}

Tensor view_of(const Tensor& buf, int64_t rows, int64_t cols) { return buf.narrow(0, 0, rows * cols).view({rows, cols}); }

void check_cuda_inputs(const Tensor& R, const Tensor& C) {
  TORCH_CHECK(R.is_cuda() && C.is_cuda(), "contrastive (CUDA): inputs must be CUDA tensors");
}

}  // namespace

std::tuple<Tensor, Tensor> contrastive_sums_cuda(const Tensor& R_, const Tensor& C_, double inv_tau, bool mask_diag,
                                                 int64_t diag, bool want_cols) {
  check_cuda_inputs(R_, C_);
  const c10::cuda::CUDAGuard guard(R_.device());
  Tensor R = R_.contiguous(), C = C_.contiguous();
  const int64_t mr = R.size(0), mc = C.size(0);
  auto acc = acc_of(R);
  Tensor rows = at::zeros({mr}, R.options().dtype(acc));
  Tensor cols = want_cols ? at::zeros({mc}, R.options().dtype(acc)) : at::empty({0}, rows.options());
  if (mr == 0 || mc == 0) return {rows, cols};
  const int64_t tile = tile_edge();
  const int64_t tr_max = std::min(mr, tile), tc_max = std::min(mc, tile);
  Tensor buf = at::empty({tr_max * tc_max}, rows.options());
  Tensor row_part, col_part;  // per-block partial sums of exp_sums_kernel
  if (want_cols) {
    row_part = at::empty({at::ceil_div<int64_t>(tc_max, kThreads) * tr_max}, rows.options());
    col_part = at::empty({at::ceil_div<int64_t>(tr_max, kRowsPerBlock) * tc_max}, rows.options());
  }
  auto stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t i0 = 0; i0 < mr; i0 += tile) {
    const int64_t tr = std::min(tile, mr - i0);
    for (int64_t j0 = 0; j0 < mc; j0 += tile) {
      const int64_t tc = std::min(tile, mc - j0);
      Tensor S = view_of(buf, tr, tc);
      product(S, R.narrow(0, i0, tr), C.narrow(0, j0, tc).t());
      const int64_t gx = at::ceil_div<int64_t>(tc, kThreads), gy = at::ceil_div<int64_t>(tr, kRowsPerBlock);
      AT_DISPATCH_FLOATING_TYPES(acc, "contrastive_sums_cuda", [&] {
        if (want_cols)
          exp_sums_kernel<scalar_t><<<dim3(gx, gy), kThreads, 0, stream>>>(
              S.data_ptr<scalar_t>(), tr, tc, scalar_t(inv_tau), i0 - j0 + diag, mask_diag, row_part.data_ptr<scalar_t>(),
              col_part.data_ptr<scalar_t>());
        else
          exp_rows_kernel<scalar_t><<<tr, kThreads, 0, stream>>>(S.data_ptr<scalar_t>(), tc, scalar_t(inv_tau),
                                                                i0 - j0 + diag, mask_diag, rows.data_ptr<scalar_t>() + i0);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      if (want_cols) {
        rows.narrow(0, i0, tr).add_(view_of(row_part, gx, tr).sum(0));
        cols.narrow(0, j0, tc).add_(view_of(col_part, gy, tc).sum(0));
      }
    }
  }
  return {rows, cols};
}

std::tuple<Tensor, Tensor> contrastive_grads_cuda(const Tensor& R_, const Tensor& C_, const std::optional<Tensor>& a,
                                                  const std::optional<Tensor>& b, double inv_tau, bool mask_diag,
                                                  int64_t diag, bool want_cols) {
  check_cuda_inputs(R_, C_);
  const c10::cuda::CUDAGuard guard(R_.device());
  Tensor R = R_.contiguous(), C = C_.contiguous();
  const int64_t mr = R.size(0), mc = C.size(0), d = R.size(1);
  auto acc = acc_of(R);
  Tensor dr = at::zeros({mr, d}, R.options().dtype(acc));
  Tensor dc = want_cols ? at::zeros({mc, d}, R.options().dtype(acc)) : at::empty({0}, dr.options());
  if (mr == 0 || mc == 0 || (!a && !b)) return {dr, dc};
  Tensor av = a ? a->to(acc).contiguous() : Tensor(), bv = b ? b->to(acc).contiguous() : Tensor();
  const int64_t tile = tile_edge();
  const int64_t cap = std::min(mr, tile) * std::min(mc, tile);
  Tensor sbuf = at::empty({cap}, dr.options());
  Tensor wbuf = R.scalar_type() == acc ? sbuf : at::empty({cap}, R.options());  // W overwrites S in place
  Tensor part_r = at::empty({std::min(mr, tile), d}, dr.options());
  Tensor part_c = at::empty({std::min(mc, tile), d}, dr.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t i0 = 0; i0 < mr; i0 += tile) {
    const int64_t tr = std::min(tile, mr - i0);
    Tensor Rb = R.narrow(0, i0, tr);
    for (int64_t j0 = 0; j0 < mc; j0 += tile) {
      const int64_t tc = std::min(tile, mc - j0);
      Tensor Cb = C.narrow(0, j0, tc);
      Tensor S = view_of(sbuf, tr, tc), W = view_of(wbuf, tr, tc);
      product(S, Rb, Cb.t());
      const int64_t blocks = std::min<int64_t>(at::ceil_div<int64_t>(tr * tc, kThreads), 1 << 20);
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, R.scalar_type(), "contrastive_grads_cuda", [&] {
        using acc_t = at::acc_type<scalar_t, true>;
        weight_kernel<scalar_t, acc_t><<<blocks, kThreads, 0, stream>>>(
            S.data_ptr<acc_t>(), W.data_ptr<scalar_t>(), tr, tc, a ? av.data_ptr<acc_t>() + i0 : nullptr,
            b ? bv.data_ptr<acc_t>() + j0 : nullptr, static_cast<acc_t>(inv_tau), i0 - j0 + diag, mask_diag);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      Tensor pr = view_of(part_r.view({-1}), tr, d);
      product(pr, W, Cb);
      dr.narrow(0, i0, tr).add_(pr);
      if (want_cols) {
        Tensor pc = view_of(part_c.view({-1}), tc, d);
        product(pc, W.t(), Rb);
        dc.narrow(0, j0, tc).add_(pc);
      }
    }
  }
  return {dr, dc};
}

}  // namespace ssl_bench
