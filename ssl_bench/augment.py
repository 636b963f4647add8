"""Batched SSL augmentations on tensors: every op works on a whole uint8/float batch at once.

Each sample gets its own random parameters, drawn from a ``torch.Generator`` so runs are
reproducible. The ops run on whatever device the batch is on (the GPU when there is one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ssl_bench.errors import UserError

MEAN = torch.tensor([0.5, 0.5, 0.5])
STD = torch.tensor([0.25, 0.25, 0.25])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float in [0, 1]."""
    return images.float().div_(255.0)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> the network's input scale."""
    return (x - MEAN.to(x.device).view(1, -1, 1, 1)) / STD.to(x.device).view(1, -1, 1, 1)


def prepare(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 batch -> normalised float batch, resized to ``size`` (evaluation input)."""
    x = to_float(images)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalize(x)


def _uniform(n, low, high, gen, device):
    return torch.rand(n, generator=gen, device=device) * (high - low) + low


def _coin(n, p, gen, device):
    return torch.rand(n, generator=gen, device=device) < p


def random_resized_crop(x, size, scale, ratio, flip_p, gen):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize to ``size``, maybe flip."""
    n, device = x.shape[0], x.device
    area = _uniform(n, scale[0], scale[1], gen, device)
    log_r = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), gen, device)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen, device=device) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen, device=device) * 2 - 1) * (1 - h)
    flip = torch.where(_coin(n, flip_p, gen, device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _gray(x):
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def color_jitter(x, brightness, contrast, saturation, hue, p, gen):
    """Brightness, contrast, saturation and hue jitter, applied together to a random ``p`` of the batch."""
    n, device = x.shape[0], x.device
    apply = _coin(n, p, gen, device).view(n, 1, 1, 1)
    out = x
    if brightness:
        b = _uniform(n, 1 - brightness, 1 + brightness, gen, device).view(n, 1, 1, 1)
        out = out * b
    if contrast:
        c = _uniform(n, 1 - contrast, 1 + contrast, gen, device).view(n, 1, 1, 1)
        m = _gray(out).mean(dim=(1, 2, 3), keepdim=True)
        out = (out - m) * c + m
    if saturation:
        s = _uniform(n, 1 - saturation, 1 + saturation, gen, device).view(n, 1, 1, 1)
        g = _gray(out)
        out = (out - g) * s + g
    if hue:
        # rotate the chroma plane of YIQ by an angle of hue * 2pi
        ang = _uniform(n, -hue, hue, gen, device) * 2 * math.pi
        yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], device=device)
        rgb = torch.linalg.inv(yiq)
        cos, sin = torch.cos(ang), torch.sin(ang)
        rot = torch.zeros(n, 3, 3, device=device)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
        m = rgb @ rot @ yiq  # [n, 3, 3]
        out = torch.einsum("nij,njhw->nihw", m, out)
    out = out.clamp(0, 1)
    return torch.where(apply, out, x)


def random_grayscale(x, p, gen):
    apply = _coin(x.shape[0], p, gen, x.device).view(-1, 1, 1, 1)
    return torch.where(apply, _gray(x).expand_as(x), x)


def gaussian_blur(x, sigma, p, gen, kernel_frac=0.1):
    """Blur a random ``p`` of the batch with a per-sample sigma in ``sigma`` (separable, grouped conv)."""
    n, c, hgt, wid = x.shape
    apply = _coin(n, p, gen, x.device)
    if not bool(apply.any()):
        return x
    k = max(3, int(kernel_frac * hgt) // 2 * 2 + 1)
    s = _uniform(n, sigma[0], sigma[1], gen, x.device)
    t = torch.arange(k, device=x.device, dtype=x.dtype) - k // 2
    kern = torch.exp(-(t.view(1, -1) ** 2) / (2 * s.view(-1, 1) ** 2))
    kern = kern / kern.sum(dim=1, keepdim=True)  # [n, k]
    kern = kern.repeat_interleave(c, dim=0)  # [n*c, k]
    y = x.reshape(1, n * c, hgt, wid)
    y = F.pad(y, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(y, kern.view(n * c, 1, k, 1), groups=n * c)
    return torch.where(apply.view(n, 1, 1, 1), y.view(n, c, hgt, wid), x)


def solarize(x, p, gen, threshold=0.5):
    apply = _coin(x.shape[0], p, gen, x.device).view(-1, 1, 1, 1)
    return torch.where(apply & (x >= threshold), 1 - x, x)


@dataclass(frozen=True)
class ViewSpec:
    """Parameters of one augmented view (the defaults are SimCLR's)."""

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0

    def apply(self, x: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
        x = random_resized_crop(x, size, self.scale, self.ratio, self.flip_p, gen)
        x = color_jitter(x, *self.jitter, p=self.jitter_p, gen=gen)
        x = random_grayscale(x, self.gray_p, gen)
        if self.blur_p:
            x = gaussian_blur(x, self.blur_sigma, self.blur_p, gen)
        if self.solarize_p:
            x = solarize(x, self.solarize_p, gen)
        return x


#: named view recipes: a tuple of ViewSpecs, used cyclically for as many views as a method wants
RECIPES: dict[str, tuple[ViewSpec, ...]] = {
    "simclr": (ViewSpec(),),
    "byol": (ViewSpec(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=1.0),
             ViewSpec(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.1, solarize_p=0.2)),
    "none": (ViewSpec(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter=(0, 0, 0, 0), jitter_p=0.0, gray_p=0.0),),
}


class Augment:
    """Makes ``n_views`` augmented, normalised views of a uint8 batch."""

    def __init__(self, recipe: str = "simclr", **options):
        if recipe not in RECIPES:
            raise UserError(f"unknown augmentation recipe '{recipe}'; known: {', '.join(RECIPES)}")
        try:
            self.specs = tuple(replace(s, **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
                               for s in RECIPES[recipe])
        except TypeError as err:
            raise UserError(f"augment.options: {err}") from None

    def __call__(self, images: torch.Tensor, n_views: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
        x = to_float(images)
        return [normalize(self.specs[i % len(self.specs)].apply(x, size, gen)) for i in range(n_views)]
