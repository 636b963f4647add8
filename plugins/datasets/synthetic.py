"""The built-in generated dataset: procedurally drawn shapes in several visual domains.

Classes are shapes grouped into super-classes (polygons, stars, flowers, frames); every
class is drawn in every domain (photo, sketch, painting, clipart, quickdraw, infograph) at a
random position, scale, rotation and colour, so neither the class nor the domain can be
read off a single pixel statistic. Generation is vectorised and deterministic by seed:
the same seed gives the same images bit for bit.
"""

import math
import zlib

import torch
import torch.nn.functional as F

from ssl_bench import hookimpl
from ssl_bench.api import Dataset, ImageSet
from ssl_bench.errors import UserError

__version__ = "0.1.0"
__license__ = "Apache-2.0"
__paper__ = None

SUPERCLASSES = {
    "polygon": [("triangle", 3), ("square", 4), ("pentagon", 5), ("hexagon", 6), ("octagon", 8)],
    "star": [("star3", 3), ("star4", 4), ("star5", 5), ("star6", 6), ("star8", 8)],
    "flower": [("flower2", 2), ("flower3", 3), ("flower4", 4), ("flower5", 5), ("flower6", 6)],
    "frame": [("ring", 0), ("frame3", 3), ("frame4", 4), ("frame5", 5), ("frame6", 6)],
}
DOMAINS = ["photo", "sketch", "painting", "clipart", "quickdraw", "infograph"]


def _radius(family: str, k: int, theta: torch.Tensor) -> torch.Tensor:
    """Boundary radius of a unit shape at angle ``theta`` (relative to its rotation)."""
    if k == 0:
        return torch.ones_like(theta)
    sector = 2 * math.pi / k
    t = torch.remainder(theta, sector) - sector / 2
    if family in ("polygon", "frame"):
        return math.cos(math.pi / k) / torch.cos(t)
    if family == "star":
        return 1.0 - 0.55 * (1 - (2 * t.abs() / sector))
    return 0.62 + 0.38 * torch.cos(k * theta)  # flower: smooth lobes


def _smooth_noise(n, size, cells, gen):
    """Low-frequency colour noise [n, 3, size, size] in [0, 1]."""
    coarse = torch.rand(n, 3, cells, cells, generator=gen)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def _colours(n, gen, low=0.0, high=1.0):
    return torch.rand(n, 3, 1, 1, generator=gen) * (high - low) + low


