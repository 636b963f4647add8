"""Methods: every registered method trains (parametrised over the registry), and each loss has a known answer."""

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.errors import UserError
from ssl_bench.ops import moco_info_nce, nt_xent
from ssl_bench.registry import Registry
from ssl_bench_plugins.backbones.resnet import resnet18
from ssl_bench_plugins.methods.barlow import BarlowTwins, barlow_loss
from ssl_bench_plugins.methods.byol import byol_loss
from ssl_bench_plugins.methods.simsiam import neg_cosine
from ssl_bench_plugins.methods.vicreg import vicreg_terms

REGISTRY = Registry.discover()
METHODS = REGISTRY.names("method")
#: options that shrink a method's heads for a fast test, used when the factory takes them
SMALL = {
    "proj_hidden": 64,
    "proj_dim": 32,
    "pred_hidden": 32,
    "n_classes": 4,
    "out_dim": 64,
    "hidden": 64,
    "bottleneck": 32,
    "n_prototypes": 16,
    "decoder_dim": 32,
    "decoder_depth": 1,
    "decoder_heads": 4,
}
#: methods that need another backbone than the small ResNet (MAE: a ViT)
BACKBONES = {"mae": ("vit_tiny", {"depth": 1})}


pytestmark = pytest.mark.usefixtures("one_thread")


def make(name, **options):
    torch.manual_seed(0)
    kind, bb_options = BACKBONES.get(name, ("resnet18", {"width": 0.125}))
    backbone = REGISTRY.get("backbone", kind).factory(**bb_options)
    factory = REGISTRY.get("method", name).factory
    params = inspect.signature(factory).parameters
    small = {k: v for k, v in SMALL.items() if k in params}
    return factory(backbone, **{**small, **options})


