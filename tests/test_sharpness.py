"""The sharpness evaluator: the largest *positive* eigenvalue (a saddle is not flat), and the curvature of one loss
common to all methods (a fixed linear probe's cross-entropy) against a dense Hessian."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.api import Batch, Features, Method
from ssl_bench.blocks import augment, probes
from ssl_bench.ops import sharpness as ops
from ssl_bench_plugins.evaluators import sharpness

pytestmark = pytest.mark.usefixtures("one_thread")


class Quadratic(Method):
    """loss = 0.5 w^T A w + 0 * views: a known Hessian A, whatever the batch."""

    def __init__(self, a: torch.Tensor):
        super().__init__(nn.Identity())
        self.a = a
        self.w = nn.Parameter(torch.zeros(len(a), dtype=a.dtype))

    def loss(self, views, labels):
        return 0.5 * self.w @ self.a @ self.w + 0 * views[0].sum()


class Energy(Method):
    """loss = mean squared feature of the first view: any differentiable method loss."""

    def loss(self, views, labels):
        return self.backbone(views[0]).pow(2).mean()


def fake_run(method, images, labels):
    n = len(images)

    def batch_of(index):
        return Batch(images[index], labels[index], torch.zeros(len(index), dtype=torch.long), index)

    return SimpleNamespace(
        method=method,
        experiences=[SimpleNamespace(train_idx=np.arange(n))],
        batch_of=batch_of,
        augment=augment.Augment("simclr"),
        dataset=SimpleNamespace(resolution=images.shape[-1], train=SimpleNamespace(labels=labels)),
    )


def test_a_saddle_is_not_reported_as_flat():
    """The dominant eigenvalue is -10 (a saddle); the top of the spectrum is 3: that is the sharpness."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    eig = torch.tensor([-10.0, 3.0, 1.0, 0.5, 0.2, 0.1, 0.0, -0.1, -0.5, -1.0, -2.0, -4.0], dtype=torch.float64)
    method = Quadratic(q @ torch.diag(eig) @ q.T)
    images = torch.randint(0, 256, (8, 3, 8, 8), dtype=torch.uint8)
    run = fake_run(method, images, torch.zeros(8, dtype=torch.long))
    out = sharpness.Sharpness(batch_size=4, iters=40, n_probes=4, steps=2).evaluate(run, None, None)
    assert out["top_eigenvalue"] == pytest.approx(3.0, rel=1e-3)
    assert out["dominant_eigenvalue"] == pytest.approx(-10.0, rel=1e-6)
    # the operator alone, and a positive-definite case where both are the same number
    w = torch.zeros(12, dtype=torch.float64, requires_grad=True)
    top, dominant = ops.top_positive_eigenvalue(lambda: 0.5 * w @ method.a @ w, [w], iters=40, generator=g)
    assert top == pytest.approx(3.0, rel=1e-3) and dominant == pytest.approx(-10.0, rel=1e-6)
    spd = q @ torch.diag(eig.abs() + 0.1) @ q.T
    top, dominant = ops.top_positive_eigenvalue(lambda: 0.5 * w @ spd @ w, [w], iters=40, generator=g)
    assert top == pytest.approx(10.1, rel=1e-4) and dominant == top


def test_probe_curvature_is_the_hessian_of_a_fixed_probes_cross_entropy_in_the_backbone():
    torch.manual_seed(0)
    res, n = 4, 60
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * res * res, 5), nn.Tanh())
    backbone.feature_dim = 5
    method = Energy(backbone)
    images = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8)
    labels = torch.arange(n) % 3
    run = fake_run(method, images, labels)
    with torch.no_grad():
        feats = backbone(augment.prepare(images, res))
    features = Features([feats[:30], feats[30:]], [labels[:30], labels[30:]], [], [])
    ev = sharpness.Sharpness(batch_size=4, iters=60, n_probes=400, steps=1, probe=True, probe_batch_size=40, l2_grid=(1e-3, 1e-1))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    out = ev.evaluate(run, features, None)
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items())

    # the same loss written out: the probe fitted on all the features with the chosen L2, the batch drawn as documented
    probe = probes.fit(feats, labels, out["probe_l2"])
    rng = np.random.default_rng(1)
    index = torch.from_numpy(np.sort(rng.choice(np.arange(n), 40, replace=False)))
    x = augment.prepare(images[index], res)
    weight, bias = backbone[1].weight, backbone[1].bias

    def loss(w, b):
        return F.cross_entropy(probe.logits(torch.tanh(F.linear(x.flatten(1), w, b))), labels[index])

    assert out["probe_loss"] == pytest.approx(float(loss(weight, bias).detach()), rel=1e-5)
    flat = torch.cat([weight.detach().reshape(-1), bias.detach()])
    split = weight.numel()

    def loss_flat(v):
        return loss(v[:split].view_as(weight), v[split:])

    hessian = torch.autograd.functional.hessian(loss_flat, flat)
    eig = torch.linalg.eigvalsh(hessian.double())
    assert out["probe_top_eigenvalue"] == pytest.approx(float(eig[-1]), rel=0.02)
    assert out["probe_hessian_trace"] == pytest.approx(float(eig.sum()), rel=0.15)  # Hutchinson, 400 probes
    assert out["probe_l2"] in (1e-3, 1e-1)


def test_a_run_stores_the_probe_curvature_under_the_names_the_report_reads(tiny_protocol, tmp_path, capsys):
    """Through the engine: the end-of-run evaluator gets the last phase's features and stores the probe's numbers."""
    import math

    from ssl_bench import results
    from ssl_bench.cli import main

    text = tiny_protocol.read_text().replace("[eval]\n", '[eval]\nevaluators = ["linear", "sharpness"]\n')
    text += (
        "\n[eval.options.sharpness]\nbatch_size = 8\niters = 2\nn_probes = 2\nsteps = 1\nprobe = true\nprobe_batch_size = 16\n"
    )
    proto = tmp_path / "sharp.toml"
    proto.write_text(text)
    assert main(["-q", "run", "--protocol", str(proto), "--out", str(tmp_path / "runs")]) == 0
    r = results.Result(capsys.readouterr().out.strip())
    for key in ("probe_top_eigenvalue", "probe_hessian_trace", "probe_loss", "top_eigenvalue", "dominant_eigenvalue"):
        assert math.isfinite(float(r[f"end/sharpness/{key}"][()])), key
    assert float(r["end/sharpness/probe_loss"][()]) > 0
