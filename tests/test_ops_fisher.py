"""ssl_bench::fisher_linear / fisher_conv2d against float64 references, and fisher_diagonal against a
batch-size-1 loop. The kernel tests FAIL when the extension ssl_bench._C is not built."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.errors import UserError
from ssl_bench.ops import fisher
from ssl_bench.ops.fisher import (
    fisher_conv2d_reference,
    fisher_diagonal,
    fisher_diagonal_reference,
    fisher_diagonal_vmap,
    fisher_linear_reference,
)
from tests.conftest import DEVICES


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_references_equal_explicit_per_sample_gradients():
    """The references themselves: sum over samples of squared per-sample weight gradients."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 2, generator=g, dtype=torch.float64)
    gy = torch.randn(5, 4, 4, 3, generator=g, dtype=torch.float64)
    expect = torch.zeros_like(w)
    for n in range(5):
        wn = w.clone().requires_grad_()
        out = F.conv2d(x[n : n + 1], wn, stride=(2, 3), padding=(1, 2), dilation=(1, 2))
        (gw,) = torch.autograd.grad(out, wn, gy[n : n + 1])
        expect += gw.square()
    got = fisher_conv2d_reference(gy, x, (3, 2), (2, 3), (1, 2), (1, 2))
    assert torch.allclose(got.view_as(w), expect, rtol=1e-10, atol=1e-12)
    xs, gs = torch.randn(5, 3, 6, generator=g, dtype=torch.float64), torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    expect = sum((gs[n].t() @ xs[n]).square() for n in range(5))
    assert torch.allclose(fisher_linear_reference(gs, xs), expect, rtol=1e-10)
    assert torch.allclose(
        fisher_linear_reference(gs[:, 0], xs[:, 0]), sum(torch.outer(gs[n, 0], xs[n, 0]).square() for n in range(5)), rtol=1e-10
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 13, 5), (64, 33, 17), ("seq", 5, 3, 9, 7), ("seq", 3, 11, 4, 2)])
def test_fisher_linear_matches_float64(ops, device, shape):
    g = torch.Generator().manual_seed(hash(shape) % 1000)
    if shape[0] == "seq":
        _, n, length, f, o = shape
        x, gy = torch.randn(n, length, f, generator=g), torch.randn(n, length, o, generator=g)
    else:
        n, f, o = shape
        x, gy = torch.randn(n, f, generator=g), torch.randn(n, o, generator=g)
    ref = fisher_linear_reference(gy.double(), x.double())
    got = ops.fisher_linear(gy.to(device), x.to(device))
    assert got.shape == ref.shape and got.dtype == torch.float32
    assert rel(got.cpu(), ref) <= 1e-5
    got64 = ops.fisher_linear(gy.double().to(device), x.double().to(device))
    assert rel(got64.cpu(), ref) <= 1e-12


