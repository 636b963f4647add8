"""DINO, SwAV, MoCo v3, NNCLR, MAE: each loss against an independent float64 computation of the paper's
formula, their schedules and queues, bad input, and a short end-to-end run of each."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl_bench import results
from ssl_bench.blocks import augment
from ssl_bench.cli import main
from ssl_bench.errors import UserError
from ssl_bench_plugins.backbones.vit import vit_tiny
from ssl_bench_plugins.methods import dino, mae, mocov3, nnclr, swav
from tests.conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")
PLUGINS = ["ssl_bench_plugins.backbones.vit"] + [
    f"ssl_bench_plugins.methods.{m}" for m in ("dino", "swav", "mocov3", "nnclr", "mae")
]


def rng(seed=0):
    return np.random.default_rng(seed)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float32))


def log_softmax64(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@functools.cache
def _registry():
    from ssl_bench.registry import Registry

    return Registry.discover()


def resnet(width=0.125):
    return _registry().get("backbone", "resnet18").factory(width=width)


# ---------------------------------------------------------------- DINO
def test_dino_loss_is_eq3_cross_entropy_over_all_pairs_but_same_view():
    r = rng(1)
    student = [r.normal(size=(5, 7)) for _ in range(4)]  # 2 global + 2 local
    teacher = [r.normal(size=(5, 7)) for _ in range(2)]
    center = r.normal(size=(1, 7)) * 0.1
    ts, tt = 0.1, 0.05
    total, pairs = 0.0, 0
    for i, tv in enumerate(teacher):
        z = (tv - center) / tt
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        for v, sv in enumerate(student):
            if v != i:
                total += np.mean(-(p * log_softmax64(sv / ts)).sum(1))
                pairs += 1
    assert pairs == 6
    got = dino.dino_loss([t(s) for s in student], [t(x) for x in teacher], t(center), ts, tt)
    assert float(got) == pytest.approx(total / pairs, rel=1e-5)


def test_dino_centre_is_an_ema_of_the_teacher_batch_mean_and_moves_only_on_a_step():
    torch.manual_seed(0)
    m = dino.DINO(vit_tiny(depth=1), out_dim=32, hidden=16, bottleneck=8, n_local=0)
    m.train()
    views = [torch.randn(6, 3, 16, 16) for _ in range(2)]
    with torch.no_grad():
        teacher = torch.cat([m.teacher_head(m.teacher_backbone(v)) for v in views])
    m.loss(views, None)
    assert torch.equal(m.center, torch.zeros(1, 32))  # the loss alone does not move it
    m.after_step(0.0)
    assert torch.allclose(m.center, 0.1 * teacher.mean(0, keepdim=True), atol=1e-6)
    m.eval()
    m.loss(views, None)
    m.after_step(0.0)  # an evaluation-mode loss leaves nothing pending
    assert torch.allclose(m.center, 0.1 * teacher.mean(0, keepdim=True), atol=1e-6)


def test_dino_teacher_temperature_warms_up_per_phase_and_the_last_layer_is_frozen_the_first_epoch():
    m = dino.DINO(resnet(), out_dim=16, hidden=16, bottleneck=8, n_local=0, warmup_teacher_temp_epochs=2, freeze_last_layer=1)
    assert m.teacher_temp_at(0) == pytest.approx(0.04) and m.teacher_temp_at(1) == pytest.approx(0.055)
    assert m.teacher_temp_at(2) == m.teacher_temp_at(50) == pytest.approx(0.07)
    assert m.teacher_temp_at(m.epoch) == 0.07  # never told about phases: no warm-up
    m.begin_phase(steps=12, steps_per_epoch=4)
    m.train()
    views = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    frozen = []
    for _ in range(6):
        m.loss(views, None).backward()
        m.after_backward()
        frozen.append(m.head.last_layer.weight_v.grad is None)
        assert m.head.mlp[0].weight.grad is not None
        m.zero_grad(set_to_none=True)
        m.after_step(0.0)
    assert frozen == [True] * 4 + [False] * 2 and m.epoch == 1.5
    assert not m.head.last_layer.weight_g.requires_grad  # norm_last_layer: the norm is fixed to 1
    m.begin_phase(steps=12, steps_per_epoch=4)  # a new phase restarts the epoch count
    assert m.epoch == 0 and m.teacher_temp_at(m.epoch) == pytest.approx(0.04)


def test_dino_views_are_multi_crop_and_the_teacher_sees_the_global_ones():
    m = dino.DINO(resnet(), out_dim=16, hidden=16, bottleneck=8)
    assert (m.views.n_global, m.views.n_local, m.views.global_scale, m.views.local_scale) == (2, 8, (0.4, 1.0), (0.05, 0.4))
    assert dino.DINO(resnet(), out_dim=16, hidden=16, bottleneck=8, n_local=0).views.global_scale == (0.14, 1.0)
    seen = []
    m.teacher_backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    views = [torch.randn(3, 3, 16, 16)] * 2 + [torch.randn(3, 3, 8, 8)] * 8
    m.train()
    loss = m.loss(views, None)
    assert torch.isfinite(loss) and seen == [(6, 3, 16, 16)]  # both global crops in one teacher batch


def test_dino_teacher_follows_the_student_by_cosine_ema():
    m = dino.DINO(resnet(), out_dim=16, hidden=16, bottleneck=8, n_local=0, momentum=0.996)
    w_s, w_t = m.head.mlp[0].weight, m.teacher_head.mlp[0].weight
    with torch.no_grad():
        w_s.add_(1.0)
    before = w_t.clone()
    m.after_step(0.5)  # momentum 0.998 half-way
    assert torch.allclose(w_t, 0.998 * before + 0.002 * w_s, atol=1e-6)


# ---------------------------------------------------------------- SwAV
def sinkhorn64(scores, eps, iters):
    q = np.exp(scores / eps).T  # K x B
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        q /= q.sum(axis=1, keepdims=True) * k
        q /= q.sum(axis=0, keepdims=True) * b
    return (q * b).T


def test_sinkhorn_matches_float64_and_its_marginals_are_equipartition():
    r = rng(2)
    z = r.normal(size=(32, 8))
    c = r.normal(size=(10, 8))
    scores = (z / np.linalg.norm(z, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    q = swav.sinkhorn(t(scores), eps=0.05, iters=3)
    assert np.allclose(q.numpy(), sinkhorn64(scores, 0.05, 3), rtol=1e-4, atol=1e-6)
    # after the last (column) step every sample's codes sum to 1 exactly
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)
    # iterated to convergence, every prototype receives B / K of the mass
    q = swav.sinkhorn(t(scores), eps=0.05, iters=500)
    assert torch.allclose(q.sum(0), torch.full((10,), 32 / 10), rtol=1e-3)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)


def test_swav_loss_is_the_swapped_prediction_over_other_views():
    r = rng(3)
    scores = [r.normal(size=(6, 5)) for _ in range(4)]
    codes = [sinkhorn64(scores[i], 0.05, 3) for i in range(2)]
    tau = 0.1
    expected = 0.0
    for s, q in enumerate(codes):
        sub = sum(np.mean(-(q * log_softmax64(x / tau)).sum(1)) for v, x in enumerate(scores) if v != s)
        expected += sub / 3
    expected /= 2
    got = swav.swav_loss([t(x) for x in scores], [t(q) for q in codes], tau)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_swav_prototypes_stay_normalised_frozen_first_epoch_and_the_queue_fills_then_is_used():
    torch.manual_seed(0)
    m = swav.SwAV(
        resnet(),
        proj_hidden=16,
        proj_dim=8,
        n_prototypes=10,
        n_local=0,
        queue_length=8,
        queue_start_epoch=1,
        freeze_prototypes_epochs=1,
    )
    m.begin_phase(steps=10, steps_per_epoch=2)
    m.train()
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    views = [torch.randn(4, 3, 16, 16) for _ in range(2)]
    frozen, used = [], []
    calls = []
    orig = swav.sinkhorn
    swav.sinkhorn = lambda s, e, i: (calls.append(len(s)), orig(s, e, i))[1]
    try:
        for _ in range(6):
            calls.clear()
            m.loss(views, None).backward()
            m.after_backward()
            frozen.append(m.prototypes.weight.grad is None)
            opt.step()
            opt.zero_grad(set_to_none=True)
            m.after_step(0.0)
            used.append(calls[0])
            assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(10), atol=1e-5)
    finally:
        swav.sinkhorn = orig
    assert frozen == [True, True, False, False, False, False]
    # epochs 0-1: no queue; epoch 1 on: the queue is filled (4 per step, 8 long) and then scored with the batch
    assert used == [4, 4, 4, 4, 12, 12]
    assert m.queue[:, -1].abs().sum() > 0
    m.begin_phase(10, 2)
    assert m.queue.abs().sum() == 0  # emptied for the next phase


# ---------------------------------------------------------------- MoCo v3
def info_nce64(q, k, tau):
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    k = k / np.linalg.norm(k, axis=1, keepdims=True)
    logits = q @ k.T / tau
    return np.mean(-np.diag(log_softmax64(logits)))


def test_mocov3_loss_is_symmetric_ctr_times_two_tau():
    r = rng(4)
    q1, q2, k1, k2 = (r.normal(size=(8, 6)) for _ in range(4))
    tau = 0.2
    expected = 2 * tau * (info_nce64(q1, k2, tau) + info_nce64(q2, k1, tau))
    got = mocov3.mocov3_loss(t(q1), t(q2), t(k1), t(k2), tau)
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_mocov3_heads_follow_the_reference_and_the_vit_patch_projection_is_frozen():
    m = mocov3.MoCoV3(vit_tiny(depth=1), proj_hidden=32, proj_dim=16, pred_hidden=32)
    assert m.temperature == 0.2 and sum(isinstance(x, torch.nn.Linear) for x in m.projector) == 3
    assert not m.backbone.patch_embed.weight.requires_grad
    last = m.projector[-1]
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    assert all(x.bias is None for x in m.projector if isinstance(x, torch.nn.Linear))
    # moco-v3 moco/builder.py: MoCo_ViT's predictor is _build_mlp(2, dim, mlp_dim, dim), last_bn=True by default
    assert isinstance(m.predictor[-1], torch.nn.BatchNorm1d) and not m.predictor[-1].affine
    r = mocov3.MoCoV3(resnet(), proj_hidden=32, proj_dim=16, pred_hidden=32)
    assert r.temperature == 1.0 and sum(isinstance(x, torch.nn.Linear) for x in r.projector) == 2
    assert isinstance(r.predictor[-1], torch.nn.Linear)  # MoCo_ResNet passes last_bn=False
    assert r.momentum_at(0) == pytest.approx(0.99) and r.momentum_at(1) == pytest.approx(1.0)


# ---------------------------------------------------------------- NNCLR
def test_nearest_neighbour_lookup_in_chunks_is_the_arg_max():
    g = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(7, 5, generator=g), dim=1)
    bank = F.normalize(torch.randn(50, 5, generator=g), dim=1)
    expected = bank[(z @ bank.t()).argmax(1)]
    for chunk in (1, 7, 50, 1000):
        assert torch.equal(nnclr.nearest_neighbour(z, bank, chunk), expected)


def test_nnclr_loss_uses_the_queue_neighbours_as_positives():
    torch.manual_seed(0)
    m = nnclr.NNCLR(resnet(), proj_hidden=16, proj_dim=8, pred_hidden=16, queue_size=20, temperature=0.1)
    m.train()
    views = [torch.randn(5, 3, 16, 16) for _ in range(2)]
    captured = {}
    m.predictor.register_forward_hook(lambda mod, inp, out: captured.setdefault("p", []).append(out.detach()))
    m.projector.register_forward_hook(lambda mod, inp, out: captured.setdefault("z", []).append(out.detach()))
    loss = m.loss(views, None).detach()
    z1, z2 = (x.double().numpy() for x in captured["z"])
    p1, p2 = (x.double().numpy() for x in captured["p"])
    queue = m.queue.double().numpy()

    def nn(z):
        zn = z / np.linalg.norm(z, axis=1, keepdims=True)
        return queue[(zn @ queue.T).argmax(1)]

    expected = (info_nce64(nn(z1), p2, 0.1) + info_nce64(nn(z2), p1, 0.1)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    m.after_step(0.0)  # the first view's normalised projections enter the queue
    assert torch.allclose(m.queue[:5], F.normalize(captured["z"][0], dim=1), atol=1e-6) and int(m.queue_ptr) == 5


# ---------------------------------------------------------------- MAE
def test_mae_masks_the_ratio_per_sample_and_restores_the_order():
    g = torch.Generator().manual_seed(0)
    kept, mask, restore = mae.random_masking(6, 64, 0.75, "cpu", g)
    assert kept.shape == (6, 16) and (mask.sum(1) == 48).all()
    for i in range(6):  # the kept positions are exactly the unmasked ones
        assert set(kept[i].tolist()) == set((mask[i] == 0).nonzero().squeeze(1).tolist())
    assert len({tuple(sorted(k.tolist())) for k in kept}) == 6  # each sample its own subset
    # restore undoes the shuffle: gathering [kept, removed] by restore gives positions 0..L-1
    shuffle = restore.argsort(1)
    assert torch.equal(torch.gather(shuffle, 1, restore), torch.arange(64).expand(6, -1))


def test_mae_loss_is_the_normalised_pixel_mse_on_removed_patches():
    r = rng(5)
    pred, target = r.normal(size=(2, 4, 12)), r.normal(size=(2, 4, 12)) * 3 + 1
    mask = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=np.float64)
    norm = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    expected = (((pred - norm) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert float(mae.mae_loss(t(pred), t(target), t(mask))) == pytest.approx(expected, rel=1e-5)
    raw = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert float(mae.mae_loss(t(pred), t(target), t(mask), norm_pix=False)) == pytest.approx(raw, rel=1e-5)
    # visible patches do not count
    pred2 = pred.copy()
    pred2[mask == 0] += 100
    assert float(mae.mae_loss(t(pred2), t(target), t(mask))) == pytest.approx(expected, rel=1e-5)


def test_mae_patchify_is_the_reference_layout_and_reconstruct_shapes():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    p = mae.patchify(x, 4)
    assert p.shape == (2, 4, 48)
    # patch 1 (top right), pixel (row 0, col 1), channel 2
    assert p[0, 1, (0 * 4 + 1) * 3 + 2] == x[0, 2, 0, 5]
    torch.manual_seed(0)
    m = mae.MAE(vit_tiny(depth=1), decoder_dim=32, decoder_depth=1, decoder_heads=4)
    pred, mask = m.reconstruct(torch.randn(3, 3, 32, 32))
    assert pred.shape == (3, 64, 48) and mask.shape == (3, 64) and (mask.sum(1) == 48).all()
    assert m.views.n_views == 1 and m.views.recipe == "mae"


def test_mae_and_mocov3_follow_their_references_position_table_and_mae_probes_the_class_token():
    """MAE (models_mae.py) and MoCo v3 (vits.py) use a fixed 2-d sin-cos table; MAE's linear probe reads the class
    token (main_linprobe.py: global_pool=False). A position table the backbone's options chose is kept."""
    from ssl_bench.blocks.transformer import sincos_pos_embed

    for make in (
        lambda bb: mae.MAE(bb, decoder_dim=32, decoder_depth=1, decoder_heads=4),
        lambda bb: mocov3.MoCoV3(bb, proj_hidden=32, proj_dim=16, pred_hidden=32),
    ):
        torch.manual_seed(0)
        m = make(vit_tiny(depth=1))
        bb = m.backbone
        assert "pos_embed" in dict(bb.named_buffers()) and bb.cls_pos is None
        assert torch.equal(bb.pos_embed, sincos_pos_embed(bb.embed_dim, bb.base_grid))
        assert not any("pos" in name for name, _ in m.named_parameters() if name.startswith("backbone."))
        torch.manual_seed(0)
        learned = make(vit_tiny(depth=1, pos_embed="learned")).backbone  # chosen: kept
        assert isinstance(learned.pos_embed, torch.nn.Parameter) and learned.pos_embed.requires_grad
        torch.manual_seed(0)
        plain = vit_tiny(depth=1)  # no method: the backbone's own default, learned, with the same other weights
        assert isinstance(plain.pos_embed, torch.nn.Parameter)
        assert torch.equal(plain.blocks[0].attn.qkv.weight, bb.blocks[0].attn.qkv.weight)
    assert mae.MAE(vit_tiny(depth=1), decoder_dim=32, decoder_depth=1, decoder_heads=4).backbone.pool == "cls"
    assert mae.MAE(vit_tiny(depth=1), decoder_dim=32, decoder_depth=1, decoder_heads=4, pool="mean").backbone.pool == "mean"


