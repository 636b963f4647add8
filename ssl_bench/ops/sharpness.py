"""Loss-landscape sharpness: Hessian-vector products, top eigenvalue, Hessian trace, eps-sharpness.

``loss_fn()`` returns a scalar loss on a FIXED batch (deterministic: eval mode, no dropout);
``params`` is a list of tensors requiring grad.

Implementation choices (issue 7, op 4):

* The gradient graph is built ONCE per call (``create_graph=True``); each Hessian-vector product
  is one more backward through it, and SEVERAL vectors go through one backward at once
  (``torch.autograd.grad(..., is_grads_batched=True)``, i.e. vmap over the backward pass).
* Vectors live in ONE flat ``[k, D]`` buffer (D = number of parameter entries), so the dot
  products, normalisation (QR for a block of vectors) and axpy of the iterations are single ATen
  kernels on that buffer: there is no list of per-parameter tensors to fuse, hence no custom
  multi-tensor op here (a ``ssl_bench::`` op would replace one ATen kernel launch by another).
  The only per-parameter step is the concatenation of the backward's output (one ``torch.cat``).
* No host synchronisation inside the iterations: no ``.item()``, no convergence test; the result
  is read once at the end.

``hvp_reference`` / ``top_eigenvalue_reference`` / ``hessian_trace_reference`` are the classic
per-tensor loop (one vector per backward, a host sync per iteration): the test oracle and the
benchmark baseline (benchmark/test_bench_sharpness.py).
"""

from __future__ import annotations

import torch

from ssl_bench.errors import UserError


def _params(params) -> list:
    params = list(params)
    if not params:
        raise UserError("sharpness: params is empty; pass the model's trainable parameters")
    if not all(p.requires_grad for p in params):
        raise UserError("sharpness: every tensor in params must require grad")
    return params


def _numel(params) -> int:
    return sum(p.numel() for p in params)


class _Hessian:
    """The gradient graph of ``loss_fn`` at the current parameters; ``self(V)`` gives ``V @ H``."""

    def __init__(self, loss_fn, params):
        self.params = params
        self.loss = loss_fn()
        if not isinstance(self.loss, torch.Tensor) or self.loss.dim() != 0:
            raise UserError("sharpness: loss_fn() must return a scalar tensor")
        grads = torch.autograd.grad(self.loss, params, create_graph=True, allow_unused=True)
        self.grad = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])
        self.dim = self.grad.numel()

    def __call__(self, vectors: torch.Tensor) -> torch.Tensor:
        """``vectors``: ``[k, D]`` -> ``[k, D]`` Hessian-vector products in one batched backward."""
        if not self.grad.requires_grad:  # loss is linear in params: H = 0
            return torch.zeros_like(vectors)
        out = torch.autograd.grad(
            self.grad, self.params, grad_outputs=vectors, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
        k = vectors.shape[0]
        return torch.cat(
            [(vectors.new_zeros(k, p.numel()) if h is None else h.reshape(k, -1)) for h, p in zip(out, self.params)], dim=1
        )


def hvp(loss_fn, params, vectors: torch.Tensor) -> torch.Tensor:
    """Hessian-vector products for one flat vector ``[D]`` or a batch ``[k, D]`` (same shape back).

    D is the total number of entries of ``params`` in order, each flattened (``torch.cat`` of
    ``p.reshape(-1)``).
    """
    params = _params(params)
    h = _Hessian(loss_fn, params)
    v = vectors.reshape(1, -1) if vectors.dim() == 1 else vectors
    if v.dim() != 2 or v.shape[1] != h.dim:
        raise UserError(f"hvp: vectors must be [D] or [k, D] with D = {h.dim} (got {tuple(vectors.shape)})")
    out = h(v.to(h.grad.dtype))
    return out.reshape(vectors.shape)


def _randn(shape, like: torch.Tensor, generator) -> torch.Tensor:
    gen_device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=like.dtype).to(like.device)


