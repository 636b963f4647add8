"""Multi-crop views (ssl_bench.blocks.augment.MultiCrop): shapes, sizes, per-sample randomness, determinism, bad input."""

import pytest
import torch

from ssl_bench.blocks import augment as A
from ssl_bench.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n=8, size=32, seed=0):
    """A batch whose samples are all the SAME smooth image, so any difference between views is the augmentation's."""
    g = torch.Generator().manual_seed(seed)
    one = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(size, size), mode="bilinear")
    return (one * 255).to(torch.uint8).expand(n, -1, -1, -1).contiguous()


def gen(seed):
    return torch.Generator().manual_seed(seed)


def test_two_global_and_local_crops_have_their_sizes():
    plan = A.MultiCrop(n_global=2, n_local=6, local_size=0.5, global_scale=(0.4, 1.0))
    views = A.Augment("byol").multi_crop(images(), plan, 32, gen(0))
    assert len(views) == 8 == plan.n_views
    assert [tuple(v.shape) for v in views] == [(8, 3, 32, 32)] * 2 + [(8, 3, 16, 16)] * 6
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in views)


def test_local_side_is_rounded_to_the_patch_size():
    plan = A.MultiCrop(n_local=2, local_size=96 / 224)
    assert plan.local_px(32) == 14 and plan.local_px(32, multiple=4) == 12 and plan.local_px(16, multiple=4) == 8
    assert plan.local_px(8, multiple=4) == 4  # never below one patch
    views = A.Augment("simclr").multi_crop(images(), plan, 32, gen(0), multiple=4)
    assert views[-1].shape[-1] == 12


def test_every_sample_and_every_local_view_gets_its_own_crop():
    plan = A.MultiCrop(n_global=2, n_local=4, local_size=0.5)
    views = A.Augment("simclr").multi_crop(images(n=16), plan, 32, gen(1))
    local = torch.stack(views[2:])  # [V, B, 3, 16, 16]
    flat = local.flatten(2)
    # the same image everywhere: all 64 local crops are pairwise different
    d = torch.cdist(flat.flatten(0, 1), flat.flatten(0, 1))
    assert (d + torch.eye(64) * 1e9).min() > 1e-3
    assert not torch.allclose(views[0], views[1])


def test_same_seed_same_views_other_seed_other_views():
    plan = A.MultiCrop(n_global=2, n_local=3)
    aug = A.Augment("byol")
    a = aug.multi_crop(images(), plan, 32, gen(5))
    b = aug.multi_crop(images(), plan, 32, gen(5))
    c = aug.multi_crop(images(), plan, 32, gen(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))


def test_without_local_crops_it_is_the_two_view_pipeline():
    aug = A.Augment("byol")
    plain = aug(images(), 2, 32, gen(3))
    multi = aug.multi_crop(images(), A.MultiCrop(n_global=2), 32, gen(3))
    assert all(torch.equal(x, y) for x, y in zip(plain, multi))


def test_crop_scales_are_the_plans():
    # local crops of at most 1% of the area of a half-black, half-white image are mostly one colour;
    # whole-image crops (scale 1) always show both halves
    x = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    x[..., 16:] = 255
    aug = A.Augment("none")
    whole = aug.multi_crop(x, A.MultiCrop(n_global=1), 32, gen(0))[0]
    assert (whole.amax((1, 2, 3)) - whole.amin((1, 2, 3)) > 3).all()
    small = A.Augment("simclr", jitter_p=0.0, gray_p=0.0).multi_crop(
        x, A.MultiCrop(n_global=1, n_local=1, local_scale=(0.005, 0.01), global_scale=(1.0, 1.0)), 32, gen(0)
    )
    spread = small[1].amax((1, 2, 3)) - small[1].amin((1, 2, 3))
    assert (spread < 1).float().mean() > 0.6


def test_protocol_options_reach_local_crops_but_not_their_scale():
    aug = A.Augment("byol", scale=[0.5, 1.0], blur_p=0.0)
    local = aug._specs("byol", local=True)[0]
    assert local.blur_p == 0.0 and local.scale == A.ViewSpec().scale
    assert all(s.scale == (0.5, 1.0) for s in aug.specs)


def test_a_recipe_without_local_crops_is_a_one_line_error_naming_method_and_recipe():
    aug = A.Augment("none")
    with pytest.raises(UserError) as err:
        aug.check(A.MultiCrop(n_local=6), "method 'dino'")
    msg = str(err.value)
    assert "method 'dino'" in msg and "recipe 'none'" in msg and "local crops" in msg and "\n" not in msg
    aug.check(A.MultiCrop(n_local=0), "method 'dino'")  # no local crops: any recipe
    with pytest.raises(UserError, match="recipe 'mae' cannot make local crops"):
        A.Augment("simclr").check(A.MultiCrop(n_local=2, recipe="mae"), "method 'x'")
    with pytest.raises(UserError, match="n_local >= 0"):
        A.MultiCrop(n_local=-1)
