"""Issue 17, what a GPU-less machine can check: precision in the result file, sync-free loss bookkeeping
(deferred hooks, non-finite losses named), data kept on the device gathers the same batches, --compile,
placement of sweep runs on GPUs (a fake device list), the CPU's thread count, and the CUDA build default."""

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from ssl_bench import results
from ssl_bench.cli import main
from ssl_bench.engine import RunConfig, execute, loop
from ssl_bench.engine import build as build_mod
from ssl_bench.engine import launch as sweep
from ssl_bench.engine.build import Run
from ssl_bench.errors import UserError
from ssl_bench.plan import make_plan
from ssl_bench.protocol import load as load_protocol
from ssl_bench.registry import Registry

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(tiny_protocol, tmp_path, **kw) -> RunConfig:
    registry = Registry.discover([])
    config = RunConfig(
        protocol=load_protocol(str(tiny_protocol)),
        method="simclr",
        stream="instance",
        strategy="sequential",
        seed=0,
        out=tmp_path / "runs",
        progress=False,
        **kw,
    )
    return make_plan(config, registry).config


def test_precision_is_recorded_and_fp32_on_cpu_by_default(tiny_protocol, tmp_path, one_thread):
    path = execute(tiny_config(tiny_protocol, tmp_path), Registry.discover([]))
    assert results.Result(path).attrs["precision"] == "fp32"


def test_bf16_on_cpu_trains_with_a_float32_loss(tiny_protocol, tmp_path, one_thread, monkeypatch):
    """On the CPU bf16 autocast covers the encoders (channels_last), not the heads and the loss (issue 34)."""
    monkeypatch.delenv(build_mod.CHANNELS_LAST_ENV, raising=False)
    run = Run(make_plan(tiny_config(tiny_protocol, tmp_path, precision="bf16"), Registry.discover([])))
    assert run.precision == "bf16" and run.channels_last and run.device_data is None and not run.prefetch
    inside, outside = [], []
    real_backbone, real_loss = run.method.backbone.forward, run.method.loss

    def backbone(*a, **k):
        inside.append(torch.is_autocast_enabled("cpu"))
        return real_backbone(*a, **k)

    def loss(*a, **k):
        out = real_loss(*a, **k)
        outside.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    run.method.backbone.forward, run.method.loss = backbone, loss
    run.phase_index = 0
    loop.train_phase(run, run.phases[0], types.SimpleNamespace(update=lambda n: None, set_postfix=lambda **k: None))
    assert inside and all(inside) and len(run.losses) == run.phases[0].steps
    assert outside and all(o == (False, torch.float32) for o in outside)
    assert all(torch.isfinite(torch.tensor(run.losses)))


def test_bad_precision_is_refused(tiny_protocol, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path), "--precision", "fp8"])
    assert exit_.value.code == 2 and "--precision" in capsys.readouterr().err
    with pytest.raises(UserError, match="--precision fp8"):
        build_mod._precision("fp8", torch.device("cpu"))


# ---------------------------------------------------------------------------------- losses, hooks, NaN
class _Hooks:
    def __init__(self):
        self.calls = []

    def ssl_bench_step_end(self, run, step, loss):
        self.calls.append((step, loss))


def fake_run(strategy_term=False):
    hooks = _Hooks()
    method = torch.nn.Linear(2, 2)
    return types.SimpleNamespace(
        config=types.SimpleNamespace(method="simclr"),
        strategy=types.SimpleNamespace(name="mas"),
        method=method,
        recipe=types.SimpleNamespace(lr=0.3),
        losses=[],
        registry=types.SimpleNamespace(observers=lambda: hooks),
        hooks=hooks,
    )


PHASE = types.SimpleNamespace(name="experience 0")


