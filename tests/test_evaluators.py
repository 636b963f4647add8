"""Evaluator plugins against hand-computed cases (small synthetic features, no training)."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ssl_bench import protocol
from ssl_bench.api import Batch, Features, Method
from ssl_bench.blocks import augment, probes
from ssl_bench.engine import RunConfig
from ssl_bench.engine.build import Run
from ssl_bench.errors import UserError
from ssl_bench.plan import make_plan
from ssl_bench.registry import Registry
from ssl_bench.results import continual
from ssl_bench_plugins.evaluators import cka, collapse, downstream, fewshot, knn, linear, sharpness

pytestmark = pytest.mark.usefixtures("one_thread")


def clusters(n_per_class, n_classes, dim, spread, seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g) * 5
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return centres[y] + spread * torch.randn(len(y), dim, generator=g), y


def fake_run(test_sizes):
    """What held_out() needs of a run: experiences with their test indices (consecutive, disjoint)."""
    starts = np.cumsum([0] + test_sizes)
    return SimpleNamespace(experiences=[SimpleNamespace(test_idx=np.arange(a, b)) for a, b in zip(starts, starts[1:])])


def features_of(train, test):
    return Features([x for x, _ in train], [y for _, y in train], [x for x, _ in test], [y for _, y in test])


# ------------------------------------------------------------------ linear probe and kNN
def test_l2_is_chosen_on_held_out_training_data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 2
    x = torch.randn(80, 300, generator=g)  # 300 noise dimensions, 80 samples: an unregularised probe overfits
    x[:, 0] += 1.5 * (2 * y - 1)  # one informative dimension
    grid = [1e-6, 1e-4, 1e-2, 1.0]
    best, accs = probes.select_l2(x, y, grid, val_fraction=0.25, seed=0)
    assert best in grid and len(accs) == len(grid) and accs[grid.index(best)] == max(accs)
    assert best >= 1e-2 and accs[grid.index(best)] > accs[0]  # regularising helps, and the selection sees it
    same, _ = probes.select_l2(x, y, [1e-3, 1e-3 * (1 + 1e-12)], seed=0)  # equal accuracies: the stronger value
    assert same == 1e-3 * (1 + 1e-12)
    feats = features_of([(x[:40], y[:40]), (x[40:], y[40:])], [(x[:40], y[:40]), (x[40:], y[40:])])
    out = linear.LinearProbe(l2_grid=grid).evaluate(None, feats, None)
    assert out["l2"].shape == (2,) and set(out["l2"].tolist()) <= set(grid)
    assert linear.LinearProbe(l2=0.5).evaluate(None, feats, None)["l2"].tolist() == [0.5, 0.5]  # fixed: no selection


def test_l2_chosen_by_held_out_loss_is_the_lowest_cross_entropy_and_options_are_checked():
    g = torch.Generator().manual_seed(3)
    y = torch.arange(120) % 3
    x = torch.randn(120, 60, generator=g)
    x[:, :2] += 2.0 * torch.stack([(y == 1).float(), (y == 2).float()], 1)  # two informative dimensions
    grid = [1e-6, 1e-4, 1e-2, 1e-1, 1.0]
    best, accs = probes.select_l2(x, y, grid, val_fraction=0.25, seed=0, by="loss")
    # the same split and fits, recomputed: the chosen strength has the lowest held-out cross-entropy
    order = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    val, rest = order[:30], order[30:]
    losses = []
    for l2 in grid:
        probe = probes.fit(x[rest], y[rest], l2)
        losses.append(float(torch.nn.functional.cross_entropy(probe.logits(x[val].double()), y[val])))
    assert best == grid[int(np.argmin(losses))] and len(accs) == len(grid)
    assert sorted(losses)[1] - min(losses) > 1e-3  # a clear winner, not a tie the warm starts could flip
    with pytest.raises(UserError, match="L2 selection by 'auc'"):
        probes.select_l2(x, y, grid, by="auc")
    with pytest.raises(UserError, match="select_by"):
        linear.LinearProbe(select_by="auc")
    with pytest.raises(UserError, match="select_by"):
        downstream.Downstream(datasets=[{"name": "x"}], select_by="auc")
    with pytest.raises(UserError, match="select_by"):
        sharpness.Sharpness(probe=True, select_by="auc")


def test_l2_chosen_by_loss_holds_under_bf16_sized_noise_where_accuracy_flips():
    """Why v3 protocols choose by loss: a perturbation of the features of bf16 extraction's size (1% relative;
    a bf16 rounding is 0.4%, and a network's bf16 pass accumulates several) flips the accuracy-chosen L2 of
    small probes, whose held-out accuracies tie or differ by a sample, and the loss-chosen L2 of fewer."""
    flips = {"accuracy": 0, "loss": 0}
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(200) % 4
        x = torch.randn(200, 40, generator=g) + 0.6 * torch.nn.functional.one_hot(y, 40).float()
        perturbed = x * (1 + 0.01 * torch.randn(x.shape, generator=g))
        for by in flips:
            a = probes.select_l2(x, y, [1e-4, 1e-3, 1e-2, 1e-1], seed=seed, by=by, solver="lbfgs32")[0]
            b = probes.select_l2(perturbed, y, [1e-4, 1e-3, 1e-2, 1e-1], seed=seed, by=by, solver="lbfgs32")[0]
            flips[by] += a != b
    assert flips["loss"] < flips["accuracy"], flips


def test_linear_probe_separates_linearly_separable_features():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(10, 4, generator=g)
    x = torch.randn(3000, 10, generator=g)
    top2 = (x @ w).topk(2, dim=1).values
    x = x[top2[:, 0] - top2[:, 1] > 1.0][:600]  # keep a margin around the class boundaries
    y = (x @ w).argmax(1)  # classes are linear regions: separable, but not clustered
    feats = features_of([(x[:200], y[:200]), (x[200:400], y[200:400])], [(x[400:500], y[400:500]), (x[500:], y[500:])])
    acc = linear.LinearProbe().evaluate(None, feats, None)["acc"]
    assert acc.shape == (2,) and acc.min() >= 0.98
    shuffled = features_of([(x[:200], y[torch.randperm(200, generator=g)])], [(x[400:500], y[400:500])])
    assert linear.LinearProbe().evaluate(None, shuffled, None)["acc"][0] < 0.6  # labels carry no signal


def test_knn_on_clusters_and_per_k_keys():
    x, y = clusters(30, 4, 8, 0.5, seed=1)
    xt, yt = clusters(10, 4, 8, 0.5, seed=1)  # the same centres (same seed), fresh noise below
    xt = xt + 0.5 * torch.randn(xt.shape, generator=torch.Generator().manual_seed(2))
    out = knn.KNN().evaluate(None, features_of([(x, y)], [(xt, yt)]), None)
    assert out["acc"][0] == 1.0 and out["acc_k200"][0] == 1.0  # k=200 > bank of 120: the whole bank votes
    assert sorted(out) == ["acc", "acc_k200"]  # the first k's accuracy once, as "acc" (0.1.0 stored it twice)
    chance = knn.KNN(k=5).evaluate(None, features_of([(x, y[torch.randperm(len(y))])], [(xt, yt)]), None)["acc"][0]
    assert chance < 0.6


def test_knn_votes_are_temperature_weighted():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    # sharp weights (T=0.07): the single very similar neighbour outvotes two dissimilar ones
    assert knn.knn_predict(bank, labels, query, k=3, temperature=0.07).item() == 0
    # flat weights (large T): it becomes a majority vote
    assert knn.knn_predict(bank, labels, query, k=3, temperature=100.0).item() == 1
    with pytest.raises(UserError):
        knn.KNN(k=0)


# ------------------------------------------------------------------ few-shot
def test_fewshot_is_seeded_and_solves_clusters():
    x, y = clusters(12, 6, 8, 0.3, seed=3)
    run = fake_run([36, 36])
    feats = features_of([], [(x[:36], y[:36]), (x[36:], y[36:])])
    a = fewshot.FewShot(n_way=3, shots=[1, 2], n_query=5, episodes=10, seed=7).evaluate(run, feats, None)
    b = fewshot.FewShot(n_way=3, shots=[1, 2], n_query=5, episodes=10, seed=7).evaluate(run, feats, None)
    assert a == b and a["acc_1shot"] == 1.0 and a["acc_2shot"] == 1.0 and a["ci95_1shot"] == 0.0

    noisy = features_of([], [(torch.randn(72, 8, generator=torch.Generator().manual_seed(0)), y)])
    run1 = fake_run([72])
    one = fewshot.FewShot(n_way=3, shots=1, n_query=5, episodes=20, seed=1).evaluate(run1, noisy, None)
    assert one == fewshot.FewShot(n_way=3, shots=1, n_query=5, episodes=20, seed=1).evaluate(run1, noisy, None)
    assert one != fewshot.FewShot(n_way=3, shots=1, n_query=5, episodes=20, seed=2).evaluate(run1, noisy, None)
    assert one["acc_1shot"] < 0.8  # random features: near chance (1/3)
    logreg = fewshot.FewShot(n_way=3, shots=2, n_query=5, episodes=5, classifier="logreg").evaluate(run, feats, None)
    assert logreg["acc_2shot"] == 1.0


def test_fewshot_episodes_are_disjoint_and_validated():
    labels = np.repeat(np.arange(4), 3)
    for s, s_y, q, _q_y in fewshot.episodes(labels, n_way=3, k=2, n_query=5, n_episodes=5, seed=0):
        assert not set(s) & set(q) and len(s) == 6 and len(q) == 3
        assert (labels[s] == labels[s][::2].repeat(2)).all()  # support positions are grouped by class
        assert sorted(set(s_y)) == [0, 1, 2]
    with pytest.raises(UserError, match="5-way"):
        next(fewshot.episodes(labels, n_way=5, k=1, n_query=1, n_episodes=1, seed=0))
    with pytest.raises(UserError, match="classifier"):
        fewshot.FewShot(classifier="svm")


# ------------------------------------------------------------------ collapse
def with_spectrum(s, n=64, seed=0):
    """Features [n, len(s)] whose column-centred singular values are exactly ``s``."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, len(s), generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(a - a.mean(0))  # orthonormal and centred columns
    v, _ = torch.linalg.qr(torch.randn(len(s), len(s), generator=g, dtype=torch.float64))
    return (u * torch.tensor(s, dtype=torch.float64)) @ v.T + 3.0  # an offset that centring removes