def test_mae_with_a_resnet_is_a_one_line_error():
    with pytest.raises(UserError, match=r"method 'mae' needs a Vision Transformer backbone .* got ResNet") as err:
        mae.MAE(resnet())
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- the engine: views, bad input, end to end
def vit_protocol(tmp_path, extra=""):
    text = TINY.replace('name = "resnet18"\noptions = { width = 0.125 }', 'name = "vit_tiny"\noptions = { depth = 1 }')
    path = tmp_path / "tiny_vit.toml"
    path.write_text(text.replace("[train]", extra + "\n[train]") if extra else text)
    return path


def run(protocol, tmp_path, method, *options, capsys=None):
    args = ["-q", "run", "--protocol", str(protocol), "--out", str(tmp_path / "runs"), "--method", method]
    for p in PLUGINS:
        args += ["--plugin", p]
    for o in options:
        args += ["--method-opt", o]
    return main(args)


def errors(capsys) -> str:
    """The error lines of stderr (the tiny protocol's recipe fallback is announced on a line of its own)."""
    return "\n".join(line for line in capsys.readouterr().err.splitlines() if line.startswith("ssl-bench: error:"))


def test_mae_with_a_resnet_protocol_fails_before_training(tiny_protocol, tmp_path, capsys):
    assert run(tiny_protocol, tmp_path, "mae") == 2
    err = errors(capsys)
    assert "needs a Vision Transformer backbone" in err and len(err.splitlines()) == 1
    assert not list((tmp_path / "runs").glob("*.h5"))


