"""The GPU speed measurements (issue 17), shared by ``benchmark/test_bench_speed.py`` (pytest-benchmark) and
``benchmark/gpu_lease.py`` (one lease, a JSON line per measurement as it ends). Each returns a dict of numbers,
every number a ratio against a reference timed in the same call:

- :func:`throughput`: images/s of the engine's ``train_phase`` (SimCLR, ResNet-18 small stem, the GPU defaults:
  bf16 autocast, channels_last, data on the GPU, no per-step sync) against (a) the old loop's settings (fp32, NCHW,
  batches gathered on the host and copied, the loss copied every step) and (b) a bare hand-written loop (the same
  model, augmentation ops and optimiser in bf16 and channels_last, nothing else); on CUDA also the backbone's
  share of the bf16 matrix peak (an 8192^3 product timed in the same call);
- :func:`packing`: runs per hour of ``ssl-bench sweep --per-gpu K`` (``--jobs K`` on the CPU);
- :func:`cross_rank_memory`: one rank's peak memory for the fused cross-rank NT-Xent against the dense logits;
- :func:`compile_speed`: ``--compile``: seconds to the first compiled step, images/s against eager.

Sizes are arguments, so that ``gpu_lease.sh --dry-run-on-cpu`` runs the same code in seconds on the CPU.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ssl_bench import protocol
from ssl_bench.api import Phase
from ssl_bench.engine import loop
from ssl_bench.engine.build import Run
from ssl_bench.plan import RunConfig, make_plan
from ssl_bench.registry import Registry

PROTOCOL = textwrap.dedent("""
    name = "speed"
    version = 1
    family = "speed"
    seeds = [0]
    [dataset]
    name = "synthetic"
    resolution = {res}
    options = {{ train_per_class_domain = {per_class}, test_per_class_domain = 2 }}
    [stream]
    n_experiences = 1
    [backbone]
    name = "resnet18"
    options = {{ small_stem = true, width = {width} }}
    [train]
    epochs_per_experience = 1
    batch_size = {batch}
    [eval]
    probe_train_per_experience = 0
    [recipe]
    lr = 0.3
    lr_scaling = "none"
    schedule = "cosine"
""")


class Bar:
    """A progress bar that shows nothing."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **kw) -> None:
        pass


def make_run(out: Path, res: int, batch: int = 256, width: float = 1.0, per_class: int = 100, **kw) -> Run:
    """A SimCLR run of the speed protocol (``kw``: RunConfig fields, e.g. ``device``, ``compile``)."""
    proto = protocol.parse(PROTOCOL.format(res=res, batch=batch, width=width, per_class=per_class))
    kw.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")
    config = RunConfig(proto, "simclr", "instance", "sequential", 0, out, progress=False, **kw)
    run = Run(make_plan(config, Registry.discover()))
    run.phase_index = 0
    return run


