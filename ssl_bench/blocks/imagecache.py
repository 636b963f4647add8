"""Decode image files once into a compact uint8 cache, then read batches from it.

Dataset plugins that read image files (JPEG, PNG, ...) call :func:`load` with the list of
files. The first call decodes them in parallel (a thread pool: Pillow releases the GIL while
it decodes and resizes) at the protocol's resolution and writes one ``.npy`` array
``[N, 3, R, R]`` uint8; later calls memory-map it, so a run starts in a fraction of a second
and training reads pixels without decoding anything.

The cache key is a hash of the dataset name, the resolution and, for every file, its path,
size and modification time: changing, adding or removing a file rebuilds the cache. The
folder is ``$SSL_BENCH_CACHE`` (default ``~/.cache/ssl-bench``); deleting it is always safe.

Resizing: the shorter side is resized to ``R`` (area-averaging when shrinking) and the centre
``R x R`` square is kept, so non-square photos are not distorted.

Corrupt files: a file that cannot be decoded is skipped and counted; :func:`load` warns once
with the count and the first such file, and returns which files were kept, so a dataset with
a few broken files still loads (the Tiny ImageNet and DomainNet releases have had such files).
Pass ``on_corrupt="error"`` to fail instead. If every file is corrupt, loading fails.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm  # type: ignore[import-untyped]

from ssl_bench.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ssl_bench.api import ImageSet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def cache_dir() -> Path:
    """The cache folder: ``$SSL_BENCH_CACHE`` or ``~/.cache/ssl-bench``."""
    return Path(os.environ.get("SSL_BENCH_CACHE") or Path.home() / ".cache" / "ssl-bench").expanduser()


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def decode(path: Path | str, resolution: int) -> np.ndarray:
    """One file as uint8 ``[3, R, R]``: shorter side resized to ``R``, centre crop. Raises on corrupt files."""
    with Image.open(path) as opened:
        opened.draft("RGB", (resolution, resolution))  # JPEG: let the decoder downscale by 1/2, 1/4, 1/8 for free
        im: Image.Image = opened.convert("RGB")
        w, h = im.size
        scale = resolution / min(w, h)
        nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=None if scale >= 1 else 2.0)
        left, top = (nw - resolution) // 2, (nh - resolution) // 2
        if (nw, nh) != (resolution, resolution):
            im = im.crop((left, top, left + resolution, top + resolution))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def _key(name: str, resolution: int, files: list[Path]) -> str:
    h = hashlib.sha256(f"{FORMAT_VERSION}\0{name}\0{resolution}\0".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def load(
    name: str, files: list[Path], resolution: int, *, on_corrupt: str = "skip", progress: bool = True, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, kept)``: uint8 ``[M, 3, R, R]`` (memory-mapped) and the indices into ``files`` kept.

    ``name`` identifies the dataset and split (e.g. ``"tiny-imagenet/train"``); with the
    resolution and the files' paths, sizes and mtimes it forms the cache key.
    """
    if on_corrupt not in ("skip", "error"):
        raise UserError(f"on_corrupt must be 'skip' or 'error', not '{on_corrupt}'")
    files = [Path(f) for f in files]
    if not files:
        raise UserError(f"{name}: no image files to load")
    key = _key(name, resolution, files)
    folder = cache_dir()
    stem = folder / f"{_safe(name)}-{resolution}px-{key}"
    npy, meta_path = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if meta_path.exists() and npy.exists():
        meta = json.loads(meta_path.read_text())
        kept = np.asarray(meta["kept"], dtype=np.int64)
        images = np.load(npy, mmap_mode="c")  # copy-on-write: writable view, the file is never changed
        if len(images) == len(kept):
            _report(name, files, meta["corrupt"], on_corrupt)
            log.debug("%s: %d images from cache %s", name, len(images), npy)
            return images, kept
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"cannot create the image cache folder {folder}: {err.strerror}; set SSL_BENCH_CACHE to a writable folder"
        ) from None
    return _build(name, files, resolution, npy, meta_path, on_corrupt, progress, workers)


