"""Issue 17: how fast the harness trains on a GPU, each number a ratio against references timed in the same run.

- Throughput: SimCLR, ResNet-18 (small stem), batch 256, at 32 and 64 px: images/s of the harness's training
  loop (``engine.loop.train_phase``, its defaults: bf16 autocast, channels_last, data on the GPU, no per-step
  sync) against (a) the old loop's settings (fp32, NCHW, batches gathered on the host and copied, the loss
  copied to the host every step) and (b) a bare hand-written loop (bf16, channels_last, data on the GPU, the
  same model, augmentation ops and optimiser, nothing else). Goals: >= 2x (a), >= 90% of (b). Also the
  fraction of the bf16 matrix peak (an 8192^3 product timed here) that the backbone's forward + backward
  reach (FLOPs counted by torch.utils.flop_counter).
- Packing: runs per hour of the smoke protocol with ``ssl-bench sweep --per-gpu K``, K = 1, 4, 8 (goal: >= 3x
  K = 1 at the best K).
- Contrastive across ranks: one rank's peak memory for the NT-Xent loss (forward + backward) of its rows
  against the gathered columns at a global N = 16384 (2 ranks), fused op vs the dense form (goal <= 10%).

Everything here needs CUDA and skips without it. ``benchmark/gpu_perf.sh`` runs it all on a lent GPU:
    pytest benchmark/test_bench_speed.py -s --benchmark-json=speed.json
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ssl_bench import protocol
from ssl_bench.api import Phase
from ssl_bench.engine import RunConfig, loop
from ssl_bench.engine.build import Run
from ssl_bench.plan import make_plan
from ssl_bench.registry import Registry

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
STEPS = int(os.environ.get("SSL_BENCH_SPEED_STEPS", "30"))  # timed steps per round

PROTOCOL = textwrap.dedent("""
    name = "speed"
    version = 1
    family = "speed"
    seeds = [0]
    [dataset]
    name = "synthetic"
    resolution = {res}
    options = {{ train_per_class_domain = 100, test_per_class_domain = 2 }}
    [stream]
    n_experiences = 1
    [backbone]
    name = "resnet18"
    options = {{ small_stem = true }}
    [train]
    epochs_per_experience = 1
    batch_size = 256
    [eval]
    probe_train_per_experience = 0
    [recipe]
    lr = 0.3
    lr_scaling = "none"
    schedule = "cosine"
""")


def _run(tmp_path, res: int, **kw) -> Run:
    proto = protocol.parse(PROTOCOL.format(res=res))
    config = RunConfig(proto, "simclr", "instance", "sequential", 0, tmp_path, progress=False, device="cuda", **kw)
    return Run(make_plan(config, Registry.discover()))


def _old_settings(run: Run) -> Run:
    """The loop as it was before issue 17: fp32, NCHW, host batches, the loss copied every step."""
    run.precision, run.channels_last, run.device_data, run.prefetch = "fp32", False, None, False
    run.method.to(memory_format=torch.contiguous_format)
    return run


class _Bar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass


def _images_per_s(fn, images_per_call: int, rounds: int = 3) -> float:
    fn()  # warm-up (cuDNN autotuning, allocator)
    times = []
    for _ in range(rounds):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return images_per_call / sorted(times)[len(times) // 2]


def _matmul_peak() -> float:
    """bf16 FLOP/s of an 8192^3 product on random data (median of 10 after 3 warm-ups)."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
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
    return 2 * 8192**3 / sorted(times)[5]


def _backbone_fraction_of_peak(run: Run, res: int, peak: float) -> float:
    """FLOP/s of the backbone's forward + backward on 2 x 256 views (bf16, channels_last) over ``peak``."""
    from torch.utils.flop_counter import FlopCounterMode

    backbone = run.method.backbone
    x = torch.randn(512, 3, res, res, device="cuda").contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            backbone(x).float().sum().backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    per_s = _images_per_s(lambda: [step() for _ in range(10)], 10)  # calls per second
    return flops * per_s / peak


