"""The GPU training path, proven on the CPU (issue 35): what a lent GPU would otherwise find at its first step.

- channels_last: on CUDA the engine puts conv weights (and so their gradients) in channels_last; forced on the
  CPU here (``SSL_BENCH_CHANNELS_LAST=1``) through every method and every strategy, a phase with each
  strategy's per-step work (penalty, replay, mixup, distillation) included.
- no host synchronisation: every method and strategy trains its phases on an emulated device
  (:mod:`tests.fake_cuda`: tensors on a device that is not the host, data on the CPU) and no step, a phase's
  first included, reads the device, copies from pageable host memory or runs an operator whose output size
  depends on the data; only the loop's loss copy every ``LOG_EVERY`` steps does (so a GPU can run a whole
  phase under ``torch.cuda.set_sync_debug_mode("error")``, as benchmark/gpu_lease.sh does).
"""

import os
import textwrap

import pytest
import torch

from ssl_bench.engine.build import CHANNELS_LAST_ENV, Run
from ssl_bench.engine.loop import train_phase
from ssl_bench.plan import RunConfig, make_plan
from ssl_bench.protocol import load
from ssl_bench.registry import Registry
from tests.fake_cuda import EmulatedDevice, to_device

pytestmark = pytest.mark.usefixtures("one_thread")

REGISTRY = Registry.discover()
METHODS = REGISTRY.names("method")
STRATEGIES = REGISTRY.names("strategy")

#: one or two steps per experience: 16 px, a tiny ResNet, batch 16
PROTOCOL = textwrap.dedent("""
    name = "gpu-path"
    version = 1
    family = "gpu-path"
    seeds = [0]
    [dataset]
    name = "synthetic"
    resolution = 16
    options = {{ train_per_class_domain = 2, test_per_class_domain = 2, n_domains = 2 }}
    [stream]
    n_experiences = 2
    [backbone]
    {backbone}
    [train]
    epochs_per_experience = 1
    batch_size = 16
    [eval]
    probe_train_per_experience = 0
    [recipe]
    lr = 0.05
    lr_scaling = "none"
    schedule = "constant"
""")
RESNET = 'name = "resnet18"\n    options = { width = 0.125 }'
VIT = 'name = "vit_tiny"\n    options = { depth = 1 }'
#: a ViT whose fixed sin-cos position table is recomputed at another grid (local crops)
VIT_SINCOS = 'name = "vit_tiny"\n    options = { depth = 1, pos_embed = "sincos" }'
#: small heads for every method that takes them (2 local crops where a method makes multi-crop views)
SMALL = {
    "proj_hidden": 32,
    "proj_dim": 16,
    "pred_hidden": 16,
    "out_dim": 32,
    "hidden": 32,
    "bottleneck": 16,
    "n_prototypes": 16,
    "decoder_dim": 32,
    "decoder_depth": 1,
    "decoder_heads": 4,
    "queue_size": 64,
    "queue_length": 32,
    "queue_start_epoch": 0.0,
    "n_local": 2,
}
VIT_METHODS = {"mae"}  # methods that need a Vision Transformer
#: fewer samples for the importances estimated after each phase (their per-sample gradients are what is slow)
STRATEGY_OPTIONS = {"mas": {"samples": 16}, "ewc": {"samples": 16}}


def make_run(
    tmp_path, method="simclr", strategy="sequential", device="cpu", strategy_options=None, backbone=None, options=None
) -> Run:
    import inspect

    path = tmp_path / "gpu_path.toml"
    path.write_text(PROTOCOL.format(backbone=backbone or (VIT if method in VIT_METHODS else RESNET)))
    params = inspect.signature(REGISTRY.get("method", method).factory).parameters
    config = RunConfig(
        protocol=load(str(path)),
        method=method,
        stream="instance",
        strategy=strategy,
        seed=0,
        out=tmp_path / "runs",
        method_options={**{k: v for k, v in SMALL.items() if k in params}, **(options or {})},
        strategy_options=strategy_options or _small(strategy),
        device=device,
        progress=False,
    )
    return Run(make_plan(config, REGISTRY))


def _small(strategy: str) -> dict:
    parts = strategy.split("+")
    if len(parts) == 1:
        return dict(STRATEGY_OPTIONS.get(strategy, {}))
    return {f"{p}.{k}": v for p in parts for k, v in STRATEGY_OPTIONS.get(p, {}).items()}


class Bar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass


def train(run: Run, phases=None) -> None:
    """The phases of the run (all by default), as the engine trains them, without the evaluations."""
    for i in range(len(run.phases)) if phases is None else phases:
        run.phase_index = i
        run.strategy.before_phase(run, run.phases[i])
        train_phase(run, run.phases[i], Bar())
        run.strategy.after_phase(run, run.phases[i])


