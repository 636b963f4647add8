"""Building blocks of methods: MLP heads, frozen copies and the one EMA (momentum) update.

Public, for built-in and outside method plugins alike::

    from ssl_bench.blocks.heads import cosine_momentum, ema_update, enqueue_, frozen_copy, mlp

    self.projector = mlp(self.feature_dim, 4096, 256)
    self.target = frozen_copy(backbone)
    ...
    def after_step(self, progress):
        ema_update([self.target], [self.backbone], cosine_momentum(0.996, 1.0, progress))

A FIFO queue of past embeddings (MoCo's negatives, NNCLR's support set) is a pair of buffers
``queue [K, D]`` and ``queue_ptr []`` written by :func:`enqueue_` (the rows of every rank under DDP).

Heads that only one method uses (SimSiam's 3-layer projector, Barlow Twins' expander) stay in
that method's module.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn


def mlp(d_in: int, hidden: int, d_out: int, batch_norm: bool = True) -> nn.Sequential:
    """A 2-layer MLP head: ``Linear-BN-ReLU-Linear`` (``batch_norm=False``: ``Linear-ReLU-Linear``)."""
    middle: list[nn.Module] = [nn.BatchNorm1d(hidden)] if batch_norm else []
    return nn.Sequential(nn.Linear(d_in, hidden), *middle, nn.ReLU(inplace=True), nn.Linear(hidden, d_out))


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters take no gradient (momentum encoders, frozen teachers)."""
    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def cosine_momentum(base: float, final: float, progress: float) -> float:
    """BYOL's schedule: ``base`` at progress 0, rising along a half cosine to ``final`` at progress 1 (and after)."""
    w = (math.cos(math.pi * min(1.0, progress)) + 1) / 2
    return final - (final - base) * w


@torch.no_grad()
def ema_update(target: Iterable[nn.Module], online: Iterable[nn.Module], momentum: float) -> None:
    """``t <- momentum * t + (1 - momentum) * o`` for every parameter of the ``target`` modules and its ``online`` twin.

    The modules are paired in order and must have the same parameters (as :func:`frozen_copy` makes them).
    """
    t: list[torch.Tensor] = [p for m in target for p in m.parameters()]
    o: list[torch.Tensor] = [p for m in online for p in m.parameters()]
    if len(t) != len(o):
        raise ValueError(f"ema_update: {len(t)} target parameters for {len(o)} online ones")
    torch._foreach_mul_(t, momentum)
    torch._foreach_add_(t, o, alpha=1 - momentum)


def online_and_target(
    views: list[torch.Tensor],
    online: Sequence[Callable[[torch.Tensor], torch.Tensor]],
    target: Sequence[Callable[[torch.Tensor], torch.Tensor]],
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The two branches of a momentum method (BYOL, MoCo v3) on each view: the ``online`` modules applied in turn
    (backbone, projector, predictor) with gradient, and the ``target`` ones (the momentum backbone and projector)
    without. Each view is its own forward call, so each gets its own BatchNorm statistics, as in the references
    (the online views first, then the target's)."""

    def chain(modules: Sequence[Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        for module in modules:
            x = module(x)
        return x

    outputs = [chain(online, v) for v in views]
    with torch.no_grad():
        targets = [chain(target, v) for v in views]
    return outputs, targets


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` from every rank, in rank order, without gradient (``x`` itself on one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def enqueue_(queue: torch.Tensor, ptr: torch.Tensor, rows: torch.Tensor) -> None:
    """Write ``rows`` (of every rank under DDP) into the ring buffer ``queue`` from position ``ptr``, wrapping
    around, and advance ``ptr`` (a 0-d long tensor); at most ``len(queue)`` rows are kept."""
    rows = gather_rows(rows)[: len(queue)]
    idx = (ptr + torch.arange(len(rows), device=rows.device)) % len(queue)
    queue[idx] = rows.to(queue.dtype)
    ptr.copy_((ptr + len(rows)) % len(queue))