def _build(
    name: str,
    files: list[Path],
    resolution: int,
    npy: Path,
    meta_path: Path,
    on_corrupt: str,
    progress: bool,
    workers: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, resolution, resolution))
    ok = np.zeros(len(files), dtype=bool)
    corrupt: list[int] = []

    def work(i: int) -> tuple[int, Exception | None]:
        try:
            out[i] = decode(files[i], resolution)  # noqa: F821 - `del out` below runs after every work() has returned
            return i, None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:  # what Pillow raises on bad data
            return i, err

    workers = workers or min(32, (os.cpu_count() or 1) + 2)
    chunk = 256
    try:
        with (
            ThreadPoolExecutor(workers) as pool,
            tqdm(
                total=len(files), desc=f"decoding {name}", unit="img", disable=None if progress else True, dynamic_ncols=True
            ) as bar,
        ):
            for i, err in pool.map(work, range(len(files)), chunksize=chunk):
                if err is None:
                    ok[i] = True
                else:
                    if on_corrupt == "error":
                        raise UserError(f"{name}: cannot decode {files[i]}: {err}; remove or replace the file")
                    corrupt.append(i)
                bar.update(1)
        kept = np.flatnonzero(ok)
        if len(kept) == 0:
            raise UserError(f"{name}: none of the {len(files)} image files could be decoded (first: {files[0]})")
        out.flush()
        del out
        if len(kept) < len(files):  # compact: drop the rows of corrupt files
            full = np.load(tmp, mmap_mode="r")
            tmp2 = tmp.with_name(tmp.name + "2")
            dense = np.lib.format.open_memmap(tmp2, mode="w+", dtype=np.uint8, shape=(len(kept), 3, resolution, resolution))
            dense[:] = full[kept]
            dense.flush()
            del dense, full
            os.replace(tmp2, tmp)
        os.replace(tmp, npy)
        corrupt_names = [str(files[i]) for i in corrupt]
        meta_tmp = meta_path.with_name(f".{meta_path.name}.{os.getpid()}.tmp")
        meta_tmp.write_text(
            json.dumps(
                {"name": name, "resolution": resolution, "n_files": len(files), "kept": kept.tolist(), "corrupt": corrupt_names}
            )
        )
        os.replace(meta_tmp, meta_path)  # the metadata file marks the cache entry as complete
    finally:
        if tmp.exists():
            tmp.unlink()
    _report(name, files, corrupt_names, on_corrupt)
    return np.load(npy, mmap_mode="c"), kept


def _report(name: str, files: list[Path], corrupt: list[str], on_corrupt: str) -> None:
    if not corrupt:
        return
    if on_corrupt == "error":
        raise UserError(f"{name}: cannot decode {corrupt[0]} ({len(corrupt)} corrupt files); remove or replace them")
    warnings.warn(
        f"{name}: skipped {len(corrupt)} of {len(files)} image files that could not be decoded (first: {corrupt[0]})",
        stacklevel=3,
    )


def image_set(
    name: str,
    files: list[Path],
    labels: ArrayLike,
    domains: ArrayLike,
    root: Path,
    resolution: int,
    *,
    on_corrupt: str = "skip",
    progress: bool = True,
) -> ImageSet:
    """An :class:`ssl_bench.api.ImageSet` of ``files`` through the cache; ids are paths relative to ``root``.

    Samples whose file is corrupt are dropped (see the module docstring) together with their labels.
    """
    import torch

    from ssl_bench.api import ImageSet

    images, kept = load(name, files, resolution, on_corrupt=on_corrupt, progress=progress)
    labels, domains = np.asarray(labels, dtype=np.int64)[kept], np.asarray(domains, dtype=np.int64)[kept]
    ids = [Path(files[i]).relative_to(root).as_posix() for i in kept]
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), torch.from_numpy(domains), ids)


def resize(images: ArrayLike | torch.Tensor, resolution: int, batch: int = 2048) -> torch.Tensor:
    """uint8 ``[N, 3, H, W]`` (numpy or torch) resized to ``R x R`` (bilinear, antialiased) as a uint8 tensor.

    For datasets that ship decoded arrays (CIFAR, STL-10): no cache needed, resizing in memory is fast.
    """
    import torch
    import torch.nn.functional as F

    images = torch.as_tensor(np.ascontiguousarray(images))
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = torch.empty(len(images), images.shape[1], resolution, resolution, dtype=torch.uint8)
    for s in range(0, len(images), batch):
        x = F.interpolate(
            images[s : s + batch].float(), size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
        out[s : s + batch] = x.round().clamp(0, 255).to(torch.uint8)
    return out
