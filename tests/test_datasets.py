"""Dataset plugins on tiny data made here in every on-disk format, and the uint8 image cache."""

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.blocks import imagecache
from ssl_bench.errors import UserError
from ssl_bench_plugins.datasets.cifar import cifar10, cifar100
from ssl_bench_plugins.datasets.imagefolder import imagefolder
from ssl_bench_plugins.datasets.multidomain import domainnet, multidomain
from ssl_bench_plugins.datasets.stl10 import stl10
from ssl_bench_plugins.datasets.synthetic import synthetic
from ssl_bench_plugins.datasets.tiny_imagenet import tiny_imagenet
from ssl_bench_plugins.streams.domain import domain_incremental


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SSL_BENCH_CACHE", str(folder))
    return folder


def _png(path, colour, size=(12, 10), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, tuple(int(c) for c in colour)).save(path, format=fmt)
    return path


def _folder(root, classes=("cat", "dog", "owl"), n=5):
    for c, name in enumerate(classes):
        for i in range(n):
            _png(root / name / f"{i}.png", (40 * c + 10, 3 * i, 200 - 40 * c))
    return root


def test_imagefolder_split_cache_and_colours(tmp_path, cache):
    root = _folder(tmp_path / "pets")
    ds = imagefolder(root, resolution=8)
    assert ds.classes == ["cat", "dog", "owl"] and ds.train.images.shape[1:] == (3, 8, 8)
    assert len(ds.train) == 12 and len(ds.test) == 3 and ds.test.labels.tolist() == [0, 1, 2]
    assert set(ds.train.ids).isdisjoint(ds.test.ids) and len(ds.train.ids) + len(ds.test.ids) == 15
    i = ds.train.ids.index("dog/3.png")  # a flat colour survives decoding, resizing and cropping
    assert ds.train.images[i, :, 4, 4].tolist() == [50, 9, 160]
    assert len(list(cache.glob("*.npy"))) == 2
    # a second load reads the cache: nothing is decoded
    real = imagecache.decode
    imagecache.decode = lambda *a: (_ for _ in ()).throw(AssertionError("decoded again"))
    try:
        again = imagefolder(root, resolution=8)
    finally:
        imagecache.decode = real
    assert torch.equal(again.train.images, ds.train.images) and again.test.ids == ds.test.ids
    # a changed file rebuilds the cache
    _png(root / "dog" / "3.png", (1, 2, 3))
    os.utime(root / "dog" / "3.png", ns=(1, 1))
    changed = imagefolder(root, resolution=8)
    assert changed.train.images[changed.train.ids.index("dog/3.png"), :, 4, 4].tolist() == [1, 2, 3]


def test_imagefolder_presplit_and_bad_input(tmp_path):
    root = tmp_path / "split"
    _folder(root / "train", n=2)
    _folder(root / "val", n=1)
    ds = imagefolder(root, resolution=4)
    assert (len(ds.train), len(ds.test)) == (6, 3) and ds.test.ids[0] == "val/cat/0.png"

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no class folders"):
        imagefolder(tmp_path / "empty", resolution=4)
    with pytest.raises(UserError, match="not a folder"):
        imagefolder(tmp_path / "missing", resolution=4)
    with pytest.raises(UserError, match="--data-root"):
        imagefolder(None, resolution=4)
    lonely = _folder(tmp_path / "lonely", classes=("a",), n=3)
    (lonely / "b").mkdir()
    with pytest.raises(UserError, match="class 'b' has 0 images"):
        imagefolder(lonely, resolution=4)
    with pytest.raises(UserError, match="test_fraction"):
        imagefolder(_folder(tmp_path / "ok"), resolution=4, test_fraction=1.5)


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "cat" / "9.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    (root / "owl" / "7.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 of \d+ image files"):
        ds = imagefolder(root, resolution=8)
    assert len(ds.train) + len(ds.test) == 15 and "cat/9.jpg" not in ds.train.ids + ds.test.ids
    assert len(ds.train.labels) == len(ds.train.images)
    with pytest.warns(UserWarning, match="skipped 2"):  # counted again when read from the cache
        imagefolder(root, resolution=8)
    with pytest.raises(UserError, match="cannot decode"):
        imagefolder(root, resolution=8, on_corrupt="error")


