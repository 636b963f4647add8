"""Streams: invariants of every built-in stream, distant grouping, manifests and their export."""

import json

import h5py
import numpy as np
import pytest
import torch

from ssl_bench.api import Dataset, ImageSet
from ssl_bench.blocks import splits as manifest
from ssl_bench.cli import main
from ssl_bench.errors import UserError
from ssl_bench_plugins.datasets.synthetic import synthetic
from ssl_bench_plugins.streams import distant
from ssl_bench_plugins.streams.class_ import class_incremental
from ssl_bench_plugins.streams.distant import distant_class_incremental
from ssl_bench_plugins.streams.domain import domain_incremental
from ssl_bench_plugins.streams.instance import instance_incremental
from ssl_bench_plugins.streams.manifest import manifest_stream

STREAMS = {
    "instance": instance_incremental,
    "class": class_incremental,
    "distant": distant_class_incremental,
    "domain": domain_incremental,
}


@pytest.fixture(scope="module")
def shapes():
    """20 classes in 4 super-classes, 4 domains, 8 px: 160 training and 80 held-out images."""
    return synthetic(resolution=8, seed=0, train_per_class_domain=2, test_per_class_domain=1, n_domains=4)


def _check_partition(ds, exps):
    for attr, n in (("train_idx", len(ds.train)), ("test_idx", len(ds.test))):
        allidx = np.concatenate([getattr(e, attr) for e in exps])
        assert len(allidx) == len(set(allidx.tolist())), f"experiences overlap in {attr}"
        assert sorted(allidx.tolist()) == list(range(n)), f"union of {attr} is not the data"
    assert [e.index for e in exps] == list(range(len(exps)))


@pytest.mark.parametrize("name", list(STREAMS))
def test_partition_and_determinism(shapes, name):
    exps = STREAMS[name](shapes, n_experiences=4, seed=3)
    assert len(exps) == 4
    _check_partition(shapes, exps)
    again = STREAMS[name](shapes, n_experiences=4, seed=3)
    for a, b in zip(exps, again):
        assert np.array_equal(a.train_idx, b.train_idx) and np.array_equal(a.test_idx, b.test_idx)
        assert a.classes == b.classes and a.domains == b.domains
    if name != "domain":  # the domain order does not depend on the seed
        other = STREAMS[name](shapes, n_experiences=4, seed=4)
        assert any(not np.array_equal(a.train_idx, b.train_idx) for a, b in zip(exps, other))


@pytest.mark.parametrize("name", ["class", "distant"])
def test_class_incremental_share_no_class(shapes, name):
    exps = STREAMS[name](shapes, n_experiences=3, seed=0)
    labels, test_labels = shapes.train.labels.numpy(), shapes.test.labels.numpy()
    seen = set()
    for e in exps:
        got = set(labels[e.train_idx].tolist())
        assert got == set(e.classes) == set(test_labels[e.test_idx].tolist())
        assert not got & seen
        seen |= got
    assert seen == set(range(20))
    assert sorted(len(e.classes) for e in exps) == [6, 7, 7]


def test_domain_stream(shapes):
    exps = domain_incremental(shapes, n_experiences=4, seed=0)
    doms = shapes.train.domains.numpy()
    # DomainNet's names first in DomainNet's order (painting, sketch, clipart), then the rest (photo)
    assert [shapes.domains[e.domains[0]] for e in exps] == ["painting", "sketch", "clipart", "photo"]
    for e in exps:
        assert set(doms[e.train_idx].tolist()) == set(e.domains) and len(e.domains) == 1
        assert e.classes == list(range(20))
    two = domain_incremental(shapes, n_experiences=2, seed=0, order=["photo", "clipart"])
    assert [shapes.domains[e.domains[0]] for e in two] == ["photo", "clipart"]
    with pytest.raises(UserError, match="only 4 domains"):
        domain_incremental(shapes, n_experiences=5, seed=0)
    with pytest.raises(UserError, match="'real'"):
        domain_incremental(shapes, n_experiences=1, seed=0, order=["real"])


@pytest.mark.parametrize("name", ["class", "distant"])
def test_more_experiences_than_classes(shapes, name):
    with pytest.raises(UserError, match="only 20 classes"):
        STREAMS[name](shapes, n_experiences=21, seed=0)


def test_distant_is_more_distant_than_random(shapes):
    D = distant.hierarchy_distances(shapes.classes, shapes.hierarchy)
    assert D[0, 1] == 2 and D[0, 5] == 4  # same super-class / different
    exps = distant_class_incremental(shapes, n_experiences=4, seed=0)
    intra, inter = distant.split_distances(D, [e.classes for e in exps])
    assert (intra, inter) == (2.0, 4.0)  # every experience is exactly one super-class
    assert exps[0].info["mean_intra_distance"] == 2.0 and exps[0].info["distance_source"] == "hierarchy"
    for seed in range(5):
        rnd = class_incremental(shapes, n_experiences=4, seed=seed)
        r_intra, r_inter = distant.split_distances(D, [e.classes for e in rnd])
        assert r_inter / r_intra < inter / intra


