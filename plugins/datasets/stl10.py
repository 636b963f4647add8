"""STL-10 in torchvision's on-disk format (the binary release), labelled splits.

Expected under ``--data-root``: ``stl10_binary/{train_X.bin, train_y.bin, test_X.bin,
test_y.bin, class_names.txt}`` (what ``torchvision.datasets.STL10(root, download=True)``
makes; ``--download`` fetches it through torchvision, 2.6 GB). The 96 px images are resized
in memory to the protocol's resolution. The 100,000 unlabelled images are not used: every
sample of an ssl-bench dataset carries a class (streams and probes need it).
"""

from pathlib import Path

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Dataset, ImageSet
from ssl_bench.blocks import imagecache
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Coates, Ng & Lee, An Analysis of Single-Layer Networks in Unsupervised Feature Learning, AISTATS 2011"

URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
FILES = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt"]


def stl10(root=None, resolution=96, seed=0, download=False):
    """STL-10: 5,000 training and 8,000 test images of 10 classes at 96 px."""
    root = Path(root).expanduser() if root else imagecache.cache_dir() / "datasets"
    folder = root / "stl10_binary"
    if not folder.is_dir():
        if not download:
            raise UserError(f"stl10: {folder} not found; pass --download, or fetch {URL} and extract it into {root}")
        import torchvision

        try:
            torchvision.datasets.STL10(str(root), split="train", download=True)
        except Exception as err:  # noqa: BLE001 - no network, proxy, disk: all end in the same advice
            raise UserError(
                f"stl10: download failed ({type(err).__name__}: {err}); fetch {URL} and extract it into "
                f"{root} so that {folder} exists"
            ) from None
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise UserError(f"stl10: {folder / missing[0]} is missing; fetch {URL} and extract it into {root} again")
    classes = [line.strip() for line in (folder / "class_names.txt").read_text().splitlines() if line.strip()]

    def split(tag):
        x = np.fromfile(folder / f"{tag}_X.bin", dtype=np.uint8)
        y = np.fromfile(folder / f"{tag}_y.bin", dtype=np.uint8).astype(np.int64) - 1
        if x.size != len(y) * 3 * 96 * 96 or len(y) == 0 or y.min() < 0 or y.max() >= len(classes):
            raise UserError(f"stl10: {folder / (tag + '_X.bin')} and its labels do not match; download them again")
        images = x.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)  # stored column-major
        ids = [f"{tag}/{i}" for i in range(len(y))]
        return ImageSet(imagecache.resize(images, resolution), torch.from_numpy(y), torch.zeros(len(y), dtype=torch.int64), ids)

    return Dataset("stl10", split("train"), split("test"), classes=classes, domains=["default"])


@hookimpl
def ssl_bench_datasets():
    return {"stl10": stl10}