def top_eigenvalue(loss_fn, params, iters: int = 20, generator=None, n_vectors: int = 4) -> float:
    """Largest-magnitude Hessian eigenvalue (signed) by block power iteration.

    ``n_vectors`` start vectors are iterated together (one batched HVP per iteration), kept
    orthonormal by a QR of the flat ``[D, k]`` block; the answer is the largest-magnitude Ritz value
    of the final block. ``iters`` iterations, no early stop (no host sync inside the loop).
    """
    params = _params(params)
    if iters < 1 or n_vectors < 1:
        raise UserError("top_eigenvalue: iters and n_vectors must be >= 1")
    h = _Hessian(loss_fn, params)
    k = min(n_vectors, h.dim)
    v = torch.linalg.qr(_randn((h.dim, k), h.grad, generator))[0].t()  # [k, D], orthonormal rows
    for _ in range(iters):
        hv = h(v)
        v = torch.linalg.qr(hv.t())[0].t()
    hv = h(v)
    ritz = torch.linalg.eigvalsh(0.5 * ((v @ hv.t()) + (hv @ v.t())))
    return float(ritz[ritz.abs().argmax()])


def _krylov(h: _Hessian, v0: torch.Tensor, steps: int) -> torch.Tensor:
    """Rayleigh-Ritz on the Krylov space ``span{v0, H v0, ..., H^(m-1) v0}`` (Lanczos with full
    reorthogonalisation): the Ritz values of H on it, ascending. Its largest is a lower bound of H's largest
    eigenvalue and its smallest an upper bound of H's smallest, each converging much faster in the number of
    Hessian-vector products than power iteration. One HVP per step; one host read per step, to stop at an
    invariant subspace (a residual under 1e-8 of ``|H v|``: the space holds exact eigenvectors)."""
    steps = min(steps, h.dim)
    basis = torch.zeros(steps, h.dim, dtype=h.grad.dtype, device=h.grad.device)
    images = torch.zeros_like(basis)  # H times each basis vector
    v = v0 / v0.norm()
    m = 0
    for j in range(steps):
        basis[j] = v
        images[j] = w = h(v.unsqueeze(0))[0]
        m = j + 1
        q = basis[:m]
        w = w - q.t() @ (q @ w)
        w = w - q.t() @ (q @ w)  # twice: classical Gram-Schmidt keeps the basis orthonormal to rounding
        norm = w.norm()
        if j + 1 < steps and float(norm) <= 1e-8 * float(images[j].norm()):
            break
        v = w / norm
    t = basis[:m] @ images[:m].t()  # V^T H V
    return torch.linalg.eigvalsh(0.5 * (t + t.t()))


def top_positive_eigenvalue(loss_fn, params, iters: int = 20, generator=None) -> tuple[float, float]:
    """``(largest, dominant)``: the largest (most positive) Hessian eigenvalue, and the largest-magnitude one (signed).

    Power iteration finds the largest *magnitude*; at a saddle that is a negative eigenvalue, which says
    nothing about how sharp the loss is upwards. Both come from one Krylov (Lanczos) space of ``iters``
    Hessian-vector products from a random start (``generator``; :func:`_krylov`): its largest Ritz value
    approximates the top of the spectrum from below, whatever the sign of the dominant one, and its
    extreme Ritz values the dominant one. Ritz values are bounds, so an unconverged largest is too low,
    never too high; when every eigenvalue is negative (a local maximum) the largest is negative.

    Cost: ``iters`` HVPs. (Until issue 34 this was block power iteration with 4 vectors, ``4 (iters + 1)``
    HVPs and as many again on ``H - d I`` when the dominant d was negative; the Krylov space of ``iters``
    vectors contains every power-iteration iterate of one start vector, so it finds the extremes at least as
    well per HVP, and in practice far better: benchmark/RESULTS.md, "Evaluation cost".)
    """
    params = _params(params)
    if iters < 1:
        raise UserError("top_positive_eigenvalue: iters must be >= 1")
    h = _Hessian(loss_fn, params)
    ritz = _krylov(h, _randn((h.dim,), h.grad, generator), iters)
    dominant = ritz[ritz.abs().argmax()]
    return float(ritz[-1]), float(dominant)