def test_cache_decodes_in_parallel_and_rejects_all_corrupt(tmp_path):
    files = [_png(tmp_path / f"{i}.png", (i, 2 * i, 3 * i), size=(16, 16)) for i in range(40)]
    images, kept = imagecache.load("many", files, 4, workers=4, progress=False)
    assert images.shape == (40, 3, 4, 4) and kept.tolist() == list(range(40))
    assert images[:, 0, 0, 0].tolist() == list(range(40))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(UserError, match="none of the 1"):
        imagecache.load("bad", [bad], 4, progress=False)
    with pytest.raises(UserError, match="no image files"):
        imagecache.load("none", [], 4)


def test_multidomain_and_domain_stream(tmp_path):
    root = tmp_path / "pacs"
    for d in ("sketch", "photo", "art"):
        _folder(root / d, classes=("dog", "horse"), n=3)
    ds = multidomain(root, resolution=4)
    assert ds.domains == ["art", "photo", "sketch"] and ds.classes == ["dog", "horse"]
    assert (len(ds.train), len(ds.test)) == (12, 6)
    exps = domain_incremental(ds, n_experiences=3, seed=0)
    # DomainNet's names first (sketch), then the others in the dataset's order
    assert [e.domains for e in exps] == [[2], [0], [1]] and all(e.classes == [0, 1] for e in exps)
    with pytest.raises(UserError, match="only 3 domains"):
        domain_incremental(ds, n_experiences=4, seed=0)
    some = multidomain(root, resolution=4, domains=["sketch", "photo"], classes=["horse"])
    assert some.domains == ["sketch", "photo"] and some.classes == ["horse"] and len(some.train) == 4
    with pytest.raises(UserError, match="no domain 'real'"):
        multidomain(root, resolution=4, domains=["real"])
    (root / "photo" / "cow").mkdir()
    with pytest.raises(UserError, match="cow has 0 images"):
        multidomain(root, resolution=4)


def test_domainnet_split_files(tmp_path):
    root = tmp_path / "domainnet"
    for d in ("real", "sketch"):
        for split, n in (("train", 2), ("test", 1)):
            lines = []
            for label, c in enumerate(("apple", "bee")):
                for i in range(n):
                    rel = f"{d}/{c}/{d}_{split}_{i}.jpg"
                    _png(root / rel, (label * 100, i * 50, 7), fmt="JPEG")
                    lines.append(f"{rel} {label}")
            (root / f"{d}_{split}.txt").write_text("\n".join(lines) + "\n")
    ds = domainnet(root, resolution=4)
    assert ds.domains == ["real", "sketch"] and ds.classes == ["apple", "bee"]
    assert (len(ds.train), len(ds.test)) == (8, 4) and ds.train.ids[0] == "real/apple/real_train_0.jpg"
    assert domainnet(root, resolution=4, domains=["sketch"]).domains == ["sketch"]
    (root / "sketch_test.txt").write_text("sketch/bee/missing.jpg 1\n")
    with pytest.raises(UserError, match="missing.jpg is listed"):
        domainnet(root, resolution=4)
    with pytest.raises(UserError, match="no <domain>_train.txt"):
        domainnet(tmp_path, resolution=4)


