"""Issue 34: every run's cost in its result file (cumulative over resumes), the cheaper evaluation (bf16 features,
the float32 probe solver), and bf16 training on the CPU (its own name, a float32 loss, channels_last)."""

import textwrap

import numpy as np
import pytest
import torch

from ssl_bench import results
from ssl_bench.blocks import augment, probes
from ssl_bench.cli import main
from ssl_bench.engine import build as build_mod
from ssl_bench.engine import evaluation
from ssl_bench.engine.build import Run
from ssl_bench.errors import UserError
from ssl_bench.plan import RunConfig, make_plan
from ssl_bench.protocol import load as load_protocol
from ssl_bench.protocol import parse
from ssl_bench.registry import Registry
from ssl_bench.results import continual

#: the tiny protocol of conftest with a kNN evaluator (seconds, where the linear probe takes tens under load) and
#: the S3L stages at two resolutions, so FLOPs are counted at both
FAST = textwrap.dedent("""
    name = "tiny-cost"
    version = 1
    family = "tiny"
    seeds = [0]

    [dataset]
    name = "synthetic"
    resolution = 16
    options = { train_per_class_domain = 3, test_per_class_domain = 2, n_domains = 4 }

    [stream]
    n_experiences = 2

    [backbone]
    name = "resnet18"
    options = { width = 0.125 }

    [train]
    epochs_per_experience = 1
    batch_size = 32
    stages = [{ resolution = 8, fraction = 0.5 }, { resolution = 16, fraction = 0.5 }]
    {train_extra}

    [eval]
    evaluators = ["knn"]
    primary = "knn"
    probe_train_per_experience = 0
    options = { knn = { k = 5 } }

    [recipe]
    lr = 0.05
    lr_scaling = "none"
    schedule = "constant"
""")


def fast_protocol(tmp_path, train_extra=""):
    path = tmp_path / "fast.toml"
    path.write_text(FAST.replace("{train_extra}", train_extra))
    return path


def config(protocol_path, tmp_path, **kw) -> RunConfig:
    return RunConfig(
        protocol=load_protocol(str(protocol_path)),
        method=kw.pop("method", "simclr"),
        stream="instance",
        strategy="sequential",
        seed=0,
        out=tmp_path / "runs",
        progress=False,
        **kw,
    )


