"""Tiny ImageNet (Stanford CS231n) in its original layout, or a subset of its classes.

Expected under ``--data-root``::

    wnids.txt                      one WordNet id per line: the classes
    words.txt                      "<wnid>\\t<names>" (class names; may list more ids than wnids.txt)
    train/<wnid>/images/*.JPEG     training images
    val/images/*.JPEG              held-out images, labelled by
    val/val_annotations.txt        "<file>\\t<wnid>\\t<box...>"

The held-out split is ``val`` (the original ``test`` folder has no labels). Class ids are
WordNet 3.0 noun ids, so the ``distant`` stream can group them by the WordNet hierarchy.
Images are decoded once into the uint8 cache (:mod:`ssl_bench.blocks.imagecache`). Options:
``n_classes`` (the first n of the sorted ids) or ``classes`` (a list of ids) take a subset;
``on_corrupt`` = ``"skip"`` (default: skip and count undecodable files, with a warning) or ``"error"``.

Option ``transform_domains`` (default off) makes a domain-incremental benchmark of it
(:mod:`ssl_bench.blocks.domain_transforms`): ``true`` renders every image in one of four domains, photo,
grayscale, edges (an edge sketch) and cartoon (smoothed and posterised), or a list names some of
them. Each image's domain is assigned from the dataset's ``seed`` (the protocol's
``dataset.seed``), balanced within every class, the same for every run of the protocol; the
``domain`` stream then has one experience per domain.
"""

from pathlib import Path

from ssl_bench import hookimpl
from ssl_bench.api import Dataset
from ssl_bench.blocks import domain_transforms, imagecache
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Le & Yang, Tiny ImageNet Visual Recognition Challenge, CS231n 2015"

WHERE = (
    "download http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzip it and pass the folder holding "
    "wnids.txt, words.txt, train/ and val/ as --data-root"
)


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"tiny-imagenet: {path} is missing; {WHERE}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _image_number(path: Path) -> tuple[int, str]:
    """Sort key of ``n01443537_17.JPEG``: its number (17), then the name."""
    tail = path.stem.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else 1 << 30, path.name)


def tiny_imagenet(
    root=None,
    resolution=64,
    seed=0,
    download=False,
    n_classes=None,
    classes=None,
    train_per_class=None,
    on_corrupt="skip",
    transform_domains=None,
):
    """Tiny ImageNet from ``root`` at ``resolution`` px (64 is the native size).

    ``train_per_class`` keeps the first N training images of every class by the number in their file
    name (``n01443537_0`` ... ``n01443537_<N-1>``), so a full tiny-imagenet-200 folder and a copy holding
    only those images give the same dataset."""
    if root is None:
        raise UserError(f"tiny-imagenet needs --data-root: {WHERE}")
    if download:
        raise UserError(f"tiny-imagenet cannot be downloaded by ssl-bench; {WHERE}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"tiny-imagenet: --data-root {root} is not a folder; {WHERE}")
    wnids = sorted(set(_lines(root / "wnids.txt")))
    if classes is not None:
        unknown = [c for c in classes if c not in wnids]
        if unknown:
            raise UserError(f"tiny-imagenet: class {unknown[0]} is not in {root / 'wnids.txt'}")
        wnids = sorted(set(classes))
    if n_classes is not None:
        if not 1 <= int(n_classes) <= len(wnids):
            raise UserError(f"tiny-imagenet: n_classes must be 1..{len(wnids)}, got {n_classes}")
        wnids = wnids[: int(n_classes)]
    words = {}
    for line in _lines(root / "words.txt"):
        wnid, _, names = line.partition("\t")
        words[wnid] = names.split(",")[0].strip()
    index = {w: i for i, w in enumerate(wnids)}

    train_files, train_labels = [], []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        files = sorted((p for p in folder.glob("*") if imagecache.is_image(p)), key=_image_number) if folder.is_dir() else []
        if not files:
            raise UserError(f"tiny-imagenet: class {wnid} has no training images in {folder}")
        if train_per_class is not None:
            if len(files) < int(train_per_class):
                raise UserError(
                    f"tiny-imagenet: class {wnid} has {len(files)} training images, fewer than train_per_class={train_per_class}"
                )
            files = files[: int(train_per_class)]
        train_files += files
        train_labels += [index[wnid]] * len(files)

    test_files, test_labels = [], []
    for line in _lines(root / "val" / "val_annotations.txt"):
        parts = line.split("\t")
        if len(parts) < 2:
            raise UserError(f"tiny-imagenet: cannot read line '{line[:60]}' of {root / 'val' / 'val_annotations.txt'}")
        if parts[1] in index:
            test_files.append(root / "val" / "images" / parts[0])
            test_labels.append(index[parts[1]])
    missing = sorted(set(index) - {wnids[c] for c in test_labels})
    if missing:
        raise UserError(f"tiny-imagenet: class {missing[0]} has no images in val/val_annotations.txt")
    absent = [f for f in test_files if not f.is_file()]
    if absent:
        raise UserError(f"tiny-imagenet: {absent[0]} is listed in val/val_annotations.txt but missing ({len(absent)} missing)")

    tag = "tiny-imagenet" if n_classes is None and classes is None else f"tiny-imagenet-{len(wnids)}c"
    tag += f"-{train_per_class}pc" if train_per_class is not None else ""
    train = imagecache.image_set(
        f"{tag}/train", train_files, train_labels, [0] * len(train_files), root, resolution, on_corrupt=on_corrupt
    )
    test = imagecache.image_set(
        f"{tag}/val", test_files, test_labels, [0] * len(test_files), root, resolution, on_corrupt=on_corrupt
    )
    ds = Dataset("tiny-imagenet", train, test, classes=wnids, domains=["default"], class_names=[words.get(w, w) for w in wnids])
    return domain_transforms.with_domains(ds, seed, transform_domains) if transform_domains else ds


@hookimpl
def ssl_bench_datasets():
    return {"tiny-imagenet": tiny_imagenet}
