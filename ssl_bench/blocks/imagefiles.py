"""Image-folder listing for dataset plugins: image files, class folders, and a held-out split by file name.

Public, for built-in and outside dataset plugins alike (``imagefolder`` and ``multidomain``
use it); decoding the listed files is :mod:`ssl_bench.blocks.imagecache`'s job::

    from ssl_bench.blocks.imagefiles import class_folders, image_files, split_held_out

    for folder in class_folders(root, "mydataset"):
        train, test = split_held_out(image_files(folder), root, fraction=0.2)

Which images :func:`split_held_out` holds out depends only on their paths relative to
``root`` (the lowest CRC-32), never on a seed, so every run evaluates on the same images and
adding files moves few of them.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from ssl_bench.blocks import imagecache
from ssl_bench.errors import UserError


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` or below it, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and imagecache.is_image(p))


def class_folders(folder: Path, what: str) -> list[Path]:
    """The sub-folders of ``folder`` (hidden ones skipped), sorted; ``what`` names the dataset in errors."""
    if not folder.is_dir():
        raise UserError(f"{what}: {folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise UserError(f"{what}: no class folders in {folder} (expected {folder}/<class>/<image files>)")
    return found


def split_held_out(files: list[Path], root: Path, fraction: float) -> tuple[list[Path], list[Path]]:
    """Split one class's files into (train, test) by the CRC-32 of their relative paths (at least one held out)."""
    ranked = sorted(files, key=lambda p: (zlib.crc32(p.relative_to(root).as_posix().encode()), p))
    n_test = max(1, round(fraction * len(files)))
    test = set(ranked[:n_test])
    return [f for f in files if f not in test], [f for f in files if f in test]


def check_fraction(what: str, fraction: float) -> float:
    """``fraction`` as a float in (0, 1), else a one-line error naming the dataset ``what``."""
    if not 0 < float(fraction) < 1:
        raise UserError(f"{what}: test_fraction must be between 0 and 1, got {fraction}")
    return float(fraction)
