"""Multi-crop views (2 global + 6 local, ssl_bench.blocks.augment.MultiCrop) vs the 2-view pipeline: cost per view.

Same uint8 batch, BYOL's recipe (blur and solarisation, the most expensive), 2 CPU threads
(SSL_BENCH_THREADS overrides). The 2-view pipeline is timed in the same rounds, interleaved with the
candidate; the ratio (seconds per multi-crop view) / (seconds per 2-view-pipeline view) is reported in
extra_info and must be <= 1 (issue 19: "the cost per view must be no worse"). Local crops are half the
global side (DINO/SwAV use 96/224 = 0.43), all 6 made by one batched call. Run:
    pytest benchmark/test_bench_multicrop.py --benchmark-columns=median -s
"""

import os
import time

import pytest
import torch

from ssl_bench.blocks import augment as A

BATCH = 256
THREADS = int(os.environ.get("SSL_BENCH_THREADS", "2"))


@pytest.mark.parametrize("size", [32, 64])
def test_multi_crop_cost_per_view_vs_two_views(benchmark, size):
    torch.set_num_threads(THREADS)
    images = torch.randint(0, 256, (BATCH, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = A.Augment("byol")
    plan = A.MultiCrop(n_global=2, n_local=6, local_size=0.5, global_scale=(0.4, 1.0))
    gen = torch.Generator().manual_seed(1)
    multi, two = [], []

    def two_views():
        t = time.perf_counter()
        aug(images, 2, size, gen)
        two.append(time.perf_counter() - t)

    def multi_crop():
        t = time.perf_counter()
        views = aug.multi_crop(images, plan, size, gen)
        multi.append(time.perf_counter() - t)
        return views

    views = benchmark.pedantic(multi_crop, setup=two_views, rounds=7, warmup_rounds=1)
    assert [v.shape[-1] for v in views] == [size] * 2 + [size // 2] * 6
    t_multi, t_two = sorted(multi)[len(multi) // 2], sorted(two)[len(two) // 2]
    ratio = (t_multi / plan.n_views) / (t_two / 2)
    benchmark.extra_info.update(
        ms_per_view_multicrop=round(1e3 * t_multi / plan.n_views, 2),
        ms_per_view_two_views=round(1e3 * t_two / 2, 2),
        ratio_per_view=round(ratio, 3),
        threads=torch.get_num_threads(),
    )
    print(
        f"\n{size}px, batch {BATCH}: 2+6 multi-crop {1e3 * t_multi:.1f} ms ({1e3 * t_multi / 8:.2f} ms/view), "
        f"2 views {1e3 * t_two:.1f} ms ({1e3 * t_two / 2:.2f} ms/view): per-view ratio {ratio:.2f}"
    )
    assert ratio <= 1.0, f"a multi-crop view costs {ratio:.2f}x a view of the 2-view pipeline"