@pytest.mark.parametrize("res", [32, 64])
def test_throughput_vs_old_loop_and_bare_loop(benchmark, tmp_path, res):
    torch.backends.cudnn.benchmark = True
    phase = Phase("bench", [0], STEPS)
    new = _run(tmp_path, res)
    assert new.precision == "bf16" and new.channels_last and new.device_data is not None
    new.phase_index = 0
    old = _old_settings(_run(tmp_path, res))
    old.phase_index = 0
    batch = 256

    # (b) the bare loop: the same model (a fresh copy), augmentation and optimiser; nothing else
    bare = _run(tmp_path, res)
    method, opt, augment = bare.method, bare.optimizer, bare.augment
    images = bare.dataset.train.images.cuda()
    gen = torch.Generator(device="cuda").manual_seed(1)

    def bare_loop():
        method.train()
        for _ in range(STEPS):
            index = torch.randint(0, len(images), (batch,), device="cuda", generator=gen)
            views = [v.contiguous(memory_format=torch.channels_last) for v in augment(images[index], 2, res, gen)]
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = method(views, None).float()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def old_loop():
        every = loop.LOG_EVERY
        loop.LOG_EVERY = 1  # the loss to the host after every step, as before
        try:
            loop.train_phase(old, phase, _Bar())
        finally:
            loop.LOG_EVERY = every

    n = STEPS * batch
    ips_old = _images_per_s(old_loop, n)
    ips_bare = _images_per_s(bare_loop, n)
    ips_new = benchmark.pedantic(lambda: _images_per_s(lambda: loop.train_phase(new, phase, _Bar()), n), rounds=1)
    peak = _matmul_peak()
    fraction = _backbone_fraction_of_peak(new, res, peak)
    info = dict(
        images_per_s=round(ips_new),
        old_images_per_s=round(ips_old),
        bare_images_per_s=round(ips_bare),
        speedup_vs_old=round(ips_new / ips_old, 2),
        share_of_bare=round(ips_new / ips_bare, 3),
        bf16_peak_tflops=round(peak / 1e12, 1),
        backbone_fraction_of_peak=round(fraction, 3),
        device=torch.cuda.get_device_name(),
    )
    benchmark.extra_info.update(info)
    print(f"\nSPEED {res}px: " + ", ".join(f"{k}={v}" for k, v in info.items()))


@pytest.mark.parametrize("k", [1, 4, 8])
def test_packing_runs_per_hour(benchmark, tmp_path, k):
    """``ssl-bench sweep --per-gpu K``: K x WAVES smoke runs (one seed each) on every visible GPU; runs/hour
    (start-up, data generation, training, evaluation and writing included)."""
    runs = k * int(os.environ.get("SSL_BENCH_PACK_WAVES", "1")) * torch.cuda.device_count()
    seeds = ",".join(str(s) for s in range(runs))
    cmd = [sys.executable, "-m", "ssl_bench.cli", "-q", "sweep", "--protocol", "smoke", "--seeds", seeds]
    cmd += ["--per-gpu", str(k), "--out", str(tmp_path / "runs")]

    def sweep():
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return time.perf_counter() - t

    seconds = benchmark.pedantic(sweep, rounds=1)
    per_hour = runs / seconds * 3600
    benchmark.extra_info.update(per_gpu=k, runs=runs, seconds=round(seconds, 1), runs_per_hour=round(per_hour))
    print(f"\nPACKING K={k}: {runs} runs in {seconds:.1f} s = {per_hour:.0f} runs/hour")


def test_cross_rank_contrastive_peak_memory(benchmark):
    """One of 2 ranks at a global N = 16384 (D = 128, float32): its 2 x 8192 rows against the 2 x 16384 gathered
    columns, forward + backward, peak memory above the inputs: the fused op against the dense logits."""
    from ssl_bench.ops import contrastive as C

    n_global, world, d, tau = 16384, 2, 128, 0.2
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
    fused = benchmark.pedantic(lambda: peak(C.lse_rows), rounds=3)
    dense = peak(C.lse_rows_reference)
    info = dict(fused_mib=round(fused / 2**20, 1), dense_mib=round(dense / 2**20, 1), ratio=round(fused / dense, 4))
    benchmark.extra_info.update(info)
    print("\nCROSS-RANK N=16384 world=2: " + ", ".join(f"{k}={v}" for k, v in info.items()))


def test_compile_speedup(benchmark, tmp_path):
    """``--compile`` at 32 px: seconds until the first compiled step is done, images/s against the same loop eager."""
    torch.backends.cudnn.benchmark = True
    phase = Phase("bench", [0], STEPS)
    eager, compiled = _run(tmp_path, 32), _run(tmp_path, 32, compile=True)
    eager.phase_index = compiled.phase_index = 0
    torch.cuda.synchronize()
    t = time.perf_counter()
    loop.train_phase(compiled, Phase("first", [0], 1), _Bar())
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t
    n = STEPS * 256
    ips_eager = _images_per_s(lambda: loop.train_phase(eager, phase, _Bar()), n)
    ips = benchmark.pedantic(lambda: _images_per_s(lambda: loop.train_phase(compiled, phase, _Bar()), n), rounds=1)
    info = dict(compile_s=round(compile_s, 1), images_per_s=round(ips), eager_images_per_s=round(ips_eager))
    info["speedup"] = round(ips / ips_eager, 3)
    benchmark.extra_info.update(info)
    print("\nCOMPILE 32px: " + ", ".join(f"{k}={v}" for k, v in info.items()))
