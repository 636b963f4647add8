"""Continual strategies (issue 5): behaviour, not just "it runs"."""

import textwrap

import numpy as np
import pytest
import torch

from ssl_bench import results
from ssl_bench.blocks import augment
from ssl_bench.blocks.buffers import ReplayBuffer
from ssl_bench.cli import main
from ssl_bench.engine import RunConfig, checkpoint
from ssl_bench.engine.build import Run
from ssl_bench.engine.loop import train_phase
from ssl_bench.engine.optim import LARS
from ssl_bench.plan import make_plan
from ssl_bench.protocol import load
from ssl_bench.registry import Registry

# a method whose loss is a sum of per-sample terms (no negatives, no batch statistics in eval mode),
# so that per-sample gradients are well defined and a batch-size-1 loop is the exact oracle
PER_SAMPLE_METHOD = textwrap.dedent("""
    import torch
    from torch import nn
    from ssl_bench import hookimpl
    from ssl_bench.api import Method

    class PerSample(Method):
        def __init__(self, backbone):
            super().__init__(backbone)
            self.projector = nn.Sequential(nn.Linear(self.feature_dim, 16), nn.ReLU(), nn.Linear(16, 8))

        def loss(self, views, labels):
            z1, z2 = (self.projector(self.backbone(v)) for v in views)
            return ((z1 - z2) ** 2).sum(1).mean() + 0.1 * z1.tanh().sum(1).mean()

    @hookimpl
    def ssl_bench_methods():
        return {"persample": PerSample}
""")


@pytest.fixture
def micro(tiny_protocol):
    """The tiny protocol with half the classes: one or two steps per experience, for unit-level checks."""
    text = tiny_protocol.read_text().replace("n_domains = 4 }", "n_domains = 4, n_superclasses = 2 }")
    assert text != tiny_protocol.read_text()
    path = tiny_protocol.with_name("micro.toml")
    path.write_text(text)
    return path


class _Bar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass


def make_run(protocol_path, tmp_path, strategy, method="simclr", options=None, plugins=(), recipe=None):
    config = RunConfig(
        protocol=load(str(protocol_path)),
        method=method,
        stream="instance",
        strategy=strategy,
        seed=0,
        out=tmp_path / "runs",
        strategy_options=options or {},
        device="cpu",
        progress=False,
        recipe_overrides=recipe or {},
    )
    return Run(make_plan(config, Registry.discover(list(plugins))))


def train(run, i):
    run.phase_index = i
    run.strategy.before_phase(run, run.phases[i])
    train_phase(run, run.phases[i], _Bar())
    run.strategy.after_phase(run, run.phases[i])


def per_sample_plugin(tmp_path):
    path = tmp_path / "persample_method.py"
    path.write_text(PER_SAMPLE_METHOD)
    return str(path)


def fixed_views(run):
    """Deterministic views (the image and its mirror), so a loop over samples sees the same inputs."""

    def views(images, size=None):
        x = augment.prepare(images, run.dataset.resolution)
        return [x, x.flip(-1)]

    return views