# ------------------------------------------------------------------------------------ channels_last
CASES = [(m, "sequential") for m in METHODS] + [(m, "mas") for m in ("byol", "mae")]
CASES += [("simclr", s) for s in STRATEGIES if s != "sequential"] + [("simclr", "replay+mas"), ("byol", "ewc")]


@pytest.mark.parametrize("method,strategy", CASES)
def test_every_method_and_strategy_trains_in_channels_last(method, strategy, tmp_path, monkeypatch):
    """Before the fix, mas, ewc and replay+mas stopped at the first penalised step: '.grad of parameter 0 is not
    contiguous'."""
    monkeypatch.setenv(CHANNELS_LAST_ENV, "1")
    run = make_run(tmp_path, method, strategy)
    convs = [m.weight for m in run.method.modules() if isinstance(m, torch.nn.Conv2d)]
    assert run.channels_last and convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # a real channels_last layout, not a 1x1 that is both
    train(run)
    assert len(run.losses) == run.total_steps and all(torch.isfinite(torch.tensor(run.losses)))
    assert all(w.grad is None or w.grad.stride() == w.stride() for w in convs)
    if "mas" in strategy or "ewc" in strategy:
        reg = next(p for p in getattr(run.strategy, "parts", [run.strategy]) if p.name in ("mas", "ewc"))
        assert reg._params and reg.history["penalty_steps"][-1] == run.phases[-1].steps
        for p, a, w in zip(reg._params, reg._anchor, reg._imp):  # laid out like the parameter: no copy per step
            assert a.stride() == p.stride() and w.stride() == p.stride()


def test_penalty_kernel_walks_channels_last_memory_as_it_is(ops, monkeypatch):
    """The op gets the parameters', gradients', anchors' and importances' own memory (no copy per step) and adds
    the float64 oracle's gradient into channels_last ``.grad``; tensors laid out otherwise are still right."""
    from ssl_bench.ops import _ext
    from ssl_bench.ops.penalty import quadratic_penalty_

    g = torch.Generator().manual_seed(0)
    cl = torch.channels_last

    def rand(*shape, fmt=torch.contiguous_format, low=0.0):
        return (torch.rand(*shape, generator=g) + low).contiguous(memory_format=fmt)

    shapes = [((8, 3, 3, 3), cl), ((16,), torch.contiguous_format), ((4, 8, 1, 1), cl)]
    params = [torch.nn.Parameter(rand(*s, fmt=f)) for s, f in shapes]
    for p in params:
        p.grad = rand(*p.shape).contiguous(memory_format=cl if p.dim() == 4 else torch.contiguous_format)
    anchors = [torch.empty_like(p).copy_(rand(*p.shape)) for p in params]
    imps = [torch.empty_like(p).copy_(rand(*p.shape)) for p in params]
    imps[2] = imps[2].contiguous()  # one importance in another layout: copied for the call, still right
    grad0 = [p.grad.clone() for p in params]
    calls = []

    class Spy:
        def quadratic_penalty_(self, *args):
            calls.append(args)
            return ops.quadratic_penalty_(*args)

    monkeypatch.setattr(_ext, "kernels", lambda device=None: Spy())
    value = quadratic_penalty_(params, anchors, imps, 1.5, use_kernel=True)
    ps, gs, as_, ws, _ = calls[0]
    for i in range(2):
        assert ps[i].data_ptr() == params[i].data_ptr() and gs[i].data_ptr() == params[i].grad.data_ptr()
        assert as_[i].data_ptr() == anchors[i].data_ptr() and ws[i].data_ptr() == imps[i].data_ptr()
    want = sum((w.double() * (p.double() - a.double()) ** 2).sum() for p, a, w in zip(params, anchors, imps)) * 0.75
    assert float(value) == pytest.approx(float(want), rel=1e-5)
    for p, a, w, g0 in zip(params, anchors, imps, grad0):
        assert p.grad.stride() == p.stride()
        torch.testing.assert_close(p.grad.double(), g0.double() + 1.5 * w.double() * (p.double() - a.double()))


# ------------------------------------------------------------------------------------ no host synchronisation
PER_STEP = ("mas", "ewc", "replay", "lump", "cassle", "pfr")  # strategies with work in every step
SYNC_CASES = [(m, "sequential", None) for m in METHODS] + [("simclr", s, None) for s in PER_STEP]
SYNC_CASES += [("byol", "replay+mas", None), ("dino", "sequential", VIT_SINCOS)]


