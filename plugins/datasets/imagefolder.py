"""A generic folder of images: ``root/<class>/*.jpg`` (any image format Pillow reads).

When ``root`` holds ``train/`` and ``test/`` (or ``val/``) folders, each with one folder per
class, those are the two splits. Otherwise a fixed ``test_fraction`` (default 0.2, at least
one image) of every class is held out; which images are held out depends only on their file
names (the lowest CRC-32 of the relative path, :func:`ssl_bench.blocks.imagefiles.split_held_out`),
never on the seed, so every run evaluates on the same images and adding files moves few of
them. Images are decoded once into the uint8 cache (:mod:`ssl_bench.blocks.imagecache`); option
``on_corrupt`` = ``"skip"`` (default: skip and count undecodable files, with a warning) or ``"error"``.
Option ``transform_domains`` (``true`` or a list of names; default off) renders every image in a domain
assigned from the dataset's ``seed``, as tiny-imagenet's option does (:mod:`ssl_bench.blocks.domain_transforms`).
"""

from pathlib import Path

from ssl_bench import hookimpl
from ssl_bench.api import Dataset
from ssl_bench.blocks import domain_transforms, imagecache
from ssl_bench.blocks.imagefiles import check_fraction, class_folders, image_files, split_held_out
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = None


def imagefolder(root=None, resolution=64, seed=0, download=False, test_fraction=0.2, on_corrupt="skip", transform_domains=None):
    """Images in ``root/<class>/`` (or ``root/train/<class>/`` and ``root/test/<class>/``)."""
    if root is None:
        raise UserError("imagefolder needs --data-root: a folder with one sub-folder of images per class")
    if download:
        raise UserError("imagefolder reads your own folder; there is nothing to --download")
    root = Path(root).expanduser()
    fraction = check_fraction("imagefolder", test_fraction)
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    presplit = (root / "train").is_dir() and test_dir is not None
    classes = [p.name for p in class_folders(root / "train" if presplit else root, "imagefolder")]
    splits = {"train": ([], []), "test": ([], [])}
    for c, name in enumerate(classes):
        if presplit:
            parts = {"train": image_files(root / "train" / name), "test": image_files(test_dir / name)}
        else:
            files = image_files(root / name)
            if len(files) < 2:
                raise UserError(
                    f"imagefolder: class '{name}' has {len(files)} images in {root / name}; "
                    "each class needs at least 2 (one is held out)"
                )
            parts = dict(zip(("train", "test"), split_held_out(files, root, fraction)))
        for split, files in parts.items():
            if not files:
                raise UserError(
                    f"imagefolder: class '{name}' has no {split} images "
                    f"in {(root / split if split == 'train' else test_dir) / name if presplit else root / name}"
                )
            splits[split][0].extend(files)
            splits[split][1].extend([c] * len(files))
    sets = {
        split: imagecache.image_set(
            f"imagefolder/{root.name}/{split}", files, labels, [0] * len(files), root, resolution, on_corrupt=on_corrupt
        )
        for split, (files, labels) in splits.items()
    }
    ds = Dataset("imagefolder", sets["train"], sets["test"], classes=classes, domains=["default"])
    return domain_transforms.with_domains(ds, seed, transform_domains) if transform_domains else ds


@hookimpl
def ssl_bench_datasets():
    return {"imagefolder": imagefolder}
