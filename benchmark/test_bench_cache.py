"""Data pipeline: images/s delivered to the training loop from the uint8 cache (ssl_bench.blocks.imagecache)
against decoding the original JPEGs in every epoch, on the real Tiny ImageNet subset in
../shared/data/tiny-imagenet-100 (skipped when absent). Goal (issue 3): >= 10x. Also the built-in
generator's speed (goal: thousands of 32 px images/s). Run:
    pytest benchmark/test_bench_cache.py -s
The cache goes to $SSL_BENCH_CACHE (default ~/.cache/ssl-bench); its one-time build is timed too.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ssl_bench.blocks import imagecache
from ssl_bench.engine.build import Run
from ssl_bench_plugins.datasets.synthetic import synthetic
from ssl_bench_plugins.datasets.tiny_imagenet import tiny_imagenet

DATA = Path(os.environ.get("SSL_BENCH_TINY_IMAGENET", Path(__file__).resolve().parents[2] / "shared/data/tiny-imagenet-100"))
BATCH, N_BATCHES = 256, 20


def best_time(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@pytest.mark.skipif(not (DATA / "wnids.txt").is_file(), reason=f"no Tiny ImageNet at {DATA}")
@pytest.mark.parametrize("resolution", [32, 64])
def test_cache_vs_decoding_each_epoch(benchmark, resolution):
    t = time.perf_counter()
    ds = tiny_imagenet(DATA, resolution=resolution)
    t_load = time.perf_counter() - t  # first time: decode + write the cache; later: stat the files + memory-map
    files = [DATA / i for i in ds.train.ids]
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.choice(len(files), BATCH, replace=False)) for _ in range(N_BATCHES)]
    workers = os.cpu_count() or 1
    pool = ThreadPoolExecutor(workers)

    run = SimpleNamespace(dataset=ds, device=torch.device("cpu"))

    def from_cache():  # the engine's own batch assembly (Run.batch_of) on the memory-mapped uint8 cache
        for idx in batches:
            x = Run.batch_of(run, idx).images
            assert x.shape == (BATCH, 3, resolution, resolution)

    def decode_each_epoch():  # the reference: decode the original JPEGs with one thread per core
        for idx in batches:
            x = torch.from_numpy(np.stack(list(pool.map(lambda i: imagecache.decode(files[i], resolution), idx.tolist()))))
            assert x.shape == (BATCH, 3, resolution, resolution)

    from_cache()  # page the cache in, as after the first epoch
    t_cache, t_decode = best_time(from_cache), best_time(decode_each_epoch, repeats=2)
    benchmark.pedantic(from_cache, rounds=5, iterations=1)
    pool.shutdown()
    n = BATCH * N_BATCHES
    speedup = t_decode / t_cache
    benchmark.extra_info.update(
        resolution=resolution,
        images=n,
        cache_img_s=n / t_cache,
        decode_img_s=n / t_decode,
        speedup=speedup,
        load_s=t_load,
        decode_threads=workers,
    )
    print(
        f"\n[cache {resolution}px] {n} training images in batches of {BATCH}: cache {n / t_cache:,.0f} img/s, "
        f"decoding JPEGs ({workers} threads) {n / t_decode:,.0f} img/s, speedup {speedup:.0f}x; "
        f"dataset load {t_load:.1f} s"
    )
    assert speedup >= 10, f"cache only {speedup:.1f}x faster than decoding (goal >= 10x)"


@pytest.mark.parametrize("threads", [1, torch.get_num_threads()])
def test_synthetic_generation_speed(benchmark, threads):
    def generate():
        return synthetic(resolution=32, seed=0, train_per_class_domain=50, test_per_class_domain=1)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ds = benchmark.pedantic(generate, rounds=3, iterations=1)
    finally:
        torch.set_num_threads(before)
    n = len(ds.train) + len(ds.test)
    rate = n / benchmark.stats.stats.min
    benchmark.extra_info.update(images=n, img_s=rate, threads=threads)
    print(
        f"\n[synthetic 32px] {n} images ({len(ds.classes)} classes, {len(ds.domains)} domains), {threads} torch "
        f"thread(s): {rate:,.0f} img/s"
    )
    assert rate >= 1000, f"synthetic generator makes only {rate:.0f} images/s at 32 px (goal: thousands)"