@pytest.mark.parametrize("method,strategy,backbone", SYNC_CASES)
def test_no_step_waits_for_the_device(method, strategy, backbone, tmp_path, monkeypatch):
    """Before the fix: 12 copies per SimCLR step from augment's constants, the reference NT-Xent's targets, MAE's
    and the ViT's position tables, SwAV's queue check, the supervised label check, LUMP's ``.cpu()``, replay's and
    the shuffles' pageable copies, ..."""
    monkeypatch.setenv(CHANNELS_LAST_ENV, "1")
    run = make_run(tmp_path, method, strategy, backbone=backbone)
    found = []
    with EmulatedDevice() as device:
        to_device(run)
        for i, phase in enumerate(run.phases):
            run.phase_index = i
            run.strategy.before_phase(run, phase)
            with device.steps(run) as steps:
                train_phase(run, phase, Bar())
            run.strategy.after_phase(run, phase)
            assert len(steps.per_step) == phase.steps + 1 and [e.op for e in steps.flush] == ["to(cpu)"]
            found += [f"phase {i} step {k}: {e}" for k, e in steps.waits()]
    assert len(run.losses) == run.total_steps and all(torch.isfinite(torch.tensor(run.losses)))
    assert not found, "\n".join(found)


# ------------------------------------------------------------------------------------ --compile
class TinyBackbone(torch.nn.Module):
    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


@pytest.mark.parametrize("method", ["dino", "swav"])
def test_compiled_step_compiles_a_bounded_number_of_times(method):
    """DINO's forward read the phase's step count (its teacher temperature warm-up), a new constant of the graph at
    every step: ``--compile`` recompiled each step until its limit (8), then ran uncompiled. SwAV with a queue read
    it too. Now a phase compiles at most twice (SwAV: before and after its queue starts)."""
    factory = REGISTRY.get("method", method).factory
    options = {"out_dim": 16, "hidden": 16, "bottleneck": 8, "n_local": 0, "warmup_teacher_temp_epochs": 2.0}
    if method == "swav":
        options = {"proj_hidden": 16, "proj_dim": 8, "n_prototypes": 8, "n_local": 0, "queue_length": 8}
        options.update(queue_start_epoch=0.5, freeze_prototypes_epochs=0.0)
    torch.manual_seed(0)
    model = factory(TinyBackbone(), **options)
    graphs = []

    def backend(gm, inputs):  # the eager backend, counting what dynamo hands it
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    views = [torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8)]
    model.train()
    steps = 6
    model.begin_phase(steps, 2)
    with torch._dynamo.config.patch(recompile_limit=64):  # count every compile, without the limit stopping them
        for k in range(steps):
            loss = compiled(views, None)
            opt.zero_grad()
            loss.backward()
            model.after_backward()
            opt.step()
            model.after_step((k + 1) / steps)
    assert torch.isfinite(loss)
    assert len(graphs) <= 2, f"{len(graphs)} compiles in {steps} steps"
    torch._dynamo.reset()


# ------------------------------------------------------------------------------------ smaller faults
def test_op_backends_say_reference_where_a_build_without_cuda_falls_back(monkeypatch):
    """A wheel built without CUDA kernels on a GPU machine: the ops run their references on the GPU, and say so."""
    from ssl_bench.ops import _ext, fisher, penalty

    if not _ext.available():
        pytest.skip("the extension is not built")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_ext, "has_cuda", lambda: False)
    assert fisher.backend() == penalty.backend() == "reference"
    assert fisher.backend("cpu") == penalty.backend("cpu") == "kernel"
    monkeypatch.setattr(_ext, "has_cuda", lambda: True)
    assert fisher.backend() == penalty.backend() == "kernel"


def test_cuda_build_embeds_ptx_for_newer_gpus():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("ssl_bench_setup_archs", Path(__file__).parent.parent / "setup.py")
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)  # not __main__: builds nothing
    archs = setup.ARCHS.split(";")
    assert "9.0" in archs[-1] and archs[-1].endswith("+PTX")  # the newest machine code, and its PTX