def test_collapse_auc_of_known_spectra():
    m = collapse.collapse_metrics(with_spectrum([4.0, 2.0, 1.0, 1.0]))
    np.testing.assert_allclose(m["spectrum"], [4, 2, 1, 1], rtol=1e-5)
    assert m["auc"] == pytest.approx((4 / 8 + 6 / 8 + 7 / 8 + 8 / 8) / 4)  # 0.78125
    assert m["auc_sq"] == pytest.approx((16 + 20 + 21 + 22) / 22 / 4)
    p = np.array([4, 2, 1, 1]) / 8
    assert m["erank_centered"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))

    d = 16
    flat = collapse.collapse_metrics(with_spectrum([1.0] * d))
    assert flat["auc"] == pytest.approx((d + 1) / (2 * d))  # a flat spectrum: 0.5 + 1/(2d)
    assert flat["auc_sq"] == pytest.approx((d + 1) / (2 * d))
    assert flat["erank_centered"] == pytest.approx(d)
    one = collapse.collapse_metrics(with_spectrum([5.0] + [0.0] * (d - 1)))
    assert one["auc"] == pytest.approx(1.0) and one["erank_centered"] == pytest.approx(1.0, abs=1e-6)


def test_rankme_is_garridos_uncentred_with_eps():
    x = with_spectrum([4.0, 2.0, 1.0, 1.0])  # carries a mean offset of 3 per dimension
    sigma = np.linalg.svd(x.numpy(), compute_uv=False)  # uncentred: the offset is a large direction
    p = sigma / sigma.sum() + 1e-7
    expected = math.exp(-(p * np.log(p)).sum())
    m = collapse.collapse_metrics(x)
    assert m["rankme"] == pytest.approx(expected, rel=1e-9)
    assert m["rankme"] < m["erank_centered"] - 0.5  # the centred variant (the old "rankme") does not see the offset