def test_losses_reach_the_hooks_at_the_logging_interval_in_order():
    run = fake_run()
    pending = [(s, torch.tensor(float(s)), None) for s in (5, 6, 7)]
    loop._flush(run, PHASE, pending, params=True)
    assert run.losses == [5.0, 6.0, 7.0] and run.hooks.calls == [(5, 5.0), (6, 6.0), (7, 7.0)]


@pytest.mark.parametrize(
    "pending,expect",
    [
        ([(3, torch.tensor(1.0), None), (4, torch.tensor(float("nan")), None)], "the loss became nan at step 4"),
        ([(9, torch.tensor(float("inf")), torch.tensor(2.0))], "the loss term of strategy 'mas' became inf at step 9"),
        ([(9, torch.tensor(float("nan")), torch.tensor(float("nan")))], "the loss became nan at step 9"),
    ],
)
def test_non_finite_loss_names_method_step_term_and_recipe(pending, expect):
    run = fake_run()
    with pytest.raises(FloatingPointError) as err:
        loop._flush(run, PHASE, pending, params=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("method 'simclr': ") and expect in msg
    assert "phase 'experience 0'" in msg and "--recipe lr=0.15" in msg
    assert run.hooks.calls == [] and run.losses == []


def test_non_finite_parameters_are_named():
    run = fake_run()
    with torch.no_grad():
        run.method.bias[1] = float("nan")
    with pytest.raises(FloatingPointError, match=r"parameters became non-finite by step 2 .*first non-finite parameter: bias"):
        loop._flush(run, PHASE, [(1, torch.tensor(1.0), None), (2, torch.tensor(1.0), None)], params=True)
    loop._flush(run, PHASE, [(3, torch.tensor(1.0), None)], params=False)  # not checked at every flush


NAN_PLUGIN = """
from ssl_bench import hookimpl
from ssl_bench.api import Method

__version__ = "0.1"


class NanAt3(Method):
    def __init__(self, backbone):
        super().__init__(backbone)
        self.calls = 0

    def loss(self, views, labels):
        self.calls += 1
        out = self.backbone(views[0]).pow(2).mean()
        return out * float("nan") if self.calls == 3 else out


@hookimpl
def ssl_bench_methods():
    return {"nan-at-3": NanAt3}
"""


def test_diverging_run_stops_with_one_line(tiny_protocol, tmp_path, capsys, one_thread):
    plugin = tmp_path / "nan_at_3.py"
    plugin.write_text(NAN_PLUGIN)
    args = ["-q", "run", "--protocol", str(tiny_protocol), "--out", str(tmp_path / "runs"), "--plugin", str(plugin)]
    code = main(args + ["--method", "nan-at-3"])
    lines = capsys.readouterr().err.strip().splitlines()
    err = "\n".join(line for line in lines if not line.startswith("recipe from protocol"))  # the fallback's notice
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "method 'nan-at-3': the loss became nan at step 3 (phase 'experience 0')" in err
    assert "first non-finite parameter: backbone." in err and "--recipe lr=0.025 (now 0.05)" in err
    assert not list((tmp_path / "runs").glob("*.h5"))


# ---------------------------------------------------------------------------------------- data on device
def test_device_resident_gather_gives_the_same_batches(tiny_protocol, tmp_path, one_thread):
    run = Run(make_plan(tiny_config(tiny_protocol, tmp_path), Registry.discover([])))
    assert not build_mod.fits_on_device(1, torch.device("cpu"))
    pool = loop.phase_pool(run, run.phases[0])
    run.phase_index = 0
    host = [run.batch_of(i, h) for i, h in loop._indices(run, run.phases[0], pool, torch.device("cpu"))]
    train = run.dataset.train
    run.device_data = (train.images.clone(), train.labels.clone(), train.domains.clone())  # as on a GPU
    resident = list(loop._batches(run, run.phases[0], pool))
    assert len(host) == len(resident) == run.phases[0].steps
    for a, b in zip(host, resident):
        for x, y in zip((a.images, a.labels, a.domains, a.index), (b.images, b.labels, b.domains, b.index)):
            assert torch.equal(x, y)
        assert torch.equal(b.host_index, b.index)  # the same indices on the host, for strategies that need them
    pinned = run.host_batch(host[0].index, pin=torch.cuda.is_available())
    assert torch.equal(pinned.images, host[0].images)


def test_compile_trains_through_torch_compile(tiny_protocol, tmp_path, one_thread, monkeypatch):
    calls = []
    real = torch.compile

    def compile_eager(model):  # dynamo traces the method; the eager backend skips inductor's C++ build
        calls.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", compile_eager)
    path = execute(tiny_config(tiny_protocol, tmp_path, compile=True), Registry.discover([]))
    r = results.Result(path)
    assert len(calls) == 1 and torch.isfinite(torch.as_tensor(r["train/loss"])).all()
    assert r.config["compile"] is True


# --------------------------------------------------------------------------------------- sweep placement
def test_gpu_slots_place_k_runs_per_gpu():
    assert sweep.gpu_slots(["0", "1"], 3) == ["0", "0", "0", "1", "1", "1"]
    assert sweep.gpu_slots([], 4) == []


def _report(barrier):
    barrier.wait(timeout=120)  # every worker holds one task: each answers for itself
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_WAIT_POLICY"), os.getpid()


def test_pool_pins_every_worker_to_its_gpu_and_passive_threads(monkeypatch):
    import multiprocessing

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    slots = sweep.gpu_slots(["3", "5"], 2)  # a fake machine with two GPUs, K = 2
    with multiprocessing.Manager() as manager:
        barrier = manager.Barrier(len(slots))
        with sweep.pool(len(slots), slots) as workers:
            seen = [f.result(timeout=300) for f in [workers.submit(_report, barrier) for _ in slots]]
    assert sorted(s[0] for s in seen) == ["3", "3", "5", "5"]
    assert {s[1] for s in seen} == {"PASSIVE"} and len({s[2] for s in seen}) == 4
    assert "OMP_WAIT_POLICY" not in os.environ


def test_per_gpu_uses_the_visible_gpus(monkeypatch, tiny_protocol, tmp_path):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    assert sweep.visible_gpus() == ["4", "6"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert sweep.visible_gpus() == ["0", "1"]
    seen = {}
    monkeypatch.setattr(sweep, "_local", lambda todo, jobs, slots: seen.update(jobs=jobs, slots=slots) or ([], []))
    config = tiny_config(tiny_protocol, tmp_path)
    sweep.run([config], per_gpu=4)
    assert seen == {"jobs": 8, "slots": ["0"] * 4 + ["1"] * 4}


def test_per_gpu_without_a_gpu_is_a_one_line_error(tiny_protocol, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code = main(["-q", "sweep", "--protocol", str(tiny_protocol), "--out", str(tmp_path), "--per-gpu", "4", "--seeds", "0"])
    assert code == 2 and "--per-gpu 4" in capsys.readouterr().err


def test_threads_follow_the_affinity_mask(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert sweep.cores() == len(os.sched_getaffinity(0))
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
        assert sweep.cores() == 1


# ------------------------------------------------------------------------------------------- the build
def test_cuda_is_built_by_default_only_with_a_visible_gpu():
    spec = importlib.util.spec_from_file_location("ssl_bench_setup", ROOT / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)  # not __main__: defines the functions, builds nothing
    yes, no = (lambda: True), (lambda: False)
    assert setup.build_cuda("", True, yes) and not setup.build_cuda("", True, no)
    assert setup.build_cuda("auto", True, yes) and not setup.build_cuda("", False, yes)
    assert setup.build_cuda("1", True, no) and not setup.build_cuda("0", True, yes)
    with pytest.raises(RuntimeError, match="SSL_BENCH_CUDA=1"):
        setup.build_cuda("1", False, yes)
    assert sys.modules.get("ssl_bench_setup") is None