def data(n=32, size=16, seed=0):
    """Fixed generated images: 4 classes of coloured squares on noise, as two fixed normalised views."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    x = torch.rand(n, 3, size, size, generator=g) * 0.3
    for c in range(4):
        x[labels == c, c % 3, c * 3 : c * 3 + 8, 2:10] += 0.7
    views = [(x + 0.05 * torch.randn(x.shape, generator=g) - 0.5) / 0.25 for _ in range(2)]
    return views, labels


def views_for(method, views):
    """The method's views from the two fixed ones: ``n_views`` of them, or its multi-crop plan (local crops:
    the fixed views resized to the local side)."""
    plan = method.views
    if plan is None:
        return views[: method.n_views]
    side = plan.local_px(views[0].shape[-1], getattr(method.backbone, "patch_size", 1))
    local = [F.interpolate(views[i % 2], size=(side, side), mode="bilinear") for i in range(plan.n_local)]
    return [views[i % 2] for i in range(plan.n_global)] + local


@pytest.mark.parametrize("name", METHODS)
def test_every_method_trains_and_its_loss_decreases(name):
    method = make(name)
    method.train()
    views, labels = data()
    views = views_for(method, views)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for step in range(12):
        loss = method(views, labels if method.uses_labels else None)
        assert loss.dim() == 0 and torch.isfinite(loss), (name, step, loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        method.after_backward()
        opt.step()
        method.after_step((step + 1) / 12)
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < losses[0] - 0.02 * abs(losses[0]), (name, losses)
    # the evaluators' view: the backbone alone; distillation strategies' view: project()
    x = views[0][:8]
    method.eval()
    assert method.backbone(x).shape == (8, method.feature_dim)
    z = method.project(x)
    assert z.dim() == 2 and z.shape[0] == 8 and torch.isfinite(z).all()


@pytest.mark.parametrize("name", METHODS)
def test_every_method_has_metadata_and_documents_its_paper(name):
    module = inspect.getmodule(REGISTRY.get("method", name).factory)
    for key in ("__version__", "__license__", "__paper__"):
        assert getattr(module, key, None), (name, key)
    assert module.__doc__ and len(module.__doc__) > 80


# ---------------------------------------------------------------- known answers
def test_nt_xent_on_orthonormal_embeddings():
    n, tau = 4, 0.5
    e = torch.eye(n)
    # each row: the positive has cosine 1, the 2n-2 negatives cosine 0
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert float(nt_xent(e, e, tau)) == pytest.approx(expected, rel=1e-5)
    # swapping the positives of two samples makes their positives orthogonal (cosine 0) and a negative cosine 1
    z2 = e[[1, 0, 2, 3]]
    rows = [math.log(1 + math.exp(1 / tau) + (2 * n - 3)) for _ in range(4)] + [expected] * 4
    assert float(nt_xent(e, z2, tau)) == pytest.approx(np.mean(rows), rel=1e-5)


def test_moco_info_nce_against_orthogonal_queue():
    tau, k = 0.2, 6
    q = torch.eye(8)[:2]
    queue = torch.eye(8)[2 : 2 + k]
    assert float(moco_info_nce(q, q, queue, tau)) == pytest.approx(math.log(1 + k * math.exp(-1 / tau)), rel=1e-5)


def test_barlow_loss_is_zero_for_decorrelated_identical_views():
    h = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    z = torch.cat([h[:, 1:], -h[:, 1:]])  # 8 samples, 3 dims: zero mean, unit variance, uncorrelated
    assert float(barlow_loss(z, z)) == pytest.approx(0, abs=1e-4)
    # opposite views: C = -I, every diagonal term is (1 - (-1))^2 = 4
    assert float(barlow_loss(z, -z)) == pytest.approx(4 * 3, rel=1e-4)
    # a duplicated dimension: C_01 = C_10 = 1 are penalised with lambda
    zd = torch.stack([z[:, 0], z[:, 0], z[:, 2]], 1)
    assert float(barlow_loss(zd, zd, lambd=0.5)) == pytest.approx(0.5 * 2, rel=1e-4)
    # solo-learn's scale_loss multiplies the whole loss
    assert float(barlow_loss(z, -z, scale=0.1)) == pytest.approx(0.1 * 4 * 3, rel=1e-4)


def test_barlow_scale_loss_must_be_positive():
    with pytest.raises(UserError, match="scale_loss must be positive"):
        BarlowTwins(resnet18(width=0.125), proj_hidden=16, proj_dim=16, scale_loss=0.0)


def test_vicreg_terms():
    g = torch.Generator().manual_seed(0)
    h = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    z = torch.cat([h[:, 1:], -h[:, 1:]]) * 2  # decorrelated, std 2 * sqrt(8/7) > 1
    t = vicreg_terms(z, z)
    assert float(t["invariance"]) == 0 and float(t["variance"]) == 0 and float(t["covariance"]) == pytest.approx(0, abs=1e-6)
    assert float(vicreg_terms(z, z + 1)["invariance"]) == pytest.approx(1.0)
    const = torch.ones(8, 3)
    assert float(vicreg_terms(const, const)["variance"]) == pytest.approx(1 - math.sqrt(1e-4))
    x = torch.randn(64, 1, generator=g)
    zc = torch.cat([x, x], 1)  # two identical dims: off-diagonal covariance = var(x) twice, per view, / d
    v = float(x.var())
    assert float(vicreg_terms(zc, zc)["covariance"]) == pytest.approx(2 * (2 * v**2) / 2, rel=1e-4)


def test_byol_and_simsiam_cosine_values():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert float(byol_loss(p, p)) == pytest.approx(0, abs=1e-6)
    assert float(byol_loss(p, p.flip(1))) == pytest.approx(2)  # orthogonal
    assert float(byol_loss(p, -p)) == pytest.approx(4)  # opposite
    assert float(neg_cosine(p, 3 * p)) == pytest.approx(-1)
    assert float(neg_cosine(p, p.flip(1))) == pytest.approx(0)
    z = p.clone().requires_grad_(True)
    q = p.clone().requires_grad_(True)
    neg_cosine(q, z).backward()
    assert z.grad is None and q.grad is not None  # stop-gradient on the target branch


# ---------------------------------------------------------------- momentum encoders and queues
def test_byol_cosine_momentum_and_ema_update():
    m = make("byol")
    assert m.momentum_at(0) == pytest.approx(0.996) and m.momentum_at(1) == pytest.approx(1.0)
    assert m.momentum_at(0.5) == pytest.approx(0.998)
    assert all(not p.requires_grad for p in m.target_backbone.parameters())
    assert any(k.startswith("target_backbone.") for k in m.state_dict())  # checkpointed with the method
    online, target = m.projector[0].weight, m.target_projector[0].weight
    with torch.no_grad():
        online.add_(1.0)
    before = target.clone()
    m.after_step(0.5)
    torch.testing.assert_close(target, 0.998 * before + 0.002 * online.detach())


def test_moco_queue_and_key_encoder_are_state_and_update():
    m = make("moco", queue_size=40, momentum=0.9)
    sd = m.state_dict()
    assert "queue" in sd and "queue_ptr" in sd and any(k.startswith("key_backbone.") for k in sd)
    views, _ = data(n=16)
    m.train()
    m(views, None).backward()
    q0 = m.queue.clone()
    m.after_step(0.1)
    assert int(m.queue_ptr) == 16 and not torch.equal(m.queue[:16], q0[:16]) and torch.equal(m.queue[16:], q0[16:])
    for _ in range(2):
        m(views, None)
        m.after_step(0.2)
    assert int(m.queue_ptr) == 48 % 40  # wraps around
    torch.testing.assert_close(m.queue.norm(dim=1), torch.ones(40))
    m.eval()
    m(views, None)
    m.after_step(0.3)
    assert int(m.queue_ptr) == 8  # evaluation-mode calls do not enqueue
    twin = make("moco", queue_size=40, momentum=0.9)
    twin.load_state_dict(m.state_dict())
    assert torch.equal(twin.queue, m.queue) and int(twin.queue_ptr) == 8


def test_supervised_rejects_labels_beyond_its_head():
    m = make("supervised")
    views, labels = data(n=8)
    with pytest.raises(UserError, match="n_classes"):
        m(views[:1], labels + 10)


def test_moco_resumes_exactly(tiny_protocol, tmp_path, monkeypatch, capsys):
    """The momentum encoder and the queue are checkpointed: a resumed run equals an uninterrupted one."""
    name = "moco"
    crash = tmp_path / "crash_m.py"
    crash.write_text(
        "import os\nfrom ssl_bench import hookimpl\n@hookimpl\ndef ssl_bench_phase_start(run, phase):\n"
        "    if os.environ.get('CRASH_AT') == phase.name:\n        raise KeyboardInterrupt\n"
    )
    base = [
        "-q",
        "run",
        "--plugin",
        str(crash),
        "--protocol",
        str(tiny_protocol),
        "--method",
        name,
        "--method-opt",
        "proj_hidden=32",
        "--method-opt",
        "proj_dim=16",
    ]
    base += ["--method-opt", "queue_size=64", "--method-opt", "momentum=0.9"]
    assert main(base + ["--out", str(tmp_path / "whole")]) == 0
    a = results.Result(capsys.readouterr().out.strip())
    monkeypatch.setenv("CRASH_AT", "experience 1")
    assert main(base + ["--out", str(tmp_path / "parts")]) == 130
    monkeypatch.delenv("CRASH_AT")
    assert main(base + ["--out", str(tmp_path / "parts")]) == 0
    b = results.Result(capsys.readouterr().out.strip())
    np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=1e-5)


@pytest.mark.parametrize(
    "name", ["simclr", "moco", "byol", "simsiam", "barlow", "vicreg", "supervised", "dino", "swav", "mocov3", "nnclr"]
)
def test_every_method_trains_a_step_under_bf16_autocast(name, one_thread):
    """Under autocast over the whole step (``--precision bf16`` on a GPU) a method's heads may give bfloat16 outputs
    while its buffers (MoCo's queue) stay float32; the fused contrastive op once refused that mix ("queue needs the
    dtype of q"). Every ResNet method's loss is finite under bf16 autocast, and backward runs."""
    from ssl_bench.registry import Registry

    reg = Registry.discover()
    backbone = reg.get("backbone", "resnet18").factory(width=0.125, small_stem=True)
    recipe = getattr(reg.get("method", name).factory, "recipes", {}).get("smoke", {})
    options = {k: v for k, v in recipe.get("options", {}).items() if k != "n_classes"}
    kwargs = {"n_classes": 4} if name == "supervised" else {}
    method = reg.get("method", name).factory(backbone, **options, **kwargs)
    gen = torch.Generator().manual_seed(0)
    from ssl_bench.blocks import augment

    images = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=gen)
    views = augment.method_views(augment.Augment("simclr"), method, images, 16, gen)
    labels = torch.arange(16) % 4 if method.uses_labels else None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = method(views, labels)
    assert torch.isfinite(loss.float())
    loss.float().backward()