def _wordnet_line(offset, word, hypernyms):
    ptrs = " ".join(f"@ {h} n 0000" for h in hypernyms)
    return f"{offset} 05 n 01 {word} 0 {len(hypernyms):03d} {ptrs} | gloss of {word}\n"


def test_distant_by_wordnet(tmp_path, monkeypatch):
    # entity <- animal <- {dog <- (poodle, terrier), cat <- (tabby, lynx)};  entity <- artifact <- {car, bus}
    tree = {
        "00000001": ("entity", []),
        "00000002": ("animal", ["00000001"]),
        "00000003": ("artifact", ["00000001"]),
        "00000004": ("dog", ["00000002"]),
        "00000005": ("cat", ["00000002"]),
        "00000011": ("poodle", ["00000004"]),
        "00000012": ("terrier", ["00000004"]),
        "00000013": ("tabby", ["00000005"]),
        "00000014": ("lynx", ["00000005"]),
        "00000015": ("car", ["00000003"]),
        "00000016": ("bus", ["00000003"]),
    }
    data = tmp_path / "data.noun"
    data.write_text(
        "  1 This software and database is being provided\n" + "".join(_wordnet_line(o, w, h) for o, (w, h) in tree.items())
    )
    classes = ["n00000015", "n00000011", "n00000013", "n00000016", "n00000012", "n00000014"]
    D = distant.wordnet_distances(classes, str(data))
    assert D[1, 4] == 2 and D[1, 2] == 4 and D[0, 1] == 5  # poodle-terrier, poodle-tabby, car-poodle
    ds = _labelled_dataset(classes)
    exps = distant_class_incremental(ds, n_experiences=3, seed=1, wordnet=str(tmp_path))
    groups = sorted(sorted(ds.classes[c] for c in e.classes) for e in exps)
    assert groups == [["n00000011", "n00000012"], ["n00000013", "n00000014"], ["n00000015", "n00000016"]]
    assert exps[0].info["distance_source"] == "wordnet"

    monkeypatch.delenv("SSL_BENCH_WORDNET", raising=False)
    monkeypatch.setattr(distant, "WORDNET_PLACES", [str(tmp_path / "nowhere" / "data.noun")])
    with pytest.raises(UserError, match="apt-get install wordnet-base"):
        distant_class_incremental(ds, n_experiences=3, seed=0)
    monkeypatch.setenv("SSL_BENCH_WORDNET", str(data))
    assert len(distant_class_incremental(ds, n_experiences=3, seed=0)) == 3
    bad = tmp_path / "bad.noun"
    bad.write_text("00000001 05 n zz\n")
    with pytest.raises(UserError, match="not a WordNet"):
        distant_class_incremental(ds, n_experiences=3, seed=0, wordnet=str(bad))


def _labelled_dataset(classes, colours=None, per_class=6, size=8):
    """A tiny dataset: class c is a flat colour (``colours[c]``, random otherwise) plus noise."""
    gen = torch.Generator().manual_seed(0)
    if colours is None:
        colours = torch.rand(len(classes), 3, generator=gen)

    def split(n):
        labels = torch.arange(len(classes)).repeat_interleave(n)
        base = torch.as_tensor(colours, dtype=torch.float32)[labels].view(-1, 3, 1, 1)
        img = (base + 0.05 * torch.randn(len(labels), 3, size, size, generator=gen)).clamp(0, 1)
        return ImageSet((img * 255).to(torch.uint8), labels, torch.zeros_like(labels), [f"{i}" for i in range(len(labels))])

    return Dataset("toy", split(per_class), split(2), classes=list(classes))


def test_distant_by_features():
    # two colour families: reds and blues; the fixed network must keep each family together
    colours = [[0.9, 0.1, 0.1], [0.8, 0.2, 0.1], [0.95, 0.15, 0.2], [0.1, 0.1, 0.9], [0.15, 0.2, 0.8], [0.1, 0.2, 0.95]]
    ds = _labelled_dataset(["r1", "r2", "r3", "b1", "b2", "b3"], colours)
    exps = distant_class_incremental(ds, n_experiences=2, seed=0)
    assert sorted(sorted(e.classes) for e in exps) == [[0, 1, 2], [3, 4, 5]]
    info = exps[0].info
    assert info["distance_source"] == "features" and info["mean_inter_distance"] > info["mean_intra_distance"]
    with pytest.raises(UserError, match="no hierarchy"):
        distant_class_incremental(ds, n_experiences=2, seed=0, source="hierarchy")


@pytest.mark.parametrize("name", list(STREAMS))
@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_manifest_round_trip(shapes, tmp_path, name, suffix):
    exps = STREAMS[name](shapes, n_experiences=4, seed=1)
    path = manifest.write(tmp_path / f"split{suffix}", manifest.describe(shapes, exps, {"stream": name, "seed": 1}))
    back = manifest_stream(shapes, n_experiences=4, seed=99, path=str(path))
    assert len(back) == len(exps)
    for a, b in zip(exps, back):
        assert np.array_equal(np.sort(a.train_idx), b.train_idx) and np.array_equal(np.sort(a.test_idx), b.test_idx)
        assert sorted(a.classes) == sorted(b.classes) and sorted(a.domains) == sorted(b.domains)
    kinds = {k for entry in manifest.read(path)["experiences"] for k in entry}
    assert (
        kinds
        == {
            "instance": {"name", "train", "test"},
            "class": {"name", "classes"},
            "distant": {"name", "classes"},
            "domain": {"name", "domains"},
        }[name]
    )