# ------------------------------------------------------------------ MAS / EWC
@pytest.mark.parametrize("name", ["mas", "ewc"])
def test_penalty_is_zero_at_anchor_and_grows_quadratically(name, micro, tmp_path):
    run = make_run(micro, tmp_path, name, options={"samples": 24, "lam": 3.0})
    reg = run.strategy
    train(run, 0)  # importances and anchors from the end of experience 0
    assert reg.importances and all(torch.isfinite(v).all() and (v >= 0).all() for v in reg.importances.values())
    assert sum(float(v.sum()) for v in reg.importances.values()) > 0
    params, anchors, imps = reg._params, reg._anchor, reg._imp
    gen = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=gen) for p in params]

    def penalty_at(t):
        with torch.no_grad():
            for p, a, d in zip(params, anchors, direction):
                p.copy_(a + t * d)
                p.grad = torch.zeros_like(p)
        reg._penalty, reg._steps = None, 0
        reg.after_backward(run)
        return float(reg._penalty), [p.grad.clone() for p in params]

    value0, grads0 = penalty_at(0.0)
    assert value0 == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads0)
    v1, g1 = penalty_at(0.1)
    v2, g2 = penalty_at(0.2)
    v4, _ = penalty_at(0.4)
    factor = {"mas": 1.0, "ewc": 0.5}[name]  # each paper's penalty: MAS lam * sum(...), EWC (lam / 2) * sum(...)
    expected = factor * 3.0 * sum(float((i * (0.1 * d) ** 2).sum()) for i, d in zip(imps, direction))
    assert v1 > 0 and v1 == pytest.approx(expected, rel=1e-4)
    assert v2 / v1 == pytest.approx(4, rel=1e-4) and v4 / v1 == pytest.approx(16, rel=1e-4)
    for a, b, i, d in zip(g1, g2, imps, direction):  # gradient 2 * factor * lam * imp * (p - a): linear in the distance
        torch.testing.assert_close(b, 2 * a, rtol=1e-3, atol=1e-8)  # float32: p - a loses a few bits
        torch.testing.assert_close(a, 2 * factor * 3.0 * i * 0.1 * d, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("name", ["mas", "ewc"])
def test_a_penalty_too_stiff_for_sgd_is_capped_so_the_weights_settle(name, micro, tmp_path):
    # replay+mas on smoke diverged: importances ~1e3 at lam 0.05, lr 0.1 made SGD unstable on the penalty alone
    run = make_run(micro, tmp_path, name, options={"samples": 24, "lam": 1e4})
    reg = run.strategy
    train(run, 0)
    momentum = run.recipe.momentum
    limit = reg.STABLE * 2 * (1 + momentum) / (run.peak_lr * 2 * reg.factor * reg.lam)
    assert 0 < reg.history["importance_capped"][-1] <= 1
    assert max(float(v.max()) for v in reg.importances.values()) <= limit * (1 + 1e-6)

    def distance_after_sgd_on_the_penalty(importances):
        params = [p.detach().clone().requires_grad_(True) for p in reg._params]
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p, a in zip(params, reg._anchor):
                p.copy_(a + 1e-3 * torch.randn(p.shape, generator=gen))
        opt = torch.optim.SGD(params, lr=run.peak_lr, momentum=momentum)
        for _ in range(40):
            for p, a, i in zip(params, reg._anchor, importances):
                p.grad = 2 * reg.factor * reg.lam * i * (p.detach() - a)
            opt.step()
        return sum(float((p.detach() - a).norm()) for p, a in zip(params, reg._anchor))

    start = sum(float(1e-3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0)).norm()) for a in reg._anchor)
    assert distance_after_sgd_on_the_penalty(reg._imp) < start
    uncapped = [i * 10 / reg.STABLE for i in reg._imp]  # what the uncapped importances at least were
    assert not distance_after_sgd_on_the_penalty(uncapped) < 1e3 * start  # diverges (inf or NaN)


@pytest.mark.parametrize("name", ["mas", "ewc"])
def test_under_lars_the_biases_and_norms_are_capped(name, micro, tmp_path):
    # BYOL + MAS on tinyimagenet-cpu (LARS, lr 1.0) went NaN 35 steps into the second phase: LARS moves biases and
    # norms by plain SGD steps, and their importances (up to ~700) made those steps diverge on the penalty alone
    run = make_run(micro, tmp_path, name, options={"samples": 24, "lam": 1e4}, recipe={"optimizer": "lars", "lr": 1.0})
    reg = run.strategy
    train(run, 0)
    limit = reg.STABLE * 2 * (1 + run.recipe.momentum) / (run.peak_lr * 2 * reg.factor * reg.lam)
    plain = [n for n in reg.importances if reg.named[n].ndim <= 1]
    assert plain and max(float(reg.importances[n].max()) for n in plain) <= limit * (1 + 1e-6)
    assert max(float(v.max()) for n, v in reg.importances.items() if n not in plain) > limit  # LARS bounds these itself
    assert 0 < reg.history["importance_capped"][-1] < 1

    def distance_after_lars_on_the_penalty(importances):
        params = {n: reg.named[n].detach().clone().requires_grad_(True) for n in reg.importances}
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(reg.anchors[n] + 1e-3 * torch.randn(p.shape, generator=gen))
        groups = [
            {"params": [p for n, p in params.items() if n not in plain]},
            {"params": [params[n] for n in plain], "lars": False},
        ]
        opt = LARS(groups, lr=run.peak_lr, momentum=run.recipe.momentum, eta=run.recipe.lars_eta, clip=run.recipe.lars_clip)
        for _ in range(40):
            for n, p in params.items():
                p.grad = 2 * reg.factor * reg.lam * importances[n] * (p.detach() - reg.anchors[n])
            opt.step()
        return sum(float((p.detach() - reg.anchors[n]).norm()) for n, p in params.items())

    scale = sum(float(a.norm()) for a in reg.anchors.values())
    assert distance_after_lars_on_the_penalty(reg.importances) < scale
    uncapped = {n: v * (10 / reg.STABLE if n in plain else 1) for n, v in reg.importances.items()}
    assert not distance_after_lars_on_the_penalty(uncapped) < 1e3 * scale  # the biases and norms diverge (inf or NaN)


