"""Distillation from a frozen copy of the previous model (public; used by the CaSSLe and PFR strategies).

Continual SSL strategies such as CaSSLe (Fini et al., CVPR 2022) and PFR (Gomez-Villa et al., CVPRW
2022) keep a frozen copy of the model from the end of the previous phase and add a loss that maps
the current model's embedding of each view through a small trained head onto the frozen copy's
embedding of the same view. What they share lives here:

* :class:`FrozenModel`, the snapshot. As in both reference codes (which deep-copy the encoder and never
  switch it to eval), the copy runs in TRAINING mode: BatchNorm normalises with the statistics of the
  batch it sees, not with running statistics stored at the end of the previous phase (under S3L those
  come from the last, full-resolution stage, a mismatch for the small-resolution steps). Its BatchNorm
  layers stop tracking running statistics, so that its forward passes change no state (its own stored
  statistics; the current model's are a separate copy anyway). It takes no gradient and is replaced at
  the end of every phase.
* :class:`FrozenDistillation`, a strategy base class: the head trained with the model (added to the
  run's optimiser, same schedule; under torchrun its gradients averaged over the ranks, as DDP averages the
  model's), the snapshot after every phase, the loss from the second phase on, bookkeeping per phase
  (``distill_loss_mean``, ``distill_steps``) and checkpointing.
* the distillation losses of CaSSLe's code, by the kind a method declares in ``Method.distillation``
  (:data:`LOSSES`): ``contrastive`` (SimCLR / MoCo-like), ``predictive`` (BYOL / SimSiam-like),
  ``decorrelative`` (Barlow Twins), ``predictive_mse`` (VICReg); each with CaSSLe's default weight
  (:data:`WEIGHTS`).

Distillation uses the first two views (the global crops of a multi-crop method), as both references.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ssl_bench.api import Batch, Phase, RunContext, Strategy
from ssl_bench.errors import UserError
from ssl_bench.ops import info_nce

__all__ = [
    "FrozenModel",
    "FrozenDistillation",
    "LOSSES",
    "WEIGHTS",
    "contrastive",
    "predictive",
    "decorrelative",
    "predictive_mse",
    "distillation_kind",
]


class FrozenModel:
    """A frozen snapshot of a module that runs with batch statistics and never updates them."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None

    def __bool__(self) -> bool:
        return self.model is not None

    def snapshot(self, module: nn.Module) -> None:
        """Replace the snapshot with a copy of ``module`` (its parameters, buffers and statistics now)."""
        frozen = copy.deepcopy(module)
        for p in frozen.parameters():
            p.requires_grad_(False)
        for m in frozen.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.track_running_stats = False  # batch statistics in the forward pass; stored ones never updated
        self.model = frozen.train()

    def __call__(self, fn: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor:
        """``fn(frozen_model)`` without gradient, in training mode."""
        if self.model is None:
            raise RuntimeError("no snapshot yet")
        self.model.train()
        with torch.no_grad():
            return fn(self.model).detach()

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.model is None else self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None, template: nn.Module) -> None:
        """Restore a snapshot saved by :meth:`state_dict`, built on a copy of ``template`` (same architecture)."""
        if state is None:
            self.model = None
            return
        self.snapshot(template)
        assert self.model is not None
        self.model.load_state_dict(state)


# ---------------------------------------------------------------------------------------- losses
def contrastive(p: list[torch.Tensor], z: list[torch.Tensor], temperature: float = 0.2) -> torch.Tensor:
    """CaSSLe's contrastive distillation: the predictions of all views against the frozen embeddings of all
    views, the same sample and view as the positive, both directions averaged (symmetric InfoNCE at ``temperature``
    over the 2N x 2N similarities; the fused op when built)."""
    return info_nce(torch.cat(p), torch.cat(z), temperature, symmetric=True)


def predictive(p: list[torch.Tensor], z: list[torch.Tensor]) -> torch.Tensor:
    """CaSSLe's predictive distillation (BYOL's loss): mean over views of ``2 - 2 cos(p, z)``."""
    return torch.stack([(2 - 2 * F.cosine_similarity(a, b, dim=1)).mean() for a, b in zip(p, z)]).mean()


def decorrelative(p: list[torch.Tensor], z: list[torch.Tensor], lambd: float = 5e-3, scale: float = 0.1) -> torch.Tensor:
    """CaSSLe's decorrelative distillation (Barlow Twins' loss, off-diagonal weight 5e-3, scaled by 0.1)."""

    def barlow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = a.shape[0]
        a = (a - a.mean(0)) / (a.std(0) + 1e-5)
        b = (b - b.mean(0)) / (b.std(0) + 1e-5)
        c = a.T @ b / n
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return scale * (on + lambd * off)

    return torch.stack([barlow(a, b) for a, b in zip(p, z)]).mean()


