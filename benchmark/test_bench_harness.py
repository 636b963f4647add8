"""Training steps per second: the harness's train loop (engine.loop.train_phase) vs a bare hand-written loop.

Same model (ResNet-18 small stem + SimCLR head), same batches of the same generated images, same
batched augmentations, same optimiser; the bare loop has no strategy calls, learning-rate schedule,
loss check, observer hooks or progress bar. Goal (issue 4): the harness's overhead <= 10%.
Timed in the same rounds, interleaved, 2 CPU threads (SSL_BENCH_THREADS overrides). Run:
    pytest benchmark/test_bench_harness.py --benchmark-columns=median -s
"""

import os
import textwrap
import time

import pytest
import torch
from tqdm import tqdm

from ssl_bench import protocol
from ssl_bench.api import Phase
from ssl_bench.engine import RunConfig
from ssl_bench.engine.build import Run
from ssl_bench.engine.loop import phase_pool, train_phase
from ssl_bench.registry import Registry

THREADS = int(os.environ.get("SSL_BENCH_THREADS", "2"))
STEPS = 4  # per round

PROTOCOL = textwrap.dedent("""
    name = "bench"
    version = 1
    family = "bench"
    seeds = [0]
    [dataset]
    name = "synthetic"
    resolution = {res}
    options = {{ train_per_class_domain = 40, test_per_class_domain = 2 }}
    [stream]
    n_experiences = 1
    [backbone]
    name = "resnet18"
    options = {{ width = {width}, small_stem = true }}
    [train]
    epochs_per_experience = 1
    batch_size = {batch}
    [eval]
    probe_train_per_experience = 0
    [recipe]
    lr = 0.05
    lr_scaling = "none"
    schedule = "cosine"
""")


@pytest.mark.parametrize("res,width,batch", [(32, 0.25, 128), (16, 0.125, 32)], ids=["smoke-sized", "tiny"])
def test_harness_vs_bare_loop(benchmark, tmp_path, res, width, batch):
    torch.set_num_threads(THREADS)
    proto = protocol.parse(PROTOCOL.format(res=res, width=width, batch=batch))
    run = Run(
        RunConfig(
            protocol=proto, method="simclr", stream="instance", strategy="sequential", seed=0, out=tmp_path, progress=False
        ),
        Registry.discover(),
    )
    phase = Phase("bench", [0], STEPS)
    method, opt = run.method, run.optimizer
    images, pool = run.dataset.train.images, phase_pool(run, phase)
    order, gen = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    bar = tqdm(disable=True)
    bare_times, harness_times = [], []

    def bare():
        t = time.perf_counter()
        method.train()
        for _ in range(STEPS):
            index = pool[torch.randperm(len(pool), generator=order)[:batch]]
            views = run.augment(images[index], method.n_views, res, gen)
            loss = method(views, None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        bare_times.append(time.perf_counter() - t)

    def harness():
        t = time.perf_counter()
        train_phase(run, phase, bar)
        harness_times.append(time.perf_counter() - t)

    benchmark.pedantic(harness, setup=bare, rounds=5, warmup_rounds=1)
    t_h, t_b = sorted(harness_times[1:])[2], sorted(bare_times[1:])[2]
    overhead = t_h / t_b - 1
    benchmark.extra_info.update(
        harness_steps_per_s=round(STEPS / t_h, 3),
        bare_steps_per_s=round(STEPS / t_b, 3),
        overhead=round(overhead, 4),
        threads=THREADS,
    )
    print(
        f"\n{res}px x{width} batch {batch}: harness {STEPS / t_h:.2f} steps/s, bare loop {STEPS / t_b:.2f} steps/s, "
        f"overhead {100 * overhead:+.1f}%"
    )
    assert overhead <= 0.10, f"harness overhead {100 * overhead:.1f}% > 10%"