def test_multi_crop_under_a_recipe_without_local_crops_fails_naming_both(tiny_protocol, tmp_path, capsys):
    proto = tmp_path / "none.toml"
    proto.write_text(tiny_protocol.read_text().replace("[train]", '[augment]\nrecipe = "none"\n\n[train]'))
    assert run(proto, tmp_path, "dino", "out_dim=32", "hidden=16", "bottleneck=8", "n_local=2") == 2
    err = errors(capsys)
    assert "method 'dino'" in err and "recipe 'none'" in err and len(err.splitlines()) == 1


def test_vit_patch_not_dividing_a_stage_resolution_fails_before_training(tmp_path, capsys):
    proto = vit_protocol(tmp_path)
    proto.write_text(
        proto.read_text().replace(
            "batch_size = 32",
            "batch_size = 32\nstages = [{ resolution = 10, fraction = 0.5 }, { resolution = 16, fraction = 0.5 }]",
        )
    )
    assert run(proto, tmp_path, "mocov3") == 2
    err = errors(capsys)
    assert "patch size 4 does not divide the resolution 10 px" in err and len(err.splitlines()) == 1


CASES = {  # method, backbone, options: small heads, 2 local crops where multi-crop applies
    "dino": ("vit", ["out_dim=64", "hidden=32", "bottleneck=16", "n_local=2"]),
    "swav": ("resnet", ["proj_hidden=32", "n_prototypes=16", "n_local=2", "queue_length=64", "queue_start_epoch=0"]),
    "mocov3": ("vit", ["proj_hidden=32", "pred_hidden=32", "proj_dim=16"]),
    "nnclr": ("resnet", ["proj_hidden=32", "pred_hidden=32", "proj_dim=16", "queue_size=64"]),
    "mae": ("vit", ["decoder_dim=32", "decoder_depth=1", "decoder_heads=4"]),
}