def test_runs_packed_on_a_gpu_share_the_memory_for_data(monkeypatch):
    """``--per-gpu K``: each of K runs keeps its data on the GPU only within 1/K of DEVICE_DATA_FRACTION, so the K
    runs' data stay within it (before: each took up to the whole fraction, 8 x 25% = 200% at K = 8)."""
    from types import SimpleNamespace

    from ssl_bench.engine import build, launch

    total = 8000
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=total))
    gpu = torch.device("cuda", 0)
    bound = build.DEVICE_DATA_FRACTION * total
    for k in (1, 2, 3, 4, 8):
        monkeypatch.setenv(build.RUNS_PER_GPU_ENV, str(k))
        largest = max(n for n in range(0, total) if build.fits_on_device(n, gpu))
        assert k * largest <= bound < k * (largest + 1)
    assert not build.fits_on_device(1, torch.device("cpu"))

    class Slots:
        def get(self):
            return "3"

    monkeypatch.delenv(build.RUNS_PER_GPU_ENV)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    launch._pin(Slots(), 4)  # the pool's initializer, in a worker
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" and os.environ[build.RUNS_PER_GPU_ENV] == "4"
    seen = {}

    class Executor:
        def __init__(self, **kw):
            seen.update(kw)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(launch, "ProcessPoolExecutor", Executor)
    with launch.pool(6, launch.gpu_slots(["0", "1"], 3)):
        pass
    assert seen["initargs"][1] == 3 and seen["max_workers"] == 6


def test_checkpoint_keeps_the_gpus_random_state(tmp_path, monkeypatch):
    """MAE's masks and drop-path draw from the GPU's default generator: a resumed run must continue its sequence."""
    from ssl_bench.engine import checkpoint

    saved, restored = torch.arange(16, dtype=torch.uint8), []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": saved.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append((state, device)))
    run = make_run(tmp_path)
    run.device = torch.device("cuda", 0)  # as if on a GPU: only the random states are asked for
    path = tmp_path / "ckpt"
    checkpoint.save(run, path, "fp", 1, None)
    again = make_run(tmp_path)
    again.device = torch.device("cuda", 0)
    assert checkpoint.resume(again, path, "fp")[0] == 1
    assert len(restored) == 1 and torch.equal(restored[0][0], saved) and restored[0][1] == again.device


def test_tf32_is_set_explicitly_and_never_under_fp32():
    from ssl_bench.engine.build import set_tf32

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True  # cuDNN's default: TF32 convolutions
        assert set_tf32(torch.device("cuda", 0), "fp32") is False
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert set_tf32(torch.device("cuda", 0), "bf16") is True
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        assert set_tf32(torch.device("cpu"), "fp32") is False and not torch.backends.cudnn.allow_tf32  # untouched
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_hessian_trace_does_not_wait_for_a_count():
    """``v[v == 0] = 1`` (boolean indexing) made the GPU wait for the number of zeros in every probe batch."""
    from ssl_bench.ops.sharpness import hessian_trace

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x = torch.randn(10, 6)
    want = hessian_trace(lambda: model(x).square().sum(), list(model.parameters()), n_probes=4, batch_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    x = torch.randn(10, 6)  # the same draws again: the probes too
    with EmulatedDevice() as device:
        model.to("meta")  # the emulated device
        xd = x.to("meta")
        device.outside.clear()
        got = hessian_trace(lambda: model(xd).square().sum(), list(model.parameters()), n_probes=4, batch_size=2)
    assert [e.kind for e in device.outside] == ["read"]  # the one read of the result, at the end
    assert got == pytest.approx(want, rel=1e-6)


HEAD_DUMP = """
import os
import torch
from ssl_bench import hookimpl

@hookimpl
def ssl_bench_step_end(run, step, loss):
    params = [p.detach().clone() for p in run.strategy.head.parameters()]
    torch.save(params, os.path.join(os.environ["HEAD_DIR"], f"head{run.rank}.pt"))
"""


def test_distillation_head_stays_the_same_on_every_rank(tiny_protocol, tmp_path):
    """Under torchrun the head CaSSLe and PFR train (their base, ``FrozenDistillation``) sits outside the method's
    DDP: its gradients were each rank's own, so the heads drifted apart. Now they are averaged: after the last step
    both ranks hold the same head."""
    strategy = "cassle"
    import subprocess
    import sys

    plugin = tmp_path / "head_dump.py"
    plugin.write_text(HEAD_DUMP)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    cmd = [torchrun, "--nproc_per_node=2", "-m", "ssl_bench.cli", "-q", "run", "--protocol", str(tiny_protocol)]
    cmd += ["--strategy", strategy, "--plugin", str(plugin), "--out", str(tmp_path / "runs"), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HEAD_DIR": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    heads = [torch.load(tmp_path / f"head{rank}.pt") for rank in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(*heads))


def test_a_classifier_smaller_than_the_dataset_fails_before_training(tmp_path):
    """The supervised method read every batch's largest label to check it against its classifier: a wait per step on
    a GPU. The engine checks ``n_classes`` against the dataset's classes before training instead."""
    from ssl_bench.errors import UserError

    with pytest.raises(UserError, match=r"n_classes=2, but dataset synthetic has \d+ classes"):
        make_run(tmp_path, "supervised", options={"n_classes": 2})