def test_manifest_by_hand_and_bad_input(shapes, tmp_path):
    good = tmp_path / "m.toml"
    good.write_text(
        '[[experiences]]\nclasses = ["triangle", "square"]\ndomains = ["sketch"]\n\n'
        '[[experiences]]\ntrain = ["train/star3/photo/0", "train/star3/photo/1"]\ntest = ["test/star3/photo/0"]\n'
    )
    a, b = manifest_stream(shapes, n_experiences=2, seed=0, path=str(good))
    assert len(a.train_idx) == 4 and set(shapes.train.domains[a.train_idx].tolist()) == {1}
    assert len(b.train_idx) == 2 and len(b.test_idx) == 1 and b.classes == [shapes.classes.index("star3")]

    cases = {
        '{"experiences": []}': "non-empty list",
        '{"experiences": [{"classes": ["unicorn"]}]}': "unknown class 'unicorn'",
        '{"experiences": [{"train": ["nope"], "test": ["test/star3/photo/0"]}]}': "unknown train sample id 'nope'",
        '{"experiences": [{"train": ["train/star3/photo/0"]}]}': "both 'train' and 'test'",
        '{"experiences": [{"colour": "red"}]}': "unknown key 'colour'",
        '{"dataset": "cifar10", "experiences": [{"classes": ["ring"]}]}': "made for dataset 'cifar10'",
        '{"format": "other", "experiences": [{"classes": ["ring"]}]}': "not an ssl-bench stream manifest",
        '{"experiences": [': "cannot be parsed",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(UserError, match=message):
            manifest_stream(shapes, n_experiences=1, seed=0, path=str(bad))
    with pytest.raises(UserError, match="--stream-opt path="):
        manifest_stream(shapes, n_experiences=1, seed=0)
    with pytest.raises(UserError, match="does not exist"):
        manifest_stream(shapes, n_experiences=1, seed=0, path=str(tmp_path / "missing.json"))


def test_run_class_stream_end_to_end(tiny_protocol, tmp_path, capsys, one_thread):
    out = tmp_path / "runs"
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--stream", "class", "--out", str(out)]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    with h5py.File(path) as f:
        assert f.attrs["stream"] == "class"
        c0, c1 = f["stream/experience_0/classes"][()], f["stream/experience_1/classes"][()]
        assert not set(c0) & set(c1) and len(c0) + len(c1) == 20
        assert list(f["stream/class_order"][()]) == list(c0) + list(c1)
        expected = class_incremental(
            synthetic(resolution=16, train_per_class_domain=3, test_per_class_domain=2), n_experiences=2, seed=0
        )
        assert list(c0) == expected[0].classes  # the recorded order is the stream's order
    # the exported manifest reloads as the same split through the CLI
    split = tmp_path / "split.json"
    assert main(["-q", "stream-export", "--protocol", str(tiny_protocol), "--stream", "distant", "-o", str(split)]) == 0
    assert json.loads(split.read_text())["source"]["stream"] == "distant"
    assert (
        main(
            [
                "-q",
                "stream-export",
                "--protocol",
                str(tiny_protocol),
                "--stream",
                "manifest",
                "--stream-opt",
                f"path={split}",
                "-o",
                str(tmp_path / "again.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "again.json").read_text())["experiences"] == json.loads(split.read_text())["experiences"]
    assert (
        main(
            [
                "-q",
                "stream-export",
                "--protocol",
                str(tiny_protocol),
                "--stream",
                "class",
                "--stream-opt",
                "colour=red",
                "-o",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "-q",
                "stream-export",
                "--protocol",
                str(tiny_protocol),
                "--stream",
                "domain",
                "--stream-opt",
                "order=['real']",
                "-o",
                str(tmp_path / "x.json"),
            ]
        )
        == 2
    )


def test_run_distant_stream_records_distances(tiny_protocol, tmp_path, capsys, one_thread):
    assert main(["-q", "run", "--protocol", str(tiny_protocol), "--stream", "distant", "--out", str(tmp_path)]) == 0
    with h5py.File(capsys.readouterr().out.strip().splitlines()[-1]) as f:
        info = f["stream/experience_0/info"]
        assert info["distance_source"][()].decode() == "hierarchy"
        intra, inter = info["mean_intra_distance"][()], info["mean_inter_distance"][()]
        # 2 experiences of 2 super-classes of 5: of the 45 class pairs in one, 20 are siblings (2 edges), 25 cousins (4)
        assert (intra, inter) == (pytest.approx((2 * 20 + 4 * 25) / 45), 4.0)
        assert f["stream/experience_1/info/intra_distance"][()] == pytest.approx(intra)
