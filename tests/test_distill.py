"""Distillation into the previous model (ssl_bench.blocks.distill, CaSSLe, PFR): the frozen copy runs with batch
statistics and changes nothing, each method gets the reference's distillation loss, PFR's regulariser."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import results
from ssl_bench.blocks import distill
from ssl_bench.cli import main
from ssl_bench.engine.loop import train_phase
from ssl_bench_plugins.strategies.cassle import CaSSLe
from ssl_bench_plugins.strategies.pfr import PFR
from tests.test_strategies import _Bar, make_run, micro, train  # noqa: F401  (micro is a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def bn_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_frozen_copy_uses_batch_statistics_and_changes_no_running_statistics():
    net = bn_net()
    with torch.no_grad():  # stored statistics far from any batch's: eval mode would give other outputs
        net[1].running_mean.fill_(5.0)
        net[1].running_var.fill_(0.01)
    net.eval()  # the original may be in any mode
    frozen = distill.FrozenModel()
    frozen.snapshot(net)
    x = torch.randn(16, 4)
    out = frozen(lambda m: m(x))
    reference = bn_net()
    reference.load_state_dict(net.state_dict())
    reference.train()
    with torch.no_grad():
        expected = reference(x)  # a training-mode forward: the batch's mean and variance
        stored = net(x)  # what the old, eval-mode frozen model gave
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, stored, atol=1e-2)
    state = {k: v.clone() for k, v in frozen.model.state_dict().items()}
    for _ in range(3):
        frozen(lambda m: m(torch.randn(16, 4) * 3 + 1))
    for k, v in frozen.model.state_dict().items():  # running statistics and counters untouched
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)
    assert float(net[1].running_mean[0]) == 5.0 and not out.requires_grad
    assert all(not p.requires_grad for p in frozen.model.parameters())
    restored = distill.FrozenModel()
    restored.load_state_dict(frozen.state_dict(), net)
    torch.testing.assert_close(restored(lambda m: m(x)), out)


def test_distillation_losses_against_float64():
    r = np.random.default_rng(0)
    p = [r.normal(size=(6, 5)) for _ in range(2)]
    z = [r.normal(size=(6, 5)) for _ in range(2)]
    t = [[torch.tensor(a, dtype=torch.float32) for a in x] for x in (p, z)]

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    P, Z = unit(np.concatenate(p)), unit(np.concatenate(z))
    logits = P @ Z.T / 0.2
    expected = (-np.diag(log_softmax(logits)).mean() - np.diag(log_softmax(logits.T)).mean()) / 2
    assert float(distill.contrastive(*t, temperature=0.2)) == pytest.approx(expected, rel=1e-4)
    cos = [(unit(a) * unit(b)).sum(1) for a, b in zip(p, z)]
    assert float(distill.predictive(*t)) == pytest.approx(np.mean([np.mean(2 - 2 * c) for c in cos]), rel=1e-5)
    assert float(distill.predictive_mse(*t)) == pytest.approx(np.mean([np.mean((a - b) ** 2) for a, b in zip(p, z)]), rel=1e-5)

    def barlow(a, b):
        a = (a - a.mean(0)) / (a.std(0, ddof=1) + 1e-5)
        b = (b - b.mean(0)) / (b.std(0, ddof=1) + 1e-5)
        c = a.T @ b / len(a)
        return 0.1 * (((np.diag(c) - 1) ** 2).sum() + 5e-3 * ((c**2).sum() - (np.diag(c) ** 2).sum()))

    assert float(distill.decorrelative(*t)) == pytest.approx(np.mean([barlow(a, b) for a, b in zip(p, z)]), rel=1e-4)


@pytest.mark.parametrize(
    "method,kind,weight",
    [
        ("simclr", "contrastive", 1.0),
        ("byol", "predictive", 1.0),
        ("barlow", "decorrelative", 1.0),
        ("vicreg", "predictive_mse", 25.0),
    ],
)
def test_cassle_uses_the_reference_s_loss_and_weight_per_method(method, kind, weight, micro, tmp_path):  # noqa: F811
    run = make_run(micro, tmp_path, "cassle", method=method)
    strat = run.strategy
    assert strat.kind == kind and strat.weight == weight
    assert strat.head[0].out_features == 2048  # the reference's predictor width
    assert strat.loss(run, run.views(run.dataset.train.images[:8]), None) is None  # nothing before the 2nd phase


def test_cassle_contrastive_value_is_the_reference_formula_on_frozen_batch_statistics(micro, tmp_path):  # noqa: F811
    run = make_run(micro, tmp_path, "cassle", method="simclr")
    strat = run.strategy
    train(run, 0)
    run.method.train()
    views = run.views(run.dataset.train.images[:12])
    value = strat.loss(run, views, None).detach()
    with torch.no_grad():
        twin = strat.frozen.model
        p = [strat.head(run.method.project(v)) for v in views]
        z = [twin.project(v) for v in views]  # twin is in training mode: batch statistics
        old = [strat.frozen.model.eval().project(v) for v in views]  # the old behaviour: stored statistics
    strat.frozen.model.train()
    expected = distill.contrastive(p, z, 0.2)
    assert float(value) == pytest.approx(float(expected), rel=1e-4)
    assert float(distill.contrastive(p, old, 0.2)) != pytest.approx(float(expected), rel=1e-3)
    assert strat.record()["loss"] == "contrastive"


def test_pfr_regularises_backbone_features_through_its_projector(micro, tmp_path):  # noqa: F811
    run = make_run(micro, tmp_path, "pfr", method="byol")
    strat = run.strategy
    d = run.method.feature_dim
    assert isinstance(strat, PFR) and strat.head[0].in_features == d and strat.head[-1].out_features == d
    # alviur/CVPR_PFR cassle/distillers/pfr.py: Linear(features_dim, features_dim / 2) with a bias, BN, ReLU, Linear back
    assert strat.head[0].out_features == d // 2 and strat.head[0].bias is not None
    assert strat.head[-1].in_features == d // 2 and strat.head[-1].bias is not None
    train(run, 0)
    assert strat.frozen.model is not None and strat.history["distill_steps"] == [0]
    run.method.train()
    views = run.views(run.dataset.train.images[:10])
    value = strat.loss(run, views, None).detach()
    with torch.no_grad():
        expected = np.mean(
            [
                -F.cosine_similarity(strat.head(run.method.backbone(v)), strat.frozen.model.backbone(v), dim=1).mean().item()
                for v in views[:2]
            ]
        )
    assert float(value) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    head = [p.clone() for p in strat.head.parameters()]
    run.phase_index = 1
    train_phase(run, run.phases[1], _Bar())
    assert any(not torch.equal(p, q) for p, q in zip(strat.head.parameters(), head))


def test_cassle_and_pfr_options_are_checked():
    from ssl_bench.errors import UserError

    with pytest.raises(UserError, match="cassle: loss must be"):
        CaSSLe(loss="kl")
    with pytest.raises(UserError, match="pfr: weight"):
        PFR(weight=-1)


@pytest.mark.parametrize("strategy", ["pfr", "cassle"])
def test_distillation_strategies_run_end_to_end_with_a_multi_crop_method(strategy, tiny_protocol, tmp_path, capsys):
    args = ["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "runs"), "--method", "swav"]
    args += ["--strategy", strategy, "--method-opt", "n_local=2", "--method-opt", "n_prototypes=16"]
    args += ["--method-opt", "proj_hidden=32", "--strategy-opt", "hidden=16"]
    assert main(args) == 0
    r = results.Result(capsys.readouterr().out.strip())
    steps = np.asarray(r["strategy/distill_steps"])
    assert steps[0] == 0 and steps[1] > 0 and np.isfinite(np.asarray(r["strategy/distill_loss_mean"])[1])
