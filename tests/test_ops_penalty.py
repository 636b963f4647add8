"""ssl_bench::quadratic_penalty_ (EWC/MAS penalty + gradient into .grad) against the float64 loop.
The kernel tests FAIL when the extension ssl_bench._C is not built."""

import pytest
import torch

from ssl_bench.errors import UserError
from ssl_bench.ops import penalty
from ssl_bench.ops.penalty import quadratic_penalty_, quadratic_penalty_reference
from tests.conftest import DEVICES


def make(shapes, device, dtype, seed, with_grad=True):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=dtype).to(device)) for s in shapes]
    anchors = [torch.randn(s, generator=g, dtype=dtype).to(device) for s in shapes]
    imps = [torch.rand(s, generator=g, dtype=dtype).to(device) for s in shapes]
    if with_grad:
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=dtype).to(device)
    return params, anchors, imps


def expected(params, anchors, imps, lam):
    value = sum((w.double() * (p.double() - a.double()).square()).sum() for p, a, w in zip(params, anchors, imps))
    grads = [
        (0 if p.grad is None else p.grad.double()) + lam * w.double() * (p.double() - a.double())
        for p, a, w in zip(params, anchors, imps)
    ]
    return 0.5 * lam * value, grads


SHAPES = [[(1,)], [(3, 5), (7,), (2, 3, 3, 3)], [(64, 3, 7, 7), (64,), (100003,), (0,), (512, 257)]]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("lam", [1.0, 37.5])
def test_kernel_matches_float64(ops, device, dtype, shapes, lam):
    params, anchors, imps = make(shapes, device, dtype, seed=len(shapes))
    want_value, want_grads = expected(params, anchors, imps, lam)
    value = quadratic_penalty_(params, anchors, imps, lam, use_kernel=True)
    assert value.dim() == 0 and value.device.type == device and value.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert abs(value.item() - want_value.item()) <= tol * abs(want_value.item()) + 1e-30
    for p, want in zip(params, want_grads):
        assert torch.allclose(p.grad.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_kernel_allocates_missing_grads_and_matches_reference(ops, device):
    shapes = [(4, 3), (5,), (2, 2, 3)]
    p1, a1, w1 = make(shapes, device, torch.float32, seed=5, with_grad=False)
    p2 = [torch.nn.Parameter(p.detach().clone()) for p in p1]
    v1 = quadratic_penalty_(p1, a1, w1, 2.0, use_kernel=True)
    v2 = quadratic_penalty_reference(p2, a1, w1, 2.0)
    assert torch.allclose(v1, v2, rtol=1e-6)
    for x, y in zip(p1, p2):
        assert torch.allclose(x.grad, y.grad, rtol=1e-6, atol=1e-7)


def test_reference_is_the_loop():
    params, anchors, imps = make([(3, 4), (6,)], "cpu", torch.float64, seed=7)
    want_value, want_grads = expected(params, anchors, imps, 0.3)
    value = quadratic_penalty_reference(params, anchors, imps, 0.3)
    assert torch.allclose(value, want_value)
    for p, want in zip(params, want_grads):
        assert torch.allclose(p.grad, want)


def test_gradient_is_the_derivative_of_the_value():
    params, anchors, imps = make([(3, 4), (6,)], "cpu", torch.float64, seed=8, with_grad=False)
    leaves = [p.detach().clone().requires_grad_() for p in params]
    value = 0.5 * 1.7 * sum((w * (p - a) ** 2).sum() for p, a, w in zip(leaves, anchors, imps))
    autograd_grads = torch.autograd.grad(value, leaves)
    quadratic_penalty_(params, anchors, imps, 1.7)
    for p, g in zip(params, autograd_grads):
        assert torch.allclose(p.grad, g)


def test_opcheck(ops):
    params, anchors, imps = make([(3, 4), (5,)], "cpu", torch.float32, seed=9)
    torch.library.opcheck(ops.quadratic_penalty_, ([p.detach() for p in params], [p.grad for p in params], anchors, imps, 0.5))


def test_bad_input(ops):
    params, anchors, imps = make([(3, 4)], "cpu", torch.float32, seed=1)
    with pytest.raises(UserError, match="same shape"):
        quadratic_penalty_(params, [torch.zeros(4, 3)], imps, 1.0)
    with pytest.raises(UserError, match="same length|one anchor"):
        quadratic_penalty_(params, anchors + anchors, imps, 1.0)
    with pytest.raises(UserError, match="dtype"):
        quadratic_penalty_(params, [anchors[0].double()], imps, 1.0, use_kernel=True)
    with pytest.raises(RuntimeError, match="same length"):
        ops.quadratic_penalty_([params[0].detach()], [], anchors, imps, 1.0)


def test_backend_is_reported(ops):
    assert penalty.backend() == "kernel"
