"""The types plugins build and return (datasets, experiences, methods, strategies, evaluators), and what they see of a run.

A plugin author needs only this module, :mod:`ssl_bench.hookspecs` and
:data:`ssl_bench.hookimpl`. Everything here is plain data, a base class with do-nothing
defaults (so a plugin overrides just what it changes), or :class:`RunContext`: the part of a
running run that plugins may read.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from ssl_bench.blocks.augment import Augment, MultiCrop
    from ssl_bench.plan import RunConfig
    from ssl_bench.protocol import Protocol
    from ssl_bench.recipe import Recipe
    from ssl_bench.registry import Registry


@dataclass
class ImageSet:
    """Images of one split, all in memory (or memory-mapped) as uint8 ``[N, 3, H, W]``."""

    images: torch.Tensor
    labels: torch.Tensor  #: int64 [N], index into ``Dataset.classes``
    domains: torch.Tensor  #: int64 [N], index into ``Dataset.domains``
    ids: list[str] | None = None  #: stable sample ids (file names), for manifests

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if len(self.labels) != n or len(self.domains) != n:
            raise ValueError("images, labels and domains must have the same length")

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Dataset:
    """A dataset: a train and a test split plus the names of its classes and domains."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]  #: class ids (e.g. WordNet ids ``n01443537``) or names
    domains: list[str] = field(default_factory=lambda: ["default"])
    class_names: list[str] | None = None  #: human-readable names, when they differ from ids
    #: optional hierarchy: class id -> list of ancestors, nearest first (used by distant streams)
    hierarchy: dict[str, list[str]] | None = None

    @property
    def resolution(self) -> int:
        return int(self.train.images.shape[-1])


@dataclass
class Experience:
    """One experience of a stream: what is trained on, and the held-out data to evaluate it."""

    index: int
    train_idx: np.ndarray  #: int64 indices into ``dataset.train``
    test_idx: np.ndarray  #: int64 indices into ``dataset.test``
    classes: list[int]  #: class indices present, in the order the stream chose them
    domains: list[int]  #: domain indices present, in the order the stream chose them
    name: str = ""
    #: what the stream wants recorded about this experience (numbers, arrays, strings); the engine
    #: writes each entry to the result file as ``stream/experience_<index>/info/<key>`` and logs it
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Phase:
    """One training phase planned by a strategy: which experiences' data, and how many steps.

    Sequential training has one phase per experience; joint training has one phase over
    all experiences with as many steps as the sequential run has in total.
    """

    name: str
    experiences: list[int]
    steps: int


@dataclass
class Batch:
    """A training batch before augmentation: uint8 images and their labels, on the run's device."""

    images: torch.Tensor
    labels: torch.Tensor
    domains: torch.Tensor
    index: torch.Tensor  #: indices into ``dataset.train``
    #: the same indices in host memory when the engine has them (None otherwise): read these rather than
    #: ``index.cpu()``, which on a GPU waits for it
    host_index: torch.Tensor | None = None