def predictive_mse(p: list[torch.Tensor], z: list[torch.Tensor]) -> torch.Tensor:
    """CaSSLe's distillation for VICReg: its invariance term, the mean squared error, averaged over views."""
    return torch.stack([F.mse_loss(a, b) for a, b in zip(p, z)]).mean()


#: distillation kind -> loss(predictions per view, frozen embeddings per view)
LOSSES: dict[str, Callable[[list[torch.Tensor], list[torch.Tensor]], torch.Tensor]] = {
    "contrastive": contrastive,
    "predictive": predictive,
    "decorrelative": decorrelative,
    "predictive_mse": predictive_mse,
}
#: CaSSLe's default weight of each kind (``distill_lamb``; 25 for VICReg's invariance term, as VICReg weighs it)
WEIGHTS = {"contrastive": 1.0, "predictive": 1.0, "decorrelative": 1.0, "predictive_mse": 25.0}


def distillation_kind(method: nn.Module) -> str:
    """The kind ``method`` declares (``Method.distillation``), checked against :data:`LOSSES`."""
    kind = getattr(method, "distillation", "predictive")
    if kind not in LOSSES:
        raise UserError(f"method {type(method).__name__} declares distillation '{kind}'; known: {', '.join(LOSSES)}")
    return kind


# ---------------------------------------------------------------------------------------- strategy base
class FrozenDistillation(Strategy):
    """Base of strategies that distil into a frozen copy of the previous phase's model.

    Subclasses set ``name`` and implement :meth:`make_head` (the trained head, given the run) and
    :meth:`distill` (the weighted loss for the current views, given the head and the snapshot).
    """

    weight: float = 1.0

    def __init__(self) -> None:
        self.frozen = FrozenModel()
        self.head: nn.Module | None = None
        self.history: dict[str, list] = {"distill_loss_mean": [], "distill_steps": []}
        self._sum: torch.Tensor | None = None
        self._steps = 0

    def make_head(self, run: RunContext) -> nn.Module:
        raise NotImplementedError

    def distill(self, run: RunContext, views: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def output_width(run: RunContext, fn: Callable[[torch.Tensor], torch.Tensor]) -> int:
        """Width of ``fn``'s output on two blank images at the dataset's resolution (the method in eval mode)."""
        method, res = run.method, run.dataset.resolution
        was_training = method.training
        method.eval()
        with torch.no_grad():
            width = int(fn(torch.zeros(2, 3, res, res, device=run.device)).shape[1])
        method.train(was_training)
        return width

    def setup(self, run: RunContext) -> None:
        self._method = run.method
        self.head = self.make_head(run).to(run.device)
        run.optimizer.add_param_group({"params": list(self.head.parameters())})  # trained with the model

    def loss(self, run: RunContext, views: list[torch.Tensor], batch: Batch) -> torch.Tensor | None:
        if not self.frozen:
            return None
        value = self.weight * self.distill(run, views[:2])
        self._sum = value.detach() if self._sum is None else self._sum + value.detach()
        self._steps += 1
        return value

    def after_backward(self, run: RunContext) -> None:
        """Under torchrun, average the head's gradients over the ranks (one all-reduce), as DistributedDataParallel
        does for the method's: the head is outside the method's DDP, and without this each rank's head drifts."""
        if self.head is None or not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return
        grads = [p.grad for p in self.head.parameters() if p.grad is not None]
        if not grads:  # the head is not used before the first snapshot, on every rank alike
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def after_phase(self, run: RunContext, phase: Phase) -> None:
        mean = float(self._sum) / self._steps if self._sum is not None and self._steps else float("nan")
        self.history["distill_loss_mean"].append(mean)
        self.history["distill_steps"].append(self._steps)
        self._sum, self._steps = None, 0
        self.frozen.snapshot(run.method)

    def record(self) -> dict[str, Any]:
        return {"weight": self.weight, **{k: np.asarray(v) for k, v in self.history.items()}}

    def state_dict(self) -> dict[str, Any]:
        assert self.head is not None
        return {
            "head": self.head.state_dict(),
            "history": {k: list(v) for k, v in self.history.items()},
            "frozen": self.frozen.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        assert self.head is not None
        self.head.load_state_dict(state["head"])
        self.history = {k: list(v) for k, v in state["history"].items()}
        self.frozen.load_state_dict(state["frozen"], self._method)
