// CPU kernel of ssl_bench::quadratic_penalty_: every tensor cut into chunks, the chunks of all tensors
// processed in parallel (at::parallel_for / OpenMP) with a vectorisable inner loop; one partial sum per
// chunk, added in a fixed order (deterministic).
#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <vector>

#include "penalty_common.h"

namespace ssl_bench {
namespace {

constexpr int64_t kChunk = 1 << 15;

at::Tensor quadratic_penalty_cpu(at::TensorList params, at::TensorList grads, at::TensorList anchors,
                                 at::TensorList imps, double lam) {
  penalty::check(params, grads, anchors, imps);
  std::vector<std::pair<int64_t, int64_t>> chunks;  // (tensor, first element)
  for (size_t i = 0; i < params.size(); ++i)
    for (int64_t s = 0; s < params[i].numel(); s += kChunk) chunks.emplace_back(int64_t(i), s);
  std::vector<double> partial(chunks.size(), 0.0);
  AT_DISPATCH_FLOATING_TYPES(params[0].scalar_type(), "quadratic_penalty_cpu", [&] {
    const scalar_t l = static_cast<scalar_t>(lam);
    at::parallel_for(0, int64_t(chunks.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const int64_t i = chunks[c].first, s = chunks[c].second;
        const int64_t e = std::min(params[i].numel(), s + kChunk);
        const scalar_t* p = params[i].const_data_ptr<scalar_t>();
        const scalar_t* a = anchors[i].const_data_ptr<scalar_t>();
        const scalar_t* w = imps[i].const_data_ptr<scalar_t>();
        scalar_t* g = grads[i].data_ptr<scalar_t>();
        double sum = 0.0;
        for (int64_t j0 = s; j0 < e; j0 += 256) {  // short runs in scalar_t (vectorised), totals in double
          const int64_t j1 = std::min(e, j0 + 256);
          scalar_t run = 0;
          for (int64_t j = j0; j < j1; ++j) {
            const scalar_t d = p[j] - a[j];
            const scalar_t wd = w[j] * d;
            g[j] += l * wd;
            run += wd * d;
          }
          sum += double(run);
        }
        partial[c] = sum;
      }
    });
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return at::scalar_tensor(0.5 * lam * total, params[0].options());
}

}  // namespace
}  // namespace ssl_bench

TORCH_LIBRARY_IMPL(ssl_bench, CPU, m) { m.impl("quadratic_penalty_", &ssl_bench::quadratic_penalty_cpu); }
