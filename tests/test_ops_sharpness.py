"""Sharpness: batched Hessian-vector products, top eigenvalue, Hutchinson trace, eps-sharpness."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.errors import UserError
from ssl_bench.ops.sharpness import (
    eps_sharpness,
    hessian_trace,
    hessian_trace_reference,
    hvp,
    top_eigenvalue,
    top_eigenvalue_reference,
)
from tests.conftest import DEVICES


def quadratic(device, dim=24, top=10.0, seed=0):
    """0.5 w^T A w + b^T w over two parameter tensors, A with a known spectrum (top eigenvalue ``top``)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0]
    ev = torch.linspace(-2.0, 4.0, dim, dtype=torch.float64)
    ev[-1] = top
    a = (q @ torch.diag(ev) @ q.t()).to(device)
    b = torch.randn(dim, generator=g, dtype=torch.float64).to(device)
    w1 = torch.randn(dim // 3, generator=g, dtype=torch.float64).to(device).requires_grad_()
    w2 = torch.randn(dim - dim // 3, generator=g, dtype=torch.float64).to(device).view(2, -1).requires_grad_()

    def loss():
        w = torch.cat([w1, w2.reshape(-1)])
        return 0.5 * w @ a @ w + b @ w

    return loss, [w1, w2], a, b


def mlp(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64).to(device)
    y = torch.randint(0, 3, (16,), generator=g).to(device)
    w1 = (torch.randn(8, 5, generator=g, dtype=torch.float64) / 2).to(device).requires_grad_()
    b1 = torch.zeros(8, dtype=torch.float64, device=device, requires_grad=True)
    w2 = (torch.randn(3, 8, generator=g, dtype=torch.float64) / 2).to(device).requires_grad_()

    def loss():
        return F.cross_entropy(torch.tanh(x @ w1.t() + b1) @ w2.t(), y)

    return loss, [w1, b1, w2]


@pytest.mark.parametrize("device", DEVICES)
def test_hvp_matches_explicit_hessian(device):
    loss, params = mlp(device)
    # explicit Hessian, column by column, with plain double backward
    flat_grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss(), params, create_graph=True)])
    d = flat_grad.numel()
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat_grad[i], params, retain_graph=True)]) for i in range(d)]
    h = torch.stack(rows)
    v = torch.randn(5, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(device)
    assert torch.allclose(hvp(loss, params, v), v @ h, rtol=1e-9, atol=1e-12)
    assert torch.allclose(hvp(loss, params, v[0]), h @ v[0], rtol=1e-9, atol=1e-12)
    with pytest.raises(UserError, match="vectors"):
        hvp(loss, params, torch.zeros(2, d + 1, dtype=torch.float64, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_top_eigenvalue_of_known_quadratic(device):
    loss, params, _, _ = quadratic(device)
    got = top_eigenvalue(loss, params, iters=15, generator=torch.Generator().manual_seed(0))
    assert abs(got - 10.0) < 1e-6
    ref = top_eigenvalue_reference(loss, params, iters=60, generator=torch.Generator().manual_seed(0), tol=1e-12)
    assert abs(ref - 10.0) < 1e-4
    # a dominant NEGATIVE eigenvalue is returned with its sign
    loss_n, params_n, _, _ = quadratic(device, top=-12.0)
    assert abs(top_eigenvalue(loss_n, params_n, iters=20, generator=torch.Generator().manual_seed(0)) + 12.0) < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_hutchinson_trace_close_to_true_trace(device):
    loss, params, a, _ = quadratic(device, dim=30)
    true = a.trace().item()
    # Rademacher probes: variance = 2 * sum_{i != j} a_ij^2; 512 probes -> std of the mean
    std = math.sqrt(2 * (a.square().sum() - a.diagonal().square().sum()).item() / 512)
    est = hessian_trace(loss, params, n_probes=512, generator=torch.Generator().manual_seed(3), batch_size=64)
    assert abs(est - true) < 4 * std
    again = hessian_trace(loss, params, n_probes=512, generator=torch.Generator().manual_seed(3), batch_size=64)
    assert est == again  # seeded
    ref = hessian_trace_reference(loss, params, n_probes=256, generator=torch.Generator().manual_seed(4))
    assert abs(ref - true) < 4 * std * math.sqrt(2)


@pytest.mark.parametrize("device", DEVICES)
def test_eps_sharpness_bounds(device):
    loss, params, a, b = quadratic(device)
    before = [p.detach().clone() for p in params]
    assert eps_sharpness(loss, params, eps=0.0, steps=5, generator=torch.Generator().manual_seed(0)) == 0.0
    eps = 1e-2
    s = eps_sharpness(loss, params, eps=eps, steps=10, generator=torch.Generator().manual_seed(0))
    for p, q in zip(params, before):
        assert torch.equal(p.detach(), q)  # parameters restored
    w = torch.cat([p.detach().reshape(-1) for p in params])
    r = eps * (w.abs() + 1)
    g = a @ w + b
    first_order = (g.abs() * r).sum().item()
    bound = first_order + 0.5 * (r @ a.abs() @ r).item()  # max over the box of g.d + 0.5 d^T A d
    assert 0.0 <= s <= bound + 1e-12
    assert s >= 0.5 * first_order  # the ascent finds most of the first-order increase


@pytest.mark.parametrize("device", DEVICES)
def test_eps_sharpness_of_linear_loss_is_exact(device):
    """For a linear loss the maximum is at the box corner sign(g) * r; sign ascent reaches it."""
    g = torch.Generator().manual_seed(5)
    c = torch.randn(40, generator=g, dtype=torch.float64).to(device)
    w = torch.randn(40, generator=g, dtype=torch.float64).to(device).requires_grad_()
    s = eps_sharpness(lambda: c @ w, [w], eps=0.05, steps=4, generator=torch.Generator().manual_seed(1))
    exact = (c.abs() * 0.05 * (w.detach().abs() + 1)).sum().item()
    assert abs(s - exact) < 1e-9 * exact


def test_eps_sharpness_on_a_network_is_seeded_and_nonnegative():
    loss, params = mlp("cpu")
    s1 = eps_sharpness(loss, params, eps=1e-2, steps=3, generator=torch.Generator().manual_seed(0))
    s2 = eps_sharpness(loss, params, eps=1e-2, steps=3, generator=torch.Generator().manual_seed(0))
    assert s1 == s2 and s1 > 0


def test_bad_input():
    with pytest.raises(UserError, match="empty"):
        top_eigenvalue(lambda: torch.zeros(()), [])
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(UserError, match="scalar"):
        hessian_trace(lambda: w * 2, [w])
    with pytest.raises(UserError, match=">= 0"):
        eps_sharpness(lambda: (w * w).sum(), [w], eps=-1.0)