CONVS = [  # (N, C, H, W, O, kernel, stride, padding, dilation)
    (3, 3, 9, 9, 5, (3, 3), (2, 2), (1, 1), (1, 1)),
    (4, 4, 11, 10, 6, (5, 5), (1, 1), (2, 2), (2, 2)),
    (2, 2, 7, 7, 3, (1, 1), (1, 1), (0, 0), (1, 1)),
    (5, 3, 8, 9, 4, (3, 2), (2, 1), (0, 1), (1, 2)),
    (33, 7, 6, 5, 9, (3, 3), (1, 1), (1, 1), (1, 1)),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("geom", CONVS)
def test_fisher_conv2d_matches_float64(ops, device, geom):
    n, c, h, w, o, k, s, p, d = geom
    g = torch.Generator().manual_seed(sum(geom[:5]))
    x = torch.randn(n, c, h, w, generator=g)
    y = F.conv2d(x, torch.randn(o, c, *k, generator=g), stride=s, padding=p, dilation=d)
    gy = torch.randn(y.shape, generator=g)
    ref = fisher_conv2d_reference(gy.double(), x.double(), k, s, p, d)
    got = ops.fisher_conv2d(gy.to(device), x.to(device), list(k), list(s), list(p), list(d))
    assert got.shape == (o, c * k[0] * k[1])
    assert rel(got.cpu(), ref) <= 1e-5
    if device == "cuda":  # reduced-precision inputs: accumulated in float32
        for dt in (torch.bfloat16, torch.float16):
            xr, gr = x.to(device, dt), gy.to(device, dt)
            ref_r = fisher_conv2d_reference(gr.double().cpu(), xr.double().cpu(), k, s, p, d)
            assert rel(ops.fisher_conv2d(gr, xr, list(k), list(s), list(p), list(d)).cpu(), ref_r) <= 1e-2


def test_fisher_ops_several_chunks_of_samples(ops):
    """Sizes where the CPU kernels walk the batch in several chunks (8 M-element budget), with a remainder."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(20, 64, 32, 32, generator=g)  # per sample: P*K + O*K = 1024*576 + 64*576 -> 13 per chunk
    gy = torch.randn(20, 64, 32, 32, generator=g)
    ref = fisher_conv2d_reference(gy.double(), x.double(), (3, 3), (1, 1), (1, 1), (1, 1))
    assert rel(ops.fisher_conv2d(gy, x, [3, 3], [1, 1], [1, 1], [1, 1]), ref) <= 1e-5
    xs, gs = torch.randn(11, 3, 1024, generator=g), torch.randn(11, 3, 1024, generator=g)  # 8 per chunk
    assert rel(ops.fisher_linear(gs, xs), fisher_linear_reference(gs.double(), xs.double())) <= 1e-5


def test_fisher_ops_reject_bad_shapes(ops):
    with pytest.raises(RuntimeError, match="does not match"):
        ops.fisher_conv2d(torch.randn(2, 3, 5, 5), torch.randn(2, 4, 8, 8), [3, 3], [1, 1], [0, 0], [1, 1])
    with pytest.raises(RuntimeError, match="batch sizes"):
        ops.fisher_linear(torch.randn(3, 4), torch.randn(2, 5))


def test_opcheck(ops):
    g = torch.Generator().manual_seed(3)
    torch.library.opcheck(ops.fisher_linear, (torch.randn(6, 4, generator=g), torch.randn(6, 5, generator=g)))
    torch.library.opcheck(
        ops.fisher_conv2d,
        (torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 2, 7, 7, generator=g), [3, 3], [2, 2], [1, 1], [1, 1]),
    )


class Net(nn.Module):
    """Linear + Conv layers of every handled kind: stride/padding, groups, reflect padding, a sequence Linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1, groups=2, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(4)
        self.seq = nn.Linear(4, 5)
        self.head = nn.Linear(5 * 16, 7)

    def forward(self, x):
        h = F.relu(self.conv1(x), inplace=True)
        h = F.relu(self.bn(self.conv2(h)))  # [N, 4, 4, 4]
        h = torch.tanh(self.seq(h.flatten(2).transpose(1, 2)))  # [N, 16, 5]
        return self.head(h.flatten(1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_kernel", [True, False])
def test_fisher_diagonal_matches_batch_size_one_loop(ops, device, use_kernel):
    torch.manual_seed(0)
    model = Net().double().to(device).eval()
    x = torch.randn(9, 3, 8, 8, dtype=torch.float64, device=device)
    y = torch.randint(0, 7, (9,), device=device)
    got, n = fisher_diagonal(model, lambda: F.cross_entropy(model(x), y, reduction="sum"), use_kernel=use_kernel)
    ref, n_ref = fisher_diagonal_reference(model, lambda m, xx, yy: F.cross_entropy(m(xx), yy, reduction="sum"), x, y)
    assert n == n_ref == 9
    layers = [k for k in ref if not k.startswith("bn.")]
    for k in layers:
        assert torch.allclose(got[k], ref[k], rtol=1e-9, atol=1e-14), k
    # other layers (BatchNorm): the documented batch-gradient proxy, a lower bound here
    assert set(got) == set(ref)
    for k in ("bn.weight", "bn.bias"):
        assert (got[k] <= ref[k] * (1 + 1e-9) + 1e-15).all()
    assert all(p.grad is None for p in model.parameters())  # no .grad written
    skipped, _ = fisher_diagonal(model, lambda: F.cross_entropy(model(x), y, reduction="sum"), others="skip")
    assert set(skipped) == set(layers)


def test_fisher_diagonal_float32_kernel_and_vmap_agree(ops):
    torch.manual_seed(1)
    model = Net().eval()
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 7, (16,))
    got, _ = fisher_diagonal(model, lambda: F.cross_entropy(model(x), y, reduction="sum"), use_kernel=True)
    ref, _ = fisher_diagonal_vmap(model.double(), lambda o, t: F.cross_entropy(o, t, reduction="sum"), x.double(), y)
    for k in ("conv1.weight", "conv2.weight", "seq.weight", "head.weight", "head.bias"):
        assert rel(got[k], ref[k]) <= 1e-5, k


def test_fisher_diagonal_layer_called_twice():
    """Two calls of one layer per sample: the per-sample gradient sums both contributions."""
    torch.manual_seed(2)
    lin, conv = nn.Linear(5, 3).double(), nn.Conv2d(2, 3, 3, padding=1).double()
    xa, xb = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    ia, ib = torch.randn(4, 2, 5, 5, dtype=torch.float64), torch.randn(4, 2, 6, 6, dtype=torch.float64)

    def loss(x1, x2, i1, i2):
        return (lin(x1) ** 2).sum() + lin(x2).sin().sum() + conv(i1).square().mean((1, 2, 3)).sum() + conv(i2).cos().sum()

    got, _ = fisher_diagonal(nn.ModuleList([lin, conv]), lambda: loss(xa, xb, ia, ib))
    expect = {k: torch.zeros_like(p) for k, p in nn.ModuleList([lin, conv]).named_parameters()}
    params = dict(nn.ModuleList([lin, conv]).named_parameters())
    for n in range(4):
        gs = torch.autograd.grad(loss(xa[n : n + 1], xb[n : n + 1], ia[n : n + 1], ib[n : n + 1]), list(params.values()))
        for k, gk in zip(params, gs):
            expect[k] += gk.square() / 4
    for k, want in expect.items():
        assert torch.allclose(got[k], want, rtol=1e-9), k


def test_fisher_diagonal_bad_input():
    model = nn.Linear(3, 2)
    with pytest.raises(UserError, match="scalar"):
        fisher_diagonal(model, lambda: model(torch.randn(4, 3)))
    with pytest.raises(UserError, match="others"):
        fisher_diagonal(model, lambda: model(torch.randn(4, 3)).sum(), others="maybe")


def test_backend_is_reported(ops):
    assert fisher.backend() == "kernel"