def draw(family: str, k: int, domain: str, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Draw ``n`` images of one shape class in one domain: uint8 [n, 3, size, size]."""
    r = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    small = domain == "infograph"
    scale = (0.25 + 0.15 * r(n) if small else 0.45 + 0.4 * r(n)).view(n, 1, 1)
    cx = ((r(n) - 0.5) * (0.9 if small else 0.5)).view(n, 1, 1)
    cy = ((r(n) - 0.5) * (0.9 if small else 0.5)).view(n, 1, 1)
    rot = (r(n) * 2 * math.pi).view(n, 1, 1)
    aspect = (0.8 + 0.4 * r(n)).view(n, 1, 1)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    dx, dy = (u - cx) / (scale * aspect), (v - cy) / scale
    rho = torch.sqrt(dx * dx + dy * dy)
    theta = torch.atan2(dy, dx) - rot
    if domain in ("sketch", "quickdraw"):  # hand-drawn wobble of the outline
        wobble = 0.04 if domain == "sketch" else 0.09
        rho = rho * (1 + wobble * torch.sin(3 * theta + 6.28 * r(n).view(n, 1, 1)))
    dist = rho - _radius(family, k, theta)  # < 0 inside, in shape units
    px = 2.0 / (size * scale)  # one pixel in shape units
    inside = torch.sigmoid(-dist / px)
    if family == "frame":
        inside = inside * torch.sigmoid((dist + 0.35) / px)
    line_w = {"sketch": 1.0, "quickdraw": 0.7, "clipart": 1.2}.get(domain, 1.0)
    edge = torch.exp(-((dist / (line_w * px)) ** 2))
    if family == "frame":
        edge = torch.maximum(edge, torch.exp(-(((dist + 0.35) / (line_w * px)) ** 2)))
    inside, edge = inside.unsqueeze(1), edge.unsqueeze(1)

    if domain == "photo":
        fg = _colours(n, gen) * (0.7 + 0.3 * _smooth_noise(n, size, 3, gen))
        bg = _colours(n, gen) * 0.6 + 0.4 * _smooth_noise(n, size, 6, gen) * r(n, 1, 1, 1)
        img = bg * (1 - inside) + fg * inside + 0.05 * torch.randn(n, 3, size, size, generator=gen)
    elif domain == "sketch":
        ink = _colours(n, gen, 0.0, 0.35)
        paper = 0.85 + 0.15 * r(n, 1, 1, 1)
        img = paper * (1 - edge) + ink * edge
    elif domain == "painting":
        fg = 0.65 * _colours(n, gen) + 0.35 * _smooth_noise(n, size, 4, gen)
        bg = 0.65 * _colours(n, gen) + 0.35 * _smooth_noise(n, size, 4, gen)
        img = bg * (1 - inside) + fg * inside
        img = F.avg_pool2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), 3, 1)
    elif domain == "clipart":
        fg, bg = _colours(n, gen, 0.3, 1.0), _colours(n, gen, 0.0, 1.0)
        img = (bg * (1 - inside) + fg * inside) * (1 - edge) + 0.05 * edge
    elif domain == "quickdraw":
        img = 1 - edge.expand(n, 3, size, size)
    elif domain == "infograph":
        bg = _colours(n, gen, 0.5, 1.0)
        bars = (torch.rand(n, 1, 1, size, generator=gen) < 0.25).float() * (
            torch.rand(n, 1, size, 1, generator=gen) < 0.3
        ).float()
        img = bg * (1 - 0.6 * bars)
        fg = _colours(n, gen)
        img = img * (1 - inside) + fg * inside
    else:  # pragma: no cover - guarded by the factory
        raise ValueError(domain)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _split(classes, domains, per_cd, size, seed, split_id):
    images, labels, doms = [], [], []
    for ci, (family, _name, k) in enumerate(classes):
        for di, domain in enumerate(domains):
            gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{split_id}/{classes[ci][1]}/{domain}".encode()))
            images.append(draw(family, k, domain, per_cd, size, gen))
            labels.append(torch.full((per_cd,), ci, dtype=torch.int64))
            doms.append(torch.full((per_cd,), di, dtype=torch.int64))
    ids = [
        f"{split_id}/{classes[c][1]}/{domains[d]}/{i}"
        for c in range(len(classes))
        for d in range(len(domains))
        for i in range(per_cd)
    ]
    return ImageSet(torch.cat(images), torch.cat(labels), torch.cat(doms), ids)


def synthetic(
    root=None,
    resolution=32,
    seed=0,
    download=False,
    n_superclasses=4,
    classes_per_superclass=5,
    n_domains=4,
    train_per_class_domain=100,
    test_per_class_domain=25,
) -> Dataset:
    """Generated shapes: ``n_superclasses`` x ``classes_per_superclass`` classes in ``n_domains`` domains."""
    if not 1 <= n_superclasses <= len(SUPERCLASSES) or not 1 <= classes_per_superclass <= 5:
        raise UserError(f"synthetic: n_superclasses must be 1..{len(SUPERCLASSES)} and classes_per_superclass 1..5")
    if not 1 <= n_domains <= len(DOMAINS):
        raise UserError(f"synthetic: n_domains must be 1..{len(DOMAINS)}")
    classes = [
        (family, name, k)
        for family, members in list(SUPERCLASSES.items())[:n_superclasses]
        for name, k in members[:classes_per_superclass]
    ]
    domains = DOMAINS[:n_domains]
    train = _split(classes, domains, train_per_class_domain, resolution, seed, "train")
    test = _split(classes, domains, test_per_class_domain, resolution, seed, "test")
    hierarchy = {name: [family, "shape"] for family, name, _ in classes}
    return Dataset("synthetic", train, test, classes=[c[1] for c in classes], domains=domains, hierarchy=hierarchy)


@hookimpl
def ssl_bench_datasets():
    return {"synthetic": synthetic}