def test_ewc_fisher_is_per_sample_mean_of_squares(micro, tmp_path):
    run = make_run(micro, tmp_path, "ewc", method="persample", plugins=[per_sample_plugin(tmp_path)])
    run.views = fixed_views(run)
    method = run.method.eval()
    index = np.arange(0, 40, 3)
    fisher, n = run.strategy.importance(run, index)
    assert n == len(index)

    params = dict(method.named_parameters())
    loop = {k: torch.zeros_like(params[k]) for k in fisher}
    mean_grad = {k: torch.zeros_like(params[k]) for k in fisher}
    for i in index:  # the oracle: one backward per sample
        views = run.views(run.dataset.train.images[i : i + 1])
        grads = torch.autograd.grad(method.loss(views, None), [params[k] for k in fisher])
        for k, g in zip(fisher, grads):
            loop[k] += g.square() / len(index)
            mean_grad[k] += g / len(index)
    assert any("backbone" in k for k in fisher) and any("projector" in k for k in fisher)
    for k in fisher:
        torch.testing.assert_close(fisher[k], loop[k], rtol=1e-3, atol=1e-9)
    # and it is not the square of the batch-mean gradient that several libraries use
    k = max(fisher, key=lambda k: float(fisher[k].sum()))
    assert float(fisher[k].sum()) > 1.5 * float(mean_grad[k].square().sum())


def test_mas_importance_is_mean_abs_per_sample_gradient(micro, tmp_path):
    from ssl_bench_plugins.strategies.mas import mas_importance

    run = make_run(micro, tmp_path, "mas")
    backbone = run.method.backbone.eval()
    x = augment.prepare(run.dataset.train.images[:6], run.dataset.resolution)
    imp = mas_importance(backbone, x, chunk=4)
    params = dict(backbone.named_parameters())
    loop = {k: torch.zeros_like(p) for k, p in params.items()}
    for i in range(len(x)):
        grads = torch.autograd.grad(backbone(x[i : i + 1]).pow(2).sum(), list(params.values()))
        for k, g in zip(params, grads):
            loop[k] += g.abs() / len(x)
    for k in params:
        torch.testing.assert_close(imp[k], loop[k], rtol=1e-3, atol=1e-7)


# ------------------------------------------------------------------ replay buffer
def _chi2(counts, expected):
    return float(((counts - expected) ** 2 / expected).sum())


def test_reservoir_buffer_is_a_uniform_sample_of_the_stream():
    n_items, size, trials = 400, 40, 1000
    chunks = np.array_split(np.arange(n_items), 4)  # offered in four experiences, as a run does
    counts = np.zeros(n_items)
    recent = np.zeros(n_items)
    for t in range(trials):
        buf = ReplayBuffer(size, seed=t)
        for chunk in chunks:
            buf.add(chunk)
        assert len(buf) == size and len(set(buf.index.tolist())) == size
        counts[buf.index] += 1
        recent[np.arange(n_items - size, n_items)] += 1  # a "keep the latest" buffer, for contrast
    expected = trials * size / n_items
    df = n_items - 1
    limit = df + 5 * np.sqrt(2 * df)  # chi-square(df) upper tail, ~1e-6
    assert _chi2(counts, expected) < limit
    assert _chi2(recent, expected) > 100 * limit  # the test does reject a non-uniform buffer
    share = np.array([counts[c].sum() for c in chunks]) / counts.sum()
    np.testing.assert_allclose(share, 0.25, atol=0.01)  # every experience equally represented


