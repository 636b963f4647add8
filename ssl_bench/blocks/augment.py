"""Batched SSL augmentations on tensors: every op works on a whole float batch at once.

Each sample gets its own random parameters (crop, flip, jitter factors and their order, grayscale,
blur sigma, solarisation), drawn from a ``torch.Generator`` so runs are reproducible. The ops follow
torchvision's definitions (``transforms.v2``: RandomResizedCrop, RandomHorizontalFlip, ColorJitter in a
random order, RandomGrayscale, GaussianBlur, RandomSolarize), so a view here is distributed like the
same view made image by image with torchvision, and run on whatever device the batch is on.
On the CPU an op that applies to a random subset of the batch computes only that subset; on a GPU (any device
but the CPU) it computes the whole batch and selects, so that no step waits for the host. The constant tensors
(normalisation, hue offsets) are copied to a device once (:func:`on_device`), not at every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from ssl_bench.errors import UserError

MEAN = torch.tensor([0.5, 0.5, 0.5])
STD = torch.tensor([0.25, 0.25, 0.25])
#: ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
LUMA = (0.2989, 0.587, 0.114)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> float in [0, 1]."""
    return images.float().div_(255.0)


_ON_DEVICE: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}


def on_device(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The constant ``t`` on ``like``'s device in ``t``'s dtype: copied there once per device, from pinned memory so
    that not even that first step waits for the copy (a copy at every call would make every step wait on a GPU);
    ``t`` itself on the CPU."""
    if like.device.type == "cpu":
        return t
    key = (id(t), like.device, t.dtype)
    out = _ON_DEVICE.get(key)
    if out is None:
        with torch.inference_mode(False), torch.no_grad():  # a plain tensor, usable by autograd later
            out = _ON_DEVICE[key] = t.pin_memory().to(like.device, non_blocking=True)
    return out


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> the network's input scale."""
    return (x - on_device(MEAN, x).view(1, -1, 1, 1)) / on_device(STD, x).view(1, -1, 1, 1)


def prepare(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 batch -> normalised float batch, resized to ``size`` (evaluation input)."""
    x = to_float(images)
    if size is not None and x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return normalize(x)


def _uniform(
    shape: int | tuple[int, ...], low: float, high: float, gen: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device) * (high - low) + low


def _coin(n: int, p: float, gen: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) < p


def _apply(x: torch.Tensor, mask: torch.Tensor, fn: Callable[..., torch.Tensor], *params: torch.Tensor) -> torch.Tensor:
    """``fn(x, *params)`` for the samples where ``mask`` holds; the others are returned unchanged."""
    if x.device.type != "cpu":  # compute all, select: no host synchronisation
        return torch.where(mask.view(-1, 1, 1, 1), fn(x, *params), x)
    idx = mask.nonzero().squeeze(1)
    if len(idx) == 0:
        return x
    if len(idx) == len(x):
        return fn(x, *params)
    return x.index_copy(0, idx, fn(x[idx], *(p[idx] for p in params)))


# ----------------------------------------------------------------------------- geometry
def crop_params(
    n: int, scale: Sequence[float], ratio: Sequence[float], gen: torch.Generator | None, device: torch.device, tries: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample crop width, height (fractions of the image side) and centre (in [-1, 1] coordinates).

    As torchvision's RandomResizedCrop: area fraction uniform in ``scale``, log aspect ratio uniform
    in ``log(ratio)``, up to ``tries`` draws until the crop fits the image, else the whole image
    (torchvision's fallback for a square image); the position is uniform over where it fits.
    """
    area = _uniform((n, tries), scale[0], scale[1], gen, device)
    r = torch.exp(_uniform((n, tries), math.log(ratio[0]), math.log(ratio[1]), gen, device))
    w, h = torch.sqrt(area * r), torch.sqrt(area / r)
    fits = (w <= 1) & (h <= 1)
    first = fits.float().argmax(dim=1, keepdim=True)  # first draw that fits (0 when none)
    ok = fits.any(dim=1)
    w = torch.where(ok, w.gather(1, first).squeeze(1), torch.ones_like(ok, dtype=w.dtype))
    h = torch.where(ok, h.gather(1, first).squeeze(1), torch.ones_like(ok, dtype=h.dtype))
    cx = (torch.rand(n, generator=gen, device=device) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen, device=device) * 2 - 1) * (1 - h)
    return w, h, cx, cy


def random_resized_crop(
    x: torch.Tensor, size: int, scale: Sequence[float], ratio: Sequence[float], flip_p: float, gen: torch.Generator | None
) -> torch.Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize to ``size``, maybe flip.

    Bilinear sampling; when the crop is larger than ``size`` pixels it is supersampled
    (``ceil(H / size)`` samples per output pixel and side, averaged) so that downscaling does not alias.
    """
    n, c, hgt, _ = x.shape
    device = x.device
    w, h, cx, cy = crop_params(n, scale, ratio, gen, device)
    flip = torch.where(_coin(n, flip_p, gen, device), -1.0, 1.0)
    theta = torch.zeros(n, 2, 3, device=device)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    ss = max(1, math.ceil(hgt / size))
    grid = F.affine_grid(theta, [n, c, size * ss, size * ss], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return F.avg_pool2d(out, ss) if ss > 1 else out


# ----------------------------------------------------------------------------- colour
def grayscale(x: torch.Tensor) -> torch.Tensor:
    return LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]


def _per_sample(f: torch.Tensor) -> torch.Tensor:
    return f.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _per_sample(f)).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_sample(f)
    m = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return (x * f + m * (1 - f)).clamp_(0, 1)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    f = _per_sample(f)
    return (x * f + grayscale(x) * (1 - f)).clamp_(0, 1)


def adjust_hue(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Shift the HSV hue by ``f`` (a fraction of the colour circle, in [-0.5, 0.5]), as torchvision's adjust_hue.

    With v = max(r, g, b), c = v - min(r, g, b) and the hue h (in sixths of the circle), channel n of
    the result (n = 5, 3, 1 for R, G, B) is v - c * clamp(min(k, 4 - k), 0, 1), k = (n + h + 6 f) mod 6:
    saturation and value are unchanged, as in a shift through HSV, in fewer passes over the batch.
    """
    r, g, b = x.unbind(1)
    v = x.amax(1)
    c = v - x.amin(1)
    safe = c.clamp_min(1e-12)  # grey pixels (c = 0) come out as v whatever their hue
    h = torch.where(v == r, (g - b).div_(safe), torch.where(v == g, (b - r).div_(safe).add_(2), (r - g).div_(safe).add_(4)))
    h.add_(f.view(-1, 1, 1), alpha=6)
    k = (h.unsqueeze(1) + on_device(_HUE_OFFSETS, x).to(x.dtype)).remainder_(6)
    return v.unsqueeze(1) - c.unsqueeze(1) * torch.minimum(k, 4 - k).clamp_(0, 1)


_HUE_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)

