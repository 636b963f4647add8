// CUDA primitives of the fused contrastive loss (see contrastive.h).
//
// A block owns kBM = 64 rows and walks a range of 64-column tiles; 256 threads each hold a 4 x 4
// piece of the logit tile (rows ty + 16 i, columns tx + 16 j), built from 16-deep slices of R and C
// staged in shared memory as the accumulation type (float; double for double inputs), so float16 and
// bfloat16 inputs are read as they are and accumulated in float. The logit tile never leaves the
// chip: sums_kernel exponentiates and row-reduces it, grads_kernel turns it into the weight tile W
// (in shared memory) and multiplies it by the column tile. The column range is split over
// gridDim.z so that the grid fills the device; each block adds its partial result with atomicAdd
// (the fixed shift 1/tau makes partial sums simply additive). Column-side results are computed by
// a second launch with the roles of R and C swapped.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>

#include <algorithm>

#include "contrastive.h"

namespace ssl_bench {
namespace {

using at::Tensor;
constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;

__device__ __forceinline__ float ex(float x) { return expf(x); }
__device__ __forceinline__ double ex(double x) { return exp(x); }

// s[i][j] = r_(r0 + ty + 16 i) . c_(c0 + tx + 16 j), rows/columns past the end read as zeros.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void tile_dot(const scalar_t* __restrict__ R, const scalar_t* __restrict__ C, int r0,
                                         int c0, int mr, int mc, int d, acc_t* Rs, acc_t* Cs, acc_t (&s)[4][4]) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) s[i][j] = acc_t(0);
  for (int k0 = 0; k0 < d; k0 += kBK) {
#pragma unroll
    for (int l = 0; l < (kBM * kBK) / kThreads; ++l) {
      const int idx = threadIdx.x + l * kThreads;
      const int row = idx / kBK, kk = idx % kBK, gk = k0 + kk;
      const int gr = r0 + row, gc = c0 + row;
      Rs[kk * (kBM + 1) + row] = (gr < mr && gk < d) ? static_cast<acc_t>(R[int64_t(gr) * d + gk]) : acc_t(0);
      Cs[kk * (kBN + 1) + row] = (gc < mc && gk < d) ? static_cast<acc_t>(C[int64_t(gc) * d + gk]) : acc_t(0);
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      acc_t rv[4], cv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) rv[i] = Rs[kk * (kBM + 1) + ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) cv[j] = Cs[kk * (kBN + 1) + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) s[i][j] += rv[i] * cv[j];
    }
    __syncthreads();
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) sums_kernel(const scalar_t* __restrict__ R, const scalar_t* __restrict__ C,
                                                        acc_t* __restrict__ out, int mr, int mc, int d, acc_t inv_tau,
                                                        bool mask_diag, int tiles_per_split) {
  __shared__ acc_t Rs[kBK * (kBM + 1)];
  __shared__ acc_t Cs[kBK * (kBN + 1)];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int r0 = blockIdx.x * kBM;
  const int t_end = min((int)((blockIdx.z + 1) * tiles_per_split), (mc + kBN - 1) / kBN);
  acc_t rowsum[4] = {0, 0, 0, 0};
  for (int t = blockIdx.z * tiles_per_split; t < t_end; ++t) {
    const int c0 = t * kBN;
    acc_t s[4][4];
    tile_dot(R, C, r0, c0, mr, mc, d, Rs, Cs, s);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = r0 + ty + 16 * i;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = c0 + tx + 16 * j;
        if (c < mc && !(mask_diag && r == c)) rowsum[i] += ex((s[i][j] - acc_t(1)) * inv_tau);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc_t v = rowsum[i];
#pragma unroll
    for (int off = 8; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);  // over the 16 tx lanes
    const int r = r0 + ty + 16 * i;
    if (tx == 0 && r < mr) atomicAdd(out + r, v);
  }
}