def test_collapse_std_of_normalised_embeddings():
    same = torch.ones(50, 8) + 1e-9 * torch.arange(50.0).unsqueeze(1)
    assert collapse.collapse_metrics(same)["std_normalized"] < 1e-6
    iso = torch.randn(4000, 8, generator=torch.Generator().manual_seed(0))
    assert collapse.collapse_metrics(iso)["std_normalized"] == pytest.approx(1 / math.sqrt(8), rel=0.05)


def test_collapse_evaluator_pools_each_test_sample_once():
    x = with_spectrum([3.0, 1.0, 1.0], n=30).float()
    y = torch.zeros(30, dtype=torch.long)
    run = SimpleNamespace(experiences=[SimpleNamespace(test_idx=np.arange(0, 20)), SimpleNamespace(test_idx=np.arange(10, 30))])
    feats = features_of([], [(x[:20], y[:20]), (x[10:], y[10:])])  # samples 10..19 appear in both experiences
    m = collapse.Collapse().evaluate(run, feats, None)
    np.testing.assert_allclose(m["spectrum"], [3, 1, 1], rtol=1e-4)


# ------------------------------------------------------------------ CKA
def test_cka_identity_orthogonal_and_scale_invariance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g))
    assert continual.linear_cka(x, x) == pytest.approx(1.0)
    assert continual.linear_cka(x, x @ q) == pytest.approx(1.0)
    assert continual.linear_cka(x, 0.01 * x) == pytest.approx(1.0)
    assert continual.linear_cka(x, 7 * x @ q + 2) == pytest.approx(1.0)
    other = torch.randn(300, 12, generator=g)
    assert continual.linear_cka(x, other) < 0.3
    # one implementation: tensors (the evaluator) and arrays read from files (plot, gap_to_joint) agree exactly
    assert continual.linear_cka(x, other) == continual.linear_cka(x.numpy(), other.numpy())
    assert continual.linear_cka(x.half(), other.half().numpy()) == continual.linear_cka(x.half().numpy(), other.half())


