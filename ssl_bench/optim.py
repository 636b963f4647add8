"""Optimisers and learning-rate schedules named by protocols."""

from __future__ import annotations

import math

import torch

from ssl_bench.protocol import TrainSpec


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017), as used by SimCLR/BYOL.

    Biases and 1-d parameters (BatchNorm) get neither weight decay nor the trust ratio.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, eta=0.02):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if p.ndim > 1:
                    d = d.add(p, alpha=group["weight_decay"])
                    p_norm, d_norm = torch.norm(p), torch.norm(d)
                    trust = torch.where((p_norm > 0) & (d_norm > 0), group["eta"] * p_norm / d_norm, torch.ones_like(p_norm))
                    d = d.mul(trust)
                buf = self.state[p].get("momentum")
                if buf is None:
                    buf = self.state[p]["momentum"] = torch.clone(d).detach()
                else:
                    buf.mul_(group["momentum"]).add_(d)
                p.add_(buf, alpha=-group["lr"])
        return loss


def make_optimizer(params, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return LARS(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def lr_at(step: int, total: int, spec: TrainSpec) -> float:
    """Learning rate at a global step: linear warm-up, then constant or cosine over the whole run."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return spec.lr
    t = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps)
    return spec.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