@pytest.mark.parametrize("method", list(CASES))
def test_each_method_trains_and_evaluates_end_to_end(method, tiny_protocol, tmp_path, capsys):
    backbone, options = CASES[method]
    proto = vit_protocol(tmp_path, '[augment]\nrecipe = "byol"\n') if backbone == "vit" else tiny_protocol
    if backbone != "vit":
        proto.write_text(proto.read_text().replace("[train]", '[augment]\nrecipe = "byol"\n\n[train]'))
    else:  # S3L inside every phase: the ViT's position table is interpolated from 8 to 16 px and back
        stages = "stages = [{ resolution = 8, fraction = 0.5 }, { resolution = 16, fraction = 0.5 }]"
        proto.write_text(proto.read_text().replace("batch_size = 32", "batch_size = 32\n" + stages))
    assert run(proto, tmp_path, method, *options) == 0
    r = results.Result(capsys.readouterr().out.strip())
    loss = np.asarray(r["train/loss"])
    assert len(loss) == sum(int(s) for s in r["phases/steps"]) and np.isfinite(loss).all()
    assert r.acc_matrix.shape == (2, 2) and np.isfinite(r.acc_matrix).all()


def test_engine_passes_global_then_local_views_at_their_sizes_under_s3l(tmp_path):
    from ssl_bench.engine.build import Run
    from ssl_bench.plan import RunConfig, make_plan
    from ssl_bench.protocol import load
    from ssl_bench.registry import Registry

    proto = vit_protocol(tmp_path, '[augment]\nrecipe = "byol"\n')
    proto.write_text(
        proto.read_text().replace(
            "batch_size = 32",
            "batch_size = 32\nstages = [{ resolution = 8, fraction = 0.5 }, { resolution = 16, fraction = 0.5 }]",
        )
    )
    config = RunConfig(
        protocol=load(str(proto)),
        method="dino",
        stream="instance",
        strategy="sequential",
        seed=0,
        out=tmp_path / "runs",
        method_options={"out_dim": 32, "hidden": 16, "bottleneck": 8, "n_local": 3},
        device="cpu",
        progress=False,
    )
    r = Run(make_plan(config, Registry.discover(PLUGINS)))
    images = r.dataset.train.images[:5]
    assert [v.shape[-1] for v in r.views(images, 16)] == [16, 16, 8, 8, 8]  # 96/224 of 16 px -> 8 (2 patches)
    assert [v.shape[-1] for v in r.views(images, 8)] == [8, 8, 4, 4, 4]
    assert isinstance(r.method.views, augment.MultiCrop)