def test_cka_evaluator_subset_and_previous_phase():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=g)
    y = torch.zeros(40, dtype=torch.long)
    run = fake_run([20, 20])
    now = features_of([], [(x[:20], y[:20]), (x[20:], y[20:])])
    before = features_of([], [(2 * x[:20], y[:20]), (2 * x[20:], y[20:])])
    out = cka.CKA(n_samples=16).evaluate(run, now, before)
    assert out["features"].dtype == np.float16 and out["features"].shape == (16, 6)
    assert len(set(out["index"])) == 16 and out["prev"] == pytest.approx(1.0)
    np.testing.assert_array_equal(out["index"], cka.CKA(n_samples=16).evaluate(run, before, None)["index"])
    assert "prev" not in cka.CKA(n_samples=16).evaluate(run, now, None)


# ------------------------------------------------------------------ sharpness
class Quadratic(Method):
    """loss = 0.5 (w - c)^T A (w - c) + 0 * views: a known Hessian A, whatever the batch."""

    def __init__(self, a: torch.Tensor):
        super().__init__(nn.Identity())
        self.a = a
        self.w = nn.Parameter(torch.zeros(len(a), dtype=a.dtype))

    def loss(self, views, labels):
        return 0.5 * self.w @ self.a @ self.w + 0 * views[0].sum()


def test_sharpness_of_a_quadratic_through_the_evaluator():
    eig = torch.tensor([4.0, 2.5, 1.0, 0.5, 0.25, 0.1], dtype=torch.float64)
    method = Quadratic(torch.diag(eig))
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)

    def batch_of(index):
        return Batch(
            images=images[index],
            labels=torch.zeros(len(index), dtype=torch.long),
            domains=torch.zeros(len(index), dtype=torch.long),
            index=index,
        )

    run = SimpleNamespace(
        method=method,
        experiences=[SimpleNamespace(train_idx=np.arange(10))],
        batch_of=batch_of,
        augment=augment.Augment("simclr"),
        dataset=SimpleNamespace(resolution=8),
    )
    ev = sharpness.Sharpness(batch_size=4, iters=30, n_probes=8, eps=0.1, steps=5)
    out = ev.evaluate(run, None, None)
    assert out["top_eigenvalue"] == pytest.approx(4.0, rel=1e-3)
    assert out["hessian_trace"] == pytest.approx(float(eig.sum()), rel=1e-6)  # Rademacher probes: exact for diagonal A
    # at w = 0 the largest increase in the box |d_i| <= 0.1 is at a corner: 0.5 * 0.01 * sum(eig)
    assert out["eps_sharpness"] == pytest.approx(0.5 * 0.01 * float(eig.sum()), rel=1e-6)
    assert out["loss"] == 0.0
    assert torch.equal(method.w.detach(), torch.zeros(6, dtype=torch.float64))  # weights restored
    assert ev.evaluate(run, None, None) == out  # seeded


