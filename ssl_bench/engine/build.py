"""Building a run from its plan (:mod:`ssl_bench.plan`): data, plugins, phases and optimiser (:class:`Run`).

:class:`Run` is what one run holds. Plugins receive it in their hooks and strategy callbacks,
typed as :class:`ssl_bench.api.RunContext`, which lists what they may read; the rest of its
attributes (step, losses, metrics) belong to the engine's loop, checkpoint and record.
Construction order is part of the results: the seeds are set first, then every plugin is
built in a fixed order, so the same configuration draws the same random numbers.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
from typing import Any

import numpy as np
import torch

from ssl_bench.api import Batch, Dataset, Evaluator, Experience, Method, Phase, Strategy
from ssl_bench.blocks import augment
from ssl_bench.engine import distributed, evaluation, precision
from ssl_bench.engine.composite import Composite
from ssl_bench.engine.cost import Cost
from ssl_bench.engine.optim import make_optimizer
from ssl_bench.errors import UserError
from ssl_bench.plan import Plan, RunConfig, precisions
from ssl_bench.recipe import Recipe

log = logging.getLogger(__name__)


def load_data(plan: Plan) -> tuple[Dataset, list[Experience]]:
    """The protocol's dataset and the chosen stream's experiences (also used by ``ssl-bench stream-export``)."""
    config, protocol = plan.config, plan.protocol
    ds = protocol.dataset
    log.info("loading dataset %s at %d px", ds.name, ds.resolution)
    dataset = plan.dataset.build(
        root=config.data_root or ds.root, resolution=ds.resolution, seed=ds.seed, download=config.download
    )
    experiences = plan.stream.build(dataset, n_experiences=protocol.stream.n_experiences, seed=config.seed)
    if not experiences or any(len(e.train_idx) == 0 or len(e.test_idx) == 0 for e in experiences):
        raise UserError(f"stream '{config.stream}' produced an empty experience; use fewer experiences or more data")
    for e in experiences:
        if e.info:
            log.info(
                "stream %s, experience %d: %s",
                config.stream,
                e.index,
                ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.info.items() if np.ndim(v) == 0),
            )
    return dataset, experiences


def _make_strategy(plan: Plan) -> Strategy:
    """The planned strategy (``a``), or the parts of ``a+b`` joined (:class:`Composite`)."""
    parts = [part.build() for part in plan.strategies]
    return parts[0] if len(parts) == 1 else Composite(parts)


#: the share of the GPU's memory the training images may take to be kept on the GPU (gathered and augmented
#: there); a larger dataset stays on the host and its batches are prefetched (pinned, on a side stream)
DEVICE_DATA_FRACTION = 0.25


def _precision(name: str, device: torch.device, protocol: str = "auto") -> str:
    """The run's precision: ``name`` (``--precision``) unless ``auto``, then the protocol's ``train.precision``,
    whose ``auto`` is bf16 on CUDA and fp32 elsewhere (:func:`ssl_bench.plan.precisions`)."""
    return precisions(name, protocol, device.type)[0]


def set_tf32(device: torch.device, precision: str) -> bool:
    """Set, for this process, whether float32 matrix products and convolutions on the GPU may use TF32, and return
    it: never under ``fp32`` (fp32 then means fp32; cuDNN would otherwise use TF32 for convolutions by default),
    allowed under ``bf16`` (the ops autocast keeps in float32 are inside a bf16 step anyway); False off CUDA,
    where nothing is set."""
    if device.type != "cuda":
        return False
    allowed = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = allowed
    torch.backends.cudnn.allow_tf32 = allowed
    return allowed


#: the environment variable that forces convolutions into (``1``) or out of (``0``) channels_last, e.g. so
#: that CPU tests can run the GPU's memory format through every method and strategy
CHANNELS_LAST_ENV = "SSL_BENCH_CHANNELS_LAST"


def channels_last_for(device: torch.device, precision: str) -> bool:
    """Whether convolutional backbones train in channels_last, unless ``$SSL_BENCH_CHANNELS_LAST`` says ``0``
    or ``1``: on CUDA (tensor cores); on the CPU under bf16 (oneDNN's bf16 convolutions are fastest in NHWC: a
    SimCLR step of the CPU protocol's model, 256 images, one thread, 181 -> 130 ms at 16 px and 510 -> 360 ms at
    32 px). CPU fp32 stays in NCHW although NHWC is faster there too (297 -> 192 ms): NHWC rounds differently,
    and fp32 CPU runs of the existing protocols must keep their numbers."""
    forced = os.environ.get(CHANNELS_LAST_ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return device.type == "cuda" or precision == "bf16"


#: set by ``ssl-bench sweep --per-gpu K`` in its workers: the number of runs that share each GPU
RUNS_PER_GPU_ENV = "SSL_BENCH_RUNS_PER_GPU"


def fits_on_device(nbytes: int, device: torch.device, fraction: float = DEVICE_DATA_FRACTION) -> bool:
    """Whether ``nbytes`` of training data fit in this run's share of ``fraction`` of ``device``'s memory (False off
    CUDA): all of it, or ``fraction / K`` when K runs share the GPU (``$SSL_BENCH_RUNS_PER_GPU``), so that the data
    of all K runs stay within ``fraction`` of its memory."""
    if device.type != "cuda":
        return False
    sharing = max(1, int(os.environ.get(RUNS_PER_GPU_ENV) or 1))
    return nbytes * sharing <= fraction * torch.cuda.get_device_properties(device).total_memory


def moved(batch: Batch, device: torch.device) -> Batch:
    """``batch`` on ``device`` (copies from pinned memory run asynchronously on the current stream)."""
    return Batch(*(t.to(device, non_blocking=True) for t in _tensors(batch)), host_index=batch.host_index)


def _tensors(batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return batch.images, batch.labels, batch.domains, batch.index


def check_sizes(config: RunConfig, experiences: list[Experience]) -> None:
    """Refuse experiences too small for the protocol: fewer training samples than one batch (batches would
    shrink), or fewer held-out samples than the experience has classes (the probe could not see each class)."""
    batch = config.protocol.train.batch_size
    for e in experiences:
        small = []
        if len(e.train_idx) < batch:
            small.append(f"{len(e.train_idx)} training samples, fewer than one batch ({batch})")
        if len(e.test_idx) < len(e.classes):
            small.append(f"{len(e.test_idx)} held-out samples for its {len(e.classes)} classes")
        if small:
            raise UserError(
                f"stream '{config.stream}' made experiences too small for protocol {config.protocol.label}: experience "
                f"{e.index} of {len(experiences)} has {' and '.join(small)}; use fewer experiences "
                f"(stream.n_experiences = {config.protocol.stream.n_experiences}) or more data"
            )


def _pick_device(name: str) -> str:
    """``auto`` -> cuda when torch sees a GPU, else cpu; asking for cuda without one is a one-line error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device '{name}' is not a device: give auto, cpu, cuda or cuda:N (or mps, xpu)") from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but this torch sees no CUDA device; use --device cpu")
    return name


