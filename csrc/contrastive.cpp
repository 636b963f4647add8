// Fused contrastive loss: schema, argument checks, and the four loss forms built from the two tiled
// primitives of contrastive.h (one implementation per backend: cpu/contrastive_cpu.cpp and
// cuda/contrastive_cuda.cu). Autograd and the fake (meta) kernel are registered once, in Python
// (ssl_bench/ops/contrastive.py), as in pytorch/extension-cpp.
//
// Modes (q, k: N x D, L2-normalised; inv_tau = 1 / temperature):
//   0 NT-Xent (SimCLR): rows Z = [q; k] (2N), all 2N - 1 others are candidates, positive of i is i +- N.
//   1 InfoNCE q -> k: row i of q against every k, positive k_i.
//   2 symmetric InfoNCE: mean of q -> k and k -> q.
//   3 MoCo: q_i against its key k_i (positive) and every row of queue (K x D, negatives).
// Outputs: the mean loss (dtype of q) and lse, the per-row log-sum-exp of the logits that backward
// reuses (mode 2: rows of q then rows of k).
//
// contrastive_lse(rows, cols, inv_tau, offset): lse_i = log sum_j exp(r_i . c_j * inv_tau) over the columns,
// without column i + offset when offset >= 0 (float; double for double inputs). Under torch.distributed the
// rows are this rank's and the columns every rank's (gathered with gradient, ssl_bench/ops/contrastive.py);
// the positives' similarities are local, so the loss is mean(lse - pos * inv_tau) with pos in PyTorch.
#include "contrastive.h"

#include <torch/library.h>

#include <cstdio>
#include <string>