def old_settings(run: Run) -> Run:
    """The loop as it was before issue 17: fp32, NCHW, host batches, the loss copied every step."""
    run.precision, run.channels_last, run.device_data, run.prefetch = "fp32", False, None, False
    run.method.to(memory_format=torch.contiguous_format)
    return run


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def images_per_s(fn: Callable[[], object], images_per_call: int, rounds: int = 3) -> float:
    """Images per second of ``fn()`` (the median of ``rounds`` timed calls after one warm-up)."""
    fn()  # warm-up (cuDNN autotuning, allocator)
    times = []
    for _ in range(rounds):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t)
    return images_per_call / sorted(times)[len(times) // 2]


def matmul_peak(n: int = 8192) -> float:
    """bf16 FLOP/s of an n^3 product on random data (median of 10 after 3 warm-ups; CUDA)."""
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / sorted(times)[5]


def backbone_fraction_of_peak(run: Run, res: int, peak: float, batch: int) -> float:
    """FLOP/s of the backbone's forward + backward on 2 x ``batch`` views (bf16, channels_last) over ``peak``."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = run.method.backbone
    x = torch.randn(2 * batch, 3, res, res, device="cuda").contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            backbone(x).float().sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    per_s = images_per_s(lambda: [step() for _ in range(10)], 10)  # calls per second
    return flops * per_s / peak


def throughput(out: Path, res: int, steps: int, batch: int = 256, width: float = 1.0, per_class: int = 100) -> dict:
    """``train_phase`` against the old loop's settings and against a bare loop (see the module docstring)."""
    torch.backends.cudnn.benchmark = True
    cuda = torch.cuda.is_available()
    phase = Phase("bench", [0], steps)
    sizes = dict(batch=batch, width=width, per_class=per_class)
    new = make_run(out, res, **sizes)
    if cuda:
        assert new.precision == "bf16" and new.channels_last and new.device_data is not None
    old = old_settings(make_run(out, res, **sizes))

    # (b) the bare loop: the same model (a fresh copy), augmentation and optimiser; nothing else
    bare = make_run(out, res, **sizes)
    method, opt, augment, device = bare.method, bare.optimizer, bare.augment, bare.device
    images = bare.dataset.train.images.to(device)
    gen = torch.Generator(device=device).manual_seed(1)

    def bare_loop():
        method.train()
        for _ in range(steps):
            index = torch.randint(0, len(images), (batch,), device=device, generator=gen)
            views = augment(images[index], 2, res, gen)
            if cuda:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = method(views, None).float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def old_loop():
        every = loop.LOG_EVERY
        loop.LOG_EVERY = 1  # the loss to the host after every step, as before
        try:
            loop.train_phase(old, phase, Bar())
        finally:
            loop.LOG_EVERY = every

    n = steps * batch
    ips_old = images_per_s(old_loop, n)
    ips_bare = images_per_s(bare_loop, n)
    ips_new = images_per_s(lambda: loop.train_phase(new, phase, Bar()), n)
    info = dict(
        res=res,
        batch=batch,
        steps=steps,
        images_per_s=round(ips_new),
        old_images_per_s=round(ips_old),
        bare_images_per_s=round(ips_bare),
        speedup_vs_old=round(ips_new / ips_old, 2),
        share_of_bare=round(ips_new / ips_bare, 3),
        device=torch.cuda.get_device_name() if cuda else "cpu",
    )
    if cuda:
        peak = matmul_peak()
        info.update(
            bf16_peak_tflops=round(peak / 1e12, 1),
            backbone_fraction_of_peak=round(backbone_fraction_of_peak(new, res, peak, batch), 3),
        )
    return info


def run_group(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` in a process group of its own, all of which (a sweep's pool workers too) is killed at the
    timeout (then ``TimeoutExpired`` is raised) or when this process is stopped."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:  # the timeout, or this process told to stop (gpu_lease.py turns SIGTERM into SystemExit)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def packing(out: Path, k: int, runs: int, protocol_name: str = "smoke", timeout: float = 900) -> dict:
    """``ssl-bench sweep`` of ``runs`` seeds, K at a time (``--per-gpu K`` on every visible GPU, ``--jobs K`` on the
    CPU): runs per hour, start-up, data generation, training, evaluation and writing included."""
    seeds = ",".join(str(s) for s in range(runs))
    cmd = [sys.executable, "-m", "ssl_bench.cli", "-q", "sweep", "--protocol", protocol_name, "--seeds", seeds]
    cmd += ["--per-gpu", str(k)] if torch.cuda.is_available() else ["--jobs", str(k), "--device", "cpu"]
    cmd += ["--out", str(out / f"packing_k{k}")]
    t = time.perf_counter()
    proc = run_group(cmd, timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"sweep --per-gpu {k} failed: {proc.stderr.strip()[-1500:]}")
    return dict(per_gpu=k, runs=runs, seconds=round(seconds, 1), runs_per_hour=round(runs / seconds * 3600))


def cross_rank_memory(n_global: int = 16384, d: int = 128, tau: float = 0.2) -> dict:
    """One of 2 ranks at a global N (float32): its 2 x N/2 rows against the 2 x N gathered columns, forward +
    backward, peak memory above the inputs: the fused op against the dense logits (CUDA)."""
    from ssl_bench.ops import contrastive as C

    world = 2
    g = torch.Generator(device="cuda").manual_seed(0)
    cols = torch.nn.functional.normalize(torch.randn(2 * n_global, d, device="cuda", generator=g), dim=1)
    rows = cols[: 2 * n_global // world].clone().requires_grad_()
    cols.requires_grad_()

    def peak(lse) -> int:
        rows.grad = cols.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        lse(rows, cols, tau, offset=0).mean().backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    peak(C.lse_rows), peak(C.lse_rows_reference)  # warm-up: cuBLAS workspaces, allocator
    fused, dense = peak(C.lse_rows), peak(C.lse_rows_reference)
    return dict(
        n_global=n_global, fused_mib=round(fused / 2**20, 1), dense_mib=round(dense / 2**20, 1), ratio=round(fused / dense, 4)
    )


def compile_speed(out: Path, res: int, steps: int, batch: int = 256, width: float = 1.0) -> dict:
    """``--compile``: seconds until the first compiled step is done, images/s against the same loop eager."""
    torch.backends.cudnn.benchmark = True
    phase = Phase("bench", [0], steps)
    eager, compiled = make_run(out, res, batch, width), make_run(out, res, batch, width, compile=True)
    _sync()
    t = time.perf_counter()
    loop.train_phase(compiled, Phase("first", [0], 1), Bar())
    _sync()
    compile_s = time.perf_counter() - t
    n = steps * batch
    ips_eager = images_per_s(lambda: loop.train_phase(eager, phase, Bar()), n)
    ips = images_per_s(lambda: loop.train_phase(compiled, phase, Bar()), n)
    return dict(
        res=res,
        compile_s=round(compile_s, 1),
        images_per_s=round(ips),
        eager_images_per_s=round(ips_eager),
        speedup=round(ips / ips_eager, 3),
    )