def _tiny_imagenet(root, wnids=("n01443537", "n01629819", "n09999999")):
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text(
        "n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\nn09999999\tthing\nn00000000\tunused\n"
    )
    lines = []
    for c, w in enumerate(wnids):
        for i in range(3):
            _png(root / "train" / w / "images" / f"{w}_{i}.JPEG", (c * 60, i * 40, 9), size=(64, 64), fmt="JPEG")
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
        _png(root / "val" / "images" / f"val_{c}.JPEG", (c * 60, 0, 9), size=(64, 64), fmt="JPEG")
        lines.append(f"val_{c}.JPEG\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    return root


def test_tiny_imagenet_layout(tmp_path):
    root = _tiny_imagenet(tmp_path / "tiny")
    ds = tiny_imagenet(root, resolution=16)
    assert ds.classes == ["n01443537", "n01629819", "n09999999"]
    assert ds.class_names == ["goldfish", "European fire salamander", "thing"]
    assert (len(ds.train), len(ds.test)) == (9, 3) and ds.test.labels.tolist() == [0, 1, 2]
    assert ds.train.ids[0] == "train/n01443537/images/n01443537_0.JPEG" and ds.resolution == 16
    assert abs(int(ds.test.images[1, 0].float().mean()) - 60) <= 3  # JPEG colours survive (up to compression)
    two = tiny_imagenet(root, resolution=16, n_classes=2)
    assert two.classes == ["n01443537", "n01629819"] and len(two.train) == 6 and len(two.test) == 2
    assert tiny_imagenet(root, resolution=16, classes=["n09999999"]).classes == ["n09999999"]
    with pytest.raises(UserError, match="not in"):
        tiny_imagenet(root, resolution=16, classes=["n12345678"])
    with pytest.raises(UserError, match="wnids.txt is missing"):
        tiny_imagenet(tmp_path, resolution=16)
    with pytest.raises(UserError, match="cannot be downloaded"):
        tiny_imagenet(root, resolution=16, download=True)
    for f in (root / "train" / "n01629819" / "images").iterdir():
        f.unlink()
    with pytest.raises(UserError, match="class n01629819 has no training images"):
        tiny_imagenet(root, resolution=16)


def _cifar_batch(path, n, fine, coarse=None, seed=0):
    rng = np.random.default_rng(seed)
    batch = {
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        fine[0]: [int(x) for x in rng.integers(0, fine[1], n)],
        "batch_label": "fake",
    }
    if coarse:
        batch["coarse_labels"] = [batch[fine[0]][i] // 2 for i in range(n)]
    with open(path, "wb") as f:
        pickle.dump(batch, f)
    return batch


def test_cifar_formats(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = [_cifar_batch(folder / f"data_batch_{i}", 6, ("labels", 10), seed=i) for i in range(1, 6)]
    _cifar_batch(folder / "test_batch", 4, ("labels", 10), seed=9)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    ds = cifar10(tmp_path, resolution=32)
    assert (len(ds.train), len(ds.test), ds.classes[3]) == (30, 4, "c3")
    first = np.asarray(batches[0]["data"][0]).reshape(3, 32, 32)
    assert np.array_equal(ds.train.images[0].numpy(), first) and ds.train.labels[0] == batches[0]["labels"][0]
    assert cifar10(tmp_path, resolution=16).train.images.shape == (30, 3, 16, 16)

    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _cifar_batch(folder / "train", 20, ("fine_labels", 4), coarse=True)
    _cifar_batch(folder / "test", 8, ("fine_labels", 4), coarse=True, seed=1)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": ["apple", "pear", "bee", "ant"], "coarse_label_names": ["fruit", "insect"]}, f)
    ds = cifar100(tmp_path, resolution=8)
    assert ds.hierarchy["pear"] == ["fruit", "object"] and ds.hierarchy["ant"] == ["insect", "object"]

    with pytest.raises(UserError, match=r"pass --download, or fetch https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"):
        cifar10(tmp_path / "nowhere", resolution=32)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        cifar10(tmp_path, resolution=32)


def test_cifar_download_failure_says_where(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(UserError, match="download failed .*extract it into"):
        cifar10(tmp_path, resolution=32, download=True)


def test_stl10_binary(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        x.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # the release stores images column-major
        np.array([1, 10, 4][:n], dtype=np.uint8).tofile(folder / f"{split}_y.bin")
        if split == "train":
            first = x[0]
    (folder / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)) + "\n")
    ds = stl10(tmp_path, resolution=96)
    assert np.array_equal(ds.train.images[0].numpy(), first) and ds.train.labels.tolist() == [0, 9, 3]
    assert stl10(tmp_path, resolution=32).test.images.shape == (2, 3, 32, 32)
    with pytest.raises(UserError, match="stl10_binary not found; pass --download"):
        stl10(tmp_path / "nowhere", resolution=32)


def test_synthetic_meets_the_issue():
    ds = synthetic(resolution=16, seed=5, train_per_class_domain=1, test_per_class_domain=1)
    assert len(ds.classes) >= 20 and len({v[0] for v in ds.hierarchy.values()}) >= 4 and len(ds.domains) >= 4
    again = synthetic(resolution=16, seed=5, train_per_class_domain=1, test_per_class_domain=1)
    assert torch.equal(ds.train.images, again.train.images)
    other = synthetic(resolution=16, seed=6, train_per_class_domain=1, test_per_class_domain=1)
    assert not torch.equal(ds.train.images, other.train.images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(set(ds.train.ids)) == len(ds.train)
