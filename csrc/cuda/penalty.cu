// CUDA kernel of ssl_bench::quadratic_penalty_: ONE launch over all tensors.
//
// Like torch's multi_tensor_apply, the tensors are cut into chunks of kChunk elements; a table of the
// tensors' pointers and sizes plus one (tensor, chunk) entry per block is packed into a pinned host buffer
// and copied to the device asynchronously (no host sync; the caching host allocator keeps the buffer alive
// until the copy has run). Block c updates grad in place for its chunk and writes its part of the penalty
// (block reduction in the accumulation type) to partial[c]; the total is one at::sum over the partials.
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <cstring>
#include <vector>

#include "penalty_common.h"

namespace ssl_bench {
namespace {

constexpr int64_t kChunk = 1 << 16;
constexpr int kThreads = 512;

struct TensorEntry {
  const void* p;
  void* g;
  const void* a;
  const void* w;
  int64_t numel;
  int64_t vec_ok;  // all four pointers 16-byte aligned
};

struct ChunkEntry {
  int64_t tensor;
  int64_t start;
};

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  using type = float4;
};
template <>
struct Vec<double> {
  using type = double2;
};

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads) penalty_kernel(const TensorEntry* __restrict__ tensors,
                                                           const ChunkEntry* __restrict__ chunks, Acc* partial,
                                                           T lam) {
  const ChunkEntry ch = chunks[blockIdx.x];
  const TensorEntry te = tensors[ch.tensor];
  const T* p = static_cast<const T*>(te.p);
  const T* a = static_cast<const T*>(te.a);
  const T* w = static_cast<const T*>(te.w);
  T* g = static_cast<T*>(te.g);
  const int64_t end = min(te.numel, ch.start + kChunk);
  Acc sum = 0;
  if (te.vec_ok) {
    using V = typename Vec<T>::type;
    constexpr int W = sizeof(V) / sizeof(T);
    const int64_t nvec = (end - ch.start) / W;  // chunk starts are multiples of kChunk, hence of W
    const V* pv = reinterpret_cast<const V*>(p + ch.start);
    const V* av = reinterpret_cast<const V*>(a + ch.start);
    const V* wv = reinterpret_cast<const V*>(w + ch.start);
    V* gv = reinterpret_cast<V*>(g + ch.start);
    for (int64_t i = threadIdx.x; i < nvec; i += kThreads) {
      V pp = pv[i], aa = av[i], ww = wv[i], gg = gv[i];
      T* pe = reinterpret_cast<T*>(&pp);
      T* ae = reinterpret_cast<T*>(&aa);
      T* we = reinterpret_cast<T*>(&ww);
      T* ge = reinterpret_cast<T*>(&gg);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        const T d = pe[k] - ae[k];
        const T wd = we[k] * d;
        ge[k] += lam * wd;
        sum += Acc(wd * d);
      }
      gv[i] = gg;
    }
    for (int64_t j = ch.start + nvec * W + threadIdx.x; j < end; j += kThreads) {
      const T d = p[j] - a[j];
      const T wd = w[j] * d;
      g[j] += lam * wd;
      sum += Acc(wd * d);
    }
  } else {
    for (int64_t j = ch.start + threadIdx.x; j < end; j += kThreads) {
      const T d = p[j] - a[j];
      const T wd = w[j] * d;
      g[j] += lam * wd;
      sum += Acc(wd * d);
    }
  }
  // block reduction: warp shuffles, then one value per warp in shared memory
  __shared__ Acc warp_sums[kThreads / 32];
  for (int off = 16; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off);
  if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    sum = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : Acc(0);
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_down_sync(0xffffffffu, sum, off);
    if (threadIdx.x == 0) partial[blockIdx.x] = sum;
  }
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15) == 0; }

at::Tensor quadratic_penalty_cuda(at::TensorList params, at::TensorList grads, at::TensorList anchors,
                                  at::TensorList imps, double lam) {
  penalty::check(params, grads, anchors, imps);
  c10::cuda::CUDAGuard guard(params[0].device());
  const size_t n = params.size();
  std::vector<TensorEntry> tensors(n);
  std::vector<ChunkEntry> chunks;
  for (size_t i = 0; i < n; ++i) {
    const void* p = params[i].const_data_ptr();
    void* g = grads[i].data_ptr();
    const void* a = anchors[i].const_data_ptr();
    const void* w = imps[i].const_data_ptr();
    tensors[i] = {p, g, a, w, params[i].numel(), int64_t(aligned16(p) && aligned16(g) && aligned16(a) && aligned16(w))};
    for (int64_t s = 0; s < params[i].numel(); s += kChunk) chunks.push_back({int64_t(i), s});
  }
  const auto opts = params[0].options();
  if (chunks.empty()) return at::zeros({}, opts);
  TORCH_CHECK(chunks.size() < (size_t(1) << 31), "quadratic_penalty_: too many chunks");
  // pack both tables into one pinned buffer, one async copy
  const int64_t table_bytes = int64_t(n * sizeof(TensorEntry) + chunks.size() * sizeof(ChunkEntry));
  at::Tensor host = at::empty({table_bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
  std::memcpy(host.data_ptr(), tensors.data(), n * sizeof(TensorEntry));
  std::memcpy(static_cast<char*>(host.data_ptr()) + n * sizeof(TensorEntry), chunks.data(),
              chunks.size() * sizeof(ChunkEntry));
  at::Tensor dev = at::empty({table_bytes}, opts.dtype(at::kByte));
  dev.copy_(host, /*non_blocking=*/true);
  const auto* dt = reinterpret_cast<const TensorEntry*>(dev.data_ptr());
  const auto* dc = reinterpret_cast<const ChunkEntry*>(static_cast<char*>(dev.data_ptr()) + n * sizeof(TensorEntry));
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int nblocks = int(chunks.size());
  at::Tensor partial = at::empty({nblocks}, opts.dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "quadratic_penalty_cuda", [&] {
    penalty_kernel<scalar_t, double><<<nblocks, kThreads, 0, stream>>>(dt, dc, partial.data_ptr<double>(),
                                                                        static_cast<scalar_t>(lam));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return (partial.sum() * (0.5 * lam)).to(params[0].scalar_type());
}

}  // namespace
}  // namespace ssl_bench

TORCH_LIBRARY_IMPL(ssl_bench, CUDA, m) { m.impl("quadratic_penalty_", &ssl_bench::quadratic_penalty_cuda); }