def test_balanced_buffer_evens_out_an_imbalanced_stream():
    sizes = [500, 100, 50, 30, 20]
    group = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(group))
    buf = ReplayBuffer(50, policy="class", seed=0)
    buf.add(np.arange(len(group))[order], group[order])
    assert np.bincount(buf.group, minlength=5).tolist() == [10] * 5
    assert (group[buf.index] == buf.group).all()
    plain = ReplayBuffer(50, seed=0)
    plain.add(np.arange(len(group))[order])
    assert np.bincount(group[plain.index], minlength=5)[0] > 25  # reservoir follows the stream's imbalance


def test_replay_mixes_buffer_into_batches_and_state_round_trips(micro, tmp_path):
    opts = {"size": 30, "ratio": 0.25}
    a = make_run(micro, tmp_path, "replay", options=opts)
    train(a, 0)
    assert len(a.strategy.stream.buffer) == 30
    assert set(a.strategy.stream.buffer.index.tolist()) <= set(a.experiences[0].train_idx.tolist())
    state = checkpoint.unpack(checkpoint.read(_save(a.strategy.state_dict(), tmp_path)))
    b = make_run(micro, tmp_path, "replay", options=opts)
    b.strategy.load_state_dict(state)
    np.testing.assert_array_equal(a.strategy.stream.buffer.index, b.strategy.stream.buffer.index)
    current = a.batch_of(torch.from_numpy(a.experiences[1].train_idx[:24]))
    mixed_a, mixed_b = a.strategy.batch(a, current), b.strategy.batch(b, current)
    assert len(mixed_a.index) == 24  # compute-matched: a quarter of the batch is replaced by buffer samples
    torch.testing.assert_close(mixed_a.index[:18], current.index[:18])
    torch.testing.assert_close(mixed_a.index, mixed_b.index)  # same samples drawn after the round trip
    assert set(mixed_a.index[18:].tolist()) <= set(a.strategy.stream.buffer.index.tolist())
    a.phase_index = b.phase_index = 1
    a.strategy.after_phase(a, a.phases[1])
    b.strategy.after_phase(b, b.phases[1])
    np.testing.assert_array_equal(a.strategy.stream.buffer.index, b.strategy.stream.buffer.index)


def test_replay_append_mode_adds_to_the_batch_and_images_processed_tells(micro, tmp_path):
    runs = {
        mode: make_run(micro, tmp_path, "replay", options={"size": 30, "ratio": 0.5, "mode": mode})
        for mode in ("replace", "append")
    }
    seq = make_run(micro, tmp_path, "sequential")
    for run in (*runs.values(), seq):
        for i in range(len(run.phases)):
            train(run, i)
    current = runs["append"].batch_of(torch.from_numpy(runs["append"].experiences[1].train_idx[:24]))
    assert len(runs["append"].strategy.batch(runs["append"], current).index) == 48  # B * r / (1 - r) appended
    assert runs["replace"].images_processed == seq.images_processed  # compute-matched with sequential
    assert runs["append"].images_processed > seq.images_processed


def _save(obj, tmp_path):
    path = tmp_path / "state.pt"
    checkpoint.write(checkpoint.pack(obj), path, "")
    return path


# ------------------------------------------------------------------ CaSSLe, LUMP
def test_cassle_frozen_model_does_not_change(micro, tmp_path):
    run = make_run(micro, tmp_path, "cassle")
    strat = run.strategy
    train(run, 0)
    frozen = strat.frozen.model
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    current = {k: v.clone() for k, v in run.method.state_dict().items()}
    predictor = [p.clone() for p in strat.head.parameters()]
    run.phase_index = 1
    train_phase(run, run.phases[1], _Bar())
    assert strat.frozen.model is frozen and strat._steps == run.phases[1].steps
    for k, v in frozen.state_dict().items():  # running statistics included: the frozen copy changes nothing
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert any(not torch.equal(v, current[k]) for k, v in run.method.state_dict().items())
    assert any(not torch.equal(p, q) for p, q in zip(strat.head.parameters(), predictor))  # the predictor trains
    assert all(p.grad is None for p in frozen.parameters())