COLOR_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def jitter_params(
    n: int, brightness: float, contrast: float, saturation: float, hue: float, gen: torch.Generator | None, device: torch.device
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-sample factors (as torchvision's ColorJitter: [max(0, 1-s), 1+s], hue in [-h, h]) and op order."""
    factors = [_uniform(n, max(0.0, 1 - s), 1 + s, gen, device) for s in (brightness, contrast, saturation)]
    factors.append(_uniform(n, -hue, hue, gen, device))
    order = torch.rand(n, 4, generator=gen, device=device).argsort(dim=1)
    return factors, order


def color_jitter(
    x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float, p: float, gen: torch.Generator | None
) -> torch.Tensor:
    """ColorJitter applied to a random ``p`` of the batch: the four ops in a random order per sample."""
    n, device = x.shape[0], x.device
    apply = _coin(n, p, gen, device)
    factors, order = jitter_params(n, brightness, contrast, saturation, hue, gen, device)
    active = (brightness, contrast, saturation, hue)
    if x.device.type != "cpu":  # no host synchronisation: every op on the whole batch in every slot, then select
        for slot in range(4):
            for k, op in enumerate(COLOR_OPS):
                if active[k]:
                    x = torch.where((apply & (order[:, slot] == k)).view(-1, 1, 1, 1), op(x, factors[k]), x)
        return x
    # CPU: group the samples by their order (24 groups at most) and run each op once per group
    code = (order * torch.tensor([64, 16, 4, 1], device=device)).sum(1).masked_fill(~apply, 256)
    sort = code.argsort()
    counts = torch.bincount(code, minlength=257).tolist()
    xs, fs = x[sort], [f[sort] for f in factors]
    start = 0
    for c, count in enumerate(counts[:256]):
        if count:
            seg, end = xs[start : start + count], start + count
            for k in (c >> 6, (c >> 4) & 3, (c >> 2) & 3, c & 3):
                if active[k]:
                    seg = COLOR_OPS[k](seg, fs[k][start:end])
            xs[start:end] = seg
            start = end
    out = torch.empty_like(x)
    out[sort] = xs
    return out


def random_grayscale(x: torch.Tensor, p: float, gen: torch.Generator | None) -> torch.Tensor:
    return _apply(x, _coin(x.shape[0], p, gen, x.device), lambda y: grayscale(y).expand_as(y).contiguous())


def gaussian_kernel(sigma: torch.Tensor, k: int) -> torch.Tensor:
    """[n, k] normalised 1-d Gaussian kernels, one per sigma (torchvision's definition)."""
    t = torch.arange(k, device=sigma.device, dtype=sigma.dtype) - (k - 1) / 2
    kern = torch.exp(-0.5 * (t.view(1, -1) / sigma.view(-1, 1)) ** 2)
    return kern / kern.sum(dim=1, keepdim=True)


def blur(x: torch.Tensor, sigma: torch.Tensor, k: int) -> torch.Tensor:
    """Separable Gaussian blur with per-sample ``sigma`` and odd kernel size ``k``, reflect padding."""
    n, c, hgt, wid = x.shape
    kern = gaussian_kernel(sigma.to(x.dtype), k).repeat_interleave(c, dim=0)  # [n*c, k]
    y = F.pad(x.reshape(1, n * c, hgt, wid), (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    y = F.conv2d(y, kern.view(n * c, 1, 1, k), groups=n * c)
    y = F.conv2d(y, kern.view(n * c, 1, k, 1), groups=n * c)
    return y.view(n, c, hgt, wid)


def blur_kernel_size(size: int, frac: float = 0.1) -> int:
    """SimCLR's kernel: about 10% of the image side, odd, at least 3."""
    return max(3, int(frac * size) // 2 * 2 + 1)


def gaussian_blur(
    x: torch.Tensor, sigma: Sequence[float], p: float, gen: torch.Generator | None, kernel_frac: float = 0.1
) -> torch.Tensor:
    """Blur a random ``p`` of the batch with a per-sample sigma uniform in ``sigma`` (pixels)."""
    n = x.shape[0]
    apply = _coin(n, p, gen, x.device)
    s = _uniform(n, sigma[0], sigma[1], gen, x.device)
    return _apply(x, apply, lambda y, s: blur(y, s, blur_kernel_size(x.shape[-1], kernel_frac)), s)


def solarize(x: torch.Tensor, p: float, gen: torch.Generator | None, threshold: float = 0.5) -> torch.Tensor:
    apply = _coin(x.shape[0], p, gen, x.device).view(-1, 1, 1, 1)
    return torch.where(apply & (x >= threshold), 1 - x, x)


@dataclass(frozen=True)
class ViewSpec:
    """Parameters of one augmented view (the defaults are SimCLR's for small images)."""

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
        if self.jitter_p:
            x = color_jitter(x, *self.jitter, p=self.jitter_p, gen=gen)
        if self.gray_p:
            x = random_grayscale(x, self.gray_p, gen)
        if self.blur_p:
            x = gaussian_blur(x, self.blur_sigma, self.blur_p, gen)
        if self.solarize_p:
            x = solarize(x, self.solarize_p, gen)
        return x


#: named view recipes: a tuple of ViewSpecs, used cyclically for as many views as a method wants
RECIPES: dict[str, tuple[ViewSpec, ...]] = {
    # SimCLR (Chen et al. 2020) for small images (their CIFAR-10 setting): colour strength 0.5, no blur
    "simclr": (ViewSpec(),),
    # SimCLR's ImageNet setting: colour strength 1, blur with probability 0.5
    "simclr-imagenet": (ViewSpec(jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5),),
    # BYOL (Grill et al. 2020, Table 6): asymmetric blur (1.0 / 0.1) and solarisation (0 / 0.2)
    "byol": (
        ViewSpec(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=1.0),
        ViewSpec(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.1, solarize_p=0.2),
    ),
    "none": (ViewSpec(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter=(0, 0, 0, 0), jitter_p=0.0, gray_p=0.0),),
    # MAE (He et al. 2022): random resized crop (scale 0.2-1) and flip only; the target is the image itself
    "mae": (ViewSpec(scale=(0.2, 1.0), jitter_p=0.0, gray_p=0.0),),
}

#: the colour part of a recipe's LOCAL crops (multi-crop, Caron et al. 2020); the crop scale comes from the
#: method's :class:`MultiCrop`. A recipe without an entry cannot make local crops.
LOCAL: dict[str, ViewSpec] = {
    "simclr": ViewSpec(),
    "simclr-imagenet": ViewSpec(jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5),
    # DINO's local crops with BYOL's colours: blur with probability 0.5, no solarisation
    "byol": ViewSpec(jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.5),
}


@dataclass(frozen=True)
class MultiCrop:
    """The views a method asks for: ``n_global`` crops at the training resolution and ``n_local`` smaller ones.

    Caron et al. (SwAV, NeurIPS 2020) and DINO (Caron et al., ICCV 2021): 2 global crops plus V local crops
    of a smaller side and a smaller area fraction. ``local_size`` is the local side as a fraction of the
    global side (DINO and SwAV: 96 / 224 = 0.43), rounded to a multiple of the backbone's patch size.
    ``global_scale`` / ``local_scale`` are the crop area ranges (None: the recipe's for global crops);
    ``recipe`` names the augmentation recipe (None: the protocol's).
    """

    n_global: int = 2
    n_local: int = 0
    local_size: float = 0.5
    global_scale: tuple[float, float] | None = None
    local_scale: tuple[float, float] = (0.05, 0.4)
    recipe: str | None = None

    def __post_init__(self) -> None:
        if self.n_global < 1 or self.n_local < 0 or not 0 < self.local_size <= 1:
            raise UserError(f"multi-crop: need n_global >= 1, n_local >= 0 and 0 < local_size <= 1, got {self}")
        for scale in (self.global_scale, self.local_scale):
            if scale is not None and not 0 < scale[0] <= scale[1] <= 1:
                raise UserError(f"multi-crop: a crop scale must be 0 < low <= high <= 1, got {scale}")

    @property
    def n_views(self) -> int:
        return self.n_global + self.n_local

    def local_px(self, size: int, multiple: int = 1) -> int:
        """Side of the local crops for global crops of ``size`` px: a multiple of ``multiple`` (a ViT's patch)."""
        return max(multiple, int(round(self.local_size * size / multiple)) * multiple)


class Augment:
    """Makes augmented, normalised views of a uint8 batch: ``n_views`` of the recipe, or a :class:`MultiCrop`."""

    def __init__(self, recipe: str = "simclr", **options: Any):
        if recipe not in RECIPES:
            raise UserError(f"unknown augmentation recipe '{recipe}'; known: {', '.join(RECIPES)}")
        self.recipe, self.options = recipe, options
        self.specs = self._specs(recipe)

    def _specs(self, recipe: str, local: bool = False) -> tuple[ViewSpec, ...]:
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
        if local:  # the protocol's options apply to local crops too, except the crop scale (the method's)
            options.pop("scale", None)
        try:
            return tuple(replace(s, **options) for s in ((LOCAL[recipe],) if local else RECIPES[recipe]))  # type: ignore[arg-type]
        except TypeError as err:
            raise UserError(f"augment.options: {err}") from None

    def __call__(self, images: torch.Tensor, n_views: int, size: int, gen: torch.Generator) -> list[torch.Tensor]:
        x = to_float(images)
        return [normalize(self.specs[i % len(self.specs)].apply(x, size, gen)) for i in range(n_views)]

    def check(self, plan: MultiCrop, method: str = "the method") -> None:
        """One-line UserError when ``plan`` asks for local crops that its recipe cannot make."""
        recipe = plan.recipe or self.recipe
        if recipe not in RECIPES:
            raise UserError(
                f"{method} asks for augmentation recipe '{recipe}', which does not exist; known: {', '.join(RECIPES)}"
            )
        if plan.n_local and recipe not in LOCAL:
            raise UserError(
                f"{method} asks for {plan.n_local} local crops, but augmentation recipe '{recipe}' cannot "
                f"make local crops (recipes that can: {', '.join(LOCAL)}); change the recipe or set n_local=0"
            )

    def multi_crop(
        self, images: torch.Tensor, plan: MultiCrop, size: int, gen: torch.Generator, multiple: int = 1
    ) -> list[torch.Tensor]:
        """``plan.n_global`` views at ``size`` px, then ``plan.n_local`` views at ``plan.local_px(size, multiple)``.

        Global view i uses the recipe's spec i (cyclically), with ``plan.global_scale`` as its crop area range
        when given. The local crops of all V views are made by ONE batched call on the batch repeated V times
        (every sample of every view draws its own parameters) and split into V tensors.
        """
        self.check(plan)
        recipe = plan.recipe or self.recipe
        specs = self.specs if recipe == self.recipe else self._specs(recipe)
        if plan.global_scale is not None:
            low, high = plan.global_scale
            specs = tuple(replace(s, scale=(low, high)) for s in specs)
        x = to_float(images)
        views = [normalize(specs[i % len(specs)].apply(x, size, gen)) for i in range(plan.n_global)]
        if plan.n_local:
            local = replace(self._specs(recipe, local=True)[0], scale=(plan.local_scale[0], plan.local_scale[1]))
            crops = local.apply(x.repeat(plan.n_local, 1, 1, 1), plan.local_px(size, multiple), gen)
            views.extend(normalize(crops).chunk(plan.n_local))
        return views


def method_views(aug: Augment, method: Any, images: torch.Tensor, size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """The views ``method`` trains on: its :class:`MultiCrop` plan (local crops rounded to its backbone's patch
    size) when it declares one, else ``method.n_views`` views of the recipe, all at ``size`` px."""
    plan = getattr(method, "views", None)
    if plan is None:
        return aug(images, method.n_views, size, gen)
    return aug.multi_crop(images, plan, size, gen, getattr(method.backbone, "patch_size", 1))
