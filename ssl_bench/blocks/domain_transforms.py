"""Visual domains made from image transforms, for datasets that have none (Tiny ImageNet, CIFAR, ...).

DomainNet's domains (real, sketch, clipart, ...) are different renderings of the same
classes. Where a dataset has one rendering only, :func:`make_domains` builds a
domain-incremental benchmark from it: every image is assigned to one domain and rendered
by that domain's transform. The transforms act on uint8 batches ``[N, 3, H, W]`` and return
the same shape and dtype:

- ``photo``: the image unchanged;
- ``grayscale``: ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (rounded) in all three
  channels;
- ``edges``: an edge sketch, pencil on paper: the luma is smoothed (3x3 binomial), its Sobel gradient
  magnitude taken (replicate padding), and a pixel is drawn black where the magnitude is at
  least the larger of :data:`EDGE_FLOOR` and the image's :data:`EDGE_QUANTILE` quantile,
  white elsewhere; so at most ``1 - EDGE_QUANTILE`` of the pixels are black (up to ties), and
  an image without edges is white;
- ``cartoon``: flat colours: an edge-preserving ("bilateral-ish") smoothing, a 5x5 window
  weighted by spatial distance (sigma :data:`CARTOON_SIGMA_SPACE` px) and colour difference
  (sigma :data:`CARTOON_SIGMA_COLOR` grey levels), then posterised to :data:`CARTOON_LEVELS`
  evenly spaced levels per channel (0 and 255 included).

Assignment (:func:`assign`): within every class the images are shuffled by a generator seeded
with the dataset's seed and dealt to the domains in turn, so each domain gets an equal share of
each class (up to one image) and of the whole split, and the same seed always gives the same
assignment. The train and test splits are dealt with two generators derived from that seed.
Rendering happens once, at the protocol's resolution; the result is cached on disk.

Dataset plugins offer it as the option ``transform_domains`` (:func:`with_domains`): ``true`` for the four
domains above, or a list of their names. The edge domain is called ``edges``, not ``sketch``, so
that the ``domain`` stream, which puts DomainNet's names first, keeps this module's order.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from ssl_bench.api import Dataset, ImageSet
from ssl_bench.blocks import imagecache
from ssl_bench.errors import UserError

log = logging.getLogger(__name__)

DOMAINS = ("photo", "grayscale", "edges", "cartoon")
VERSION = 1  #: bump when a transform changes: part of the cache key
EDGE_FLOOR = 40.0  #: minimum Sobel magnitude of an edge (a step of 10 grey levels)
EDGE_QUANTILE = 0.85  #: at most 15% of an image's pixels are drawn as edges
CARTOON_LEVELS = 4
CARTOON_SIGMA_SPACE = 2.0
CARTOON_SIGMA_COLOR = 30.0
CHUNK = 256  #: images transformed at a time (bounds memory)


def photo(images: torch.Tensor) -> torch.Tensor:
    return images.clone()


def _luma(images: torch.Tensor) -> torch.Tensor:
    """float [N, 1, H, W] in 0..255."""
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * w).sum(1, keepdim=True)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    return _luma(images).round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()


def _conv3(x: torch.Tensor, kernel: list[list[float]]) -> torch.Tensor:
    k = torch.tensor(kernel, dtype=x.dtype).view(1, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def sobel_magnitude(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the smoothed luma, float [N, 1, H, W]."""
    y = _conv3(_luma(images), [[1 / 16, 2 / 16, 1 / 16], [2 / 16, 4 / 16, 2 / 16], [1 / 16, 2 / 16, 1 / 16]])
    gx = _conv3(y, [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gy = _conv3(y, [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])
    return torch.sqrt(gx**2 + gy**2)


def edges(images: torch.Tensor) -> torch.Tensor:
    mag = sobel_magnitude(images)
    q = torch.quantile(mag.flatten(1), EDGE_QUANTILE, dim=1).view(-1, 1, 1, 1)
    edge = mag >= torch.clamp(q, min=EDGE_FLOOR)
    out = torch.where(edge, 0, 255).to(torch.uint8)
    return out.expand(-1, 3, -1, -1).contiguous()


def smooth(images: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Edge-preserving smoothing: a (2r+1)^2 window weighted by distance and colour difference, float 0..255."""
    x = images.float()
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    h, w = x.shape[-2:]
    total, norm = torch.zeros_like(x), torch.zeros_like(x[:, :1])
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = padded[..., radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            diff = ((shifted - x) ** 2).sum(1, keepdim=True)
            weight = np.exp(-(dy * dy + dx * dx) / (2 * CARTOON_SIGMA_SPACE**2)) * torch.exp(-diff / (2 * CARTOON_SIGMA_COLOR**2))
            total += weight * shifted
            norm += weight
    return total / norm


def posterise(x: torch.Tensor, levels: int = CARTOON_LEVELS) -> torch.Tensor:
    """Values 0..255 to ``levels`` evenly spaced uint8 levels (0 and 255 included)."""
    step = 255 / (levels - 1)
    return (torch.round(x.clamp(0, 255) / step) * step).round().to(torch.uint8)


def cartoon(images: torch.Tensor) -> torch.Tensor:
    return posterise(smooth(images))


TRANSFORMS = {"photo": photo, "grayscale": grayscale, "edges": edges, "cartoon": cartoon}


def assign(labels: ArrayLike, seed: int, n_domains: int = len(DOMAINS)) -> np.ndarray:
    """Domain index of every image: balanced within each class and overall, fixed by ``seed``."""
    labels = np.asarray(labels)
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, shuffled within
    out = np.empty(len(labels), dtype=np.int64)
    out[order] = np.arange(len(labels)) % n_domains
    return out


def apply(images: torch.Tensor, domains: ArrayLike, names: Sequence[str] = DOMAINS) -> torch.Tensor:
    """A new uint8 tensor: image i rendered by the transform of domain ``names[domains[i]]``."""
    index = torch.as_tensor(np.asarray(domains), dtype=torch.int64)
    out = torch.empty(images.shape, dtype=torch.uint8)
    for d, name in enumerate(names):
        idx = torch.nonzero(index == d).flatten()
        for start in range(0, len(idx), CHUNK):
            part = idx[start : start + CHUNK]
            out[part] = TRANSFORMS[name](torch.as_tensor(images[part.numpy()]))
    return out


def make_domains(
    name: str, images: torch.Tensor, labels: ArrayLike, seed: int, split: int, names: Sequence[str] = DOMAINS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images rendered in their assigned domains, and the domain indices (``split``: 0 train, 1 test).

    The rendered images are cached next to the decoded ones (:func:`ssl_bench.blocks.imagecache.cache_dir`),
    keyed by ``name``, the source pixels, the seed, the split, the domains and :data:`VERSION`.
    """
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise UserError(f"unknown domain transform '{unknown[0]}'; known: {', '.join(TRANSFORMS)}")
    domains = assign(labels, int(np.random.SeedSequence([seed, split]).generate_state(1)[0]), len(names))
    source = np.ascontiguousarray(np.asarray(images))
    h = hashlib.sha256(f"{VERSION}\0{name}\0{seed}\0{split}\0{','.join(names)}\0{source.shape}\0".encode())
    for start in range(0, len(source), 4096):
        h.update(source[start : start + 4096].tobytes())
    folder = imagecache.cache_dir()
    npy = folder / f"{''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)}-domains-{h.hexdigest()[:20]}.npy"
    if npy.exists():
        return torch.from_numpy(np.load(npy, mmap_mode="c")), torch.from_numpy(domains)
    out = apply(images, domains, names)
    tmp = npy.with_name(f".{npy.name}.{os.getpid()}.tmp")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.save(fh, out.numpy())
        os.replace(tmp, npy)
    except OSError as err:
        log.warning("could not cache the domain images in %s (%s); they are rebuilt next time", folder, err)
    finally:
        tmp.unlink(missing_ok=True)
    return out, torch.from_numpy(domains)


def with_domains(dataset: Dataset, seed: int, domains: bool | str | Sequence[str] = True) -> Dataset:
    """``dataset`` with every image rendered in a domain assigned by ``seed`` (the dataset option ``transform_domains``).

    ``domains``: ``True`` for :data:`DOMAINS`, or a list of transform names (at least two).
    Class labels and sample ids are kept; ``Dataset.domains`` becomes the list of names.
    """
    if len(dataset.domains) > 1:
        raise UserError(
            f"{dataset.name}: option transform_domains is for data without domains; it has {', '.join(dataset.domains)}"
        )
    names = list(DOMAINS) if domains is True else domains
    if isinstance(names, str):
        names = [d.strip() for d in names.split(",") if d.strip()]
    if not isinstance(names, (list, tuple)) or len(names) < 2 or len(set(names)) != len(names):
        raise UserError(
            f"{dataset.name}: option transform_domains must be true or a list of at least two different names of "
            f"{', '.join(TRANSFORMS)}, got {domains!r}"
        )
    sets = []
    for split, part in enumerate((dataset.train, dataset.test)):
        tag = f"{dataset.name}-{'train' if split == 0 else 'test'}"
        images, assigned = make_domains(tag, part.images, part.labels.numpy(), seed, split, tuple(names))
        sets.append(ImageSet(images, part.labels, assigned, part.ids))
    return Dataset(
        dataset.name,
        sets[0],
        sets[1],
        classes=dataset.classes,
        domains=list(names),
        class_names=dataset.class_names,
        hierarchy=dataset.hierarchy,
    )