def test_lump_mixes_views_with_buffer_samples(micro, tmp_path):
    run = make_run(micro, tmp_path, "lump", options={"size": 20})
    train(run, 0)
    run.views = fixed_views(run)  # views = (image, mirror image): the buffer part can then be recovered
    batch = run.batch_of(torch.from_numpy(run.experiences[1].train_idx[:8]))
    views = run.views(batch.images)
    buffered = torch.from_numpy(run.strategy.stream.buffer.index.copy())  # before this step offers its own samples
    mixed = run.strategy.views(run, [v.clone() for v in views], batch)
    lam = run.strategy.lams[-1]
    assert 0 < lam < 1 and len(mixed) == 2 and mixed[0].shape == views[0].shape
    past = (mixed[0] - lam * views[0]) / (1 - lam)  # (1 - lam) * a buffer sample's view
    torch.testing.assert_close(((mixed[1] - lam * views[1]) / (1 - lam)), past.flip(-1), rtol=1e-3, atol=1e-3)
    candidates = run.views(run.dataset.train.images[buffered])[0]
    dist = torch.cdist(past.flatten(1), candidates.flatten(1))
    assert float(dist.min(1).values.max()) < 1e-2 * float(dist.median())  # every mixed-in image is a buffer sample


@pytest.mark.parametrize("fill, mixes_in_first", [("step", True), ("phase", False)])
def test_lump_fills_online_so_the_first_experience_mixes_too(micro, tmp_path, fill, mixes_in_first):
    run = make_run(micro, tmp_path, "lump", options={"size": 20, "fill": fill})
    train(run, 0)
    mixed_steps = run.strategy.record()["mixed_steps"]
    assert (mixed_steps[0] > 0) == mixes_in_first  # online (the reference's): all but the first step of experience 0 mix
    if mixes_in_first:
        assert mixed_steps[0] == len(run.losses) - 1
    assert set(run.strategy.stream.buffer.index.tolist()) <= set(run.experiences[0].train_idx.tolist())


# ------------------------------------------------------------------ planning, composition, resume
def test_joint_sequential_hybrid_take_the_same_number_of_steps(micro, tmp_path):
    runs = {s: make_run(micro, tmp_path, s) for s in ("sequential", "joint", "hybrid")}
    seq, joint, hybrid = runs["sequential"], runs["joint"], runs["hybrid"]
    assert len(seq.phases) == 2 and len(joint.phases) == 1 and len(hybrid.phases) == 3
    total = sum(seq.steps_per_experience)
    assert seq.total_steps == joint.total_steps == hybrid.total_steps == total > 2
    assert joint.phases[0].experiences == [0, 1] and joint.strategy.record()["sequential_steps_per_experience"].sum() == total
    assert hybrid.phases[-1].experiences == [0, 1] and hybrid.phases[-1].steps == round(0.5 * total)
    joint.phase_index = 0
    train_phase(joint, joint.phases[0], _Bar())  # the steps planned are the steps taken
    assert joint.step == total == len(joint.losses)


def test_replay_plus_mas_end_to_end_and_resume_keeps_the_buffer(tiny_protocol, tmp_path, monkeypatch, capsys):
    crash = tmp_path / "crash_at.py"
    crash.write_text(
        "import os\nfrom ssl_bench import hookimpl\n@hookimpl\ndef ssl_bench_phase_start(run, phase):\n"
        "    if os.environ.get('CRASH_AT') == phase.name:\n        raise KeyboardInterrupt\n"
    )
    out = tmp_path / "runs"
    args = [
        "-q",
        "run",
        "--plugin",
        str(crash),
        "--protocol",
        str(tiny_protocol),
        "--strategy",
        "replay+mas",
        "--strategy-opt",
        "replay.size=50",
        "--strategy-opt",
        "mas.samples=16",
        "--out",
        str(out),
    ]
    monkeypatch.setenv("CRASH_AT", "experience 1")
    assert main(args) == 130  # interrupted after experience 0: the checkpoint holds buffer and importances
    monkeypatch.delenv("CRASH_AT")
    assert main(args) == 0
    r = results.Result(capsys.readouterr().out.strip().splitlines()[-1])
    comp = r["strategy/replay/composition_per_experience"]
    assert comp.shape == (2, 2) and comp[0].tolist() == [50, 0]  # restored history: after experience 0, all from it
    assert comp[1].sum() == 50 and comp[1][0] > 0  # experience 0's samples survived the resume
    assert r["strategy/replay/replayed_per_phase"].tolist()[0] == 0 and r["strategy/replay/replayed_per_phase"][1] > 0
    assert r["strategy/mas/importance_norm"].shape == (2,) and (r["strategy/mas/importance_norm"] > 0).all()
    assert r["strategy/mas/penalty_mean"][0] == 0 and r["strategy/mas/penalty_mean"][1] > 0
    assert r["strategy/mas/lam"] == 0.05  # the default
