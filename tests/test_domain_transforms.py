"""Domains made from image transforms: each transform's documented property, and the assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_bench.blocks import domain_transforms as dt
from ssl_bench.errors import UserError
from ssl_bench_plugins.datasets.imagefolder import imagefolder
from ssl_bench_plugins.datasets.tiny_imagenet import tiny_imagenet
from ssl_bench_plugins.streams.domain import domain_incremental


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def noise(n=3, size=16, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size), dtype=np.uint8))


def square(size=32, lo=30, hi=220) -> torch.Tensor:
    """A bright square on a dark background, coloured differently per channel."""
    img = torch.full((1, 3, size, size), lo, dtype=torch.uint8)
    img[:, :, 8:24, 8:24] = torch.tensor([hi, hi - 40, hi - 80], dtype=torch.uint8).view(1, 3, 1, 1)
    return img


def test_photo_is_the_identity_and_grayscale_channels_are_equal_luma():
    x = noise()
    assert torch.equal(dt.photo(x), x)
    g = dt.grayscale(x)
    assert g.dtype == torch.uint8 and g.shape == x.shape
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    r, gr, b = (x[0, c, 0, 0].item() for c in range(3))
    assert g[0, 0, 0, 0].item() == round(0.299 * r + 0.587 * gr + 0.114 * b)


def test_edges_is_a_sketch_mostly_white_with_dark_edges():
    s = dt.edges(square())
    assert s.shape == (1, 3, 32, 32) and set(s.unique().tolist()) == {0, 255}
    assert torch.equal(s[:, 0], s[:, 2])
    dark = s[0, 0] == 0
    assert dark.float().mean() <= 0.2  # mostly white (pixels tied at the quantile are all drawn)
    assert dark[8, 16] or dark[7, 16]  # the square's top edge is drawn
    assert not dark[16, 16] and not dark[2, 2]  # inside and far outside: paper
    assert (dt.edges(torch.full((2, 3, 16, 16), 128, dtype=torch.uint8)) == 255).all()  # no edges: blank page
    busy = dt.edges(noise(size=32))
    assert (busy == 0).float().mean() <= 1 - dt.EDGE_QUANTILE + 0.02


def test_cartoon_is_posterised_and_keeps_strong_edges():
    c = dt.cartoon(noise(size=24))
    assert c.dtype == torch.uint8 and c.shape == (3, 3, 24, 24)
    levels = {round(k * 255 / (dt.CARTOON_LEVELS - 1)) for k in range(dt.CARTOON_LEVELS)}
    for ch in range(3):
        assert len(c[:, ch].unique()) <= dt.CARTOON_LEVELS and set(c[:, ch].unique().tolist()) <= levels
    flat = dt.cartoon(square())
    assert flat[0, 0, 2, 2] == 0 and flat[0, 0, 16, 16] == 255  # 30 -> 0, 220 -> 255: the edge is not blurred away
    assert flat[0, 0, 8, 8] == 255 and flat[0, 0, 7, 7] == 0


def test_assignment_is_deterministic_and_balanced():
    labels = np.repeat(np.arange(5), 41)  # 5 classes of 41 images
    a = dt.assign(labels, seed=3)
    assert np.array_equal(a, dt.assign(labels, seed=3)) and not np.array_equal(a, dt.assign(labels, seed=4))
    counts = np.bincount(a, minlength=4)
    assert counts.max() - counts.min() <= 1
    for c in range(5):
        per = np.bincount(a[labels == c], minlength=4)
        assert per.max() - per.min() <= 1  # every domain gets every class


def test_make_domains_renders_each_image_by_its_domain_and_caches(cache):
    x, labels = noise(n=20, size=16), np.arange(20) % 2
    images, domains = dt.make_domains("toy/train", x, labels, seed=0, split=0)
    assert images.shape == x.shape and sorted(np.bincount(domains.numpy()).tolist()) == [5, 5, 5, 5]
    for i in range(20):
        name = dt.DOMAINS[domains[i]]
        assert torch.equal(images[i], dt.TRANSFORMS[name](x[i : i + 1])[0]), name
    assert len(list(cache.glob("*domains*.npy"))) == 1
    again, domains2 = dt.make_domains("toy/train", x, labels, seed=0, split=0)  # from the cache
    assert torch.equal(again, images) and torch.equal(domains2, domains)
    _, test_domains = dt.make_domains("toy/val", x, labels, seed=0, split=1)
    assert not torch.equal(test_domains, domains)  # train and test are dealt by different generators
    with pytest.raises(UserError, match="unknown domain transform 'oil'"):
        dt.make_domains("toy/train", x, labels, seed=0, split=0, names=("photo", "oil"))


def _tiny(root, wnids=("n01443537", "n01629819"), n_train=8, n_val=4):
    """A Tiny ImageNet folder of noise images: n_train + n_val per class."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def save(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)

    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids))
    (root / "words.txt").write_text("\n".join(f"{w}\tthing {i}" for i, w in enumerate(wnids)))
    lines = []
    for w in wnids:
        for i in range(n_train):
            save(root / "train" / w / "images" / f"{w}_{i}.png")
        for i in range(n_val):
            save(root / "val" / "images" / f"val_{w}_{i}.png")
            lines.append(f"val_{w}_{i}.png\t{w}\t0\t0\t15\t15")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    return root


def test_tiny_imagenet_option_makes_a_domain_stream(tmp_path):
    root = _tiny(tmp_path / "tiny")
    plain = tiny_imagenet(root, resolution=16)
    ds = tiny_imagenet(root, resolution=16, seed=5, transform_domains=True)
    assert ds.domains == list(dt.DOMAINS) and plain.domains == ["default"]
    assert torch.equal(ds.train.labels, plain.train.labels) and ds.train.ids == plain.train.ids
    for part, source in ((ds.train, plain.train), (ds.test, plain.test)):
        assert np.bincount(part.domains.numpy()).tolist() == [len(part) // 4] * 4  # balanced: 2 classes x 8 (or 4)
        for i in range(len(part)):
            name = dt.DOMAINS[part.domains[i]]
            assert torch.equal(part.images[i], dt.TRANSFORMS[name](source.images[i : i + 1])[0])
    again = tiny_imagenet(root, resolution=16, seed=5, transform_domains=True)
    assert torch.equal(again.train.domains, ds.train.domains) and torch.equal(again.train.images, ds.train.images)
    assert not torch.equal(tiny_imagenet(root, resolution=16, seed=6, transform_domains=True).train.domains, ds.train.domains)
    experiences = domain_incremental(ds, 4, seed=0)
    assert [e.name for e in experiences] == ["domain photo", "domain grayscale", "domain edges", "domain cartoon"]
    assert all(e.classes == [0, 1] for e in experiences)
    two = tiny_imagenet(root, resolution=16, transform_domains=["photo", "edges"])
    assert two.domains == ["photo", "edges"] and set(two.test.domains.tolist()) == {0, 1}
    with pytest.raises(UserError, match="at least two different names"):
        tiny_imagenet(root, resolution=16, transform_domains=["photo"])
    with pytest.raises(UserError, match="unknown domain transform 'oil'"):
        tiny_imagenet(root, resolution=16, transform_domains=["photo", "oil"])


def test_imagefolder_takes_the_option_too(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        for i in range(10):
            (tmp_path / "img" / c).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (20 * i, 100, 30)).save(tmp_path / "img" / c / f"{i}.png")
    ds = imagefolder(tmp_path / "img", resolution=8, transform_domains=True)
    assert ds.domains == list(dt.DOMAINS) and sorted(set(ds.train.domains.tolist())) == [0, 1, 2, 3]
