"""CIFAR-10 and CIFAR-100 in torchvision's on-disk format (the extracted python pickles).

Expected under ``--data-root`` (what ``torchvision.datasets.CIFAR10/100(root, download=True)``
makes): ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` or
``cifar-100-python/{train, test, meta}``. ``--download`` fetches them through torchvision;
without a data root they go to ``$SSL_BENCH_CACHE/datasets``. Images are resized in memory
to the protocol's resolution when it is not 32. CIFAR-100's 20 super-classes become the
dataset's hierarchy (used by the ``distant`` stream).

What is trusted. CIFAR's files are Python pickles, and unpickling runs whatever a pickle names. These are read
with an unpickler that builds only what CIFAR's files hold (dicts, lists, numbers, strings, bytes and numpy
arrays): a file that names anything else (a planted ``batches.meta`` that would run a command) is refused with
one line, without running it. torchvision's own loader (``--download`` goes through it) unpickles freely; the
folder it downloads into is then read here like any other. The images' content is not checked.
"""

import codecs
import pickle
from pathlib import Path

import numpy as np
import torch

from ssl_bench import hookimpl
from ssl_bench.api import Dataset, ImageSet
from ssl_bench.blocks import imagecache
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = "Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009"

VARIANTS = {
    "cifar10": dict(
        folder="cifar-10-batches-py",
        train=[f"data_batch_{i}" for i in range(1, 6)],
        test=["test_batch"],
        meta="batches.meta",
        labels="labels",
        names="label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        tv="CIFAR10",
    ),
    "cifar100": dict(
        folder="cifar-100-python",
        train=["train"],
        test=["test"],
        meta="meta",
        labels="fine_labels",
        names="fine_label_names",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        tv="CIFAR100",
    ),
}


def _latin1(obj, encoding="utf-8", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, for the one encoding they use."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"it encodes text as {encoding!r}, which CIFAR's files never do")
    return codecs.encode(obj, "latin1", errors)


_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's array constructor for pickles, wherever numpy keeps it

#: everything a CIFAR pickle may name (numpy arrays, as numpy 1 and 2 write them, and protocol 2's bytes)
ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class _DataOnly(pickle.Unpickler):
    """An unpickler that builds only data (see the module docstring): any other class or function is refused."""

    def find_class(self, module: str, name: str):
        found = ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which CIFAR's files never hold; refused without running it")
        return found


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            data = _DataOnly(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as err:
        raise UserError(f"cannot read {path}: {err}; delete the folder and download it again") from None
    if not isinstance(data, dict):
        raise UserError(f"cannot read {path}: it holds a {type(data).__name__}, not CIFAR's dict; download it again")
    return data


def _download(name: str, v: dict, root: Path) -> None:
    import torchvision

    try:
        getattr(torchvision.datasets, v["tv"])(str(root), train=True, download=True)
    except Exception as err:  # noqa: BLE001 - no network, proxy, disk: all end in the same advice
        raise UserError(
            f"{name}: download failed ({type(err).__name__}: {err}); fetch {v['url']} and extract it into "
            f"{root} so that {root / v['folder']} exists"
        ) from None


def load_cifar(name: str, root, resolution: int, download: bool) -> Dataset:
    v = VARIANTS[name]
    root = Path(root).expanduser() if root else imagecache.cache_dir() / "datasets"
    folder = root / v["folder"]
    if not folder.is_dir():
        if not download:
            raise UserError(f"{name}: {folder} not found; pass --download, or fetch {v['url']} and extract it into {root}")
        _download(name, v, root)
    for f in [*v["train"], *v["test"], v["meta"]]:
        if not (folder / f).is_file():
            raise UserError(f"{name}: {folder / f} is missing; fetch {v['url']} and extract it into {root} again")
    meta = _unpickle(folder / v["meta"])
    classes = list(meta[v["names"]])

    def split(files, tag):
        batches = [_unpickle(folder / f) for f in files]
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
        labels = np.concatenate([np.asarray(b[v["labels"]], dtype=np.int64) for b in batches])
        coarse = np.concatenate([np.asarray(b["coarse_labels"], dtype=np.int64) for b in batches]) if name == "cifar100" else None
        images = imagecache.resize(data, resolution)
        ids = [f"{tag}/{i}" for i in range(len(labels))]
        return ImageSet(images, torch.from_numpy(labels), torch.zeros(len(labels), dtype=torch.int64), ids), labels, coarse

    train, train_labels, coarse = split(v["train"], "train")
    test, _, _ = split(v["test"], "test")
    hierarchy = None
    if coarse is not None:
        coarse_names = list(meta["coarse_label_names"])
        first = {}
        for fine, sup in zip(train_labels.tolist(), coarse.tolist()):
            first.setdefault(fine, sup)
        hierarchy = {classes[c]: [coarse_names[s], "object"] for c, s in first.items()}
    return Dataset(name, train, test, classes=classes, domains=["default"], hierarchy=hierarchy)


def cifar10(root=None, resolution=32, seed=0, download=False):
    """CIFAR-10: 50,000 training and 10,000 test images of 10 classes."""
    return load_cifar("cifar10", root, resolution, download)


def cifar100(root=None, resolution=32, seed=0, download=False):
    """CIFAR-100: 50,000 training and 10,000 test images of 100 classes in 20 super-classes."""
    return load_cifar("cifar100", root, resolution, download)


@hookimpl
def ssl_bench_datasets():
    return {"cifar10": cifar10, "cifar100": cifar100}
