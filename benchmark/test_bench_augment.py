"""Batched tensor augmentations (ssl_bench.blocks.augment) vs torchvision.transforms.v2 applied image by image.

Same views (SimCLR's and BYOL's recipes: random resized crop, flip, colour jitter, grayscale, blur,
solarize), same uint8 input, float normalised output, 2 CPU threads (SSL_BENCH_THREADS overrides). Goal (issue 4): >= 3x the
images per second of the per-image pipeline at 32 and 64 px. The reference is timed in the same
rounds, interleaved with the candidate, and the ratio is reported in extra_info. Run:
    pytest benchmark/test_bench_augment.py --benchmark-columns=median -s
"""

import os
import time

import pytest
import torch
from torchvision.transforms import v2

from ssl_bench.blocks import augment as A

BATCH = 256
THREADS = int(os.environ.get("SSL_BENCH_THREADS", "2"))


def per_image_pipeline(spec: A.ViewSpec, size: int) -> v2.Compose:
    """torchvision's per-image version of a ViewSpec."""
    ops = [
        v2.ToDtype(torch.float32, scale=True),
        v2.RandomResizedCrop(size, scale=spec.scale, ratio=spec.ratio, antialias=True),
        v2.RandomHorizontalFlip(spec.flip_p),
        v2.RandomApply([v2.ColorJitter(*spec.jitter)], p=spec.jitter_p),
        v2.RandomGrayscale(spec.gray_p),
    ]
    if spec.blur_p:
        k = A.blur_kernel_size(size)
        ops.append(v2.RandomApply([v2.GaussianBlur(k, sigma=spec.blur_sigma)], p=spec.blur_p))
    if spec.solarize_p:
        ops.append(v2.RandomSolarize(0.5, p=spec.solarize_p))
    ops.append(v2.Normalize(A.MEAN.tolist(), A.STD.tolist()))
    return v2.Compose(ops)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("recipe", ["simclr", "byol"])
def test_batched_views_vs_torchvision_per_image(benchmark, recipe, size):
    torch.set_num_threads(THREADS)
    images = torch.randint(0, 256, (BATCH, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = A.Augment(recipe)
    pipes = [per_image_pipeline(s, size) for s in aug.specs]
    gen = torch.Generator().manual_seed(1)
    ours, theirs = [], []

    def reference():
        t = time.perf_counter()
        for view in range(2):
            pipe = pipes[view % len(pipes)]
            torch.stack([pipe(img) for img in images])
        theirs.append(time.perf_counter() - t)

    def batched():
        t = time.perf_counter()
        views = aug(images, 2, size, gen)
        ours.append(time.perf_counter() - t)
        return views

    views = benchmark.pedantic(batched, setup=reference, rounds=5, warmup_rounds=1)
    assert views[0].shape == (BATCH, 3, size, size)
    t_ours, t_ref = sorted(ours)[len(ours) // 2], sorted(theirs)[len(theirs) // 2]
    speedup = t_ref / t_ours
    benchmark.extra_info.update(
        images_per_s=round(2 * BATCH / t_ours),
        torchvision_images_per_s=round(2 * BATCH / t_ref),
        speedup=round(speedup, 2),
        threads=torch.get_num_threads(),
    )
    print(
        f"\n{recipe} {size}px: batched {2 * BATCH / t_ours:.0f} views/s, torchvision per image "
        f"{2 * BATCH / t_ref:.0f} views/s, speedup {speedup:.1f}x"
    )
    assert speedup >= 3, f"batched augmentations only {speedup:.2f}x faster than torchvision per image"