// out[r, dc0 + ...] += sum_c e_rc (a_r + b_c) C[c, dc0 + ...] for this block's rows, column range and
// NJ * 16 output features starting at dc0 = blockIdx.y * NJ * 16.
template <typename scalar_t, typename acc_t, int NJ>
__global__ void __launch_bounds__(kThreads) grads_kernel(const scalar_t* __restrict__ R, const scalar_t* __restrict__ C,
                                                         const acc_t* __restrict__ a, const acc_t* __restrict__ b,
                                                         acc_t* __restrict__ out, int mr, int mc, int d, acc_t inv_tau,
                                                         bool mask_diag, int tiles_per_split) {
  constexpr int kDC = 16 * NJ;
  extern __shared__ unsigned char smem_raw[];
  acc_t* smem = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* Ws = smem;                                  // kBM x (kBN + 1)
  acc_t* Rs = Ws + kBM * (kBN + 1);                  // kBK x (kBM + 1)
  acc_t* Cs = Rs + kBK * (kBM + 1);                  // kBK x (kBN + 1)
  acc_t* Ct = Cs + kBK * (kBN + 1);                  // kBK x (kDC + 1)
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int r0 = blockIdx.x * kBM, dc0 = blockIdx.y * kDC;
  const int t_end = min((int)((blockIdx.z + 1) * tiles_per_split), (mc + kBN - 1) / kBN);
  acc_t ar[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = r0 + ty + 16 * i;
    ar[i] = (a != nullptr && r < mr) ? a[r] : acc_t(0);
  }
  acc_t acc[4][NJ];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j) acc[i][j] = acc_t(0);

  for (int t = blockIdx.z * tiles_per_split; t < t_end; ++t) {
    const int c0 = t * kBN;
    acc_t s[4][4];
    tile_dot(R, C, r0, c0, mr, mc, d, Rs, Cs, s);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int c = c0 + tx + 16 * j;
      const acc_t bc = (b != nullptr && c < mc) ? b[c] : acc_t(0);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = r0 + ty + 16 * i;
        acc_t w = acc_t(0);
        if (r < mr && c < mc && !(mask_diag && r == c)) w = ex((s[i][j] - acc_t(1)) * inv_tau) * (ar[i] + bc);
        Ws[(ty + 16 * i) * (kBN + 1) + tx + 16 * j] = w;
      }
    }
    // (tile_dot ended with a barrier, so Ct is free; the barrier below publishes Ws and Ct.)
    for (int k0 = 0; k0 < kBN; k0 += kBK) {
      for (int idx = threadIdx.x; idx < kBK * kDC; idx += kThreads) {
        const int kk = idx / kDC, dd = idx % kDC, gc = c0 + k0 + kk, gd = dc0 + dd;
        Ct[kk * (kDC + 1) + dd] = (gc < mc && gd < d) ? static_cast<acc_t>(C[int64_t(gc) * d + gd]) : acc_t(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        acc_t wv[4], cv[NJ];
#pragma unroll
        for (int i = 0; i < 4; ++i) wv[i] = Ws[(ty + 16 * i) * (kBN + 1) + k0 + kk];
#pragma unroll
        for (int j = 0; j < NJ; ++j) cv[j] = Ct[kk * (kDC + 1) + tx + 16 * j];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < NJ; ++j) acc[i][j] += wv[i] * cv[j];
      }
      __syncthreads();
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = r0 + ty + 16 * i;
    if (r >= mr) continue;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int dd = dc0 + tx + 16 * j;
      if (dd < d) atomicAdd(out + int64_t(r) * d + dd, acc[i][j]);
    }
  }
}

struct Split {
  int splits, tiles_per_split;
};

// Splits the column tiles over gridDim.z so that about four blocks per multiprocessor are launched.
Split split_columns(int64_t other_blocks, int64_t mc) {
  const int tiles = std::max<int64_t>(1, (mc + kBN - 1) / kBN);
  int device = 0, sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  int want = (int)std::min<int64_t>(tiles, std::max<int64_t>(1, (4 * sms + other_blocks - 1) / other_blocks));
  want = std::min(want, 65535);
  const int per = (tiles + want - 1) / want;
  return {(tiles + per - 1) / per, per};
}

void check_cuda_inputs(const Tensor& R, const Tensor& C) {
  TORCH_CHECK(R.is_cuda() && C.is_cuda(), "contrastive (CUDA): inputs must be CUDA tensors");
  TORCH_CHECK(R.size(0) < INT32_MAX && C.size(0) < INT32_MAX && R.size(1) < INT32_MAX,
              "contrastive (CUDA): sizes must fit in int32");
}