namespace ssl_bench {
namespace {

using at::Tensor;
enum Mode : int64_t { kNtXent = 0, kInfoNce = 1, kInfoNceSym = 2, kMoco = 3 };

at::ScalarType acc_type(const Tensor& t) { return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

// Numbers are formatted here, not streamed by TORCH_CHECK: on some toolchains (seen with a GCC that
// differs from the one torch was built with) streaming an integer from an extension crashes.
std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}
std::string shape(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void check_inputs(const Tensor& q, const Tensor& k, const std::optional<Tensor>& queue, double inv_tau, int64_t mode) {
  TORCH_CHECK(mode >= kNtXent && mode <= kMoco, "contrastive: mode must be 0..3, got " + num(mode));
  TORCH_CHECK(q.dim() == 2 && q.size(0) >= 1 && q.size(1) >= 1, "contrastive: q must be a non-empty N x D matrix");
  TORCH_CHECK(k.sizes() == q.sizes(),
              "contrastive: k must have the shape of q, got " + shape(k.sizes()) + " and " + shape(q.sizes()));
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && k.device() == q.device(),
              "contrastive: q and k need the same dtype and device");
  auto st = q.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "contrastive: dtype must be float32, float64, float16 or bfloat16, got " + std::string(c10::toString(st)));
  TORCH_CHECK(inv_tau > 0 && inv_tau <= kMaxInvTau, "contrastive: 1/temperature must be in (0, " + num(kMaxInvTau) + "] (temperature >= " +
                  num(1.0 / kMaxInvTau) + "), got " + num(inv_tau));
  if (mode == kMoco) {
    TORCH_CHECK(queue.has_value(), "contrastive: mode 3 (MoCo) needs a queue");
    TORCH_CHECK(queue->dim() == 2 && queue->size(1) == q.size(1), "contrastive: queue must be K x D with D = " + num(q.size(1)));
    TORCH_CHECK(queue->scalar_type() == st && queue->device() == q.device(),
                "contrastive: queue needs the dtype and device of q");
  }
}

std::tuple<Tensor, Tensor> forward(const Tensor& q_, const Tensor& k_, const std::optional<Tensor>& queue,
                                   double inv_tau, int64_t mode, const ContrastivePrims& P) {
  check_inputs(q_, k_, queue, inv_tau, mode);
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // autograd is registered for the op as a whole
  Tensor q = q_.contiguous(), k = k_.contiguous();
  const int64_t n = q.size(0);
  auto acc = acc_type(q);
  Tensor lse, pos;  // pos: the positive's raw similarity per row
  if (mode == kNtXent) {
    Tensor z = at::cat({q, k});
    Tensor row = std::get<0>(P.sums(z, z, inv_tau, /*mask_diag=*/true, /*diag=*/0, /*want_cols=*/false));
    Tensor za = z.to(acc);
    pos = (za * za.roll(n, 0)).sum(1);
    lse = row.log() + inv_tau;
  } else if (mode == kMoco) {
    Tensor qa = q.to(acc);
    pos = (qa * k.to(acc)).sum(1);
    Tensor row = std::get<0>(P.sums(q, queue->contiguous(), inv_tau, false, 0, false));
    lse = (row + ((pos - 1) * inv_tau).exp()).log() + inv_tau;
  } else {
    auto [row, col] = P.sums(q, k, inv_tau, false, 0, mode == kInfoNceSym);
    pos = (q.to(acc) * k.to(acc)).sum(1);
    lse = row.log() + inv_tau;
    if (mode == kInfoNceSym) {
      lse = at::cat({lse, col.log() + inv_tau});
      pos = at::cat({pos, pos});
    }
  }
  Tensor loss = (lse - pos * inv_tau).mean();
  return {loss.to(q.scalar_type()), lse};
}

std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& grad, const Tensor& q_, const Tensor& k_,
                                            const std::optional<Tensor>& queue, const Tensor& lse, double inv_tau,
                                            int64_t mode, bool queue_grad, const ContrastivePrims& P) {
  check_inputs(q_, k_, queue, inv_tau, mode);
  at::AutoDispatchBelowADInplaceOrView below_autograd;  // autograd is registered for the op as a whole
  Tensor q = q_.contiguous(), k = k_.contiguous();
  const int64_t n = q.size(0);
  auto acc = acc_type(q);
  Tensor g = grad.to(acc);  // 0-dim, stays on the device: no host synchronisation
  Tensor qa = q.to(acc), ka = k.to(acc);
  Tensor dq, dk, dqueue = at::empty({0}, q.options());
  // 1 / sum_j e_ij = exp(1/tau - lse_i): turns e_ij into the softmax probability p_ij.
  Tensor inv = (inv_tau - lse).exp();
  if (mode == kNtXent) {
    Tensor z = at::cat({q, k});
    Tensor za = at::cat({qa, ka});
    Tensor dz = std::get<0>(P.grads(z, z, inv, inv, inv_tau, true, 0, false));
    dz = (dz - 2 * za.roll(n, 0)) * (g * (inv_tau / (2.0 * n)));
    dq = dz.narrow(0, 0, n);
    dk = dz.narrow(0, n, n);
  } else if (mode == kInfoNce) {
    auto [gq, gk] = P.grads(q, k, inv, std::nullopt, inv_tau, false, 0, true);
    Tensor s = g * (inv_tau / n);
    dq = (gq - ka) * s;
    dk = (gk - qa) * s;
  } else if (mode == kInfoNceSym) {
    Tensor a = inv.narrow(0, 0, n), b = inv.narrow(0, n, n);
    auto [gq, gk] = P.grads(q, k, a, b, inv_tau, false, 0, true);
    Tensor s = g * (inv_tau / (2.0 * n));
    dq = (gq - 2 * ka) * s;
    dk = (gk - 2 * qa) * s;
  } else {
    Tensor pos = (qa * ka).sum(1);
    Tensor cpos = ((pos * inv_tau - lse).exp() - 1).unsqueeze(1);  // p_pos - 1
    auto [gq, gqueue] = P.grads(q, queue->contiguous(), inv, std::nullopt, inv_tau, false, 0, queue_grad);
    Tensor s = g * (inv_tau / n);
    dq = (gq + cpos * ka) * s;
    dk = cpos * qa * s;
    if (queue_grad) dqueue = (gqueue * s).to(q.scalar_type());
  }
  return {dq.to(q.scalar_type()), dk.to(q.scalar_type()), dqueue};
}

void check_lse(const Tensor& rows, const Tensor& cols, double inv_tau) {
  TORCH_CHECK(rows.dim() == 2 && cols.dim() == 2 && rows.size(1) == cols.size(1) && rows.size(1) >= 1,
              "contrastive_lse: rows and cols must be matrices with the same number of columns, got " +
                  shape(rows.sizes()) + " and " + shape(cols.sizes()));
  TORCH_CHECK(rows.scalar_type() == cols.scalar_type() && rows.device() == cols.device(),
              "contrastive_lse: rows and cols need the same dtype and device");
  auto st = rows.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "contrastive_lse: dtype must be float32, float64, float16 or bfloat16, got " + std::string(c10::toString(st)));
  TORCH_CHECK(inv_tau > 0 && inv_tau <= kMaxInvTau, "contrastive_lse: 1/temperature must be in (0, " + num(kMaxInvTau) + "], got " + num(inv_tau));
}

Tensor lse_forward(const Tensor& rows, const Tensor& cols, double inv_tau, int64_t offset, const ContrastivePrims& P) {
  check_lse(rows, cols, inv_tau);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  Tensor sum = std::get<0>(P.sums(rows.contiguous(), cols.contiguous(), inv_tau, offset >= 0, offset, false));
  return sum.log() + inv_tau;
}