class Method(nn.Module):
    """Base class of a method. Subclasses set up their heads and implement :meth:`loss`.

    The evaluators only ever see ``self.backbone``: heads (projectors, predictors, momentum
    encoders) are the method's own business.
    """

    #: how many augmented views of each image :meth:`loss` receives (all at the step's resolution)
    n_views: int = 2
    #: multi-crop methods set this (class or instance attribute) to an :class:`ssl_bench.blocks.augment.MultiCrop`:
    #: :meth:`loss` then receives its ``n_global`` views at the step's resolution followed by its ``n_local``
    #: smaller views, and ``n_views`` is ignored. None: ``n_views`` views of the protocol's recipe.
    views: MultiCrop | None = None
    #: whether :meth:`loss` uses labels (only supervised baselines do)
    uses_labels: bool = False
    #: tuned optimisation recipes per protocol family, ``{family: {recipe key: value}}`` (keys of
    #: :class:`ssl_bench.recipe.Recipe`; the method's own options under "options"). A family missing here
    #: falls back to the protocol's ``[recipe]``; say in the docstring why a family has none.
    recipes: typing.ClassVar[dict[str, dict[str, typing.Any]]] = {}
    #: which distillation loss fits the method when a strategy distils it into its previous self (CaSSLe):
    #: ``contrastive`` (SimCLR/MoCo-like), ``predictive`` (BYOL/SimSiam-like, 2 - 2 cos), ``decorrelative``
    #: (Barlow Twins) or ``predictive_mse`` (VICReg); see :mod:`ssl_bench.blocks.distill`
    distillation: str = "predictive"

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @property
    def feature_dim(self) -> int:
        return int(cast(int, self.backbone.feature_dim))  # a plain int attribute of the backbone module

    def loss(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        """Return the scalar training loss for ``views`` (float, normalised images); ``labels`` is None
        unless :attr:`uses_labels`."""
        raise NotImplementedError

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None = None) -> torch.Tensor:
        """Same as :meth:`loss`; the engine calls the method (possibly wrapped in DDP) this way."""
        return self.loss(views, labels)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding that distillation strategies match (default: the projector's output)."""
        projector = getattr(self, "projector", None)
        h = self.backbone(x)
        return projector(h) if projector is not None else h

    def begin_phase(self, steps: int, steps_per_epoch: int) -> None:
        """Called before each training phase with its number of optimiser steps and the steps that make one
        epoch of its data (schedules counted in epochs, e.g. DINO's teacher-temperature warm-up)."""

    def after_backward(self) -> None:
        """Called after ``loss.backward()`` (and the strategy's), before the optimiser step: cancel or clip
        gradients here (DINO's frozen last layer, SwAV's frozen prototypes)."""

    def after_step(self, progress: float) -> None:
        """Called after every optimiser step with the ``progress`` (0 to 1) through the learning-rate schedule, for
        momentum updates: through the phase under the protocol's ``schedule_scope = "phase"``, the run under "run"."""

    def fixed_lr_parameters(self) -> list[str]:
        """Names (as in ``named_parameters()``) of parameters that keep the peak learning rate throughout
        (no warm-up or decay), e.g. SimSiam's predictor; default none."""
        return []


class RunContext(typing.Protocol):
    """What plugins may read from a running run: the ``run`` argument of strategy, evaluator and observer hooks.

    The engine's run object has more (step counters, metrics so far); those may change without
    notice. Plugins read these and change none of them, with two exceptions: a strategy may add
    a parameter group to :attr:`optimizer` in ``setup`` (``cassle`` trains its predictor so), and
    strategies and evaluators may switch :attr:`method` between train and eval mode, or use its
    buffers, when they restore them afterwards (``mas``, ``ewc``, ``sharpness``).
    """

    config: RunConfig  #: the user's choices: plugins, options, ``out``, ``download``, ``progress``
    protocol: Protocol  #: the validated protocol (``protocol.train``, ``protocol.eval``, ...)
    registry: Registry  #: the plugin registry (e.g. ``registry.get("dataset", name)`` for downstream data)
    seed: int  #: the run's seed
    device: torch.device  #: where the method and batches live
    rank: int  #: this process's rank under torchrun (0 on one process)
    dataset: Dataset  #: the protocol's dataset
    experiences: list[Experience]  #: the stream's experiences
    phases: list[Phase]  #: the training phases, as planned by the strategy
    method: Method  #: the method being trained (``method.backbone`` is what evaluators measure)
    optimizer: torch.optim.Optimizer  #: the run's optimiser
    recipe: Recipe  #: the method's effective optimisation recipe (:mod:`ssl_bench.recipe`)
    peak_lr: float  #: the learning rate after warm-up (the recipe's lr scaled to the batch size)
    augment: Augment  #: the protocol's augmentation; :func:`ssl_bench.blocks.augment.method_views` gives a method's views

    def batch_of(self, index: torch.Tensor) -> Batch:
        """The training samples at ``index`` (indices into ``dataset.train``) as a :class:`Batch` on the device."""
        ...

    def views(
        self, images: torch.Tensor, size: int | None = None, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Augmented, normalised views of a uint8 batch for the method, at ``size`` px (default: the dataset's):
        its ``n_views`` views, or its :attr:`Method.views` multi-crop plan (global views at ``size``, then the
        smaller local ones); drawn from ``generator`` (default: the run's)."""
        ...


class Strategy:
    """Base class of a continual strategy; the defaults are plain sequential fine-tuning.

    The engine calls, in order: :meth:`plan` once; then per phase :meth:`before_phase`,
    per step :meth:`batch` → augmentation → :meth:`views` → method loss + :meth:`loss` →
    backward → :meth:`after_backward` → optimiser step; then :meth:`after_phase`.
    """

    name: str = "sequential"

    def plan(self, experiences: list[Experience], steps: list[int]) -> list[Phase] | None:
        """Return the training phases, or None to keep the default (one per experience).

        ``steps[i]`` is the number of steps the protocol gives experience ``i``.
        """
        return None

    def setup(self, run: RunContext) -> None:
        """Called once the method and optimiser exist."""

    def before_phase(self, run: RunContext, phase: Phase) -> None:
        """Called before a phase trains."""

    def batch(self, run: RunContext, batch: Batch) -> Batch:
        """Change a batch before augmentation (replay mixes in stored samples here)."""
        return batch

    def views(self, run: RunContext, views: list[torch.Tensor], batch: Batch) -> list[torch.Tensor]:
        """Change the augmented views (mixup-style strategies work here)."""
        return views

    def loss(self, run: RunContext, views: list[torch.Tensor], batch: Batch) -> torch.Tensor | None:
        """Return an extra loss term to add to the method's loss, or None."""
        return None

    def after_backward(self, run: RunContext) -> None:
        """Called after ``loss.backward()``, before the optimiser step (may add to ``.grad``)."""

    def after_phase(self, run: RunContext, phase: Phase) -> None:
        """Called after a phase has trained, before it is evaluated."""

    def record(self) -> dict[str, Any]:
        """Return what the strategy did (numbers or arrays) for the result file, so runs can be audited."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (buffers, importances, anchors) so an interrupted run can resume."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


@dataclass
class Features:
    """Frozen-backbone features of the evaluation samples of every experience."""

    train: list[torch.Tensor]  #: per experience: [n_j, D] features of its probe-training samples
    train_labels: list[torch.Tensor]
    test: list[torch.Tensor]  #: per experience: [m_j, D] features of its held-out samples
    test_labels: list[torch.Tensor]


class Evaluator:
    """Base class of an evaluator: measures the frozen backbone after a phase or at the end."""

    name: str = "evaluator"
    #: "phase": after every training phase (and once at initialisation); "end": once after training
    when: str = "phase"

    def setup(self, run: RunContext) -> None:
        """Called once the run is built, before any training: check options and load data here, so that a
        mistake (a missing downstream dataset) stops the run at its start, not after hours."""

    def evaluate(self, run: RunContext, features: Features, previous: Features | None) -> dict[str, Any]:
        """Return ``{key: number or array}``. ``previous`` holds the features of the phase before (or None)."""
        raise NotImplementedError

    def finish(self, run: RunContext, features: Features) -> dict[str, Any]:
        """Per-phase evaluators only: end-of-run extras (stored as ``end/<name>/<key>``); ``features`` are the last phase's."""
        return {}