Tensor row_sums(const Tensor& R, const Tensor& C, double inv_tau, bool mask_diag) {
  const int64_t mr = R.size(0), mc = C.size(0), d = R.size(1);
  auto acc = R.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor out = at::zeros({mr}, R.options().dtype(acc));
  if (mr == 0 || mc == 0) return out;
  const int64_t row_blocks = (mr + kBM - 1) / kBM;
  const Split sp = split_columns(row_blocks, mc);
  const dim3 grid(row_blocks, 1, sp.splits);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, R.scalar_type(), "contrastive_sums", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    sums_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        R.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), out.data_ptr<acc_t>(), (int)mr, (int)mc, (int)d,
        static_cast<acc_t>(inv_tau), mask_diag, sp.tiles_per_split);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

template <typename scalar_t, typename acc_t, int NJ>
void launch_grads(const Tensor& R, const Tensor& C, const acc_t* a, const acc_t* b, Tensor& out, double inv_tau,
                  bool mask_diag) {
  const int64_t mr = R.size(0), mc = C.size(0), d = R.size(1);
  constexpr int kDC = 16 * NJ;
  const int64_t row_blocks = (mr + kBM - 1) / kBM, d_chunks = (d + kDC - 1) / kDC;
  TORCH_CHECK(d_chunks < 65536, "contrastive (CUDA): feature dimension too large");
  const Split sp = split_columns(row_blocks * d_chunks, mc);
  const size_t smem =
      sizeof(acc_t) * (kBM * (kBN + 1) + kBK * (kBM + 1) + kBK * (kBN + 1) + kBK * (kDC + 1));
  auto kernel = grads_kernel<scalar_t, acc_t, NJ>;
  if (smem > 48 * 1024) C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  const dim3 grid(row_blocks, d_chunks, sp.splits);
  kernel<<<grid, kThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(
      R.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), a, b, out.data_ptr<acc_t>(), (int)mr, (int)mc, (int)d,
      static_cast<acc_t>(inv_tau), mask_diag, sp.tiles_per_split);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

Tensor row_grads(const Tensor& R, const Tensor& C, const std::optional<Tensor>& a, const std::optional<Tensor>& b,
                 double inv_tau, bool mask_diag) {
  const int64_t mr = R.size(0), mc = C.size(0), d = R.size(1);
  auto acc = R.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  Tensor out = at::zeros({mr, d}, R.options().dtype(acc));
  if (mr == 0 || mc == 0 || (!a && !b)) return out;
  Tensor av = a ? a->to(acc).contiguous() : Tensor(), bv = b ? b->to(acc).contiguous() : Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, R.scalar_type(), "contrastive_grads", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    const acc_t* ap = a ? av.data_ptr<acc_t>() : nullptr;
    const acc_t* bp = b ? bv.data_ptr<acc_t>() : nullptr;
    if (d <= 64)
      launch_grads<scalar_t, acc_t, 4>(R, C, ap, bp, out, inv_tau, mask_diag);
    else
      launch_grads<scalar_t, acc_t, 8>(R, C, ap, bp, out, inv_tau, mask_diag);
  });
  return out;
}

}  // namespace

std::tuple<Tensor, Tensor> contrastive_sums_cuda(const Tensor& R_, const Tensor& C_, double inv_tau, bool mask_diag,
                                                 bool want_cols) {
  check_cuda_inputs(R_, C_);
  const c10::cuda::CUDAGuard guard(R_.device());
  Tensor R = R_.contiguous(), C = C_.contiguous();
  Tensor rows = row_sums(R, C, inv_tau, mask_diag);
  Tensor cols = want_cols ? row_sums(C, R, inv_tau, mask_diag) : at::empty({0}, rows.options());
  return {rows, cols};
}

std::tuple<Tensor, Tensor> contrastive_grads_cuda(const Tensor& R_, const Tensor& C_, const std::optional<Tensor>& a,
                                                  const std::optional<Tensor>& b, double inv_tau, bool mask_diag,
                                                  bool want_cols) {
  check_cuda_inputs(R_, C_);
  const c10::cuda::CUDAGuard guard(R_.device());
  Tensor R = R_.contiguous(), C = C_.contiguous();
  Tensor dr = row_grads(R, C, a, b, inv_tau, mask_diag);
  Tensor dc = want_cols ? row_grads(C, R, b, a, inv_tau, mask_diag) : at::empty({0}, dr.options());
  return {dr, dc};
}

}  // namespace ssl_bench
