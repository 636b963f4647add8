"""Batched augmentations: shapes, per-sample randomness, torchvision-equivalent ops, and parameter ranges."""

import colorsys
import math

import numpy as np
import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from ssl_bench.blocks import augment as A

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ks_uniform(values, low, high):
    """Kolmogorov-Smirnov distance between the sample and Uniform(low, high)."""
    v = np.sort((np.asarray(values) - low) / (high - low))
    n = len(v)
    return max(np.max(np.arange(1, n + 1) / n - v), np.max(v - np.arange(n) / n))


@pytest.mark.parametrize("recipe", sorted(A.RECIPES))
@pytest.mark.parametrize("size", [16, 8])
def test_views_shape_dtype_and_reproducibility(recipe, size):
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=gen())
    aug = A.Augment(recipe)
    views = aug(images, 3, size, gen(1))
    assert len(views) == 3
    for v in views:
        assert v.shape == (6, 3, size, size) and v.dtype == torch.float32 and torch.isfinite(v).all()
    again = aug(images, 3, size, gen(1))
    assert all(torch.equal(a, b) for a, b in zip(views, again))


def test_each_sample_and_each_view_is_random():
    image = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8, generator=gen())
    batch = image.expand(32, -1, -1, -1).contiguous()
    v1, v2 = A.Augment("byol")(batch, 2, 16, gen(2))
    flat = v1.flatten(1)
    distinct = {tuple(np.round(r.numpy()[:64], 4)) for r in flat}
    assert len(distinct) == 32  # identical inputs, 32 different views
    assert not torch.allclose(v1, v2)