def run_cli(args, capsys) -> results.Result:
    assert main(["-q", "run", *map(str, args)]) == 0
    return results.Result(capsys.readouterr().out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ protocol keys
BASE = 'name = "p"\nversion = 1\nfamily = "tiny"\nseeds = [0]\n[dataset]\nname = "synthetic"\nresolution = 16\n'
BASE += '[stream]\nn_experiences = 2\n[backbone]\nname = "resnet18"\n[train]\nepochs_per_experience = 1\nbatch_size = 32\n'


def test_precision_keys_hash_only_when_set():
    plain = parse(BASE).hash
    assert parse(BASE + 'precision = "auto"\n').hash == plain  # the default: every existing protocol keeps its hash
    assert parse(BASE + '[eval]\nprecision = "fp32"\n').hash == plain
    assert parse(BASE + 'precision = "bf16"\n').hash != plain
    assert parse(BASE + '[eval]\nprecision = "bf16"\n').hash != plain
    assert parse(BASE + "[eval]\nchannels_last = false\n").hash == plain
    assert parse(BASE + "[eval]\nchannels_last = true\n").hash != plain
    with pytest.raises(UserError, match="train.precision"):
        parse(BASE + 'precision = "fp16"\n')
    assert load_protocol("tinyimagenet-cpu@1").hash.startswith("6e41fdb54ce8")  # its submitted files' hash


# ------------------------------------------------------------------------------------------ naming
@pytest.mark.parametrize(
    "protocol_precision,device,requested,tag",
    [
        ("auto", "cpu", "auto", None),
        ("auto", "cpu", "fp32", None),  # what auto means on the CPU: the same run, the same name
        ("auto", "cpu", "bf16", "bf16"),
        ("auto", "cuda", "bf16", None),
        ("auto", "cuda", "fp32", "fp32"),
        ("bf16", "cpu", "auto", None),  # a protocol that fixes bf16: everyone's default
        ("bf16", "cpu", "fp32", "fp32"),
        ("fp32", "cuda", "auto", None),
    ],
)
def test_a_run_of_another_precision_has_its_own_name(tmp_path, protocol_precision, device, requested, tag):
    path = fast_protocol(tmp_path, f'precision = "{protocol_precision}"')
    registry = Registry.discover([])
    default = config(path, tmp_path, device=device)
    asked = config(path, tmp_path, device=device, precision=requested)
    make_plan(default, registry), make_plan(asked, registry)
    assert asked.precision_tag == tag
    if tag is None:
        assert asked.result_path == default.result_path and not asked.variant
    else:
        assert asked.result_path != default.result_path and asked.variant
        assert asked.result_path.name.endswith(f"__v{asked.identity}__{tag}.h5")
        assert asked.identity != default.identity


def test_channels_last_on_the_cpu_under_bf16_only(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(build_mod.CHANNELS_LAST_ENV, raising=False)
    assert build_mod.channels_last_for(cpu, "bf16") and not build_mod.channels_last_for(cpu, "fp32")
    monkeypatch.setenv(build_mod.CHANNELS_LAST_ENV, "0")
    assert not build_mod.channels_last_for(cpu, "bf16")
    monkeypatch.setenv(build_mod.CHANNELS_LAST_ENV, "1")
    assert build_mod.channels_last_for(cpu, "fp32")


# ------------------------------------------------------------------------------------------ bf16 on the CPU
@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_bf16_on_the_cpu_is_named_apart_and_keeps_a_float32_loss(tmp_path, capsys, one_thread, method):
    path = fast_protocol(tmp_path)
    base = ["--protocol", path, "--method", method, "--out", tmp_path / "runs"]
    fp32 = run_cli(base, capsys)
    bf16 = run_cli([*base, "--precision", "bf16"], capsys)
    assert fp32.path != bf16.path and fp32.path.exists()  # the bf16 run did not overwrite the fp32 one
    assert bf16.path.name.endswith("__bf16.h5") and bf16.attrs["precision"] == "bf16" and bf16.attrs["variant"]
    assert bf16.attrs["precision_tag"] == "bf16" and fp32.attrs["precision_tag"] == ""
    loss = np.asarray(bf16["train/loss"], dtype=np.float32)
    as_bf16 = torch.from_numpy(loss).bfloat16().float().numpy()
    assert np.isfinite(loss).all() and (loss != as_bf16).mean() > 0.5  # float32 values, not bf16 ones
    assert not np.allclose(loss, np.asarray(fp32["train/loss"]), rtol=0, atol=0)  # it did train in bf16


def test_a_protocol_that_fixes_bf16_trains_everyone_in_bf16_with_channels_last(tmp_path, monkeypatch, one_thread):
    monkeypatch.delenv(build_mod.CHANNELS_LAST_ENV, raising=False)
    path = fast_protocol(tmp_path, 'precision = "bf16"')
    run = Run(make_plan(config(path, tmp_path, device="cpu"), Registry.discover([])))
    assert run.precision == "bf16" and run.channels_last and run.config.precision_tag is None
    conv = next(m for m in run.method.backbone.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------------ costs
def test_costs_are_recorded_per_phase_and_cumulative_over_a_resume(tmp_path, monkeypatch, capsys, one_thread):
    plugin = tmp_path / "pause.py"
    plugin.write_text(
        "import os, time\nfrom ssl_bench import hookimpl\n"
        "@hookimpl\ndef ssl_bench_phase_end(run, phase, metrics):\n"
        "    if os.environ.get('PAUSE'):\n        time.sleep(1.0)\n"
        "@hookimpl\ndef ssl_bench_phase_start(run, phase):\n"
        "    if os.environ.get('CRASH_AT') == phase.name:\n        raise KeyboardInterrupt\n"
    )
    args = ["-q", "run", "--plugin", str(plugin), "--protocol", str(fast_protocol(tmp_path)), "--out", str(tmp_path / "o")]
    monkeypatch.setenv("PAUSE", "1")
    monkeypatch.setenv("CRASH_AT", "experience 1")
    assert main(args) == 130  # phase 0 trained, evaluated, paused 1 s and checkpointed; then interrupted
    monkeypatch.delenv("PAUSE")
    monkeypatch.delenv("CRASH_AT")
    assert main(args) == 0
    r = results.Result(capsys.readouterr().out.strip().splitlines()[-1])
    a = r.arrays
    train = np.asarray(a["cost/train_seconds"])
    assert train.shape == (2,) and np.isfinite(train).all() and (train > 0).all()  # phase 0's, from the checkpoint
    images = np.asarray(a["cost/train_images"])
    assert (images == np.asarray(a["phases/steps"]) * 32).all()
    for part in ("features", "knn"):
        seconds = np.asarray(a[f"cost/eval_seconds/{part}"])
        assert seconds.shape == (3,) and np.isfinite(seconds).all()  # init, after phase 0, after phase 1
    measured = train.sum() + sum(np.nansum(a[k]) for k in a if k.startswith(("cost/eval_seconds/", "cost/end_seconds/")))
    assert r.attrs["seconds"] >= measured + 1.0  # both processes, the first one's pause included
    # FLOPs: measured at both resolutions in both phases; a conv net's step costs about 4x at twice the side
    flops, steps = np.asarray(a["cost/step_flops"]), np.asarray(a["cost/steps_at_resolution"])
    assert list(a["cost/resolutions"]) == [8, 16] and np.isfinite(flops).all() and (steps > 0).all()
    assert 3.0 < flops[0, 1] / flops[0, 0] < 4.5
    np.testing.assert_allclose(a["cost/train_flops"], (flops * steps).sum(axis=1))
    assert (np.asarray(a["cost/peak_memory_bytes"]) > 10 * 2**20).all()
    summary = continual.cost_summary(r)
    assert summary["train_minutes"] == pytest.approx(train.sum() / 60)
    assert summary["images_per_second"] == pytest.approx(images.sum() / train.sum())
    assert set(summary["eval_minutes_by"]) == {"features", "knn"} and summary["step_flops"][16] == flops[0, 1]
    assert summary["total_minutes"] == pytest.approx(r.attrs["seconds"] / 60)


def test_step_flops_match_a_count_of_the_same_step(tmp_path, one_thread):
    """The recorded FLOPs are FlopCounterMode's count of a training step: recount one step of the same model."""
    from torch.utils.flop_counter import FlopCounterMode

    from ssl_bench.engine import loop

    run = Run(make_plan(config(fast_protocol(tmp_path), tmp_path), Registry.discover([])))
    run.phase_index = 0
    phase = run.phases[0]
    with run.cost.phase(run, 0):
        loop.train_phase(run, phase, type("Bar", (), {"update": lambda *a: None, "set_postfix": lambda *a, **k: None})())
    views = run.views(run.batch_of(torch.arange(32)).images, 16)
    with FlopCounterMode(display=False) as counter:
        run.model(views, None).backward()
    assert run.cost.step_flops[0][1] == counter.get_total_flops()


def test_files_without_costs_give_what_they_have():
    summary = continual.cost_summary({}, {"seconds": 120.0, "device": "cpu: x86_64 x2"})
    assert summary["total_minutes"] == 2.0 and summary["device"] == "cpu: x86_64 x2"
    assert summary["train_minutes"] is None and summary["train_flops"] is None and summary["eval_minutes_by"] is None


# ------------------------------------------------------------------------------------------ evaluation
def test_bf16_features_are_close_to_float32_ones_and_ordinary_tensors(tmp_path, one_thread):
    run = Run(make_plan(config(fast_protocol(tmp_path), tmp_path), Registry.discover([])))
    exact = evaluation.features(run)
    with torch.no_grad():  # the fp32 path is the plain forward it always was
        x = run.dataset.test.images[torch.from_numpy(np.asarray(run.experiences[0].test_idx))]
        manual = run.method.eval().backbone(augment.prepare(x, 16))
    torch.testing.assert_close(exact.test[0], manual, rtol=0, atol=0)
    run.protocol.eval.channels_last = True  # float32 in NHWC: the same features up to rounding
    nhwc = evaluation.features(run)
    for a, b in zip(exact.train + exact.test, nhwc.train + nhwc.test):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5 * float(a.abs().max()))
    run.protocol.eval.channels_last = False
    run.protocol.eval.precision = "bf16"
    fast = evaluation.features(run)
    for a, b in zip(exact.train + exact.test, fast.train + fast.test):
        assert b.dtype == torch.float32 and not b.is_inference() and not torch.equal(a, b)
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.05 * float(a.abs().max()))


def blobs(n_per_class=40, n_classes=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g) * 2
    y = torch.arange(n_classes).repeat_interleave(n_per_class)
    return centres[y] + torch.randn(len(y), dim, generator=g), y * 3 + 1  # labels need not be 0..C-1


def test_the_float32_probe_solver_matches_the_float64_one_where_both_converge():
    x, y = blobs()
    xt, _ = blobs(seed=1)
    preds = {s: probes.fit_predict(x, y, xt, l2=1e-2, solver=s) for s in probes.SOLVERS}
    assert torch.equal(preds["lbfgs32"], preds["lbfgs64"])
    chosen = {s: probes.select_l2(x, y, [1e-4, 1e-3, 1e-2], solver=s) for s in probes.SOLVERS}
    assert chosen["lbfgs32"][0] == chosen["lbfgs64"][0]
    np.testing.assert_allclose(chosen["lbfgs32"][1], chosen["lbfgs64"][1], atol=1 / 32)  # one validation sample
    # the same objective, minimised as far as float32 resolves it: within 1e-5 of the float64 minimum
    xs, _ = probes._standardise(x, [])
    classes, yi = torch.unique(y, return_inverse=True)

    def objective(w, b):
        return float(torch.nn.functional.cross_entropy(xs @ w.double() + b.double(), yi) + 1e-2 * (w.double() ** 2).sum())

    best = objective(*probes._fit(xs, yi, len(classes), 1e-2, 200))
    assert objective(*probes._fit32(xs.float(), yi, len(classes), 1e-2, 200)) == pytest.approx(best, rel=1e-5)
    with pytest.raises(UserError, match="solver"):
        probes.fit_predict(x, y, xt, solver="sgd")


def test_the_krylov_top_eigenvalue_costs_iters_hvps_and_beats_power_iteration_per_hvp(monkeypatch):
    """Sharpness at a fraction of the cost: ``iters`` Hessian-vector products give the top and the dominant
    eigenvalue (a saddle: dominant -10, top 3) closer than block power iteration's 4 (iters + 1) products do."""
    from ssl_bench.ops import sharpness as ops

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=g, dtype=torch.float64))
    eig = torch.cat([torch.tensor([-10.0, 3.0, 2.9]), torch.linspace(-2.0, 2.0, 297)]).double()
    a = q @ torch.diag(eig) @ q.T
    w = torch.zeros(300, dtype=torch.float64, requires_grad=True)
    calls = []
    real = ops._Hessian.__call__
    monkeypatch.setattr(ops._Hessian, "__call__", lambda self, v: calls.append(len(v)) or real(self, v))
    top, dominant = ops.top_positive_eigenvalue(lambda: 0.5 * w @ a @ w, [w], iters=30, generator=g)
    assert sum(calls) == 30
    assert dominant == pytest.approx(-10.0, rel=1e-6) and top == pytest.approx(3.0, abs=0.05) and top <= 3.0 + 1e-9
    calls.clear()
    power = ops.top_eigenvalue(lambda: 0.5 * w @ a @ w, [w], iters=30, generator=g)  # the dominant only, 124 HVPs
    assert sum(calls) == 4 * 31 and power == pytest.approx(-10.0, rel=1e-3)