RECIPE_KEYS = {
    "optimizer",
    "lr",
    "lr_scaling",
    "weight_decay",
    "momentum",
    "betas",
    "lars_eta",
    "lars_clip",
    "exclude_bias_norm",
    "warmup_epochs",
    "schedule",
    "options",
}


@pytest.mark.parametrize("module", [dino, swav, mocov3, nnclr, mae])
def test_recipes_follow_the_issue_14_contract_and_their_options_construct_the_method(module):
    """A shipped recipe states what differs from its base (``extends``); the resolved one is a valid Recipe."""
    from ssl_bench import recipe as recipes
    from ssl_bench.api import Method

    cls = next(v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Method) and v is not Method)
    assert set(cls.recipes) <= {"smoke", "cpu", "s3l"}
    if not cls.recipes:  # a family it cannot serve is absent, and the docstring says why
        assert "cannot serve" in module.__doc__
    for family, written in cls.recipes.items():
        assert set(written) <= RECIPE_KEYS | {"extends"}, (family, set(written) - RECIPE_KEYS)
        resolved = recipes.validate(recipes.shipped(cls, family), f"{module.__name__} {family}")
        base = recipes.resolve({"extends": written["extends"]}, "base") if "extends" in written else {}
        restated = [k for k, v in written.items() if k not in ("extends", "options") and base.get(k, object()) == v]
        assert not restated, f"{family}: {restated} restate the base {written.get('extends')}"
        assert resolved.optimizer in ("sgd", "lars", "adamw") and resolved.lr > 0
        cls(resnet(), **resolved.options)  # every option is one the method takes
