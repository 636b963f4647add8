"""A protocol's evaluators on saved backbone weights, without a run (``ssl-bench eval``).

:func:`evaluate` builds an evaluation-only context (:class:`EvalContext`): the protocol's dataset and
stream, its backbone with the weights loaded (:mod:`.weights`), and its evaluators, each resolved once
(the evaluation part of a :class:`~ssl_bench.plan.Plan`). No method, strategy or optimiser is built: the
context's ``method`` is a bare :class:`~ssl_bench.api.Method` around the backbone, so evaluators that
measure the frozen backbone (probes, kNN, collapse, CKA, downstream transfer) run as after a run's last
phase, then the end-of-run ones. An evaluator that needs the training loss of a method (the method-loss
part of ``sharpness``) gets :class:`MethodLossUnavailable` from ``method.loss``; its numbers are left out
with a warning that names it, since saved weights carry no method heads.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ssl_bench import protocol as protocols
from ssl_bench.api import Batch, Method
from ssl_bench.blocks import augment
from ssl_bench.engine import distributed, evaluation, weights
from ssl_bench.engine.build import _pick_device, check_sizes, load_data, moved
from ssl_bench.errors import UserError
from ssl_bench.plan import Plan, RunConfig, make_plan
from ssl_bench.recipe import Recipe
from ssl_bench.registry import Registry

log = logging.getLogger(__name__)


class MethodLossUnavailable(UserError):
    """Raised by :class:`BackboneOnly`'s ``loss``: saved weights have a backbone and no method heads."""


class BackboneOnly(Method):
    """The method of an evaluation-only context: the backbone and nothing else."""

    def loss(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        raise MethodLossUnavailable("saved backbone weights carry no method heads, so there is no training loss to measure")


class EvalContext:
    """What evaluators read (:class:`ssl_bench.api.RunContext`) when they measure saved weights, built from a plan's
    data, backbone and evaluators; it trains nothing, so it has no phases, strategy or optimiser."""

    def __init__(self, plan: Plan, state: dict[str, torch.Tensor], where: Path):
        self.plan = plan
        self.config = config = plan.config
        self.protocol = plan.protocol
        self.registry = plan.registry
        self.seed = config.seed
        self.device = torch.device(_pick_device(distributed.setup(config.device)))
        self.rank = 0
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.dataset, self.experiences = load_data(plan)
        check_sizes(config, self.experiences)
        backbone = plan.backbone.build()
        weights.load_into(backbone, state, where)
        self.method: Method = BackboneOnly(backbone).to(self.device)
        self.evaluators = [ev.build() for ev in plan.evaluators]
        self.augment = augment.Augment(self.protocol.augment.recipe, **self.protocol.augment.options)
        self.phases: list = []
        self.optimizer = None
        self.recipe = Recipe.model_validate(config.recipe)
        self.peak_lr = 0.0
        self.precision = "fp32"
        self.channels_last = False
        self.probe_index = evaluation.probe_indices(self.protocol, self.experiences, self.seed)
        for ev in self.evaluators:
            ev.setup(self)

    def batch_of(self, index: torch.Tensor) -> Batch:
        train = self.dataset.train
        index = index.cpu()
        images = torch.from_numpy(train.images.numpy()[index.numpy()])
        return moved(Batch(images, train.labels[index], train.domains[index], index), self.device)

    def views(
        self, images: torch.Tensor, size: int | None = None, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        return augment.method_views(
            self.augment, self.method, images, size or self.dataset.resolution, generator or self.generator
        )


def evaluate(
    path: Path,
    protocol: str,
    stream: str | None = None,
    seed: int | None = None,
    data_root: str | None = None,
    download: bool = False,
    device: str = "auto",
    plugins: list[str] | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The protocol's evaluators on the weights at ``path`` (see the module docstring); returns (metrics, metadata)."""
    proto = protocols.load(protocol)
    registry = Registry.discover(list(plugins or []))
    state, meta = weights.read(path)
    if meta.get("backbone") and meta["backbone"] != proto.backbone.name:
        raise UserError(f"'{path}' holds a '{meta['backbone']}' backbone, protocol {proto.label} uses '{proto.backbone.name}'")
    if meta.get("protocol_hash") and meta["protocol_hash"] != proto.hash:
        log.warning("'%s' was trained under %s, evaluated under %s", path, meta.get("protocol"), proto.label)
    if seed is None:
        seed = int(meta["seed"]) if meta.get("seed", "").isdigit() else proto.seeds[0]
    with tempfile.TemporaryDirectory(prefix="ssl-bench-eval-") as out:  # evaluators that look for other runs find none
        return _evaluate(
            path, proto, registry, state, meta, stream, seed, Path(out), data_root, download, device, plugins, progress
        )


def _evaluate(path, proto, registry, state, meta, stream, seed, out, data_root, download, device, plugins, progress):
    config = RunConfig(
        protocol=proto,
        method=proto.defaults.method,  # planned for its recipe's sake only: no method is built
        stream=stream or proto.defaults.stream,
        strategy=proto.defaults.strategy,
        seed=seed,
        out=out,
        data_root=data_root,
        download=download,
        device=device,
        plugins=list(plugins or []),
        progress=progress,
    )
    context = EvalContext(make_plan(config, registry), state, path)
    feats = evaluation.features(context)  # type: ignore[arg-type]
    metrics: dict[str, Any] = {}
    for when in ("phase", "end"):
        for ev in context.evaluators:
            if ev.when != when and not (when == "end" and ev.when == "phase"):
                continue
            try:
                measured = ev.evaluate(context, feats, None) if ev.when == when else ev.finish(context, feats)
            except MethodLossUnavailable as err:
                log.warning("evaluator '%s' left out: %s", ev.name, err)
                continue
            metrics.update({f"{ev.name}/{k}": v for k, v in (measured or {}).items()})
    return metrics, meta