def hessian_trace(loss_fn, params, n_probes: int = 16, generator=None, batch_size: int = 8) -> float:
    """Hutchinson estimate of tr(H): mean over Rademacher probes v of v.Hv, ``batch_size`` per backward."""
    params = _params(params)
    if n_probes < 1 or batch_size < 1:
        raise UserError("hessian_trace: n_probes and batch_size must be >= 1")
    h = _Hessian(loss_fn, params)
    total = torch.zeros((), dtype=h.grad.dtype, device=h.grad.device)
    done = 0
    while done < n_probes:
        k = min(batch_size, n_probes - done)
        v = _randn((k, h.dim), h.grad, generator).sign()
        v.masked_fill_(v == 0, 1)  # (boolean indexing would make a GPU wait for the count of zeros)
        total = total + (v * h(v)).sum()
        done += k
    return float(total / n_probes)


@torch.no_grad()
def _set(params, flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def eps_sharpness(loss_fn, params, eps: float = 1e-3, steps: int = 10, generator=None) -> float:
    """Largest loss increase found in the box ``|delta_i| <= eps * (|w_i| + 1)`` (Keskar et al. 2017).

    Projected sign-gradient ascent from a random start in the box (``generator`` seeds it), step
    ``2.5 * r / steps`` per coordinate (r = the box half-width), ``steps`` gradient steps; the best
    loss over all visited points (the start w itself included) minus ``loss(w)``, so the result is
    >= 0, and exactly 0 for eps = 0. Returns the absolute increase (Keskar et al. report it
    relative, ``100 * increase / (1 + loss(w))``). The parameters are restored afterwards.
    """
    params = _params(params)
    if eps < 0 or steps < 0:
        raise UserError("eps_sharpness: eps and steps must be >= 0")
    with torch.no_grad():
        w0 = torch.cat([p.detach().reshape(-1) for p in params])
        loss0 = loss_fn().detach()
    r = eps * (w0.abs() + 1)
    u = torch.rand(
        w0.shape, generator=generator, device=generator.device if generator is not None else w0.device, dtype=w0.dtype
    ).to(w0.device)
    delta = (2 * u - 1) * r
    best = torch.zeros_like(loss0)
    alpha = 2.5 * r / max(steps, 1)
    try:
        for _ in range(steps):
            _set(params, w0 + delta)
            loss = loss_fn()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            g = torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1) for gi, p in zip(grads, params)])
            best = torch.maximum(best, loss.detach() - loss0)
            delta = torch.clamp(delta + alpha * g.sign(), -r, r)
        _set(params, w0 + delta)
        with torch.no_grad():
            best = torch.maximum(best, loss_fn().detach() - loss0)
    finally:
        _set(params, w0)
    return float(best)


# ---------------------------------------------------------------------------------------------
# References: per-tensor lists, one vector per backward, host sync every iteration
# ---------------------------------------------------------------------------------------------


def hvp_reference(loss_fn, params, vector: list) -> list:
    """One Hessian-vector product as a list of per-parameter tensors (rebuilds the gradient graph)."""
    params = _params(params)
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    return list(torch.autograd.grad(grads, params, grad_outputs=vector))


def top_eigenvalue_reference(loss_fn, params, iters: int = 20, generator=None, tol: float = 1e-3) -> float:
    """Power iteration, PyHessian style: per-tensor lists, ``.item()`` and a convergence test each step."""
    params = _params(params)
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    v = [_randn(p.shape, p, generator) for p in params]
    eig = None
    for _ in range(iters):
        norm = sum((x * x).sum() for x in v).sqrt().item()
        v = [x / norm for x in v]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        new = sum((a * b).sum() for a, b in zip(hv, v)).item()
        if eig is not None and abs(new - eig) / (abs(eig) + 1e-6) < tol:
            eig = new
            break
        eig, v = new, [x.detach() for x in hv]
    return eig


def hessian_trace_reference(loss_fn, params, n_probes: int = 16, generator=None) -> float:
    """Hutchinson with one probe per backward and an ``.item()`` per probe."""
    params = _params(params)
    grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    total = 0.0
    for _ in range(n_probes):
        v = [_randn(p.shape, p, generator).sign() for p in params]
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        total += sum((a * b).sum() for a, b in zip(hv, v)).item()
    return total / n_probes