class Run:
    """Everything one run holds, built from its :class:`~ssl_bench.plan.Plan`; plugins see it as an
    :class:`~ssl_bench.api.RunContext`."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.config = config = plan.config
        self.protocol = protocol = config.protocol
        self.registry = plan.registry
        self.seed = config.seed
        self.device = torch.device(_pick_device(distributed.setup(config.device)))
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed + 1_000_003 * self.rank)

        self.dataset: Dataset
        self.experiences: list[Experience]
        self.dataset, self.experiences = load_data(plan)
        check_sizes(config, self.experiences)
        self.recipe = Recipe.model_validate(config.recipe)
        if config.recipe_source.startswith("protocol"):
            log.warning("recipe from %s", config.recipe_source)
        backbone = plan.backbone.build()
        options = {}
        if "n_classes" in inspect.signature(plan.method.entry.factory).parameters:
            given = plan.method.options.get("n_classes")
            if given is None:
                options["n_classes"] = len(self.dataset.classes)  # a factory that asks for n_classes gets the dataset's
            elif isinstance(given, int) and given < len(self.dataset.classes):  # before training, not at a step's label
                raise UserError(
                    f"method '{config.method}': n_classes={given}, but dataset {protocol.dataset.name} has "
                    f"{len(self.dataset.classes)} classes (labels up to {len(self.dataset.classes) - 1}); "
                    f"set --method-opt n_classes={len(self.dataset.classes)} or leave it out"
                )
        self.method: Method = plan.method.build(backbone, **options).to(self.device)
        self.precision = _precision(config.precision, self.device, protocol.train.precision)  #: "bf16" or "fp32"
        if self.precision == "bf16" and self.device.type == "cpu":
            precision.install(self.method)  # bf16 autocast around the encoders only (ssl_bench.engine.precision)
        self.tf32 = set_tf32(self.device, self.precision)  #: whether float32 products may round to TF32 (recorded)
        #: convolutions in NHWC on CUDA (faster with tensor cores); weights here, the views in the loop
        self.channels_last = channels_last_for(self.device, self.precision) and any(
            isinstance(m, torch.nn.Conv2d) for m in self.method.modules()
        )
        if self.channels_last:
            self.method.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = distributed.wrap(self.method)  #: what training calls: the method, or DDP around it
        #: what the loop calls for a step's loss: the model, or torch.compile of it (``--compile``)
        self.step_model = torch.compile(self.model) if config.compile else self.model
        self.strategy: Strategy = _make_strategy(plan)
        self.evaluators: list[Evaluator] = [ev.build() for ev in plan.evaluators]
        self.augment = augment.Augment(protocol.augment.recipe, **protocol.augment.options)
        self._check_views()

        tr = protocol.train
        self.steps_per_experience = [
            max(1, math.ceil(tr.epochs_per_experience * len(e.train_idx) / tr.batch_size)) for e in self.experiences
        ]
        self.phases: list[Phase] = self.strategy.plan(self.experiences, self.steps_per_experience) or [
            Phase(name=f"experience {e.index}", experiences=[e.index], steps=s)
            for e, s in zip(self.experiences, self.steps_per_experience)
        ]
        self.total_steps = sum(p.steps for p in self.phases)
        self.peak_lr = self.recipe.peak_lr(tr.batch_size)  #: the learning rate after warm-up
        self.optimizer = make_optimizer(self.method, self.recipe)
        self.step = 0
        self.phase_index = -1
        self.losses: list[float] = []
        self.images_processed = 0  #: training samples that went through the method (all ranks), for compute-matching checks
        #: what the run cost so far, phase by phase (kept in the checkpoint, written under cost/ in the result)
        self.cost = Cost(len(self.phases), [s.resolution for s in tr.stages] or [self.dataset.resolution])
        self.metrics: dict[str, list] = {}
        self.init_metrics: dict[str, Any] = {}
        self.end_metrics: dict[str, Any] = {}
        train = self.dataset.train
        #: the training images, labels and domains kept on the GPU when they fit (:data:`DEVICE_DATA_FRACTION`)
        self.device_data: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if fits_on_device(train.images.numel(), self.device):
            self.device_data = (train.images.to(self.device), train.labels.to(self.device), train.domains.to(self.device))
        #: batches gathered on the host are prefetched (pinned, side stream) when training on a GPU
        self.prefetch = self.device.type == "cuda" and self.device_data is None
        log.info(
            "precision %s%s; training data %s",
            self.precision,
            ", channels_last" if self.channels_last else "",
            "on the device" if self.device_data is not None else ("prefetched" if self.prefetch else "on the host"),
        )
        self.probe_index = evaluation.probe_indices(protocol, self.experiences, self.seed)
        self.strategy.setup(self)
        for ev in self.evaluators:  # evaluators check their options and data now, not after training
            ev.setup(self)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The training step's autocast under ``precision == "bf16"``: the whole step on CUDA, the method's encoders
        on the CPU (:mod:`ssl_bench.engine.precision`: the loss stays float32); a no-op under fp32."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        if self.device.type == "cpu":
            return precision.step(self.config.method, check=True)
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def batch_of(self, index: torch.Tensor, host_index: torch.Tensor | None = None) -> Batch:
        """The training samples at ``index`` (indices into dataset.train) as a Batch on the device; ``host_index``:
        the same indices in host memory, when the caller has them (``index`` itself when that is on the host)."""
        if index.device.type == "cpu":
            host_index = index
        if self.device_data is not None:  # gathered on the GPU
            images, labels, domains = self.device_data
            if index.device.type == "cpu" and self.device.type != "cpu":
                index = index.pin_memory()  # so that the copy is asynchronous: nothing waits for it
            index = index.to(self.device, non_blocking=True)
            return Batch(images[index], labels[index], domains[index], index, host_index)
        return moved(self.host_batch(index), self.device)

    def host_batch(self, index: torch.Tensor, pin: bool = False) -> Batch:
        """The training samples at ``index`` as a Batch in host memory (``pin``: page-locked, for async copies)."""
        train = self.dataset.train
        index = index.cpu()
        # numpy's row gather is ~100x faster than torch's uint8 indexing on CPU (benchmark/test_bench_cache.py)
        images = torch.from_numpy(train.images.numpy()[index.numpy()])
        batch = Batch(images, train.labels[index], train.domains[index], index, host_index=index)
        return Batch(*(t.pin_memory() for t in _tensors(batch)), host_index=index) if pin else batch

    def views(
        self, images: torch.Tensor, size: int | None = None, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Augmented, normalised views of a uint8 batch for the current method: ``n_views`` views at ``size``
        (default: the dataset's resolution), or its multi-crop plan (global views at ``size``)."""
        return augment.method_views(
            self.augment, self.method, images, size or self.dataset.resolution, generator or self.generator
        )

    def _check_views(self) -> None:
        """Before training: the method's multi-crop plan suits the recipe, and the backbone takes every input size."""
        plan = self.method.views
        if plan is not None:
            self.augment.check(plan, f"method '{self.config.method}'")
        check = getattr(self.method.backbone, "check_input", None)
        if check is None:
            return
        sizes = {self.dataset.resolution} | {s.resolution for s in self.protocol.train.stages}
        if plan is not None and plan.n_local:
            multiple = getattr(self.method.backbone, "patch_size", 1)
            sizes |= {plan.local_px(s, multiple) for s in sizes}
        for size in sorted(sizes):
            check(size)
