"""The optimisers and learning-rate schedules that a recipe (:mod:`ssl_bench.recipe`) can name.

Parameter groups: with ``exclude_bias_norm`` every parameter with ``ndim <= 1`` (biases, BatchNorm
and LayerNorm weights) gets no weight decay and no LARS adaptation, as in SimCLR, BYOL and
solo-learn. A method may put parameters into a group of its own that keeps a fixed learning rate
(the peak lr, no warm-up or decay) by listing their names in its ``fixed_lr_parameters()``, as
SimSiam does for its predictor.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ssl_bench.recipe import Recipe


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017).

    For a parameter ``w`` with gradient ``g`` in a group with ``lars=True``:
    ``trust = eta * ||w|| / (||g|| + weight_decay * ||w||)`` (the LARS paper's ratio; 1 when either
    norm is 0), with ``clip`` the adapted rate is capped at the scheduled one: ``trust = min(trust /
    lr, 1)`` (solo-learn's ``clip_lr``); the update direction ``d = (g + weight_decay * w) * trust``
    then goes through heavy-ball momentum, ``buf = momentum * buf + d; w -= lr * buf``. Groups with
    ``lars=False`` (biases and norms, see the module docstring) take plain SGD steps with their own
    weight decay.
    """

    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.02, clip: bool = False
    ):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip=clip, lars=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, wd, eta = group["lr"], group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                d = g.add(p, alpha=wd) if wd else g.clone()
                if group["lars"]:
                    p_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    ratio = eta * p_norm / (g_norm + wd * p_norm)
                    if group["clip"]:
                        ratio = torch.clamp(ratio / lr, max=1.0) if lr > 0 else torch.ones_like(ratio)
                    d.mul_(torch.where((p_norm > 0) & (g_norm > 0), ratio, torch.ones_like(ratio)))
                buf = self.state[p].get("momentum")
                if buf is None:
                    buf = self.state[p]["momentum"] = d.detach().clone()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-lr)
        return loss


def param_groups(method: torch.nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    """The method's trainable parameters split as the recipe asks (see the module docstring)."""
    fixed = set(getattr(method, "fixed_lr_parameters", lambda: [])())
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, p in method.named_parameters():
        if not p.requires_grad:
            continue
        excluded = recipe.exclude_bias_norm and p.ndim <= 1
        groups.setdefault((excluded, name in fixed), []).append(p)
    out = []
    for (excluded, is_fixed), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "weight_decay": 0.0 if excluded else recipe.weight_decay,
                "lars": not excluded,
                "fixed_lr": is_fixed,
            }
        )
    return out


def make_optimizer(method: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser over the method's parameter groups (learning rates are set per step)."""
    groups = param_groups(method, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=tuple(recipe.betas), weight_decay=recipe.weight_decay)
    return LARS(
        groups,
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        eta=recipe.lars_eta,
        clip=recipe.lars_clip,
    )


def lr_at(step: int, total: int, warmup: int, peak: float, schedule: str) -> float:
    """Learning rate at ``step`` of a schedule of ``total`` steps: linear warm-up over ``warmup`` steps to
    ``peak``, then constant or cosine decay to 0 at ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    t = (step - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float, peak: float) -> None:
    """Give every group the scheduled ``lr``; groups with ``fixed_lr`` keep ``peak``."""
    for group in optimizer.param_groups:
        group["lr"] = peak if group.get("fixed_lr") else lr