@pytest.mark.parametrize(
    "op,ref,low,high",
    [
        (A.adjust_brightness, TF.adjust_brightness, 0.3, 1.7),
        (A.adjust_contrast, TF.adjust_contrast, 0.3, 1.7),
        (A.adjust_saturation, TF.adjust_saturation, 0.3, 1.7),
        (A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_equal_torchvision(op, ref, low, high):
    x = torch.rand(12, 3, 9, 9, generator=gen())
    x[0] = 0.5  # a grey image (hue undefined)
    f = torch.rand(12, generator=gen(1)) * (high - low) + low
    expected = torch.stack([ref(x[i], float(f[i])) for i in range(12)])
    torch.testing.assert_close(op(x.clone(), f), expected, atol=2e-6, rtol=0)


def test_blur_grayscale_solarize_equal_torchvision():
    x = torch.rand(8, 3, 32, 32, generator=gen())
    sigma = torch.rand(8, generator=gen(1)) * 1.9 + 0.1
    k = A.blur_kernel_size(32)
    assert k == 3 and A.blur_kernel_size(64) == 7 and A.blur_kernel_size(224) == 23  # 10% of the side, odd
    expected = torch.stack([TF.gaussian_blur(x[i], [k, k], [float(sigma[i])] * 2) for i in range(8)])
    torch.testing.assert_close(A.blur(x, sigma, k), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(A.grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(A.solarize(x, 1.0, gen()), TF.solarize(x, 0.5), atol=0, rtol=0)


def ramp_crops(n, scale, ratio, flip_p, size=32, side=96):
    """Crop an image whose channels hold the x and y coordinates; recover each crop's width, height, flip."""
    t = (torch.arange(side) + 0.5) / side
    img = torch.stack([t.view(1, -1).expand(side, side), t.view(-1, 1).expand(side, side), torch.zeros(side, side)])
    out = A.random_resized_crop(img.expand(n, -1, -1, -1), size, scale, ratio, flip_p, gen(3))
    xs, ys = out[:, 0], out[:, 1]
    w = (xs[:, 0, -1] - xs[:, 0, 0]) / ((size - 1) / size)
    h = (ys[:, -1, 0] - ys[:, 0, 0]) / ((size - 1) / size)
    return w.abs(), h, w < 0


def test_crop_scale_ratio_and_flip_match_their_parameters():
    n = 1000
    w, h, flipped = ramp_crops(n, (0.2, 0.6), (3 / 4, 4 / 3), 0.5)
    area, log_ratio = (w * h).numpy(), torch.log(w / h).numpy()
    # with these parameters every first draw fits, so the area is uniform and the log ratio too
    assert area.min() > 0.2 - 0.01 and area.max() < 0.6 + 0.01
    assert ks_uniform(area, 0.2, 0.6) < 0.06
    assert ks_uniform(log_ratio, math.log(3 / 4), math.log(4 / 3)) < 0.06
    assert abs(flipped.float().mean() - 0.5) < 0.06
    _, _, flipped = ramp_crops(200, (0.2, 0.6), (3 / 4, 4 / 3), 0.0)
    assert not flipped.any()


def test_crop_area_distribution_matches_torchvision_random_resized_crop():
    """Including torchvision's retries when a draw does not fit (scale up to 1, ratio up to 4/3)."""
    n, side = 4000, 1000
    w, h, _, _ = A.crop_params(n, (0.08, 1.0), (3 / 4, 4 / 3), gen(4), "cpu")
    ours = np.sort((w * h).numpy())
    torch.manual_seed(5)
    img = torch.empty(3, side, side)
    theirs = []
    for _ in range(n):
        _, _, hh, ww = T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3])
        theirs.append(hh * ww / side**2)
    grid = np.linspace(0, 1, 201)
    ks = np.max(np.abs(np.searchsorted(ours, grid) / n - np.searchsorted(np.sort(theirs), grid) / n))
    assert ks < 0.05, ks


def test_downscaled_crops_do_not_alias():
    """The S3L stage at half resolution: a 1-pixel checkerboard must average to grey, not alias."""
    board = ((torch.arange(64).view(-1, 1) + torch.arange(64).view(1, -1)) % 2).float()
    x = board.expand(4, 3, 64, 64).contiguous()
    out = A.random_resized_crop(x, 32, (1.0, 1.0), (1.0, 1.0), 0.0, gen())
    torch.testing.assert_close(out, torch.full_like(out, 0.5), atol=1e-5, rtol=0)


def test_jitter_factors_and_probability_match_their_parameters():
    n = 2000
    grey = torch.full((n, 3, 2, 2), 0.5)
    out = A.color_jitter(grey, 0.4, 0.0, 0.0, 0.0, p=1.0, gen=gen(6))
    b = (out[:, 0, 0, 0] / 0.5).numpy()
    assert b.min() >= 0.6 - 1e-6 and b.max() <= 1.4 + 1e-6 and ks_uniform(b, 0.6, 1.4) < 0.05
    red = torch.zeros(n, 3, 1, 1)
    red[:, 0] = 0.8
    red[:, 1] = 0.1
    red[:, 2] = 0.1
    out = A.color_jitter(red, 0.0, 0.0, 0.0, 0.1, p=1.0, gen=gen(7))
    hue = np.array([colorsys.rgb_to_hsv(*px.tolist())[0] for px in out[:, :, 0, 0]])
    hue = (hue + 0.5) % 1 - 0.5  # red is hue 0: the shift itself
    assert hue.min() >= -0.1 - 1e-4 and hue.max() <= 0.1 + 1e-4 and ks_uniform(hue, -0.1, 0.1) < 0.05
    changed = (A.color_jitter(grey, 0.4, 0.4, 0.4, 0.1, p=0.8, gen=gen(8)) != grey).flatten(1).any(1)
    assert abs(changed.float().mean() - 0.8) < 0.04
    made_grey = A.random_grayscale(torch.rand(n, 3, 2, 2, generator=gen(9)), 0.2, gen(10))
    is_grey = (made_grey[:, 0] == made_grey[:, 1]).flatten(1).all(1)
    assert abs(is_grey.float().mean() - 0.2) < 0.03


def test_jitter_order_is_random_per_sample():
    _, order = A.jitter_params(2400, 0.4, 0.4, 0.4, 0.1, gen(11), "cpu")
    perms, counts = torch.unique(order, dim=0, return_counts=True)
    assert len(perms) == 24 and counts.min() > 60  # all 24 orders, about 100 each


def test_color_jitter_applies_each_samples_own_order_and_factors():
    x = torch.rand(64, 3, 5, 5, generator=gen(12))
    out = A.color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=0.8, gen=gen(13))
    g = gen(13)  # replay the draws: the coin, then the factors and the order
    apply = torch.rand(64, generator=g) < 0.8
    factors, order = A.jitter_params(64, 0.4, 0.4, 0.4, 0.1, g, "cpu")
    for i in range(64):
        y = x[i : i + 1]
        if apply[i]:
            for k in order[i].tolist():
                y = A.COLOR_OPS[k](y, factors[k][i : i + 1])
        torch.testing.assert_close(out[i : i + 1], y, atol=1e-6, rtol=0)