std::tuple<Tensor, Tensor> lse_backward(const Tensor& grad, const Tensor& rows, const Tensor& cols, const Tensor& lse,
                                        double inv_tau, int64_t offset, const ContrastivePrims& P) {
  check_lse(rows, cols, inv_tau);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  // d lse_i / d s_ij = p_ij * inv_tau with p_ij = e_ij * exp(1/tau - lse_i): weights a_i = grad_i * exp(1/tau - lse_i)
  Tensor a = grad.to(acc_type(rows)) * (inv_tau - lse).exp();
  auto [dr, dc] = P.grads(rows.contiguous(), cols.contiguous(), a, std::nullopt, inv_tau, offset >= 0, offset, true);
  return {(dr * inv_tau).to(rows.scalar_type()), (dc * inv_tau).to(cols.scalar_type())};
}

constexpr ContrastivePrims kCpu{contrastive_sums_cpu, contrastive_grads_cpu};

std::tuple<Tensor, Tensor> forward_cpu(const Tensor& q, const Tensor& k, const std::optional<Tensor>& queue,
                                       double inv_tau, int64_t mode) {
  return forward(q, k, queue, inv_tau, mode, kCpu);
}
std::tuple<Tensor, Tensor, Tensor> backward_cpu(const Tensor& grad, const Tensor& q, const Tensor& k,
                                                const std::optional<Tensor>& queue, const Tensor& lse,
                                                double inv_tau, int64_t mode, bool queue_grad) {
  return backward(grad, q, k, queue, lse, inv_tau, mode, queue_grad, kCpu);
}

Tensor lse_forward_cpu(const Tensor& rows, const Tensor& cols, double inv_tau, int64_t offset) {
  return lse_forward(rows, cols, inv_tau, offset, kCpu);
}
std::tuple<Tensor, Tensor> lse_backward_cpu(const Tensor& grad, const Tensor& rows, const Tensor& cols, const Tensor& lse,
                                            double inv_tau, int64_t offset) {
  return lse_backward(grad, rows, cols, lse, inv_tau, offset, kCpu);
}

#ifdef SSL_BENCH_WITH_CUDA
constexpr ContrastivePrims kCuda{contrastive_sums_cuda, contrastive_grads_cuda};

std::tuple<Tensor, Tensor> forward_cuda(const Tensor& q, const Tensor& k, const std::optional<Tensor>& queue,
                                        double inv_tau, int64_t mode) {
  return forward(q, k, queue, inv_tau, mode, kCuda);
}
std::tuple<Tensor, Tensor, Tensor> backward_cuda(const Tensor& grad, const Tensor& q, const Tensor& k,
                                                 const std::optional<Tensor>& queue, const Tensor& lse,
                                                 double inv_tau, int64_t mode, bool queue_grad) {
  return backward(grad, q, k, queue, lse, inv_tau, mode, queue_grad, kCuda);
}
Tensor lse_forward_cuda(const Tensor& rows, const Tensor& cols, double inv_tau, int64_t offset) {
  return lse_forward(rows, cols, inv_tau, offset, kCuda);
}
std::tuple<Tensor, Tensor> lse_backward_cuda(const Tensor& grad, const Tensor& rows, const Tensor& cols, const Tensor& lse,
                                             double inv_tau, int64_t offset) {
  return lse_backward(grad, rows, cols, lse, inv_tau, offset, kCuda);
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(ssl_bench, m) {
  m.def("contrastive(Tensor q, Tensor k, Tensor? queue, float inv_tau, int mode) -> (Tensor, Tensor)");
  m.def(
      "contrastive_backward(Tensor grad, Tensor q, Tensor k, Tensor? queue, Tensor lse, float inv_tau, int mode, "
      "bool queue_grad) -> (Tensor, Tensor, Tensor)");
  m.def("contrastive_lse(Tensor rows, Tensor cols, float inv_tau, int offset) -> Tensor");
  m.def(
      "contrastive_lse_backward(Tensor grad, Tensor rows, Tensor cols, Tensor lse, float inv_tau, int offset) -> "
      "(Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ssl_bench, CPU, m) {
  m.impl("contrastive", &forward_cpu);
  m.impl("contrastive_backward", &backward_cpu);
  m.impl("contrastive_lse", &lse_forward_cpu);
  m.impl("contrastive_lse_backward", &lse_backward_cpu);
}

#ifdef SSL_BENCH_WITH_CUDA
TORCH_LIBRARY_IMPL(ssl_bench, CUDA, m) {
  m.impl("contrastive", &forward_cuda);
  m.impl("contrastive_backward", &backward_cuda);
  m.impl("contrastive_lse", &lse_forward_cuda);
  m.impl("contrastive_lse_backward", &lse_backward_cuda);
}
#endif

}  // namespace ssl_bench