# ------------------------------------------------------------------ downstream: fails at run start
def test_downstream_missing_dataset_fails_when_the_run_is_built(tiny_protocol, tmp_path):
    text = tiny_protocol.read_text().replace("[eval]\n", '[eval]\nevaluators = ["linear", "downstream"]\n')
    proto = protocol.parse(text + '\n[eval.options.downstream]\ndatasets = [{ name = "cifar-11" }]\n')
    config = RunConfig(protocol=proto, method="simclr", stream="instance", strategy="sequential", seed=0, out=tmp_path)
    with pytest.raises(UserError, match="unknown dataset 'cifar-11'"):
        Run(make_plan(config, Registry.discover()))  # the engine calls Evaluator.setup before any training


def test_downstream_probe_on_a_whole_dataset():
    registry = Registry.discover()
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 32))
    backbone.feature_dim = 32
    run = SimpleNamespace(
        registry=registry,
        dataset=SimpleNamespace(resolution=16),
        protocol=SimpleNamespace(eval=SimpleNamespace(precision="fp32", channels_last=False, batch_size=64)),
        method=SimpleNamespace(backbone=backbone),
        config=SimpleNamespace(download=False, progress=False),
        device=torch.device("cpu"),
    )
    with pytest.raises(UserError, match="downstream"):
        downstream.Downstream(datasets=[])
    with pytest.raises(UserError, match="distinct 'label'"):
        downstream.Downstream(datasets=[{"name": "synthetic"}, {"name": "synthetic"}])
    with pytest.raises(UserError, match="downstream dataset 'synthetic'"):
        downstream.Downstream(datasets=[{"name": "synthetic", "options": {"no_such_option": 1}}]).setup(run)
    options = {"train_per_class_domain": 4, "test_per_class_domain": 2, "n_domains": 1}
    ev = downstream.Downstream(datasets=[{"name": "synthetic", "label": "shapes", "options": options}], max_train=50)
    ev.setup(run)
    out = ev.evaluate(run, None, None)
    assert set(out) == {"shapes/acc"} and 0.0 <= out["shapes/acc"] <= 1.0
    assert out == ev.evaluate(run, None, None)  # seeded subsets, deterministic probe
    images, idx = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8), np.arange(10)
    fp32 = ev._embed(run, images, idx, "")
    run.protocol.eval.precision = "bf16"  # since 0.3.0: embedded as the engine embeds (probes.embed)
    assert torch.equal(ev._embed(run, images, idx, ""), probes.embed(run, images, idx, ev.batch_size))
    assert not torch.equal(ev._embed(run, images, idx, ""), fp32)
    torch.testing.assert_close(ev._embed(run, images, idx, ""), fp32, rtol=0.05, atol=0.05)
    assert set(ev.evaluate(run, None, None)) == {"shapes/acc"}


def test_sharpness_of_a_real_method_is_finite_and_changes_nothing():
    """SimCLR's loss (through the fused op when built) gets second derivatives via the reference ops."""
    registry = Registry.discover()
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    backbone.feature_dim = 4
    method = registry.get("method", "simclr").factory(backbone)
    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    run = SimpleNamespace(
        method=method,
        experiences=[SimpleNamespace(train_idx=np.arange(12))],
        dataset=SimpleNamespace(resolution=8),
        augment=augment.Augment("simclr"),
        batch_of=lambda i: Batch(images[i], torch.zeros(len(i), dtype=torch.long), torch.zeros(len(i), dtype=torch.long), i),
    )
    state = {k: v.clone() for k, v in method.state_dict().items()}
    out = sharpness.Sharpness(batch_size=8, iters=3, n_probes=2, steps=2).evaluate(run, None, None)
    assert all(math.isfinite(v) for v in out.values()) and out["hessian_trace"] != 0.0
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in state.items())  # weights and BN statistics restored
